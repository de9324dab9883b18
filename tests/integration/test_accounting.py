"""Accounting no client can dodge, as a hostile or merely busy tenant would try it: several
gateway processes on one real Redis, many requests in flight, shared request ids, cut and
broken streams, servers that report no usage, a gateway killed mid-flight, and outages."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import httpx
import pytest
import redis
import yaml

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from tests.support.serve import ServeProcess, serving

# Input is free and output dear, so that a request's reservation (its input estimate at
# $0 and max_tokens 5 at $2000/M) equals its cost (the fake upstream's 5 output tokens):
# a budget of 0.1 USD pays for exactly 10 requests.
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: local}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "0", outputPerMillion: "2000"}
  timeouts: {connect: 1s, firstToken: 5s, total: 3s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: patient}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "0", outputPerMillion: "2000"}
  timeouts: {connect: 1s, firstToken: 10s, total: 8s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: priced}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "1000", outputPerMillion: "2000"}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: budgeted}
spec:
  models: [local, priced]
  budget: {monthlyUSD: "0.1"}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: tokens}
spec:
  models: [local]
  limits: {tokensPerMonth: 120}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: narrow}
spec:
  models: [local, priced]
  limits: {maxConcurrent: 2}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: wide}
spec:
  models: [local, patient]
  limits: {maxConcurrent: 32}
  budget: {monthlyUSD: "0.32"}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: careful}
spec:
  models: [local]
  stateOutagePolicy: FailClosed
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: alerted}
spec:
  models: [local]
  budget: {monthlyUSD: "0.01", warnAtPercent: 50, onExceeded: Alert}
  apiKeys: [{name: dev, role: developer}]
"""
KEYS = {
    tenant: f"llmr_{tenant}_dev_key_{'0' * (24 - len(tenant))}"
    for tenant in ("budgeted", "tokens", "narrow", "wide", "careful", "alerted")
}
BODY = {"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
COST = Decimal("0.01")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "resources.yaml").write_text(RESOURCES)
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({tenant: {"dev": key} for tenant, key in KEYS.items()}))
    return tmp_path / "resources.yaml", keys


def gateway(
    files: tuple[Path, Path], upstream: FakeUpstream, state: str, log: Path, *extra: str
) -> ServeProcess:
    resources, keys = files
    return ServeProcess(
        [
            "-f",
            str(resources),
            "--keys-file",
            str(keys),
            "--endpoint",
            f"local={upstream.url}",
            "--endpoint",
            f"priced={upstream.url}",
            "--endpoint",
            f"patient={upstream.url}",
            "--state",
            state,
            *extra,
        ],
        log,
    )


