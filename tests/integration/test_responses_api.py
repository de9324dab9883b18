"""POST /v1/responses through the gateway in this process, driven by the official openai SDK,
in front of a chat-completions-only upstream."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai.types.responses import (
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseTextDeltaEvent,
)

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import DEV_KEY, OTHER_TENANT_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving


# Retries: on a loaded machine the gateway's first health poll of the fake upstream can time
# out, and the upstream counts as down until the next poll a second later.
def client(gateway_url: str, key: str = DEV_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=2)


async def metrics_text(metrics_url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{metrics_url}/metrics") as resp:
        return await resp.text()


async def test_plain_response_is_a_chat_completion_upstream(
    gateway_url: str, metrics_url: str, upstream: FakeUpstream
) -> None:
    response = await client(gateway_url).responses.create(
        model="chat", instructions="be brief", input="hi", max_output_tokens=20
    )
    assert response.status == "completed"
    assert response.output_text == "hello from upstream"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 5)
    assert response.instructions == "be brief"
    sent = upstream.seen[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent.body["max_tokens"] == 20
    text = await metrics_text(metrics_url)
    assert 'llmrouter_cost_usd_total{model="local",tenant="default/acme"} 3.4e-05' in text


async def test_streamed_response_events(gateway_url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.chunks = 3
    stream = await client(gateway_url).responses.create(model="chat", input="hi", stream=True)
    kinds, deltas = [], []
    completed = None
    async for event in stream:
        kinds.append(event.type)
        if isinstance(event, ResponseTextDeltaEvent):
            deltas.append(event.delta)
        if isinstance(event, ResponseCompletedEvent):
            completed = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert deltas == ["tok0 ", "tok1 ", "tok2 "]
    assert completed is not None and completed.output_text == "tok0 tok1 tok2 "
    assert completed.usage is not None and completed.usage.output_tokens == 3


async def test_function_tool_round_trip_with_previous_response(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    c = client(gateway_url)
    tools: list[FunctionToolParam] = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    upstream.behaviour.tool_call = ("get_weather", '{"city": "Paris"}')
    first = await c.responses.create(model="chat", input="weather?", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert upstream.seen[-1].body["tools"][0]["function"]["name"] == "get_weather"

    upstream.behaviour.tool_call = None
    second = await c.responses.create(
        model="chat",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=tools,
    )
    assert second.output_text == "hello from upstream"
    assert second.previous_response_id == first.id
    messages = upstream.seen[-1].body["messages"]
    assert messages[0] == {"role": "user", "content": "weather?"}
    assert messages[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny"}
    fetched = await c.responses.retrieve(second.id)
    assert fetched.output_text == "hello from upstream"


async def test_streamed_function_call(gateway_url: str, upstream: FakeUpstream) -> None:
    upstream.behaviour.tool_call = ("lookup", '{"q": "llama"}')
    tool: FunctionToolParam = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object"},
        "strict": False,
    }
    stream = await client(gateway_url).responses.create(
        model="chat", input="find it", tools=[tool], stream=True
    )
    deltas, done = [], None
    async for event in stream:
        if isinstance(event, ResponseFunctionCallArgumentsDeltaEvent):
            deltas.append(event.delta)
        if isinstance(event, ResponseFunctionCallArgumentsDoneEvent):
            done = event.arguments
    assert len(deltas) == 2 and "".join(deltas) == done == '{"q": "llama"}'


async def test_another_tenant_cannot_read_or_continue_a_stored_response(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    mine = await client(gateway_url).responses.create(model="chat", input="secret plans")
    hostile = client(gateway_url, OTHER_TENANT_KEY)
    with pytest.raises(openai.NotFoundError):
        await hostile.responses.retrieve(mine.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await hostile.responses.create(
            model="secret-model", previous_response_id=mine.id, input="what were they?"
        )
    assert refused.value.code == "previous_response_not_found"
    assert all("secret plans" not in json.dumps(s.body) for s in upstream.seen[1:])


async def test_delete_removes_a_stored_response_of_the_tenant_only(gateway_url: str) -> None:
    c = client(gateway_url)
    response = await c.responses.create(model="chat", input="hi")
    with pytest.raises(openai.NotFoundError):
        await client(gateway_url, OTHER_TENANT_KEY).responses.delete(response.id)
    assert (await c.responses.retrieve(response.id)).id == response.id
    await c.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(response.id)


async def test_store_false_keeps_nothing(gateway_url: str) -> None:
    c = client(gateway_url)
    response = await c.responses.create(model="chat", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(response.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "chat"}, "input"),
        ({"model": "chat", "input": []}, "input"),
        ({"model": "chat", "input": [{"type": "file_search_call"}]}, "input[0]"),
        ({"model": "chat", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"model": "chat", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "chat", "input": "hi", "background": True}, "background"),
        ({"input": "hi"}, "model"),
    ],
)
async def test_bad_input_is_an_openai_shaped_400(
    gateway_url: str, body: dict[str, object], param: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway_url}/v1/responses",
            json=body,
            headers={"Authorization": f"Bearer {DEV_KEY}"},
        ) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_previous_response_through_redis(
    redis_url: str, source: StandaloneSource, upstream: FakeUpstream
) -> None:
    # Two gateways sharing Redis: a response made at one is continued at the other.
    apps = [
        create_app(GatewaySettings(state_url=redis_url), ConfigStore(source.load()))
        for _ in range(2)
    ]
    async with serving(apps[0]) as first_url, serving(apps[1]) as second_url:
        first = await client(first_url).responses.create(model="chat", input="remember me")
        second = await client(second_url).responses.create(
            model="chat", previous_response_id=first.id, input="and now?"
        )
        assert second.previous_response_id == first.id
        assert upstream.seen[-1].body["messages"][0] == {"role": "user", "content": "remember me"}
        # Reading it does not use it up.
        fetched = await client(second_url).responses.retrieve(first.id)
        assert fetched.id == first.id
