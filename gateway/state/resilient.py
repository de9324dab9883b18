"""Redis with an outage policy.

``fail-open`` (the default): while Redis is unreachable, each replica admits with a limiter
of its own. Per-minute, per-day and concurrency limits then hold per replica; the budget and
monthly tokens start from the spend this replica last saw in Redis, so a tenant already over
its budget stays blocked, and may be overspent by at most what each replica admits during
the outage. ``fail-closed``: while Redis is unreachable, requests are refused with 503. A
Tenant may choose either for itself.

Either way every finished request's usage is kept (in memory, and in a journal file when
one is configured) until Redis takes it: replayed when Redis answers again or after a
restart, each settlement applied once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Literal

from llmrouter.gateway.state import (
    Plan,
    Refusal,
    Settlement,
    StateUnavailable,
    TenantUsage,
    TrialStats,
)
from llmrouter.gateway.state.journal import Journal, Pending
from llmrouter.gateway.state.memory import MemoryStore
from llmrouter.gateway.state.redis import (
    REPLAY_ADMITTED_HERE,
    REPLAY_ADMITTED_LOCALLY,
    RedisStore,
)

logger = logging.getLogger(__name__)

FailurePolicy = Literal["fail-open", "fail-closed"]


class ResilientStore:
    def __init__(
        self,
        primary: RedisStore,
        policy: FailurePolicy = "fail-open",
        retry_s: float = 1.0,
        journal: Journal | None = None,
    ) -> None:
        self.primary = primary
        self.policy = policy
        self._retry_s = retry_s
        self._journal = journal or Journal(None)
        self._local = MemoryStore()
        self._local_ids: set[str] = set()
        self._pending: deque[Pending] = deque(self._journal.adopt())
        self._down_since: float | None = None
        self._recovery: asyncio.Task[None] | None = None
        if self._pending:
            logger.warning(
                "%d settlements from the usage journal wait for the shared state",
                len(self._pending),
            )

    async def start(self) -> None:
        """Replay what a previous process left, without waiting for a request."""
        if self._pending:
            self._start_recovery()

    @property
    def available(self) -> bool:
        return self._down_since is None and not self._pending

    @property
    def pending(self) -> int:
        """Finished requests whose usage waits for Redis."""
        return len(self._pending)

    def _went_down(self, exc: StateUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.error("shared state unavailable (%s); policy %s", exc, self.policy)
        self._start_recovery()

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        while True:
            try:
                await self.primary.ping()
                await self._flush()
            except StateUnavailable:
                await asyncio.sleep(self._retry_s)
                continue
            if self._down_since is not None:
                down_for = time.monotonic() - self._down_since
                logger.warning("shared state back after %.1f s; pending usage written", down_for)
            self._down_since = None
            return

    async def _flush(self) -> None:
        while self._pending:
            entry = self._pending[0]
            mode = REPLAY_ADMITTED_LOCALLY if entry.admitted_locally else REPLAY_ADMITTED_HERE
            await self.primary.settle(
                entry.plan, entry.settlement, release=not entry.admitted_locally, replay=mode
            )
            self._pending.popleft()
        self._journal.clear()

    def _keep(self, entry: Pending) -> None:
        if len(self._pending) >= self._journal.max_entries:
            # Cannot happen while admissions are refused at the bound (see admit).
            logger.error("usage journal full: request %s not kept", entry.settlement.request_id)
            return
        self._pending.append(entry)
        self._journal.append(entry)

    def _policy(self, plan: Plan) -> FailurePolicy:
        return plan.outage_policy or self.policy

    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        if self.available:
            try:
                return await self.primary.admit(plan, request_id, now)
            except StateUnavailable as exc:
                self._went_down(exc)
        elif self._down_since is None:
            self._start_recovery()  # a journal left by a previous process
        if self._policy(plan) == "fail-closed":
            raise StateUnavailable("shared state unavailable")
        if len(self._pending) >= self._journal.max_entries:
            raise StateUnavailable("shared state unavailable and the usage journal is full")
        if plan.budget is not None:
            seen = self.primary.spend_seen.get(plan.budget.key)
            if seen is not None:
                self._local.seed_spend(plan.budget.key, seen)
        refusal = await self._local.admit(plan, request_id, now)
        if refusal is None:
            self._local_ids.add(request_id)
        return refusal

    async def release(self, plan: Plan, request_id: str) -> None:
        if request_id in self._local_ids:
            self._local_ids.discard(request_id)
            await self._local.release(plan, request_id)
            return
        try:
            await self.primary.release(plan, request_id)
        except StateUnavailable as exc:
            self._went_down(exc)  # the lease frees the slots when Redis is back

    async def settle(self, plan: Plan, settlement: Settlement) -> int:
        return await self._finish(plan, settlement, release=False)

    async def finish(self, plan: Plan, settlement: Settlement) -> int:
        return await self._finish(plan, settlement, release=True)

    async def _finish(self, plan: Plan, s: Settlement, *, release: bool) -> int:
        local = s.request_id in self._local_ids
        if local:
            self._local_ids.discard(s.request_id)
        elif self.available:
            try:
                spend = await self.primary.settle(plan, s, release=release)
            except StateUnavailable as exc:
                self._went_down(exc)
            else:
                return spend
        # Redis cannot take it now: keep it until it can, and count it in the local limiter.
        self._keep(Pending(plan, s, admitted_locally=local))
        if local and release:
            return await self._local.finish(plan, s)
        return await self._local.settle(plan, s)

    async def claim_event(self, name: str, ttl_s: int) -> bool:
        return await self.primary.claim_event(name, ttl_s)

    async def record_trial(
        self, key: str, unit: str, increments: Mapping[str, tuple[float, float]], ttl_s: int
    ) -> None:
        # Experiment statistics are samples, not money: during an outage they are skipped.
        if self.available:
            await self.primary.record_trial(key, unit, increments, ttl_s)

    async def trial_stats(self, key: str) -> TrialStats:
        return await self.primary.trial_stats(key)

    async def remember(self, name: str, value: bytes, ttl_s: int) -> None:
        if self.available:
            await self.primary.remember(name, value, ttl_s)

    async def take(self, name: str) -> bytes | None:
        return await self.primary.take(name)

    async def recall(self, name: str) -> bytes | None:
        return await self.primary.recall(name)

    async def spend(self, tenant: str, month: str) -> int:
        return await self.primary.spend(tenant, month)

    async def usage(self, tenant: str, days: list[str]) -> TenantUsage:
        return await self.primary.usage(tenant, days)

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        try:
            await self._flush()
        except StateUnavailable:
            self._journal.sync()
            where = f"kept in {self._journal.path}" if self._journal.durable else "lost"
            logger.error(
                "shutting down with %d requests' usage not written to Redis (%s)",
                len(self._pending),
                where,
            )
        self._journal.close()
        await self.primary.close()
