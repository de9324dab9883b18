"""Guardrails through a real gateway in this process, in front of the fake upstream:
prompts redacted or refused before they leave, answers redacted alike streamed or whole,
no raw value in the decoded SSE, a block mid-stream, the openai SDK as client."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmrouter.gateway.app import create_app
from llmrouter.gateway.keys import METRICS
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import LOCAL_MODEL
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import free_port
from tests.unit.test_guardrails_detect import TRUE

KEYS = {"g": "llmr_guard_tenant_key_0000000001", "plain": "llmr_plain_tenant_key_000000001"}
RESOURCES = (
    LOCAL_MODEL
    + r"""
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: g}
spec:
  models: [local]
  apiKeys: [{name: k, role: developer}]
  dataPolicy:
    detectors:
      - {type: email}
      - {type: phone}
      - {type: paymentCard}
      - {type: iban}
      - {type: nationalId}
      - {type: awsAccessKey, action: Block}
      - {type: secrets}
    customPatterns:
      - {name: project, regex: 'PRJ-\d{4}', maxLength: 8}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: plain}
spec: {models: [local], apiKeys: [{name: k, role: developer}]}
"""
)
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
POSITIVES = [v for kind, v in TRUE if kind != "aws_access_key"] + ["PRJ-1234"]


@pytest.fixture
async def gateway(
    tmp_path: Path, upstream: FakeUpstream
) -> AsyncIterator[tuple[str, web.Application]]:
    (tmp_path / "r.yaml").write_text(RESOURCES)
    (tmp_path / "keys.yaml").write_text("".join(f"{t}:\n  k: {k}\n" for t, k in KEYS.items()))
    source = StandaloneSource(
        [tmp_path / "r.yaml"], tmp_path / "keys.yaml", {"local": [upstream.url]}
    )
    app = create_app(GatewaySettings(), ConfigStore(source.load()))
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", app
    await server.close()


async def _post(url: str, tenant: str = "g", **body: Any) -> tuple[int, bytes]:
    payload = {"model": "local", "messages": [{"role": "user", "content": "hi"}], **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/chat/completions",
            json=payload,
            headers={"Authorization": f"Bearer {KEYS[tenant]}"},
        ) as resp,
    ):
        return resp.status, await resp.read()


def _sse(raw: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The content a client decodes from a stream, and every JSON event."""
    content, events = "", []
    for block in raw.split(b"\n\n"):
        if not block.startswith(b"data: {"):
            continue
        event = orjson.loads(block[6:])
        events.append(event)
        for choice in event.get("choices") or []:
            content += choice.get("delta", {}).get("content") or ""
    return content, events


def _pieces(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        k = rng.choice([1, 1, 2, 3, 7, 20])
        out.append(text[i : i + k])
        i += k
    return out


async def test_prompt_is_redacted_before_it_leaves(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, app = gateway
    messages = [
        {"role": "system", "content": "Reply to bob@example.com"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "card 4111 1111 1111 1111 please"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "send", "arguments": '{"iban": "DE89370400440532013000"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sent to +44 20 7946 0958"},
    ]
    status, _ = await _post(url, messages=messages)
    assert status == 200
    sent = orjson.dumps(upstream.seen[-1].body).decode()
    for raw in ("bob@example.com", "4111 1111 1111 1111", "DE89370400440532013000", "7946 0958"):
        assert raw not in sent
    for name in ("email", "payment_card", "iban", "phone"):
        assert f"[REDACTED:{name}]" in sent
    value = app[METRICS].registry.get_sample_value(
        "llmrouter_guardrail_findings_total",
        {"tenant": "default/g", "detector": "email", "direction": "input", "action": "redact"},
    )
    assert value == 1


async def test_block_on_input_is_an_openai_shaped_400(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, _ = gateway
    before = len(upstream.seen)
    status, body = await _post(url, messages=[{"role": "user", "content": f"my key is {AWS_KEY}"}])
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["code"] == "content_filter"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].content"
    assert AWS_KEY not in body.decode()
    assert len(upstream.seen) == before


@pytest.mark.parametrize("seed", range(3))
async def test_stream_equals_whole_answer_and_leaks_nothing(
    gateway: tuple[str, web.Application], upstream: FakeUpstream, seed: int
) -> None:
    url, _ = gateway
    rng = random.Random(seed)
    values = POSITIVES[:]
    rng.shuffle(values)
    text = "".join(f"{v}{rng.choice([' ', ', ', '. ', '; then '])}" for v in values)
    upstream.behaviour.content = _pieces(text, rng)
    status, whole = await _post(url)
    assert status == 200
    expected = orjson.loads(whole)["choices"][0]["message"]["content"]
    status, raw = await _post(url, stream=True)
    assert status == 200
    streamed, events = _sse(raw)
    assert streamed == expected
    for value in POSITIVES:
        assert value not in streamed
        assert value not in raw.decode()
    assert events and raw.endswith(b"data: [DONE]\n\n")


async def test_tenant_without_policy_is_untouched(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, _ = gateway
    upstream.behaviour.content = ["mail ", "bob@", "example.com", f" {AWS_KEY}"]
    status, raw = await _post(url, tenant="plain", stream=True)
    assert status == 200
    assert _sse(raw)[0] == f"mail bob@example.com {AWS_KEY}"
    status, _ = await _post(url, tenant="plain", messages=[{"role": "user", "content": AWS_KEY}])
    assert status == 200


async def test_block_mid_stream_ends_with_content_filter(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, _ = gateway
    upstream.behaviour.content = [
        "Sure. ",
        "Here is ",
        "the key: ",
        AWS_KEY[:6],
        AWS_KEY[6:],
        " ok",
    ]
    status, raw = await _post(url, stream=True)
    assert status == 200
    content, events = _sse(raw)
    assert "AKIA" not in raw.decode()
    assert content.startswith("Sure. Here is")
    assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1]["error"]["code"] == "content_filter"
    assert b"[DONE]" not in raw
    status, whole = await _post(url)
    assert status == 200 and b"AKIA" not in whole
    choice = orjson.loads(whole)["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == ""


async def test_openai_sdk_sees_redacted_answers(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, _ = gateway
    upstream.behaviour.content = [
        "Write to ",
        "alice",
        "@example",
        ".com or call ",
        "415-555-0199.",
    ]
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEYS["g"], max_retries=0)
    messages: Any = [{"role": "user", "content": "contact?"}]
    whole = await client.chat.completions.create(model="local", messages=messages)
    stream = await client.chat.completions.create(model="local", messages=messages, stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    expected = "Write to [REDACTED:email] or call [REDACTED:phone]."
    assert whole.choices[0].message.content == expected
    assert "".join(parts) == expected
    upstream.behaviour.content = ["key ", AWS_KEY]
    stream = await client.chat.completions.create(model="local", messages=messages, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": AWS_KEY}]
        )
    assert refused.value.code == "content_filter"
    await client.close()


async def test_messages_api_goes_through_the_same_policy(
    gateway: tuple[str, web.Application], upstream: FakeUpstream
) -> None:
    url, _ = gateway
    upstream.behaviour.content = ["reach me at ", "carol@example.org", " today"]
    payload = {
        "model": "local",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "my card is 4111 1111 1111 1111"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/messages", json=payload, headers={"Authorization": f"Bearer {KEYS['g']}"}
        ) as resp,
    ):
        status, body = resp.status, await resp.read()
    assert status == 200, body
    assert "4111 1111" not in orjson.dumps(upstream.seen[-1].body).decode()
    assert b"carol@example.org" not in body
    assert b"[REDACTED:email]" in body
