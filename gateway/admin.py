"""The admin API: usage and chargeback, gated by role."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from llmrouter.gateway.errors import InvalidRequest, PermissionDenied
from llmrouter.gateway.keys import CONFIG, ENDPOINTS, IDENTITY, METRICS, SETTINGS, STATE
from llmrouter.gateway.roles import ADMIN_READ, USAGE_READ
from llmrouter.gateway.sli import policy_summary
from llmrouter.gateway.state import UsageRow, from_nano

admin_routes = web.RouteTableDef()

GROUP_BY = ("model", "user", "department", "project")
MAX_DAYS = 400


@dataclass
class Totals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost_nano += row.cost_nano

    def json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": str(from_nano(self.cost_nano)),
        }


def _date(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name!r} must be a date like 2026-11-01", param=name) from None


@admin_routes.get("/admin/usage")
async def usage(request: web.Request) -> web.Response:
    """Requests, tokens and cost of the caller's tenant over whole UTC days."""
    identity = request[IDENTITY]
    identity.require(USAGE_READ)
    tenant = identity.tenant
    query = request.query
    if query.get("tenant", tenant.id) != tenant.id:
        raise PermissionDenied("a key may only read its own tenant's usage")
    group_by = query.get("groupBy", "model")
    if group_by not in GROUP_BY:
        raise InvalidRequest(f"'groupBy' must be one of {', '.join(GROUP_BY)}", param="groupBy")
    today = datetime.fromtimestamp(request.app[SETTINGS].clock(), UTC).date()
    start = _date(query.get("from"), "from", today.replace(day=1))
    end = _date(query.get("to"), "to", today)
    if end < start:
        raise InvalidRequest("'to' is before 'from'", param="to")
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequest(f"at most {MAX_DAYS} days at a time", param="to")
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    found = await request.app[STATE].usage(tenant.id, days)
    groups: dict[str, Totals] = {}
    total = Totals()
    for row in found.rows.values():
        key = {
            "model": row.model,
            "user": row.user,
            "department": tenant.department or "",
            "project": tenant.project or "",
        }[group_by]
        groups.setdefault(key, Totals()).add(row)
        total.add(row)
    return web.json_response(
        {
            "tenant": tenant.id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "groupBy": group_by,
            "groups": [{group_by: name, **t.json()} for name, t in sorted(groups.items())],
            "total": total.json(),
        }
    )


@admin_routes.get("/admin/slo")
async def slo(request: web.Request) -> web.Response:
    """Compliance of the SLAPolicies of the caller's tenant, from this process's own counts
    (an approximation: see llmrouter.gateway.slo_window)."""
    identity = request[IDENTITY]
    identity.require(USAGE_READ)
    now = request.app[SETTINGS].clock()
    counts = request.app[METRICS].slo
    policies = []
    for policy_id, policy in sorted(request[CONFIG].slos.items()):
        if policy.tenant != identity.tenant.id:
            continue  # another tenant's objectives are none of this caller's business
        objectives = counts.report(policy_id, policy, now)
        policies.append(
            {
                "name": policy_id,
                "window": f"{policy.window_days}d",
                **policy_summary(objectives),
                "objectives": objectives,
            }
        )
    return web.json_response(
        {
            "tenant": identity.tenant.id,
            "source": "gateway",
            "approximate": True,
            "evaluatedAt": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "policies": policies,
        }
    )


@admin_routes.get("/admin/endpoints")
async def endpoints(request: web.Request) -> web.Response:
    """The servers of the models the caller's tenant may use: their circuit breakers, load
    and health. Another tenant's models, and where they run, stay out of sight."""
    identity = request[IDENTITY]
    identity.require(ADMIN_READ)
    table = request.app[ENDPOINTS]
    table.sync(request[CONFIG])
    allowed = identity.tenant.models
    now = time.monotonic()
    return web.json_response(
        {"endpoints": [e.snapshot(now) for e in table.all() if e.model in allowed]}
    )
