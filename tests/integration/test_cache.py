"""The response cache, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import LOCAL_MODEL
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import free_port

KEYS = {"a": "llmr_cache_tenant_a_key_00000001", "b": "llmr_cache_tenant_b_key_00000001"}
RESOURCES = (
    LOCAL_MODEL
    + """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: a}
spec: {models: [local], apiKeys: [{name: k, role: developer}]}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: b}
spec: {models: [local], apiKeys: [{name: k, role: developer}]}
"""
)
Gateway = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    (tmp_path / "r.yaml").write_text(RESOURCES)
    (tmp_path / "keys.yaml").write_text("".join(f"{t}:\n  k: {k}\n" for t, k in KEYS.items()))
    source = StandaloneSource(
        [tmp_path / "r.yaml"], tmp_path / "keys.yaml", {"local": [upstream.url]}
    )
    servers = []

    async def make(**settings: Any) -> str:
        app = create_app(GatewaySettings(**settings), ConfigStore(source.load()))
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield make
    for server in servers:
        await server.close()


async def post(
    url: str,
    tenant: str = "a",
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
    **body: Any,
) -> tuple[int, str, Any]:
    payload = {"model": "local", "messages": [{"role": "user", "content": "hi"}], **body}
    if path == "/v1/embeddings":
        payload = {"model": "local", "input": "hi"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + path,
            json=payload,
            headers={"Authorization": f"Bearer {KEYS[tenant]}", **(headers or {})},
        ) as resp,
    ):
        return resp.status, resp.headers.get("x-llmrouter-cache", "-"), await resp.json()


async def usage(url: str, tenant: str = "a") -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/admin/usage", headers={"Authorization": f"Bearer {KEYS[tenant]}"}) as resp,
    ):
        return (await resp.json())["total"]


async def test_deterministic_request_is_answered_from_cache_at_no_cost(
    start: Gateway, upstream: FakeUpstream
) -> None:
    url = await start()
    first = await post(url, temperature=0)
    second = await post(url, temperature=0)
    assert (first[1], second[1]) == ("miss", "hit")
    assert first[2] == second[2]
    assert len(upstream.seen) == 1
    total = await usage(url)
    assert total == {
        "requests": 2,
        "input_tokens": 7,
        "output_tokens": 5,
        "cost_usd": "0.000034",
    }  # the hit: counted, free


async def test_cache_never_crosses_tenants(start: Gateway, upstream: FakeUpstream) -> None:
    url = await start()
    assert (await post(url, "a", temperature=0))[1] == "miss"
    assert (await post(url, "b", temperature=0))[1] == "miss"
    assert len(upstream.seen) == 2


async def test_what_is_not_cached(start: Gateway, upstream: FakeUpstream) -> None:
    url = await start()
    assert (await post(url, temperature=0.7))[1] == "-"  # not deterministic
    assert (await post(url, temperature=0.7))[1] == "-"
    assert (await post(url, headers={"x-llmrouter-cache": "use"}, temperature=0.7))[1] == "miss"
    assert (await post(url, headers={"x-llmrouter-cache": "use"}, temperature=0.7))[1] == "hit"
    bypass = {"x-llmrouter-cache": "bypass"}
    assert (await post(url, headers=bypass, temperature=0))[1] == "-"
    assert (await post(url, path="/v1/embeddings"))[1] == "miss"
    assert (await post(url, path="/v1/embeddings"))[1] == "hit"
    upstream.behaviour.status = 500
    assert (await post(url, temperature=0, seed=1))[0] == 502
    upstream.behaviour.status = 200
    assert (await post(url, temperature=0, seed=1))[1] == "miss"  # failures are not cached


async def test_entries_expire(start: Gateway, upstream: FakeUpstream) -> None:
    url = await start(cache_ttl_s=0.2)
    assert (await post(url, temperature=0))[1] == "miss"
    assert (await post(url, temperature=0))[1] == "hit"
    await asyncio.sleep(0.3)
    assert (await post(url, temperature=0))[1] == "miss"


async def test_redis_cache_is_shared_by_replicas(
    start: Gateway, upstream: FakeUpstream, redis_url: str
) -> None:
    one, two = await start(state_url=redis_url), await start(state_url=redis_url)
    assert (await post(one, temperature=0))[1] == "miss"
    assert (await post(two, temperature=0))[1] == "hit"
    assert len(upstream.seen) == 1