@pytest.fixture
def gateways(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> Iterator[list[ServeProcess]]:
    procs = [gateway(files, upstream, redis_url, tmp_path / f"gw{i}.log") for i in range(4)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


async def send_all(
    urls: list[str], tenant: str, n: int, concurrency: int, body: dict[str, object] = BODY
) -> list[httpx.Response]:
    """``n`` requests, ``concurrency`` at a time, spread over ``urls``."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def one(i: int) -> httpx.Response:
            async with gate:
                url = urls[i % len(urls)]
                return await http.post(
                    f"{url}/v1/chat/completions", json=body, headers=auth(tenant)
                )

        return await asyncio.gather(*(one(i) for i in range(n)))


def usage_total(url: str, tenant: str) -> dict[str, object]:
    resp = httpx.get(f"{url}/admin/usage", headers=auth(tenant))
    assert resp.status_code == 200, resp.text
    total: dict[str, object] = resp.json()["total"]
    return total


async def test_four_gateways_with_64_in_flight_never_overspend_a_budget(
    gateways: list[ServeProcess], upstream: FakeUpstream
) -> None:
    upstream.behaviour.delay_s = 0.05  # every request is in flight with many others
    answers = await send_all([g.url for g in gateways], "budgeted", 200, 64)
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 10, 429: 190}  # the budget pays for exactly 10
    for refused in (r for r in answers if r.status_code == 429):
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
    assert len(upstream.seen) == 10
    total = usage_total(gateways[0].url, "budgeted")
    assert total["requests"] == 10
    assert Decimal(str(total["cost_usd"])) == 10 * COST == Decimal("0.1")


async def test_four_gateways_never_exceed_tokens_per_month(
    gateways: list[ServeProcess], upstream: FakeUpstream
) -> None:
    upstream.behaviour.delay_s = 0.05
    answers = await send_all([g.url for g in gateways], "tokens", 100, 64)
    served = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert served and refused
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert all("tokensPerMonth" in r.json()["error"]["message"] for r in refused)
    total = usage_total(gateways[0].url, "tokens")
    assert total["requests"] == len(served) == len(upstream.seen)
    tokens = total["input_tokens"] + total["output_tokens"]  # type: ignore[operator]
    assert tokens <= 120


async def test_a_refusal_says_what_is_left_and_what_the_request_needed(
    gateways: list[ServeProcess],
) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{gateways[0].url}/v1/chat/completions",
            json={**BODY, "max_tokens": 60},  # 60 tokens at $2000/M: 0.12 USD
            headers=auth("budgeted"),
        )
    assert resp.status_code == 429
    message = resp.json()["error"]["message"]
    assert "0.1 USD is left and this request may cost up to 0.12 USD" in message


# One gateway in this process, on the same real Redis, for the attacks on one request.


async def ausage_total(url: str, tenant: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{url}/admin/usage", headers=auth(tenant))
    assert resp.status_code == 200, resp.text
    total: dict[str, object] = resp.json()["total"]
    return total


@pytest.fixture
async def url(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str
) -> AsyncIterator[str]:
    resources, keys = files
    source = StandaloneSource(
        [resources], keys, {"local": [upstream.url], "priced": [upstream.url]}
    )
    settings = GatewaySettings(state_url=redis_url)
    async with serving(create_app(settings, ConfigStore(source.load()))) as base:
        yield base


async def test_a_shared_request_id_cannot_raise_concurrency(
    url: str, upstream: FakeUpstream
) -> None:
    upstream.behaviour.delay_s = 0.5
    async with httpx.AsyncClient(timeout=10) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    f"{url}/v1/chat/completions",
                    json=BODY,
                    headers={**auth("narrow"), "x-request-id": "same-id-for-all"},
                )
                for _ in range(10)
            )
        )
    codes = Counter(r.json()["error"]["code"] if r.status_code != 200 else 200 for r in answers)
    assert codes == {200: 2, "concurrency_limit_exceeded": 8}
    assert {r.headers["x-request-id"] for r in answers} == {"same-id-for-all"}  # echoed


async def test_a_cut_stream_is_charged_what_was_used(url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.chunks = 50
    upstream.behaviour.chunk_delay_s = 0.05
    body = {**BODY, "model": "priced", "stream": True, "max_tokens": 100}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/v1/chat/completions", json=body, headers=auth("narrow"))
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: {")
        resp.close()  # the client goes away after its first chunk
    await asyncio.sleep(0.5)
    total = await ausage_total(url, "narrow")
    assert total["requests"] == 1
    # the input estimate (the body's size / 4) and at least the chunk that was relayed
    assert total["input_tokens"] == len(_json(body)) // 4
    assert 1 <= total["output_tokens"] < 50  # type: ignore[operator]
    assert Decimal(str(total["cost_usd"])) > 0


async def test_a_broken_stream_is_charged(url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.chunks = 10
    upstream.behaviour.break_stream_after = 4
    body = {**BODY, "model": "priced", "stream": True}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/v1/chat/completions", json=body, headers=auth("narrow"))
        text = (await resp.read()).decode()
    assert '"error"' in text  # ended with an error event, not a silent cut
    total = await ausage_total(url, "narrow")
    assert total["input_tokens"] == len(_json(body)) // 4
    assert total["output_tokens"] == 4


@pytest.mark.parametrize("stream", [True, False])
async def test_a_server_that_never_reports_usage_is_still_charged(
    url: str, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.behaviour.usage = False
    upstream.behaviour.chunks = 6
    body = {**BODY, "model": "priced", "stream": stream}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/v1/chat/completions", json=body, headers=auth("narrow"))
        assert resp.status == 200
        await resp.read()
    total = await ausage_total(url, "narrow")
    assert total["input_tokens"] == len(_json(body)) // 4
    # six relayed chunks; or "hello from upstream" (19 characters) at four a token
    assert total["output_tokens"] == (6 if stream else 5)


async def test_a_failed_upstream_costs_nothing(url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.status = 500
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{url}/v1/chat/completions", json=BODY, headers=auth("narrow"))
    assert resp.status_code == 502
    total = await ausage_total(url, "narrow")
    assert (total["input_tokens"], total["cost_usd"]) == (0, "0")


def _json(body: dict[str, object]) -> bytes:
    """What aiohttp sends for ``json=body``."""
    import json

    return json.dumps(body).encode()


# Crashes and outages.


def test_sigkill_mid_flight_leaks_no_slot_and_no_reservation(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    # A model whose requests may run 8 s: their slots and reservations are leased for 13 s,
    # long enough for a loaded machine to start the second gateway within it.
    body = {**BODY, "model": "patient"}
    upstream.behaviour.delay_s = 30  # never answers before the gateway dies
    with gateway(files, upstream, redis_url, tmp_path / "a.log") as a:
        asyncio.run(_fire_and_forget(a.url, "wide", 32, body))
        wait_until(lambda: upstream.in_flight == 32, 6, "32 requests at the upstream")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        killed_at = time.monotonic()
    upstream.behaviour.delay_s = 0
    with gateway(files, upstream, redis_url, tmp_path / "b.log") as b:
        chat = f"{b.url}/v1/chat/completions"
        # every slot and the whole budget are held by the dead process's requests…
        assert httpx.post(chat, json=body, headers=auth("wide")).status_code == 429
        # …until their lease ends: the model's total timeout (8 s) and a 5 s margin
        wait_until(
            lambda: httpx.post(chat, json=body, headers=auth("wide")).status_code == 200,
            25,
            "the dead gateway's slots to expire",
        )
        assert time.monotonic() - killed_at < 13 + 5
        answers = asyncio.run(send_all([b.url], "wide", 32, 32, body))
        assert [r.status_code for r in answers].count(200) == 31  # 32 slots, 0.32 USD
        total = usage_total(b.url, "wide")
    assert total["requests"] == 32  # only what was answered is spent
    assert Decimal(str(total["cost_usd"])) == 32 * COST


async def _fire_and_forget(url: str, tenant: str, n: int, body: dict[str, object]) -> None:
    async with httpx.AsyncClient(timeout=0.5) as http:
        await asyncio.gather(
            *(
                http.post(f"{url}/v1/chat/completions", json=body, headers=auth(tenant))
                for _ in range(n)
            ),
            return_exceptions=True,
        )


def _lines(folder: Path) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in folder.iterdir())


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.cleanup()


def test_usage_served_in_an_outage_survives_a_crash_and_is_counted_once(
    files: tuple[Path, Path], upstream: FakeUpstream, durable_redis: RedisServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    args = ("--usage-journal", str(journal))
    with gateway(files, upstream, durable_redis.url, tmp_path / "a.log", *args) as a:
        assert (
            httpx.post(f"{a.url}/v1/chat/completions", json=BODY, headers=auth("wide")).status_code
            == 200
        )
        durable_redis.stop()
        served = [
            httpx.post(f"{a.url}/v1/chat/completions", json=BODY, headers=auth("wide")).status_code
            for _ in range(5)
        ]
        assert served == [200] * 5  # fail-open
        # each answer is journaled just after it is sent (fsynced once per loop turn)
        wait_until(lambda: _lines(journal) == 5, 5, "the outage's usage in the journal")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
    durable_redis.start()
    for run in ("b", "c"):  # a second start finds nothing left to replay
        with gateway(files, upstream, durable_redis.url, tmp_path / f"{run}.log", *args) as b:
            wait_until(lambda: usage_total(b.url, "wide")["requests"] == 6, 15, "replay")
            total = usage_total(b.url, "wide")
        assert Decimal(str(total["cost_usd"])) == 6 * COST
    assert list(journal.iterdir()) == []


def test_a_tenant_over_budget_stays_blocked_through_an_outage(
    files: tuple[Path, Path], upstream: FakeUpstream, durable_redis: RedisServer, tmp_path: Path
) -> None:
    with gateway(files, upstream, durable_redis.url, tmp_path / "a.log") as a:
        answers = asyncio.run(send_all([a.url], "budgeted", 11, 1))
        assert [r.status_code for r in answers].count(200) == 10
        durable_redis.stop()
        refused = httpx.post(f"{a.url}/v1/chat/completions", json=BODY, headers=auth("budgeted"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"


def test_a_tenant_may_ask_to_fail_closed_for_itself(
    files: tuple[Path, Path], upstream: FakeUpstream, durable_redis: RedisServer, tmp_path: Path
) -> None:
    with gateway(files, upstream, durable_redis.url, tmp_path / "a.log") as a:
        durable_redis.stop()
        chat = f"{a.url}/v1/chat/completions"
        refused = httpx.post(chat, json=BODY, headers=auth("careful"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "state_unavailable"
        assert httpx.post(chat, json=BODY, headers=auth("wide")).status_code == 200


def test_a_read_only_redis_is_an_outage_not_an_error(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    with gateway(files, upstream, redis_url, tmp_path / "a.log") as a:
        assert (
            httpx.post(f"{a.url}/v1/chat/completions", json=BODY, headers=auth("wide")).status_code
            == 200
        )
        r.replicaof("127.0.0.1", "1")  # a replica of nothing: every write is READONLY
        try:
            statuses = [
                httpx.post(
                    f"{a.url}/v1/chat/completions", json=BODY, headers=auth("wide")
                ).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 200]  # fail-open, never a 500
        finally:
            r.replicaof("no", "one")
        wait_until(
            lambda: usage_total(a.url, "wide")["requests"] == 4, 15, "the usage to be written"
        )
    assert "READONLY" in (tmp_path / "a.log").read_text()


def test_budget_events_fire_once_across_gateways(
    gateways: list[ServeProcess],
) -> None:
    asyncio.run(send_all([g.url for g in gateways], "alerted", 8, 4))  # 0.08 of a 0.01 budget
    events: Counter[str] = Counter()
    for g in gateways:
        for line in httpx.get(f"{g.metrics_url}/metrics").text.splitlines():
            if (
                line.startswith("llmrouter_budget_events_total{")
                and 'tenant="default/alerted"' in line
            ):
                level = line.split('level="')[1].split('"')[0]
                events[level] += int(float(line.split()[-1]))
    assert events == {"exceeded": 1}  # the first request spends it all: no warning first
