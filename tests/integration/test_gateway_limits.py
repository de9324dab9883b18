"""Limits, budgets and usage through the gateway's HTTP API, with the openai SDK."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import LOCAL_MODEL
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving

RESOURCES = (
    LOCAL_MODEL
    + """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: limited}
spec:
  models: [local]
  limits: {requestsPerMinute: 3}
  costCenter: {department: rnd, project: bots}
  apiKeys:
    - {name: dev, role: developer}
    - {name: small, role: user, limits: {requestsPerMinute: 1}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: budgeted}
spec:
  models: [local]
  budget: {monthlyUSD: "0.0001", warnAtPercent: 30, onExceeded: Block}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: alerting}
spec:
  models: [local]
  budget: {monthlyUSD: "0.00001", onExceeded: Alert}
  apiKeys: [{name: dev, role: developer}]
"""
)
KEYS = {
    ("limited", "dev"): "llmr_limited_dev_key_0000000001",
    ("limited", "small"): "llmr_limited_small_key_00000001",
    ("budgeted", "dev"): "llmr_budgeted_dev_key_000000001",
    ("alerting", "dev"): "llmr_alerting_dev_key_000000001",
}
COST_PER_CALL = "0.000034"  # the fake upstream's 7 input and 5 output tokens at $2/M, $4/M


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 23, 58, 10, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def url(
    tmp_path: Path, upstream: FakeUpstream, clock: Clock, metrics_port: int
) -> AsyncIterator[str]:
    (tmp_path / "resources.yaml").write_text(RESOURCES)
    keys = tmp_path / "keys.yaml"
    by_tenant: dict[str, dict[str, str]] = {}
    for (tenant, name), key in KEYS.items():
        by_tenant.setdefault(tenant, {})[name] = key
    keys.write_text(yaml.safe_dump(by_tenant))
    source = StandaloneSource([tmp_path / "resources.yaml"], keys, {"local": [upstream.url]})
    settings = GatewaySettings(clock=clock, metrics_port=metrics_port)
    app = create_app(settings, ConfigStore(source.load()))
    async with serving(app) as url:
        yield url


def client(url: str, tenant: str, key: str = "dev") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEYS[(tenant, key)], max_retries=0)


async def chat(c: openai.AsyncOpenAI, max_tokens: int | None = 5) -> None:
    """A chat costing 0.000034 USD; with max_tokens 5 it reserves about 0.00006 (its input
    estimate and 5 output tokens), without it the model's whole context of output."""
    await c.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=openai.omit if max_tokens is None else max_tokens,
    )


async def test_the_nth_request_passes_and_the_next_gets_429(url: str, clock: Clock) -> None:
    c = client(url, "limited")
    for _ in range(3):
        await chat(c)
    with pytest.raises(openai.RateLimitError) as err:
        await chat(c)
    assert err.value.code == "rate_limit_exceeded"
    assert "requestsPerMinute limit of 3 reached for tenant default/limited" in err.value.message
    assert err.value.response.headers["retry-after"] == "50"  # 23:58:10 → 23:59:00
    clock.now += 50
    await chat(c)


async def test_a_key_limit_lower_than_the_tenant_limit(url: str) -> None:
    small = client(url, "limited", "small")
    await chat(small)
    with pytest.raises(openai.RateLimitError) as err:
        await chat(small)
    assert "key default/limited/small" in err.value.message
    await chat(client(url, "limited"))  # the tenant still has room for other keys


