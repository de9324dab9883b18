"""SLAPolicy compliance from the gateways' own counts, where no Prometheus is configured:
each gateway pod's ``/slo-counts`` (on its metrics port), summed.

An approximation: each pod counts since it started (a restarted pod forgets), and a pod
with several worker processes answers with the counts of the worker that takes the call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from llmrouter.gateway.slo_window import SLOCounts, Snapshot
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.compile_slos import compile_slos


class GatewayCountsError(RuntimeError):
    """No gateway pod answered."""


async def _fetch(client: httpx.AsyncClient, url: str) -> Snapshot | None:
    try:
        response = await client.get(f"{url.rstrip('/')}/slo-counts")
        response.raise_for_status()
        found: Snapshot = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return found


async def gateway_objectives(
    urls: list[str], policy: SLAPolicy, timeout_s: float = 2, now: float | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Every objective's status from the summed counts, and how many pods answered."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        found = await asyncio.gather(*(_fetch(client, u) for u in urls))
    snapshots = [s for s in found if s is not None]
    if not snapshots:
        raise GatewayCountsError(f"no gateway answered of {len(urls)}: {', '.join(urls)}")
    [(policy_id, slo)] = compile_slos([policy]).items()
    counts = SLOCounts.merged(snapshots)
    return counts.report(policy_id, slo, time.time() if now is None else now), len(snapshots)
