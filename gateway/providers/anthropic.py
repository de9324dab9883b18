"""Anthropic's Messages API behind the OpenAI chat API, whole and streamed."""

from __future__ import annotations

import time
from typing import Any

import orjson

from llmrouter.gateway.config import Upstream
from llmrouter.gateway.errors import InvalidRequest, UpstreamFailed
from llmrouter.gateway.openai_request import ModelRequest, Operation

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicAdapter:
    def url(self, upstream: Upstream, operation: Operation) -> str:
        if operation is not Operation.CHAT:
            raise InvalidRequest(
                f"Anthropic models serve chat completions only, not {operation.value}",
                code="unsupported_operation",
            )
        return upstream.base_url + "/messages"

    def headers(self, secret: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if secret:
            headers["x-api-key"] = secret
        return headers

    def body(self, req: ModelRequest, upstream: Upstream) -> bytes:
        return orjson.dumps(
            to_messages_request(req.body, upstream.model or req.model, req.output_cap)
        )

    def response(self, raw: bytes, req: ModelRequest) -> bytes:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailed("Anthropic answered with invalid JSON") from exc
        return orjson.dumps(to_chat_completion(doc))

    def stream(self, req: ModelRequest) -> ChunkTranslator:
        return ChunkTranslator(include_usage=req.wants_usage)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _blocks(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(
            "message content must be a string or an array of parts", param="messages"
        )
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        else:
            raise InvalidRequest(
                f"content part {kind!r} cannot be sent to an Anthropic model", param="messages"
            )
    return blocks


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body.get("functions"):
        raise InvalidRequest(
            "'functions' is not translated for Anthropic models: send 'tools'", param="functions"
        )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise InvalidRequest(
                f"tools[{i}] must be a function with a name for an Anthropic model",
                param=f"tools[{i}]",
            )
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequest(
            "'tool_choice' cannot be sent to an Anthropic model", param="tool_choice"
        )
    if body.get("parallel_tool_calls") is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _tool_input(arguments: Any) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "a tool call's arguments must be a JSON object for an Anthropic model",
            param="messages",
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(
            "a tool call's arguments must be a JSON object for an Anthropic model",
            param="messages",
        )
    return value


def _assistant(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls") or []
    if not calls:
        return {"role": "assistant", "content": _blocks(message.get("content") or "")}
    blocks: list[dict[str, Any]] = []
    text = _text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise InvalidRequest("each tool call needs an id and a function", param="messages")
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function.get("name", ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {"role": "assistant", "content": blocks}


def _tool_result(message: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """A tool message as a tool_result block; results in a row share one user message, as
    Anthropic wants them right after the assistant's tool_use."""
    if not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest("a tool message needs its 'tool_call_id'", param="messages")
    block = {
        "type": "tool_result",
        "tool_use_id": message["tool_call_id"],
        "content": _text_of(message.get("content")),
    }
    last = messages[-1] if messages else None
    if (
        last is not None
        and last["role"] == "user"
        and isinstance(last["content"], list)
        and all(b.get("type") == "tool_result" for b in last["content"])
    ):
        last["content"].append(block)
    else:
        messages.append({"role": "user", "content": [block]})


def to_messages_request(
    body: dict[str, Any], model: str, max_tokens: int | None = None
) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    tools = _tools(body)
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "user":
            messages.append({"role": role, "content": _blocks(message.get("content", ""))})
        elif role == "assistant":
            messages.append(_assistant(message))
        elif role == "tool":
            _tool_result(message, messages)
        else:
            raise InvalidRequest(
                f"messages with role {role!r} cannot be sent to an Anthropic model",
                param="messages",
            )
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens
        or body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "stream"):
        if name in body:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body)
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def _input_tokens(usage: dict[str, Any]) -> int:
    # Cached prompt tokens are reported apart; OpenAI's prompt_tokens counts them all.
    return sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def to_chat_completion(doc: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI chat completion."""
    text = "".join(b.get("text", "") for b in doc.get("content", []) if b.get("type") == "text")
    usage = doc.get("usage") or {}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {
                "name": b.get("name", ""),
                "arguments": orjson.dumps(b.get("input") or {}).decode(),
            },
        }
        for b in doc.get("content", [])
        if b.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
        message["content"] = text or None
    return {
        "id": doc.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": doc.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(doc.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _usage(_input_tokens(usage), int(usage.get("output_tokens") or 0)),
    }


class ChunkTranslator:
    """Anthropic stream events in, OpenAI chat.completion.chunk events out. The usage chunk
    is always produced (the gateway accounts with it; it drops it for clients that did not
    ask)."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.input_tokens = 0
        self.output_tokens = 0
        self.tools: dict[int, int] = {}
        """Content block index → tool call index, for tool_use blocks."""

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        doc = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def _tool_chunk(self, call: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}
        return self._chunk([choice])

    def feed(self, event: bytes) -> list[bytes]:
        data = next(
            (line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")), None
        )
        if not data:
            return []
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailed("Anthropic sent an event that is not JSON") from exc
        kind = doc.get("type")
        if kind == "message_start":
            message = doc.get("message") or {}
            self.id, self.model = message.get("id", ""), message.get("model", "")
            self.input_tokens = _input_tokens(message.get("usage") or {})
            return [
                self._chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ]
                )
            ]
        if kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = self.tools[int(doc.get("index") or 0)] = len(self.tools)
            call = {
                "index": index,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [self._tool_chunk(call)]
        if kind == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "input_json_delta":
                tool = self.tools.get(int(doc.get("index") or 0))
                if tool is None:
                    return []
                arguments = {"arguments": delta.get("partial_json", "")}
                return [self._tool_chunk({"index": tool, "function": arguments})]
            if delta.get("type") == "text_delta":
                return [
                    self._chunk(
                        [
                            {
                                "index": 0,
                                "delta": {"content": delta.get("text", "")},
                                "finish_reason": None,
                            }
                        ]
                    )
                ]
            return []
        if kind == "message_delta":
            usage = doc.get("usage") or {}
            self.output_tokens = int(usage.get("output_tokens") or self.output_tokens)
            reason = (doc.get("delta") or {}).get("stop_reason")
            return [
                self._chunk(
                    [
                        {
                            "index": 0,
                            "delta": {},
                            "finish_reason": FINISH_REASONS.get(reason or "", "stop"),
                        }
                    ]
                )
            ]
        if kind == "message_stop":
            usage = self._chunk([], usage=_usage(self.input_tokens, self.output_tokens))
            return [usage, b"data: [DONE]\n\n"]
        if kind == "error":
            message = (doc.get("error") or {}).get("message", "error")
            raise UpstreamFailed(f"Anthropic stream error: {message}")
        return []  # ping, content_block_stop
