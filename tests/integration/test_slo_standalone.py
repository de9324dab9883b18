"""`llmrouter serve -f` with SLAPolicy documents: the gateway's own counts, windowed, and
GET /admin/slo for the caller's tenant only, with usage:read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.credentials import EnvCredentials
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.slo_config import SLOObjective, SLOPolicy
from llmrouter.gateway.slo_window import SLOCounts
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.usage import RequestRecord, Usage
from llmrouter.standalone import StandaloneSource
from tests.support.config import (
    ANALYST_KEY,
    DEV_KEY,
    OTHER_TENANT_KEY,
    PROVIDER_TOKEN,
    write_config,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving

POLICIES = """
---
apiVersion: llmrouter.io/v1alpha1
kind: SLAPolicy
metadata: {name: acme}
spec:
  tenant: acme
  models: [local]
  objectives:
    - {name: availability, type: availability, target: "99"}
    - {name: latency, type: latency, percentile: 90, threshold: 100ms}
---
apiVersion: llmrouter.io/v1alpha1
kind: SLAPolicy
metadata: {name: other, namespace: team-b}
spec:
  tenant: other
  objectives: [{name: availability, type: availability, target: "99.9"}]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeUpstream, clock: Clock) -> AsyncIterator[str]:
    resources, keys = write_config(tmp_path, upstream.url)
    (resources / "slapolicies.yaml").write_text(POLICIES)
    source = StandaloneSource([resources], keys, {"local": [upstream.url]})
    credentials = EnvCredentials({"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN})
    app = create_app(GatewaySettings(clock=clock), ConfigStore(source.load()), credentials)
    async with serving(app) as url:
        yield url


async def chat(http: httpx.AsyncClient, url: str, n: int) -> list[int]:
    codes = []
    for _ in range(n):
        r = await http.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {DEV_KEY}"},
            json={"model": "local", "messages": [{"role": "user", "content": "hi"}]},
        )
        codes.append(r.status_code)
    return codes


async def slo(http: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    return await http.get(f"{url}/admin/slo", headers={"Authorization": f"Bearer {key}"})


async def test_admin_slo_reports_the_gateways_own_counts(
    gateway: str, upstream: FakeUpstream, clock: Clock
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        assert await chat(http, gateway, 18) == [200] * 18
        upstream.behaviour.status = 503
        codes = await chat(http, gateway, 2)
        assert all(c >= 500 for c in codes), codes
        body = (await slo(http, gateway, ANALYST_KEY)).json()
        assert body["tenant"] == "default/acme"
        assert body["source"] == "gateway" and body["approximate"] is True
        [policy] = body["policies"]  # team-b/other's policy is not shown to acme
        assert policy["name"] == "default/acme" and policy["window"] == "30d"
        availability, latency = policy["objectives"]
        # 2 failures in 20: 10 % against 1 % allowed.
        assert availability["totalEvents"] == 20 and availability["goodEvents"] == 18
        assert availability["errorBudgetRemaining"] == -9.0
        assert availability["burnRates"]["1h"] == 10.0
        assert availability["state"] == "breached"
        assert policy["compliant"] is False and policy["budget"] == "-900.0%"
        assert latency["totalEvents"] == 20 and latency["state"] in ("ok", "warning")

        # Four hours later the hour is clean, the 30 days still hold the failures.
        clock.now += 4 * 3600
        later = (await slo(http, gateway, ANALYST_KEY)).json()["policies"][0]["objectives"][0]
        assert later["totalEvents"] == 20
        assert "1h" not in later["burnRates"]
        assert later["burnRates"]["6h"] == 10.0


async def test_admin_slo_needs_usage_read_and_shows_only_the_callers_tenant(
    gateway: str,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        other = await slo(http, gateway, OTHER_TENANT_KEY)
        # team-b/other's key (role user) may not read usage at all.
        assert other.status_code == 403
        assert (await http.get(f"{gateway}/admin/slo")).status_code == 401


def record(status: int, duration_s: float, model: str = "m", tenant: str = "t/a") -> RequestRecord:
    return RequestRecord("r", tenant, "k", model, "chat", status, Usage(), Decimal(0), duration_s)


POLICY = SLOPolicy(
    tenant="t/a",
    models=("m",),
    window_days=28,
    objectives=(
        SLOObjective(name="avail", type="availability", objective_percent="99.5"),
        SLOObjective(name="fast", type="latency", objective_percent="90", threshold_s=2.0),
    ),
)


def test_counts_follow_the_rules_definitions_and_windows() -> None:
    counts = SLOCounts()
    slos = {"t/p": POLICY}
    t0 = 1_800_000_000.0
    for status, duration in [(200, 1.0), (200, 2.0), (200, 2.5), (502, 0.1), (429, 9.0)]:
        counts.observe(slos, record(status, duration), t0)
    counts.observe(slos, record(500, 1.0, model="other"), t0)  # not the policy's model
    counts.observe(slos, record(500, 1.0, tenant="t/b"), t0)  # not its tenant
    avail, fast = counts.report("t/p", POLICY, t0)
    # 429 is the tenant's own: left out; 1 of 4 failed against 0.5 % allowed.
    assert (avail["totalEvents"], avail["goodEvents"]) == (4, 3)
    assert avail["errorBudgetRemaining"] == -49.0
    # 2.0 s is within a 2 s threshold (le="2.0"), 2.5 s is not.
    assert (fast["totalEvents"], fast["goodEvents"]) == (4, 3)
    assert fast["errorBudgetRemaining"] == pytest.approx(-1.5)
    # 28 days and a bucket later, nothing is left in the window.
    later = t0 + 28 * 86400 + 300
    counts.observe(slos, record(200, 0.1), later)
    avail, _ = counts.report("t/p", POLICY, later)
    assert avail["totalEvents"] == 1 and avail["state"] == "ok"


def test_no_traffic_is_no_data() -> None:
    reported: list[dict[str, Any]] = SLOCounts().report("t/p", POLICY, 0.0)
    assert [o["state"] for o in reported] == ["noData", "noData"]
