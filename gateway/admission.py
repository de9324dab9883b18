"""What a request must pass before it reaches a model: plain functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmrouter.gateway.auth import Identity
from llmrouter.gateway.config import ModelRoute
from llmrouter.gateway.errors import GatewayError
from llmrouter.gateway.openai_request import ModelRequest, output_cap
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


LEASE_MARGIN_S = 5.0
"""How long a slot or reservation outlives the longest its request may run (the model's
``total`` timeout, which bounds streams too): time for the accounting after the answer."""


@dataclass(frozen=True, slots=True)
class Ask:
    """The most one request may use, reserved at admission until it settles."""

    input_tokens: int
    """Estimated from the body's size: never less than the prompt's tokens in practice."""
    tokens: int
    """Input estimate plus the output cap: what token limits count."""
    cost_nano: int = 0
    """Worst-case cost: the input estimate and the output cap at the dearest model the
    request may be answered by (itself or a fallback)."""
    lease_s: float = 900.0


def input_estimate(body_size: int) -> int:
    return body_size // BYTES_PER_TOKEN


def ask_for(req: ModelRequest, chain: Sequence[ModelRoute]) -> Ask:
    """What ``req`` may use on the model ``chain[0]`` or any of its fallbacks."""
    estimate = input_estimate(len(req.raw))
    tokens = cost = 0
    lease = 0.0
    for route in chain:
        cap = output_cap(req, route) or 0
        tokens = max(tokens, estimate + cap)
        input_price, output_price = route.pricing.nano_per_million
        cost = max(cost, -(-(estimate * input_price + cap * output_price) // 1_000_000))
        lease = max(lease, route.timeouts.total_s)
    return Ask(estimate, tokens, cost, lease + LEASE_MARGIN_S)


def plan_admission(identity: Identity, ask: Ask, now: float) -> Plan:
    """Every check for one request: the tenant's limits, the key's, and the budget."""
    estimate = ask.tokens
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
            tenant.id,
            to_nano(tenant.budget.monthly_usd),
            month.ends_at,
            ask.cost_nano,
        )
    return Plan(
        tuple(counters),
        tuple(concurrency),
        budget,
        tuple(token_counters),
        ask.lease_s,
        tenant.state_outage_policy,
    )


class PlanMemo:
    """The plans made in the current second, by identity and ask.

    A plan depends on the time only through the windows it counts in, which change on
    whole seconds: requests of one key in one second with the same ask share a plan.
    """

    def __init__(self) -> None:
        self._second = -1
        self._plans: dict[tuple[Identity, Ask], Plan] = {}

    def plan(self, identity: Identity, ask: Ask, now: float) -> Plan:
        second = int(now)
        if second != self._second:
            self._plans.clear()
            self._second = second
        plan = self._plans.get((identity, ask))
        if plan is None:
            plan = self._plans[identity, ask] = plan_admission(identity, ask, now)
        return plan


def refusal_error(refusal: Refusal) -> LimitExceeded:
    retry = max(1, math.ceil(refusal.retry_after_s))
    if refusal.name == "budget":
        message, retry = _budget_message(refusal, retry)
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


def _budget_message(refusal: Refusal, renews_in: int) -> tuple[str, int]:
    limit = int(refusal.limit)
    spent, reserved, needed = refusal.spent or 0, refusal.reserved or 0, refusal.needed or 0
    whose = f"monthly budget of {from_nano(limit)} USD for {refusal.scope}"
    if spent >= limit:
        return f"{whose} is spent; it renews in {renews_in} s", renews_in
    left = from_nano(limit - spent)
    if spent + needed <= limit:
        # It fits once the requests in flight have settled what they actually cost.
        return (
            f"{whose}: {left} USD is left, {from_nano(reserved)} USD of it reserved by "
            f"requests in flight; this request may cost up to {from_nano(needed)} USD; "
            "retry after 1 s",
            1,
        )
    return (
        f"{whose}: {left} USD is left and this request may cost up to {from_nano(needed)} USD "
        f"(its input and max_tokens at the model's prices); lower max_tokens or wait for the "
        f"budget to renew in {renews_in} s",
        renews_in,
    )
