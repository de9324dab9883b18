"""The gateway in this process, driven by the official openai SDK, in front of a
controllable OpenAI-compatible upstream."""

from __future__ import annotations

import time

import aiohttp
import openai
import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.state import Plan, Settlement
from llmrouter.gateway.state.memory import MemoryStore
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import ANALYST_KEY, DEV_KEY, PROVIDER_TOKEN
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving


def client(gateway_url: str, key: str = DEV_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0)


async def metrics_text(metrics_url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{metrics_url}/metrics") as resp:
        return await resp.text()


async def test_models_lists_only_what_the_tenant_may_use(gateway_url: str) -> None:
    models = await client(gateway_url).models.list()
    assert sorted(m.id for m in models.data) == ["chat", "local", "provider"]


async def test_chat_non_stream_relays_answer_and_records_usage(
    gateway_url: str, metrics_url: str, upstream: FakeUpstream
) -> None:
    raw = await client(gateway_url).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "hello from upstream"
    assert raw.headers["x-llmrouter-model"] == "local"
    assert upstream.seen[-1].path == "/v1/chat/completions"
    text = await metrics_text(metrics_url)
    assert (
        'llmrouter_tokens_total{direction="input",model="local",tenant="default/acme"} 7.0' in text
    )
    assert (
        'llmrouter_tokens_total{direction="output",model="local",tenant="default/acme"} 5.0' in text
    )
    assert "llmrouter_config_models 3.0" in text
    # 7 input tokens at $2/M and 5 output at $4/M
    assert 'llmrouter_cost_usd_total{model="local",tenant="default/acme"} 3.4e-05' in text


async def test_stream_chunks_arrive_before_the_stream_ends(
    gateway_url: str, metrics_url: str, upstream: FakeUpstream
) -> None:
    upstream.behaviour.chunks = 4
    upstream.behaviour.chunk_delay_s = 0.3
    stream = await client(gateway_url).chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    arrivals, texts = [], []
    async for chunk in stream:
        arrivals.append(time.monotonic())
        assert chunk.usage is None  # the client did not ask for usage
        texts += [c.delta.content for c in chunk.choices if c.delta.content]
    assert texts == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    # Relayed as produced: the first chunk came ~0.9 s before the last, not with it.
    assert arrivals[-1] - arrivals[0] > 0.6
    # The gateway asked upstream for usage anyway, and accounted for it.
    assert upstream.seen[-1].body["stream_options"] == {"include_usage": True}
    text = await metrics_text(metrics_url)
    assert (
        'llmrouter_tokens_total{direction="output",model="local",tenant="default/acme"} 4.0' in text
    )
    assert (
        'llmrouter_time_to_first_token_seconds_count{model="local",tenant="default/acme"} 1.0'
        in text
    )


async def test_stream_with_include_usage_gives_the_client_usage(gateway_url: str) -> None:
    stream = await client(gateway_url).chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [chunk.usage async for chunk in stream if chunk.usage]
    assert len(usages) == 1
    assert usages[0].completion_tokens == 3


async def test_completions_and_embeddings(gateway_url: str, metrics_url: str) -> None:
    c = client(gateway_url)
    completion = await c.completions.create(model="local", prompt="once", max_tokens=2)
    assert completion.choices[0].text == "once upon"
    emb = await c.embeddings.create(model="local", input=["a", "b"])
    assert [len(d.embedding) for d in emb.data] == [3, 3]
    text = await metrics_text(metrics_url)
    assert (
        'llmrouter_requests_total{code="200",endpoint="embeddings",model="local",'
        'tenant="default/acme"} 1.0'
    ) in text


async def test_external_model_gets_its_name_and_the_provider_credential(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    await client(gateway_url).chat.completions.create(
        model="provider", messages=[{"role": "user", "content": "hi"}]
    )
    seen = upstream.seen[-1]
    assert seen.body["model"] == "upstream-model-name"
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_TOKEN}"
    assert DEV_KEY not in str(seen.headers)


async def test_bad_key_is_401(gateway_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        await client(gateway_url, "llmr_not_a_key_that_exists_anywhere").models.list()
    assert err.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_authorization"),
        ({"Authorization": "Bearer "}, "invalid_authorization"),
        ({"x-api-key": DEV_KEY[:-1]}, "invalid_api_key"),
    ],
)
async def test_missing_or_malformed_credentials_are_401(
    gateway_url: str, headers: dict[str, str], code: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway_url}/v1/models", headers=headers) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == code


