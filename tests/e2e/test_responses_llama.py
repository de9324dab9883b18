"""The official openai SDK's Responses API → the gateway → a real llama-server, which serves
chat completions only: the gateway translates both ways."""

from __future__ import annotations

import openai
import pytest
from openai.types.responses import (
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseInputParam,
    ResponseTextDeltaEvent,
)

from tests.e2e.conftest import KEY

pytestmark = pytest.mark.e2e

TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


# Retries: on a loaded machine the gateway's first health poll can time out, and the server
# counts as down until the next poll a second later.
def client(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=2, timeout=60)


async def test_responses_plain_and_continued(gateway: str) -> None:
    c = client(gateway)
    first = await c.responses.create(
        model="chat", instructions="Answer briefly.", input="Hello there", max_output_tokens=8
    )
    assert first.status in ("completed", "incomplete")
    assert first.usage is not None and first.usage.input_tokens > 0
    assert 0 < first.usage.output_tokens <= 8
    second = await c.responses.create(
        model="chat", previous_response_id=first.id, input="And then?", max_output_tokens=8
    )
    assert second.usage is not None
    # The earlier turn went to the model again.
    assert second.usage.input_tokens > first.usage.input_tokens


async def test_responses_stream(gateway: str) -> None:
    stream = await client(gateway).responses.create(
        model="chat", input="Tell me a story", max_output_tokens=8, stream=True
    )
    text, completed = "", None
    async for event in stream:
        if isinstance(event, ResponseTextDeltaEvent):
            text += event.delta
        if isinstance(event, ResponseCompletedEvent) or event.type == "response.incomplete":
            completed = event.response
    assert completed is not None and completed.usage is not None
    assert completed.usage.output_tokens > 0
    assert completed.output_text == text


async def test_responses_function_call_output_goes_to_the_model(gateway: str) -> None:
    items: ResponseInputParam = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
    ]
    answer = await client(gateway).responses.create(
        model="chat", input=items, tools=[TOOL], max_output_tokens=8
    )
    assert answer.usage is not None and answer.usage.input_tokens > 10
