"""What a request must pass before it reaches a model: plain functions, no I/O."""

from __future__ import annotations

import math

from llmrouter.gateway.auth import Identity
from llmrouter.gateway.errors import GatewayError
from llmrouter.gateway.periods import Window, period
from llmrouter.gateway.state import (
    BudgetCheck,
    ConcurrencyCheck,
    CounterCheck,
    Plan,
    Refusal,
    from_nano,
    to_nano,
)
from llmrouter.gateway.state import keys as k

BYTES_PER_TOKEN = 4
"""A deliberately simple estimate of input tokens from the body's size."""


class LimitExceeded(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


def estimate_tokens(body_size: int, max_tokens: object) -> int:
    """Input estimated from the body's size, plus the output the client allows."""
    output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    return body_size // BYTES_PER_TOKEN + output


def plan_admission(identity: Identity, estimate: int, now: float) -> Plan:
    """Every check for one request: the tenant's limits, the key's, and the budget."""
    tenant = identity.tenant
    counters: list[CounterCheck] = []
    concurrency: list[ConcurrencyCheck] = []
    token_counters: list[tuple[str, int]] = []
    scopes = [(f"tenant {tenant.id}", tenant.id, tenant.limits)]
    if identity.key_limits is not None:
        key_id = f"{tenant.id}/{identity.key_name}"
        scopes.append((f"key {key_id}", key_id, identity.key_limits))
    minute, day, month = (period(w, now) for w in (Window.MINUTE, Window.DAY, Window.MONTH))
    for scope, scope_id, limits in scopes:
        if limits.requests_per_minute is not None:
            counters.append(
                CounterCheck(
                    "requestsPerMinute",
                    scope,
                    k.counter("rpm", scope_id, minute.id),
                    limits.requests_per_minute,
                    1,
                    minute.ends_at,
                )
            )
        if limits.requests_per_day is not None:
            counters.append(
                CounterCheck(
                    "requestsPerDay",
                    scope,
                    k.counter("rpd", scope_id, day.id),
                    limits.requests_per_day,
                    1,
                    day.ends_at,
                )
            )
        for name, limit, window, label in (
            ("tokensPerMinute", limits.tokens_per_minute, minute, "tpm"),
            ("tokensPerMonth", limits.tokens_per_month, month, "tpmo"),
        ):
            if limit is None:
                continue
            # A request larger than the whole limit still passes in an empty window.
            amount = min(estimate, limit)
            key = k.counter(label, scope_id, window.id)
            counters.append(CounterCheck(name, scope, key, limit, amount, window.ends_at))
            token_counters.append((key, amount))
        if limits.max_concurrent is not None:
            concurrency.append(
                ConcurrencyCheck(scope, k.concurrency(scope_id), limits.max_concurrent)
            )
    budget = None
    if tenant.budget is not None and tenant.budget.block:
        budget = BudgetCheck(
            f"tenant {tenant.id}",
            k.spend(tenant.id, month.id),
            to_nano(tenant.budget.monthly_usd),
            month.ends_at,
        )
    return Plan(tuple(counters), tuple(concurrency), budget, tuple(token_counters))


class PlanMemo:
    """The plans made in the current second, by identity and estimate.

    A plan depends on the time only through the windows it counts in, which change on
    whole seconds: requests of one key in one second with the same estimate share a plan.
    """

    def __init__(self) -> None:
        self._second = -1
        self._plans: dict[tuple[Identity, int], Plan] = {}

    def plan(self, identity: Identity, estimate: int, now: float) -> Plan:
        second = int(now)
        if second != self._second:
            self._plans.clear()
            self._second = second
        plan = self._plans.get((identity, estimate))
        if plan is None:
            plan = self._plans[identity, estimate] = plan_admission(identity, estimate, now)
        return plan


def refusal_error(refusal: Refusal) -> LimitExceeded:
    retry = max(1, math.ceil(refusal.retry_after_s))
    if refusal.name == "budget":
        limit = from_nano(int(refusal.limit))
        message = (
            f"monthly budget of {limit} USD is spent for {refusal.scope}; it renews in {retry} s"
        )
        code = "budget_exceeded"
    elif refusal.name == "maxConcurrent":
        message = (
            f"maxConcurrent limit of {refusal.limit} requests in flight reached for "
            f"{refusal.scope}; retry after {retry} s"
        )
        code = "concurrency_limit_exceeded"
    else:
        message = (
            f"{refusal.name} limit of {refusal.limit} reached for {refusal.scope}; "
            f"retry after {retry} s"
        )
        code = "rate_limit_exceeded"
    return LimitExceeded(message, code=code, headers={"Retry-After": str(retry)})
