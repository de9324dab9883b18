"""Redis with an outage policy.

``fail-open`` (the default): while Redis is unreachable, each replica admits with a limiter
of its own (per-minute, per-day and concurrency limits hold per replica; monthly tokens and
budget count only what this replica saw during the outage), and keeps every finished
request's usage in memory until Redis is back, then writes it. ``fail-closed``: while
Redis is unreachable, requests are refused with 503; usage is still kept and written later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Literal

from llmrouter.gateway.state import (
    Plan,
    Refusal,
    Settlement,
    StateUnavailable,
    TenantUsage,
)
from llmrouter.gateway.state.memory import MemoryStore
from llmrouter.gateway.state.redis import RedisStore

logger = logging.getLogger(__name__)

FailurePolicy = Literal["fail-open", "fail-closed"]


class ResilientStore:
    def __init__(
        self, primary: RedisStore, policy: FailurePolicy = "fail-open", retry_s: float = 1.0
    ) -> None:
        self.primary = primary
        self.policy = policy
        self._retry_s = retry_s
        self._local = MemoryStore()
        self._local_ids: set[str] = set()
        self._pending: deque[tuple[Plan, Settlement]] = deque()
        self._down_since: float | None = None
        self._recovery: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def pending(self) -> int:
        """Finished requests whose usage waits for Redis."""
        return len(self._pending)

    def _went_down(self, exc: StateUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.error("shared state unavailable (%s); policy %s", exc, self.policy)
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            try:
                await self.primary.ping()
                await self._flush()
            except StateUnavailable:
                continue
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            self._down_since = None
            logger.warning("shared state back after %.1f s; pending usage written", down_for)
            return

    async def _flush(self) -> None:
        while self._pending:
            plan, settlement = self._pending[0]
            await self.primary.settle(plan, settlement)
            self._pending.popleft()

    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        if self.available:
            try:
                return await self.primary.admit(plan, request_id, now)
            except StateUnavailable as exc:
                self._went_down(exc)
        if self.policy == "fail-closed":
            raise StateUnavailable("shared state unavailable")
        self._local_ids.add(request_id)
        return await self._local.admit(plan, request_id, now)

    async def release(self, plan: Plan, request_id: str) -> None:
        if request_id in self._local_ids:
            self._local_ids.discard(request_id)
            await self._local.release(plan, request_id)
            return
        try:
            await self.primary.release(plan, request_id)
        except StateUnavailable as exc:
            self._went_down(exc)  # the slot's lease frees it when Redis is back

    async def settle(self, plan: Plan, settlement: Settlement) -> int:
        if self.available:
            try:
                return await self.primary.settle(plan, settlement)
            except StateUnavailable as exc:
                self._went_down(exc)
        self._pending.append((plan, settlement))
        return await self._local.settle(plan, settlement)

    async def finish(self, plan: Plan, request_id: str, settlement: Settlement) -> int:
        if request_id in self._local_ids or not self.available:
            await self.release(plan, request_id)
            return await self.settle(plan, settlement)
        try:
            return await self.primary.finish(plan, request_id, settlement)
        except StateUnavailable as exc:
            self._went_down(exc)  # the slot's lease frees it when Redis is back
        self._pending.append((plan, settlement))
        return await self._local.settle(plan, settlement)

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
            logger.error(
                "shutting down with %d requests' usage not written to Redis", len(self._pending)
            )
        await self.primary.close()
