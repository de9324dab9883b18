"""Fault injection: failing, hanging and vanishing model servers, and what clients get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.fake_upstream import FakeUpstream, UpstreamThread
from tests.support.serve import free_port, serving

KEY = "llmr_resilience_key_000000000001"
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: multi}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}, parallel: 1}
  timeouts: {connect: 500ms, firstToken: 500ms, total: 2s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: primary}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  fallbacks: [forbidden, backup]
  timeouts: {connect: 500ms, firstToken: 500ms, total: 2s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: backup}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: forbidden}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: t}
spec:
  models: [multi, primary, backup]
  routing:
    rules:
      - match: {taskType: coding}
        model: backup
  apiKeys: [{name: admin, role: admin}]
"""


@pytest.fixture
def servers() -> Iterator[list[FakeUpstream]]:
    threads = [UpstreamThread() for _ in range(4)]
    fakes = [t.start() for t in threads]
    yield fakes
    for t in threads:
        t.stop()


@pytest.fixture
async def gateway(
    tmp_path: Path, servers: list[FakeUpstream], metrics_port: int
) -> AsyncIterator[str]:
    a, b, c, d = servers
    (tmp_path / "r.yaml").write_text(RESOURCES)
    (tmp_path / "keys.yaml").write_text(f"t:\n  admin: {KEY}\n")
    endpoints = {
        "multi": [a.url, b.url],
        "primary": [c.url],
        "backup": [d.url],
        "forbidden": [d.url],
    }
    source = StandaloneSource([tmp_path / "r.yaml"], tmp_path / "keys.yaml", endpoints)
    settings = GatewaySettings(
        breaker_failures=2,
        breaker_cooldown_s=1.5,
        max_attempts=3,
        poll_interval_s=0.2,
        metrics_port=metrics_port,
    )
    app = create_app(settings, ConfigStore(source.load()))
    async with serving(app) as url:
        yield url


def client(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=10)


async def chat(gateway: str, model: str = "multi", **extra: Any) -> Any:
    return await client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **extra
    )


async def admin_endpoints(gateway: str) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway}/admin/endpoints", headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        assert resp.status == 200
        return {e["url"]: e for e in (await resp.json())["endpoints"]}


