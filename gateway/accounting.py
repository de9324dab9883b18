"""What a finished model request is charged, and where that is recorded.

A request is charged the model server's own usage report. Without one (the client cut the
stream, the stream broke, the server never reports usage) it is charged what the gateway
counted: the input estimate admission reserved for, and the output that reached the client.
Nothing is free once a model server has started answering, and settlement swaps the
reservation for the charge, never for less than was counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web

from llmrouter.gateway.admission import Ask
from llmrouter.gateway.audit_events import request_done
from llmrouter.gateway.config import ModelRoute
from llmrouter.gateway.experiments.assignment import Trial
from llmrouter.gateway.experiments.measurement import measure
from llmrouter.gateway.keys import (
    BUDGETS,
    CONFIG,
    IDENTITY,
    METRICS,
    REQUEST_ID,
    SETTINGS,
    STATE,
)
from llmrouter.gateway.openai_request import ModelRequest
from llmrouter.gateway.periods import day_id, month_id
from llmrouter.gateway.state import Plan, Settlement, from_nano, to_nano
from llmrouter.gateway.usage import RequestRecord, Usage

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    route: ModelRoute
    steps: list[str] = field(default_factory=list)
    status: int = 200
    usage: Usage | None = None
    """The model server's own usage report, when it sent one."""
    ttft_s: float | None = None
    attempts: int = 0
    committed: bool = False
    """The first byte went to the client: no more retries."""
    answered: bool = False
    """A model server's answer (whole, or its first event) reached the gateway."""
    output_events: int = 0
    """Content events relayed to the client; one token each, at the least."""
    output_estimate: int = 0
    """Output tokens counted in a whole answer that came without usage."""
    cache: str | None = None
    """``hit`` or ``miss`` for a cacheable request."""
    trial: Trial | None = None


def charge(outcome: Outcome, ask: Ask) -> tuple[Usage, bool]:
    """The usage a request is charged, and whether the gateway counted it itself."""
    if outcome.usage is not None:
        return outcome.usage, False
    if not outcome.answered:
        return Usage(), False  # no model server produced anything
    output = max(outcome.output_events, outcome.output_estimate)
    return Usage(ask.input_tokens, output), True


async def account(
    request: web.Request,
    req: ModelRequest,
    ask: Ask,
    plan: Plan,
    outcome: Outcome,
    duration_s: float,
) -> None:
    app = request.app
    identity = request[IDENTITY]
    route = outcome.route
    usage, counted = charge(outcome, ask)
    cost = usage.cost(route.pricing)
    cost_nano = to_nano(cost)
    now = app[SETTINGS].clock()
    settlement = Settlement(
        request_id=request[REQUEST_ID],
        at=now,
        tenant=identity.tenant.id,
        day=day_id(now),
        month=month_id(now),
        model=route.name,
        user=identity.user,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_nano=cost_nano,
    )
    metrics = app[METRICS]
    if counted:
        metrics.counted_usage.labels(identity.tenant.id, route.name).inc()
    if plan.budget is not None and cost_nano > plan.budget.reserve_nano:
        metrics.overshoot.labels(identity.tenant.id).inc(
            float(from_nano(cost_nano - plan.budget.reserve_nano))
        )
    spend = await app[STATE].finish(plan, settlement)
    await app[BUDGETS].observe(identity.tenant, settlement.month, spend)
    record = RequestRecord(
        request_id=request[REQUEST_ID],
        tenant=identity.tenant.id,
        key_name=identity.key_name,
        model=route.name,
        endpoint=req.operation.label,
        status=outcome.status,
        usage=usage,
        cost_usd=cost,
        duration_s=duration_s,
        ttft_s=outcome.ttft_s,
        stream=req.stream,
    )
    metrics.observe(record)
    metrics.slo.observe(request[CONFIG].slos, record, now)
    request_done(app, identity, record, outcome.steps, req.body)
    if outcome.trial is not None and outcome.trial.measured:
        await measure(app[STATE], outcome.trial, record)
    if app[SETTINGS].access_log:
        logger.info(
            "request %s tenant=%s user=%s model=%s route=%r endpoint=%s status=%d "
            "attempts=%d in=%d out=%d%s cost=%s duration=%.3fs",
            record.request_id,
            record.tenant,
            identity.user,
            record.model,
            "; ".join(outcome.steps),
            record.endpoint,
            record.status,
            outcome.attempts,
            usage.input_tokens,
            usage.output_tokens,
            " (counted)" if counted else "",
            record.cost_usd,
            duration_s,
        )