async def test_x_api_key_header_is_accepted(gateway_url: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway_url}/v1/models", headers={"x-api-key": DEV_KEY}) as resp,
    ):
        assert resp.status == 200


async def test_role_without_invoke_permission_is_403(gateway_url: str) -> None:
    reader = client(gateway_url, ANALYST_KEY)
    assert (await reader.models.list()).data  # analysts may list
    with pytest.raises(openai.PermissionDeniedError) as err:
        await reader.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert "models:invoke" in err.value.message


@pytest.mark.parametrize("model", ["secret-model", "no-such-model"])
async def test_other_tenants_and_unknown_models_are_404_alike(
    gateway_url: str, upstream: FakeUpstream, model: str
) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client(gateway_url).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.code == "model_not_found"
    assert f"model '{model}' does not exist or you do not have access to it" in err.value.message
    assert upstream.seen == []


async def test_body_over_the_limit_is_413(gateway_url: str, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await client(gateway_url).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x" * 100_000}]
        )
    assert err.value.status_code == 413
    assert err.value.code == "request_too_large"
    assert upstream.seen == []


async def raw_post(url: str, data: bytes, key: str = DEV_KEY) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=data, headers={"Authorization": f"Bearer {key}"}) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "missing_model"),
        (b'{"model": "chat"}', "missing_field"),
        (b'{"model": "chat", "messages": [], "stream": false}', "invalid_request"),
        (b'{"model": "chat", "messages": [{"role": "user"}], "stream": "yes"}', "invalid_request"),
    ],
)
async def test_malformed_bodies_are_400_with_openai_errors(
    gateway_url: str, body: bytes, code: str
) -> None:
    status, doc = await raw_post(f"{gateway_url}/v1/chat/completions", body)
    assert status == 400
    assert doc["error"]["code"] == code  # type: ignore[index]
    assert doc["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_wrong_method_and_unknown_path_are_openai_errors(gateway_url: str) -> None:
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{gateway_url}/v1/chat/completions") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "method_not_allowed"
            assert resp.headers["Allow"] == "POST"
        async with http.post(f"{gateway_url}/v1/nothing-here", json={}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_upstream_errors_become_502_and_upstream_busy_429(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    upstream.behaviour.status = 500
    with pytest.raises(openai.APIStatusError) as err:
        await client(gateway_url).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 502
    assert "injected failure 500" in err.value.message
    upstream.behaviour.status = 429
    upstream.behaviour.retry_after = "7"
    with pytest.raises(openai.RateLimitError) as limited:
        await client(gateway_url).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.headers["retry-after"] == "7"


async def test_broken_stream_ends_with_an_error_event(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    upstream.behaviour.chunks = 5
    upstream.behaviour.break_stream_after = 2
    stream = await client(gateway_url).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    assert "upstream failed mid-stream" in err.value.message


async def test_health_and_readiness(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{gateway_url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"


class _SettlementFails(MemoryStore):
    async def finish(self, plan: Plan, settlement: Settlement) -> int:
        raise RuntimeError("disk on fire")


async def test_a_failed_accounting_does_not_replace_the_answer(
    source: StandaloneSource, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(GatewaySettings(), ConfigStore(source.load()), state=_SettlementFails())
    async with serving(app) as url:
        for _ in range(2):  # the connection stays usable after it
            answer = await client(url).chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "hello from upstream"
    assert "accounting failed" in caplog.text
    assert "disk on fire" in caplog.text