async def test_a_500_is_retried_on_another_endpoint(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.status = 500
    for _ in range(4):
        raw = await chat(gateway)
        assert raw.parse().choices[0].message.content == "hello from upstream"
    assert len(b.seen) == 4
    assert 1 <= len(a.seen) <= 2  # tried until its breaker opened, then left alone


async def test_breaker_opens_at_its_threshold_and_closes_after_a_good_probe(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.status = 500
    b.behaviour.delay_s = 0.05  # so the choice by load does not always avoid a
    while len(a.seen) < 2:
        await chat(gateway)
    state = (await admin_endpoints(gateway))[a.url]
    assert (state["state"], state["consecutive_failures"]) == ("open", 2)
    seen_while_open = len(a.seen)
    for _ in range(3):
        await chat(gateway)
    assert len(a.seen) == seen_while_open  # open: no traffic
    a.behaviour.status = 200
    await asyncio.sleep(1.6)  # the cooldown passes; the next request probes a
    await chat(gateway)
    assert len(a.seen) == seen_while_open + 1
    assert (await admin_endpoints(gateway))[a.url]["state"] == "closed"


async def test_a_failed_probe_opens_the_breaker_again(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a = servers[0]
    a.behaviour.status = 500
    while len(a.seen) < 2:
        await chat(gateway)
    await asyncio.sleep(1.6)
    await chat(gateway)  # the probe fails: straight back to open, b answers
    assert (await admin_endpoints(gateway))[a.url]["state"] == "open"


async def test_a_hung_stream_times_out_at_first_token_and_goes_elsewhere(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.delay_s = b.behaviour.delay_s = 0  # reset
    a.behaviour.chunk_delay_s = 5  # headers come, tokens do not
    for _ in range(2):
        stream = await client(gateway).chat.completions.create(
            model="multi", messages=[{"role": "user", "content": "x"}], stream=True
        )
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert texts == ["tok0 ", "tok1 ", "tok2 "]


async def test_a_hung_non_stream_request_is_a_clear_504(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    for fake in servers[:2]:
        fake.behaviour.delay_s = 5
    with pytest.raises(openai.APIStatusError) as err:
        await chat(gateway)
    assert err.value.status_code == 504
    assert err.value.code == "upstream_timeout"


async def test_an_unreachable_endpoint_is_skipped(
    tmp_path: Path, servers: list[FakeUpstream]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    (tmp_path / "r.yaml").write_text(RESOURCES)
    (tmp_path / "keys.yaml").write_text(f"t:\n  admin: {KEY}\n")
    source = StandaloneSource(
        [tmp_path / "r.yaml"], tmp_path / "keys.yaml", {"multi": [dead, servers[1].url]}
    )
    app = create_app(GatewaySettings(poll_interval_s=0.1), ConfigStore(source.load()))
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    try:
        for _ in range(5):  # connection refused is retried, then the poller marks it down
            assert (await chat(url)).parse().choices
        await asyncio.sleep(0.3)
        state = (await admin_endpoints(url))[dead]
        assert (state["reachable"], state["usable"]) == (False, False)
    finally:
        await server.close()


async def test_a_broken_stream_is_never_retried_after_its_first_byte(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    for fake in (a, b):
        fake.behaviour.chunks = 5
        fake.behaviour.break_stream_after = 2
    stream = await client(gateway).chat.completions.create(
        model="multi", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError, match="upstream failed mid-stream"):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 2
    assert len(a.seen) + len(b.seen) == 1  # one attempt only: the client had bytes


async def test_fallback_to_a_model_the_tenant_may_use(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    c, d = servers[2:]
    c.behaviour.status = 503
    raw = await chat(gateway, "primary")
    assert raw.headers["x-llmrouter-model"] == "backup"
    assert raw.headers["x-llmrouter-route"] == "fallback->backup (upstream_error)"
    assert len(d.seen) == 1  # `forbidden` shares d's server: it was skipped, not tried


async def test_upstream_client_errors_are_not_retried(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.status = b.behaviour.status = 400
    with pytest.raises(openai.BadRequestError):
        await chat(gateway)
    assert len(a.seen) + len(b.seen) == 1


async def test_routing_rule_by_task_type(gateway: str, servers: list[FakeUpstream]) -> None:
    raw = await client(gateway).chat.completions.with_raw_response.create(
        model="multi",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-llmrouter-task-type": "coding"},
    )
    assert raw.headers["x-llmrouter-model"] == "backup"
    assert raw.headers["x-llmrouter-route"] == "rule 0->backup"
    raw = await chat(gateway, metadata={"task_type": "coding"})
    assert raw.headers["x-llmrouter-model"] == "backup"
    raw = await chat(gateway)
    assert (raw.headers["x-llmrouter-model"], raw.headers["x-llmrouter-route"]) == (
        "multi",
        "direct",
    )


async def test_least_loaded_endpoint_takes_the_next_request(
    gateway: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.delay_s = b.behaviour.delay_s = 0.3
    await asyncio.gather(*(chat(gateway) for _ in range(4)))
    # One slot each (parallel: 1): the four requests split two and two, never three on one.
    assert (len(a.seen), len(b.seen)) == (2, 2)
    assert a.peak_in_flight == b.peak_in_flight == 2


async def test_every_request_gets_exactly_one_answer_or_one_clear_error(
    gateway: str, metrics_url: str, servers: list[FakeUpstream]
) -> None:
    a, b = servers[:2]
    a.behaviour.fail_ratio = 0.5
    b.behaviour.fail_ratio = 0.3

    async def one(i: int) -> int:
        body = {
            "model": "multi",
            "messages": [{"role": "user", "content": str(i)}],
            "stream": i % 2 == 0,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gateway}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {KEY}"},
            ) as resp,
        ):
            text = await resp.text()
            if resp.status == 200:
                assert "hello from upstream" in text or "[DONE]" in text
            else:
                assert '"error"' in text
            return resp.status

    statuses = await asyncio.gather(*(one(i) for i in range(60)))
    # 502: every attempt failed; 503: both breakers open at that moment.
    assert set(statuses) <= {200, 502, 503}
    assert statuses.count(200) > 30
    assert len(a.seen) + len(b.seen) <= 3 * 60
    async with aiohttp.ClientSession() as http, http.get(f"{metrics_url}/metrics") as resp:
        metrics = await resp.text()
    accounted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("llmrouter_requests_total{")
    )
    assert accounted == 60  # each request accounted once, whatever its outcome
    # and every attempt let go of its endpoint again
    in_flight = [e["in_flight"] for e in (await admin_endpoints(gateway)).values()]
    assert in_flight and set(in_flight) == {0}
