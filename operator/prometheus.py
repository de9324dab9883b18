"""Instant queries against the Prometheus HTTP API (``/api/v1/query``)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import httpx

from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.slo import objective_queries


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or refused the query."""


async def query(client: httpx.AsyncClient, base_url: str, promql: str) -> float | None:
    """The value of a query that yields at most one sample; None when it yields none."""
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        response = await client.get(url, params={"query": promql})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"{url}: {exc}") from exc
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"{url}: HTTP {response.status_code}: {body.get('error', body)}")
    result = body["data"]["result"]
    if body["data"]["resultType"] != "vector" or len(result) > 1:
        raise PrometheusError(f"{url}: expected one sample at most for {promql}")
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


async def objective_values(
    base_url: str, policy: SLAPolicy, timeout_s: float = 10
) -> dict[str, Mapping[str, float | None]]:
    """Every objective's counts and ratios (``llmrouter.operator.compliance`` input)."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        out: dict[str, Mapping[str, float | None]] = {}
        for o in policy.spec.objectives:
            queries = objective_queries(policy, o)
            values = await asyncio.gather(*(query(client, base_url, q) for q in queries.values()))
            out[o.name] = dict(zip(queries, values, strict=True))
        return out
