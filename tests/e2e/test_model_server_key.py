"""A llama-server started as the operator's Deployment starts it (the key in LLAMA_API_KEY)
answers only whoever has the key: the gateway, which sends it from the copy of the key
Secret, and nobody who reaches the server directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.config import hash_api_key
from llmrouter.gateway.credentials import MappingCredentials
from llmrouter.gateway.endpoint_table import poll_once
from llmrouter.gateway.endpoints import Endpoint
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.operator.api import ModelDeployment, Tenant
from llmrouter.operator.compile import Resources, compile_config
from llmrouter.operator.names import server_key_secret_name
from llmrouter.operator.render import SERVER_KEY_ENV
from tests.support.llama import LlamaServer, llama_server_binary
from tests.support.serve import serving

pytestmark = pytest.mark.e2e
SERVER_KEY = "llmr_server_key_only_the_gateway_has"
TENANT_KEY = "llmr_tenant_key_of_the_test_000001"


@pytest.fixture(scope="module")
def keyed_llama(
    llama_dir: Path, model_file: Path, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[LlamaServer]:
    monkeypatch_module.setenv(SERVER_KEY_ENV, SERVER_KEY)
    server = LlamaServer(
        llama_server_binary(), model_file, llama_dir / "keyed.log", "--ctx-size", "512", "--metrics"
    )
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def resources(url: str) -> Resources:
    md = ModelDeployment.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "keyed", "namespace": "ml"},
            "spec": {"llamacpp": {"model": {"url": "https://example.invalid/m.gguf"}}},
        }
    )
    tenant = Tenant.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "t"},
            "spec": {"models": ["keyed"], "apiKeys": [{"name": "k"}]},
        }
    )
    return Resources(
        models=[md],
        tenants=[tenant],
        api_key_hashes={("default/t", "k"): hash_api_key(TENANT_KEY)},
        endpoints={"keyed": [url]},
        model_server_keys=True,
    )


def chat(url: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "keyed", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=30)


async def test_only_the_gateway_reaches_a_keyed_model_server(keyed_llama: LlamaServer) -> None:
    # Straight to the server: without the key, or with a tenant's key, refused.
    assert chat(keyed_llama.url, None).status_code == 401
    assert chat(keyed_llama.url, TENANT_KEY).status_code == 401
    assert httpx.get(keyed_llama.url.removesuffix("/v1") + "/health").status_code == 200

    config = compile_config(resources(keyed_llama.url))
    credentials = MappingCredentials()
    credentials.values[("ml", server_key_secret_name("keyed"), "apiKey")] = SERVER_KEY
    app = create_app(GatewaySettings(), ConfigStore(config), credentials)
    async with serving(app) as gateway:
        resp = await _async_chat(f"{gateway}/v1", TENANT_KEY)
        assert resp.status_code == 200, resp.text

    # The load poll reads /metrics with the key too.
    endpoint = Endpoint("keyed", keyed_llama.url)
    async with aiohttp.ClientSession() as session:
        await poll_once(session, endpoint)
        assert endpoint.reported_load is None  # refused without the key
        await poll_once(session, endpoint, SERVER_KEY)
        assert endpoint.reported_load == 0


async def _async_chat(url: str, key: str) -> httpx.Response:
    body = {"model": "keyed", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