async def test_budget_reserves_the_worst_case_and_renews_with_the_month(
    url: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(url, "budgeted")
    with caplog.at_level(logging.WARNING, logger="llmrouter.gateway.budget"):
        await chat(c)  # 0.000034 spent: past the 30% warning
        await chat(c)  # its worst case still fits; 0.000068 spent
    assert "spent 0.000034 of its 0.0001 USD budget for 2026-11: past 30%" in caplog.text
    with pytest.raises(openai.RateLimitError) as err:
        await chat(c)  # 0.000032 left, and this one may cost more than that
    assert err.value.code == "budget_exceeded"
    assert "0.000032 USD is left and this request may cost up to" in err.value.message
    assert "lower max_tokens" in err.value.message
    assert err.value.response.headers["retry-after"] == "110"  # until 2026-12-01T00:00:00Z
    clock.now += 110
    await chat(c)


async def test_a_request_without_max_tokens_reserves_the_models_output_cap(
    url: str, upstream: FakeUpstream
) -> None:
    c = client(url, "budgeted")
    with pytest.raises(openai.RateLimitError) as err:
        await chat(c, max_tokens=None)  # 4096 tokens of output at $4/M: 0.016 USD
    assert err.value.code == "budget_exceeded"
    assert "may cost up to 0.0164" in err.value.message
    assert upstream.seen == []
    await chat(c, max_tokens=10)
    assert upstream.seen[-1].body["max_tokens"] == 10


async def test_the_model_cap_is_sent_upstream_and_bounds_what_a_client_asks(
    url: str, upstream: FakeUpstream
) -> None:
    c = client(url, "limited")
    await chat(c, max_tokens=None)
    assert upstream.seen[-1].body["max_tokens"] == 4096  # the model's contextSize
    await chat(c, max_tokens=100_000)
    assert upstream.seen[-1].body["max_tokens"] == 4096
    await c.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=7
    )
    assert upstream.seen[-1].body["max_completion_tokens"] == 7
    assert "max_tokens" not in upstream.seen[-1].body


@pytest.mark.parametrize("value", [0, -3, "ten", 1.5, True])
async def test_a_malformed_max_tokens_is_refused(url: str, value: object) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "local",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": value,
            },
            headers={"Authorization": f"Bearer {KEYS['limited', 'dev']}"},
        )
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["param"] == "max_tokens"
    assert "must be a positive integer" in body["error"]["message"]


async def test_alert_only_budget_reports_but_serves(
    url: str, metrics_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(url, "alerting")
    with caplog.at_level(logging.WARNING, logger="llmrouter.gateway.budget"):
        for _ in range(3):
            await chat(c)
    assert "(alert only, not blocking)" in caplog.text
    async with aiohttp.ClientSession() as http, http.get(f"{metrics_url}/metrics") as resp:
        text = await resp.text()
    assert 'llmrouter_budget_events_total{level="exceeded",tenant="default/alerting"} 1.0' in text


async def test_usage_report_groups_and_totals(url: str) -> None:
    for key in ("dev", "small"):
        await chat(client(url, "limited", key))
    headers = {"Authorization": f"Bearer {KEYS[('limited', 'dev')]}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{url}/admin/usage", params={"groupBy": "user"}) as resp:
            assert resp.status == 200
            report = await resp.json()
        assert report["tenant"] == "default/limited"
        assert [g["user"] for g in report["groups"]] == ["key:dev", "key:small"]
        assert report["total"] == {
            "requests": 2,
            "input_tokens": 14,
            "output_tokens": 10,
            "cost_usd": "0.000068",
        }
        async with http.get(f"{url}/admin/usage", params={"groupBy": "department"}) as resp:
            assert (await resp.json())["groups"][0]["department"] == "rnd"
        for params, status in [
            ({"groupBy": "colour"}, 400),
            ({"from": "yesterday"}, 400),
            ({"from": "2026-11-30", "to": "2026-11-01"}, 400),
            ({"tenant": "default/budgeted"}, 403),
        ]:
            async with http.get(f"{url}/admin/usage", params=params) as resp:
                assert resp.status == status, params
                assert "error" in await resp.json()
    small = {"Authorization": f"Bearer {KEYS[('limited', 'small')]}"}
    async with aiohttp.ClientSession(headers=small) as http, http.get(f"{url}/admin/usage") as resp:
        assert resp.status == 403  # role user lacks usage:read
