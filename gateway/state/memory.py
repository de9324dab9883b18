"""State in this process: the default for a single gateway replica."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmrouter.gateway.state import (
    STAT_FIELDS,
    Plan,
    Refusal,
    Settlement,
    TenantUsage,
    TrialStats,
    UsageRow,
)
from llmrouter.gateway.state import keys as k


@dataclass
class _Trial:
    units: set[str] = field(default_factory=set)
    per_unit: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    sums: dict[str, dict[str, float]] = field(default_factory=dict)


class MemoryStore:
    """Each method runs without awaiting, so on one event loop every call is atomic."""

    SWEEP_EVERY_S = 60.0

    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, float]] = {}  # key → (value, expires_at)
        self._swept_at = 0.0
        self._inflight: dict[str, dict[str, float]] = defaultdict(dict)  # rid → lease end
        self._reserved: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        """tenant → request id → (nano-dollars reserved, lease end)."""
        self._spend: dict[str, int] = defaultdict(int)
        self._usage: dict[str, dict[tuple[str, str], UsageRow]] = defaultdict(dict)
        self._events: set[str] = set()
        self._trials: dict[str, _Trial] = defaultdict(_Trial)
        self._remembered: dict[str, tuple[bytes, float]] = {}

    def _get(self, key: str, now: float) -> int:
        value, expires_at = self._counters.get(key, (0, 0.0))
        return value if expires_at > now else 0

    def _sweep(self, now: float) -> None:
        """Forget windows that have ended, so memory does not grow minute after minute."""
        if now - self._swept_at < self.SWEEP_EVERY_S:
            return
        self._swept_at = now
        for key in [key for key, (_, end) in self._counters.items() if end <= now]:
            del self._counters[key]

    @staticmethod
    def _expire(leases: dict[str, float], now: float) -> None:
        for rid in [rid for rid, end in leases.items() if end <= now]:
            del leases[rid]

    def reserved(self, tenant: str, now: float) -> int:
        held = self._reserved[tenant]
        for rid in [rid for rid, (_, end) in held.items() if end <= now]:
            del held[rid]
        return sum(amount for amount, _ in held.values())

    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        self._sweep(now)
        for c in plan.counters:
            if self._get(c.key, now) + c.amount > c.limit:
                return Refusal(c.name, c.scope, c.limit, c.ends_at - now)
        for cc in plan.concurrency:
            held = self._inflight[cc.key]
            self._expire(held, now)
            if len(held) >= cc.limit:
                return Refusal("maxConcurrent", cc.scope, cc.limit, 1.0)
        b = plan.budget
        if b is not None:
            spent, reserved = self._spend[b.key], self.reserved(b.tenant, now)
            used = spent + reserved
            if used >= b.limit_nano or used + b.reserve_nano > b.limit_nano:
                return Refusal(
                    "budget",
                    b.scope,
                    b.limit_nano,
                    b.ends_at - now,
                    spent,
                    reserved,
                    b.reserve_nano,
                )
        lease_end = now + plan.lease_s
        for c in plan.counters:
            self._counters[c.key] = (self._get(c.key, now) + c.amount, c.ends_at)
        for cc in plan.concurrency:
            self._inflight[cc.key][request_id] = lease_end
        if b is not None and b.reserve_nano:
            self._reserved[b.tenant][request_id] = (b.reserve_nano, lease_end)
        return None

    async def release(self, plan: Plan, request_id: str) -> None:
        for cc in plan.concurrency:
            self._inflight[cc.key].pop(request_id, None)
        if plan.budget is not None:
            self._reserved[plan.budget.tenant].pop(request_id, None)

    async def settle(self, plan: Plan, s: Settlement) -> int:
        now = s.at
        actual = s.input_tokens + s.output_tokens
        for key, estimate in plan.token_counters:
            value, expires_at = self._counters.get(key, (0, 0.0))
            if expires_at > now:  # a window that has passed needs no correction
                self._counters[key] = (value + actual - estimate, expires_at)
        spend_key = k.spend(s.tenant, s.month)
        self._spend[spend_key] += s.cost_nano
        rows = self._usage[k.usage(s.tenant, s.day)]
        row = rows.setdefault((s.model, s.user), UsageRow(s.model, s.user))
        row.requests += 1
        row.input_tokens += s.input_tokens
        row.output_tokens += s.output_tokens
        row.cost_nano += s.cost_nano
        return self._spend[spend_key]

    async def finish(self, plan: Plan, s: Settlement) -> int:
        await self.release(plan, s.request_id)
        return await self.settle(plan, s)

    async def claim_event(self, name: str, ttl_s: int) -> bool:
        if name in self._events:
            return False
        self._events.add(name)
        return True

    async def record_trial(
        self, key: str, unit: str, increments: Mapping[str, tuple[float, float]], ttl_s: int
    ) -> None:
        trial = self._trials[key]
        trial.units.add(unit)
        for metric, (dm, dd) in increments.items():
            om, od = trial.per_unit.get((unit, metric), (0.0, 0.0))
            nm, nd = om + dm, od + dd
            trial.per_unit[unit, metric] = (nm, nd)
            sums = trial.sums.setdefault(metric, dict.fromkeys(STAT_FIELDS, 0.0))
            if od == 0 and nd > 0:
                sums["n"] += 1
            sums["m"] += dm
            sums["d"] += dd
            sums["mm"] += nm * nm - om * om
            sums["dd"] += nd * nd - od * od
            sums["md"] += nm * nd - om * od

    async def trial_stats(self, key: str) -> TrialStats:
        trial = self._trials.get(key)
        if trial is None:
            return TrialStats()
        return TrialStats(len(trial.units), {m: dict(v) for m, v in trial.sums.items()})

    async def remember(self, name: str, value: bytes, ttl_s: int) -> None:
        now = time.time()
        if len(self._remembered) > 100_000:  # forget what has expired before growing on
            self._remembered = {k: v for k, v in self._remembered.items() if v[1] > now}
        self._remembered[name] = (value, now + ttl_s)

    async def take(self, name: str) -> bytes | None:
        value, until = self._remembered.pop(name, (None, 0.0))
        return value if until > time.time() else None

    async def recall(self, name: str) -> bytes | None:
        value, until = self._remembered.get(name, (None, 0.0))
        return value if until > time.time() else None

    async def spend(self, tenant: str, month: str) -> int:
        return self._spend.get(k.spend(tenant, month), 0)

    def seed_spend(self, spend_key: str, spend_nano: int) -> None:
        """Start from a spend known elsewhere (the shared state's, before an outage)."""
        self._spend[spend_key] = max(self._spend[spend_key], spend_nano)

    async def usage(self, tenant: str, days: list[str]) -> TenantUsage:
        out = TenantUsage()
        for day in days:
            for key, row in self._usage.get(k.usage(tenant, day), {}).items():
                total = out.rows.setdefault(key, UsageRow(row.model, row.user))
                total.requests += row.requests
                total.input_tokens += row.input_tokens
                total.output_tokens += row.output_tokens
                total.cost_nano += row.cost_nano
        return out

    async def close(self) -> None:
        pass
