"""POST /v1/messages through the gateway in this process, driven by the official anthropic
SDK, in front of a chat-completions-only upstream."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.support.config import DEV_KEY
from tests.support.fake_upstream import FakeUpstream


# Retries: on a loaded machine the gateway's first health poll of the fake upstream can time
# out, and the upstream counts as down until the next poll a second later.
def client(gateway_url: str, key: str = DEV_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway_url, api_key=key, max_retries=2)


async def metrics_text(metrics_url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{metrics_url}/metrics") as resp:
        return await resp.text()


TOOL: ToolParam = {
    "name": "get_weather",
    "description": "weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def test_plain_message(gateway_url: str, metrics_url: str, upstream: FakeUpstream) -> None:
    message = await client(gateway_url).messages.create(
        model="chat",
        max_tokens=30,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    )
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "hello from upstream"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 5)
    sent = upstream.seen[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent.body["max_tokens"] == 30
    text = await metrics_text(metrics_url)
    assert 'llmrouter_cost_usd_total{model="local",tenant="default/acme"} 3.4e-05' in text


async def test_streamed_message(gateway_url: str, upstream: FakeUpstream) -> None:
    async with client(gateway_url).messages.stream(
        model="chat", max_tokens=30, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == ["tok0 ", "tok1 ", "tok2 "]
    assert final.usage.output_tokens == 3 and final.usage.input_tokens == 7
    assert final.stop_reason == "end_turn"


async def test_tool_use_round_trip(gateway_url: str, upstream: FakeUpstream) -> None:
    c = client(gateway_url)
    upstream.behaviour.tool_call = ("get_weather", '{"city": "Paris"}')
    question: MessageParam = {"role": "user", "content": "weather in Paris?"}
    first = await c.messages.create(model="chat", max_tokens=50, tools=[TOOL], messages=[question])
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert isinstance(use, ToolUseBlock)
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    assert upstream.seen[-1].body["tools"][0]["function"]["parameters"] == TOOL["input_schema"]

    upstream.behaviour.tool_call = None
    second = await c.messages.create(
        model="chat",
        max_tokens=50,
        tools=[TOOL],
        messages=[
            question,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert isinstance(second.content[0], TextBlock)
    messages = upstream.seen[-1].body["messages"]
    assert messages[1]["tool_calls"][0]["id"] == use.id
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}


async def test_streamed_tool_use(gateway_url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.tool_call = ("get_weather", '{"city": "Oslo"}')
    async with client(gateway_url).messages.stream(
        model="chat", max_tokens=50, tools=[TOOL], messages=[{"role": "user", "content": "?"}]
    ) as stream:
        final = await stream.get_final_message()
    use = final.content[0]
    assert isinstance(use, ToolUseBlock) and use.input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"


async def test_errors_are_anthropic_shaped(gateway_url: str) -> None:
    c = client(gateway_url)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await c.messages.create(
            model="chat",
            max_tokens=0,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert bad.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: must be a positive integer",
        },
    }
    with pytest.raises(anthropic.NotFoundError) as missing:
        await c.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway_url}/v1/messages",
            json={"model": "chat", "max_tokens": 5, "messages": [{"role": "robot", "content": ""}]},
            headers={"x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"},
        ) as resp,
    ):
        assert resp.status == 400
        body = await resp.json()
    assert body["type"] == "error" and "messages.0.role" in body["error"]["message"]


async def test_auth_and_http_errors_are_anthropic_shaped(gateway_url: str) -> None:
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await client(gateway_url, "llmr_not_a_key").messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway_url}/v1/messages", headers={"x-api-key": DEV_KEY}) as resp,
    ):
        assert resp.status == 405
        body = await resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
