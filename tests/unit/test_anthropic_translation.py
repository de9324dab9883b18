"""OpenAI ⇄ Anthropic Messages translation, against Anthropic's documented response shapes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from llmrouter.gateway.errors import InvalidRequest, UpstreamFailed
from llmrouter.gateway.providers.anthropic import (
    ChunkTranslator,
    to_chat_completion,
    to_messages_request,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"


def test_request_moves_system_messages_and_translates_parts() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                ],
            },
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Sure?"},
        ],
        "temperature": 0.2,
        "stop": "END",
        "max_tokens": 100,
        "user": "u-1",
    }
    out = to_messages_request(body, "claude-sonnet-4-5")
    assert out == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.\n\nUse English.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                    },
                ],
            },
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Sure?"},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }


def test_max_tokens_is_required_by_anthropic_so_it_gets_a_default() -> None:
    out = to_messages_request({"messages": [{"role": "user", "content": "x"}]}, "m")
    assert out["max_tokens"] == 4096


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        {"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]},
        {"messages": [{"role": "tool", "content": "no id"}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
    ],
)
def test_what_cannot_be_translated_is_a_clear_400(body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        to_messages_request(body, "m")


def test_response_becomes_a_chat_completion() -> None:
    doc = json.loads((FIXTURES / "message.json").read_text())
    out = to_chat_completion(doc)
    assert out["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
        }
    ]
    assert out["usage"] == {"prompt_tokens": 15, "completion_tokens": 9, "total_tokens": 24}
    assert out["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_stream_becomes_chat_completion_chunks() -> None:
    translator = ChunkTranslator(include_usage=True)
    raw = (FIXTURES / "stream.sse").read_bytes()
    out: list[bytes] = []
    for event in raw.split(b"\n\n"):
        if event.strip():
            out += translator.feed(event + b"\n\n")
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(e[len(b"data: ") :]) for e in out[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello!"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_stream_error_event_breaks_the_stream() -> None:
    event = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    with pytest.raises(UpstreamFailed, match="Overloaded"):
        ChunkTranslator(include_usage=False).feed(event)


def test_tools_calls_and_results_become_tool_use_and_tool_result() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "snow"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    out = to_messages_request(body, "claude")
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert out["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "snow"},
        ],
    }
    assert len(out["messages"]) == 3


def test_tool_use_response_becomes_tool_calls() -> None:
    doc = json.loads((FIXTURES / "tool_use_message.json").read_text())
    out = to_chat_completion(doc)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather in San Francisco."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    translator = ChunkTranslator(include_usage=True)
    out: list[bytes] = []
    for event in (FIXTURES / "tool_use_stream.sse").read_bytes().split(b"\n\n"):
        if event.strip():
            out += translator.feed(event + b"\n\n")
    chunks = [orjson.loads(e[len(b"data: ") :]) for e in out[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA"}
    assert "".join(d.get("content", "") for d in deltas) == "Okay, let's check"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
