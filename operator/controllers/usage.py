"""Tenant status.usage: this month's requests, tokens and spend, from the shared state.

Only when the gateways keep their state in Redis (LLMROUTER_STATE_URL): gateways keeping
it in memory each know only their own share, and nothing is written.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import kopf

from llmrouter.gateway.periods import Window, period
from llmrouter.gateway.state import from_nano
from llmrouter.gateway.state.redis import RedisStore
from llmrouter.operator import settings
from llmrouter.operator.api.common import GROUP, VERSION


def month_days(now: float) -> tuple[str, list[str]]:
    month = period(Window.MONTH, now).id
    first = datetime.date.fromisoformat(f"{month}-01")
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    days = [
        (first + datetime.timedelta(days=i)).isoformat() for i in range((today - first).days + 1)
    ]
    return month, days


@kopf.on.startup()
def open_state(memo: kopf.Memo, **_: Any) -> None:
    url = settings.current().gateway_state_url
    memo["usage_state"] = RedisStore(url) if url else None


@kopf.timer(
    GROUP, VERSION, "tenants", interval=settings.current().usage_interval_s, initial_delay=1
)
async def refresh_usage(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    state: RedisStore | None = memo.get("usage_state")
    if state is None:
        return
    tenant_id = f"{body.metadata['namespace']}/{body.metadata['name']}"
    now = datetime.datetime.now(datetime.UTC).timestamp()
    month, days = month_days(now)
    found = await state.usage(tenant_id, days)
    spend = from_nano(await state.spend(tenant_id, month))
    rows = found.rows.values()
    usage = {
        "period": month,
        "requests": sum(r.requests for r in rows),
        "inputTokens": sum(r.input_tokens for r in rows),
        "outputTokens": sum(r.output_tokens for r in rows),
        "costUSD": str(spend),
    }
    if body.status.get("usage") != usage:
        patch.status["usage"] = usage
    budget = (body.spec.get("budget") or {}).get("monthlyUSD")
    if budget is not None:
        remaining = str(max(Decimal(budget) - spend, Decimal(0)))
        if body.status.get("budgetRemainingUSD") != remaining:
            patch.status["budgetRemainingUSD"] = remaining
