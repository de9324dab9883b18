"""Budget warnings: reported once per tenant, month and level when spend crosses them,
across every worker and replica (the shared state says who reports)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from llmrouter.gateway.config import TenantPolicy
from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.state import StateStore, StateUnavailable, from_nano

logger = logging.getLogger(__name__)


EVENT_TTL_S = 40 * 86400
"""Longer than a month: the claim of a month's event outlives the month."""


class BudgetMonitor:
    def __init__(self, metrics: GatewayMetrics, state: StateStore) -> None:
        self._metrics = metrics
        self._state = state
        self._reported: set[tuple[str, str, str]] = set()
        """Events this process has seen claimed (by itself or another): asked once."""
        self.on_event: Callable[[TenantPolicy, str, str, Decimal], None] | None = None
        """Told (tenant, month, level, spent) of each event this process reports: the
        audit log's budget decisions."""

    async def observe(self, tenant: TenantPolicy, month: str, spend_nano: int) -> None:
        budget = tenant.budget
        if budget is None:
            return
        spent = from_nano(spend_nano)
        self._metrics.child(self._metrics.budget_spend, tenant.id).set(float(spent))
        self._metrics.child(self._metrics.budget_limit, tenant.id).set(float(budget.monthly_usd))
        if spent >= budget.monthly_usd:
            level = "exceeded"
        elif spent * 100 >= budget.monthly_usd * budget.warn_at_percent:
            level = "warning"
        else:
            return
        if (tenant.id, month, level) in self._reported:
            return
        try:
            first = await self._state.claim_event(
                f"budget:{tenant.id}:{month}:{level}", EVENT_TTL_S
            )
        except StateUnavailable:
            return  # asked again with the next request's spend, once the state is back
        self._reported.add((tenant.id, month, level))
        if not first:
            return
        self._metrics.budget_events.labels(tenant.id, level).inc()
        if self.on_event is not None:
            self.on_event(tenant, month, level, spent)
        action = "blocking requests" if budget.block else "alert only, not blocking"
        if level == "exceeded":
            logger.warning(
                "tenant %s spent %s of its %s USD budget for %s (%s)",
                tenant.id,
                spent,
                budget.monthly_usd,
                month,
                action,
            )
        else:
            logger.warning(
                "tenant %s spent %s of its %s USD budget for %s: past %d%%",
                tenant.id,
                spent,
                budget.monthly_usd,
                month,
                budget.warn_at_percent,
            )
