"""What each request of an experiment adds to its variant's statistics: per metric, a
numerator and a denominator for the request's unit (see stats.RatioSums). No I/O here
beyond the state store; no per-request rows are kept, only per-unit sums."""

from __future__ import annotations

import orjson

from llmrouter.gateway.experiments.assignment import TRIAL_TTL_S, Trial
from llmrouter.gateway.state import StateStore
from llmrouter.gateway.usage import RequestRecord

FEEDBACK_TTL_S = 7 * 86400
"""How long after its answer a request may receive feedback."""


def request_increments(record: RequestRecord) -> dict[str, tuple[float, float]]:
    """Numerator and denominator increments of one finished request, per metric. Errors
    count only what the gateway or the model server caused (5xx), never the client's own
    4xx; latency, TTFT and output tokens only of answered requests."""
    answered = record.status < 300
    out = {
        "errorRate": (1.0 if record.status >= 500 else 0.0, 1.0),
        "costPerRequest": (float(record.cost_usd), 1.0),
    }
    if answered:
        out["latency"] = (record.duration_s, 1.0)
        out["outputTokens"] = (float(record.usage.output_tokens), 1.0)
        if record.ttft_s is not None:
            out["ttft"] = (record.ttft_s, 1.0)
    return out


async def measure(state: StateStore, trial: Trial, record: RequestRecord) -> None:
    await state.record_trial(trial.stats_key, trial.unit, request_increments(record), TRIAL_TTL_S)
    ticket = {"key": trial.stats_key, "unit": trial.unit}
    name = feedback_name(record.tenant, record.request_id)
    await state.remember(name, orjson.dumps(ticket), FEEDBACK_TTL_S)


def feedback_name(tenant: str, request_id: str) -> str:
    """Scoped by tenant: another tenant's request id is simply not found."""
    return f"feedback:{tenant}:{request_id}"


async def take_ticket(state: StateStore, tenant: str, request_id: str) -> dict[str, str] | None:
    """The experiment variant and unit of ``tenant``'s request ``request_id``, once."""
    raw = await state.take(feedback_name(tenant, request_id))
    if raw is None:
        return None
    ticket: dict[str, str] = orjson.loads(raw)
    return ticket


async def add_feedback(state: StateStore, ticket: dict[str, str], score: float) -> None:
    await state.record_trial(ticket["key"], ticket["unit"], {"feedback": (score, 1.0)}, TRIAL_TTL_S)
