"""State shared by gateway replicas, behind one small interface.

Two implementations: in memory (one process, the default) and Redis (every replica of a
gateway sees the same counters; each check-and-count is one atomic Lua script).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

NANO_USD = Decimal("0.000000001")
"""Money is counted in whole nano-dollars: integers add exactly in Redis and in memory."""


def to_nano(usd: Decimal) -> int:
    return int((usd / NANO_USD).to_integral_value())


def from_nano(nano: int) -> Decimal:
    return (Decimal(nano) * NANO_USD).normalize() if nano else Decimal(0)


@dataclass(frozen=True, slots=True)
class CounterCheck:
    """Admit only if ``used + amount <= limit`` in a window; then count ``amount``."""

    name: str
    """The limit as users name it: requestsPerMinute, tokensPerMonth, …"""
    scope: str
    """Whose limit: ``tenant default/acme`` or ``key default/acme/ci``."""
    key: str
    limit: int
    amount: int
    ends_at: float


@dataclass(frozen=True, slots=True)
class ConcurrencyCheck:
    """Admit only if fewer than ``limit`` requests are in flight; then hold a slot."""

    scope: str
    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Admit only if the month's spend, what requests in flight have reserved and this
    request's worst case fit in the budget; then reserve that worst case until it settles."""

    scope: str
    key: str
    """The month's spend."""
    tenant: str
    """Whose reservations (one set per tenant, whatever the month)."""
    limit_nano: int
    ends_at: float
    reserve_nano: int = 0
    """The request's worst-case cost."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one request must pass, checked and counted all at once or not at all."""

    counters: tuple[CounterCheck, ...] = ()
    concurrency: tuple[ConcurrencyCheck, ...] = ()
    budget: BudgetCheck | None = None
    token_counters: tuple[tuple[str, int], ...] = ()
    """Token counters and the estimate counted in each, corrected by the actual usage."""
    lease_s: float = 900.0
    """How long slots and the reservation outlive a holder that never gives them back (a
    gateway killed mid-request): no shorter than the longest the request may run."""
    outage_policy: Literal["fail-open", "fail-closed"] | None = None
    """The tenant's own choice while the shared state is unreachable; None: the gateway's."""


@dataclass(frozen=True, slots=True)
class Refusal:
    name: str
    scope: str
    limit: int | Decimal
    retry_after_s: float
    spent: int | None = None
    """Budget refusals: the month's spend (nano-dollars)."""
    reserved: int | None = None
    """Budget refusals: what requests in flight have reserved (nano-dollars)."""
    needed: int | None = None
    """Budget refusals: what this request would have reserved (nano-dollars)."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a finished request adds: actual tokens, spend, and a usage row."""

    request_id: str
    """The server-made id its slots and reservation were taken under."""
    at: float
    """When the request finished (epoch seconds)."""
    tenant: str
    day: str
    month: str
    model: str
    user: str
    input_tokens: int
    output_tokens: int
    cost_nano: int


@dataclass
class UsageRow:
    model: str
    user: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0


@dataclass
class TenantUsage:
    """A tenant's usage over some days: rows by (model, user)."""

    rows: dict[tuple[str, str], UsageRow] = field(default_factory=dict)


STAT_FIELDS = ("n", "m", "d", "mm", "dd", "md")


@dataclass(frozen=True, slots=True)
class TrialStats:
    """One experiment variant's statistics: distinct units, and per metric the sums over
    units of each unit's numerator m and denominator d (see experiments.stats.RatioSums)."""

    units: int = 0
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    """metric → {n, m, d, mm, dd, md}."""


class StateUnavailable(Exception):
    """The shared state cannot be reached (Redis down)."""


class StateStore(Protocol):
    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        """Check every limit of ``plan``; if all pass, count them all. Atomic."""

    async def release(self, plan: Plan, request_id: str) -> None:
        """Give back the concurrency slots and the budget reservation ``admit`` took."""

    async def settle(self, plan: Plan, settlement: Settlement) -> int:
        """Correct token estimates, add spend and usage; return the month's spend (nano)."""

    async def finish(self, plan: Plan, settlement: Settlement) -> int:
        """``release`` then ``settle``, at once: what every finished request does."""

    async def claim_event(self, name: str, ttl_s: int) -> bool:
        """True for the first caller of ``name`` among every replica, False after."""

    async def record_trial(
        self, key: str, unit: str, increments: Mapping[str, tuple[float, float]], ttl_s: int
    ) -> None:
        """Add one unit's numerator and denominator increments per metric to the variant's
        statistics at ``key``, counting the unit once."""

    async def trial_stats(self, key: str) -> TrialStats:
        """The statistics ``record_trial`` kept at ``key``."""

    async def remember(self, name: str, value: bytes, ttl_s: int) -> None:
        """Keep ``value`` under ``name`` for ``ttl_s`` seconds."""

    async def take(self, name: str) -> bytes | None:
        """What ``remember`` kept under ``name``, once: it is gone after."""

    async def recall(self, name: str) -> bytes | None:
        """What ``remember`` kept under ``name``, left in place until it expires."""

    async def spend(self, tenant: str, month: str) -> int:
        """The tenant's spend this month, in nano-dollars."""

    async def usage(self, tenant: str, days: list[str]) -> TenantUsage:
        """The tenant's usage rows summed over ``days``."""

    async def close(self) -> None: ...
