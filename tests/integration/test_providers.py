"""Anthropic and Azure OpenAI behind the gateway's OpenAI API, driven by the openai SDK.

The provider servers replay Anthropic's and Azure's documented request and response shapes
on loopback, and check what the gateway sends them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall

from llmrouter.gateway.app import create_app
from llmrouter.gateway.credentials import EnvCredentials
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.serve import free_port, serving

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
KEY = "llmr_providers_key_0000000000001"
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: claude}
spec:
  external:
    provider: anthropic
    baseURL: {anthropic}
    model: claude-sonnet-4-5
    apiKeySecretRef: {name: anthropic, key: apiKey}
  pricing: {inputPerMillion: "3", outputPerMillion: "15"}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: azure-gpt}
spec:
  external:
    provider: azure-openai
    baseURL: {azure}
    model: gpt-4o-mini
    deployment: prod-4o-mini
    apiVersion: "2024-10-21"
    apiKeySecretRef: {name: azure, key: apiKey}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: t}
spec:
  models: ["*"]
  apiKeys: [{name: k, role: developer}]
"""
SECRETS = {
    "LLMROUTER_SECRET_ANTHROPIC_APIKEY": "sk-ant-test",
    "LLMROUTER_SECRET_AZURE_APIKEY": "azure-test-key",
}


class Providers:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.overloaded = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/anthropic/v1/messages", self.messages)
        app.router.add_post("/azure/openai/deployments/{deployment}/chat/completions", self.azure)
        return app

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.path_qs, dict(request.headers), body))
        if self.overloaded:
            return web.Response(
                status=529,
                body=(FIXTURES / "overloaded.json").read_bytes(),
                content_type="application/json",
            )
        tools = "tool_use_" if body.get("tools") else ""
        if not body.get("stream"):
            return web.Response(
                body=(FIXTURES / f"{tools}message.json").read_bytes(),
                content_type="application/json",
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in (FIXTURES / f"{tools}stream.sse").read_bytes().split(b"\n\n"):
            if event.strip():
                await resp.write(event + b"\n\n")
                await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def azure(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append((request.path_qs, dict(request.headers), body))
        return web.json_response(
            {
                "id": "chatcmpl-az",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "from azure"},
                    }
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
            }
        )


@pytest.fixture
async def providers() -> AsyncIterator[tuple[Providers, str]]:
    p = Providers()
    server = TestServer(p.app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    yield p, f"http://127.0.0.1:{server.port}"
    await server.close()


@pytest.fixture
async def gateway(tmp_path: Path, providers: tuple[Providers, str]) -> AsyncIterator[str]:
    _, base = providers
    text = RESOURCES.replace("{anthropic}", f"{base}/anthropic/v1").replace(
        "{azure}", f"{base}/azure"
    )
    (tmp_path / "r.yaml").write_text(text)
    (tmp_path / "keys.yaml").write_text(f"t:\n  k: {KEY}\n")
    source = StandaloneSource([tmp_path / "r.yaml"], tmp_path / "keys.yaml")
    app = create_app(GatewaySettings(), ConfigStore(source.load()), EnvCredentials(SECRETS))
    async with serving(app) as url:
        yield url


def client(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


async def test_anthropic_chat(gateway: str, providers: tuple[Providers, str]) -> None:
    p, _ = providers
    reply = await client(gateway).chat.completions.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert reply.choices[0].message.content == "Hello! How can I help you today?"
    assert reply.usage is not None and reply.usage.prompt_tokens == 15
    path, headers, body = p.seen[-1]
    assert path == "/anthropic/v1/messages"
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers
    assert body == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hello"}],
    }


async def test_anthropic_stream_with_usage(gateway: str) -> None:
    stream = await client(gateway).chat.completions.create(
        model="claude",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hello"}],
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello!"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (25, 15)


async def test_anthropic_overload_is_a_502_and_completions_a_400(
    gateway: str, providers: tuple[Providers, str]
) -> None:
    p, _ = providers
    p.overloaded = True
    with pytest.raises(openai.APIStatusError) as err:
        await client(gateway).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 502 and "Overloaded" in err.value.message
    with pytest.raises(openai.BadRequestError, match="chat completions only"):
        await client(gateway).completions.create(model="claude", prompt="x")


async def test_azure_deployment_api_version_and_key(
    gateway: str, providers: tuple[Providers, str]
) -> None:
    p, _ = providers
    reply = await client(gateway).chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "from azure"
    path, headers, body = p.seen[-1]
    assert path == "/azure/openai/deployments/prod-4o-mini/chat/completions?api-version=2024-10-21"
    assert headers["api-key"] == "azure-test-key"
    assert "Authorization" not in headers
    assert body["model"] == "gpt-4o-mini"


async def test_anthropic_tool_calls_whole_and_streamed(
    gateway: str, providers: tuple[Providers, str]
) -> None:
    tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather?"}]
    answer = await client(gateway).chat.completions.create(
        model="claude", messages=messages, tools=[tool]
    )
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert answer.choices[0].finish_reason == "tool_calls"
    p, _ = providers
    assert p.seen[-1][2]["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    stream = await client(gateway).chat.completions.create(
        model="claude", messages=messages, tools=[tool], stream=True
    )
    arguments = ""
    async for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments += (delta.function.arguments or "") if delta.function else ""
    assert json.loads(arguments) == {"location": "San Francisco, CA"}


async def test_anthropic_sdk_through_the_gateway_to_an_anthropic_model(gateway: str) -> None:
    c = anthropic.AsyncAnthropic(base_url=gateway, api_key=KEY, max_retries=0)
    message = await c.messages.create(
        model="claude", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert isinstance(message.content[0], anthropic.types.TextBlock)
    assert message.content[0].text == "Hello! How can I help you today?"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (15, 9)
    tool: anthropic.types.ToolParam = {"name": "get_weather", "input_schema": {"type": "object"}}
    async with c.messages.stream(
        model="claude", max_tokens=50, tools=[tool], messages=[{"role": "user", "content": "?"}]
    ) as stream:
        final = await stream.get_final_message()
    use = final.content[-1]
    assert isinstance(use, anthropic.types.ToolUseBlock)
    assert use.input == {"location": "San Francisco, CA"}
    assert final.stop_reason == "tool_use"


async def test_responses_api_on_an_anthropic_model(gateway: str) -> None:
    tool: FunctionToolParam = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object"},
        "strict": False,
    }
    response = await client(gateway).responses.create(model="claude", input="?", tools=[tool])
    assert response.output_text == "I'll check the weather in San Francisco."
    call = response.output[-1]
    assert isinstance(call, ResponseFunctionToolCall)
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert response.usage is not None and response.usage.input_tokens == 472
