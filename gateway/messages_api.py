"""Anthropic's Messages API (POST /v1/messages) on the chat completions pipeline, for clients
built on Anthropic's SDK: any model the tenant may use answers, whatever its server speaks.

A request becomes a chat request (system prompt, content blocks, tools, tool use and tool
results), and the chat answer, whole or streamed, becomes a Message or Anthropic's stream
events. Errors on this endpoint are in Anthropic's shape.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from aiohttp import web

from llmrouter.gateway import chat_events as ev
from llmrouter.gateway.answer_shape import ANSWER_SHAPE
from llmrouter.gateway.errors import InvalidRequest
from llmrouter.gateway.json_body import parse_object
from llmrouter.gateway.openai_request import Operation
from llmrouter.gateway.proxy import handle_model_request

logger = logging.getLogger(__name__)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_KNOWN = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
}


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _text(value: Any, where: str) -> str:
    """A system prompt or tool result: a string, or text blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for block in value:
            if not isinstance(block, dict) or block.get("type") != "text":
                raise InvalidRequest(f"'{where}' may hold text blocks only", param=where)
            texts.append(str(block.get("text", "")))
        return "\n".join(texts) if where == "system" else "".join(texts)
    raise InvalidRequest(f"'{where}' must be a string or an array of text blocks", param=where)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"'{where}': an image needs a base64 or url source", param=where)
    return {"type": "image_url", "image_url": {"url": url}}


def _message(message: Any, i: int) -> list[dict[str, Any]]:
    where = f"messages.{i}"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"'{where}.role' must be user or assistant", param=where)
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array", param=where)
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidRequest(f"'{at}' needs an 'id' and a 'name'", param=at)
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise InvalidRequest(f"'{at}.tool_use_id' must be a string", param=at)
            result = _text(block.get("content", ""), at)
            if block.get("is_error"):
                result = f"error: {result}"
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidRequest(
                f"content block {kind!r} at '{at}' is not supported here", param=at
            )
    if parts or calls:
        text_only = all(p["type"] == "text" for p in parts)
        chat: dict[str, Any] = {
            "role": role,
            "content": "".join(p["text"] for p in parts) if text_only else parts,
        }
        if calls:
            chat["tool_calls"] = calls
        out.append(chat)
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"'tools.{i}' needs a 'name'", param=f"tools.{i}")
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            raise InvalidRequest(
                f"'tools.{i}': only client tools with an input_schema are supported here",
                param=f"tools.{i}",
            )
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise InvalidRequest("'tool_choice' must be auto, any, none or a tool", param="tool_choice")


def to_chat(raw: bytes) -> tuple[dict[str, Any], bool]:
    """A Messages request as a chat request, and whether it streams."""
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    body = parse_object(raw)
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: Extra inputs are not permitted", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: must be a positive integer", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty array", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be true or false", param="stream")
    chat_messages: list[dict[str, Any]] = []
    if body.get("system"):
        chat_messages.append({"role": "system", "content": _text(body["system"], "system")})
    for i, message in enumerate(messages):
        chat_messages += _message(message, i)
    chat: dict[str, Any] = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest(
                "stop_sequences: must be an array of strings", param="stop_sequences"
            )
        chat["stop"] = stops
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, stream


def _arguments(raw: Any) -> Any:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": raw}  # a model's broken JSON is shown, not lost
    return value if isinstance(value, dict) else {"_value": value}


def to_message(doc: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion as an Anthropic Message."""
    choice = (doc.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _new_id("toolu_"),
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments")),
            }
        )
    usage = doc.get("usage") or {}
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": doc.get("model") or model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


class MessagesShape:
    def __init__(self, model: str) -> None:
        self.model = model

    async def whole(self, answer: web.Response) -> web.Response:
        assert isinstance(answer.body, bytes)
        message = to_message(orjson.loads(answer.body), self.model)
        headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-")}
        return web.Response(
            body=orjson.dumps(message), content_type="application/json", headers=headers
        )

    def stream(self, headers: dict[str, str]) -> web.StreamResponse:
        return ev.ShapedStream(headers, MessagesEvents(self.model))


class MessagesEvents:
    """Chat chunks in, Anthropic stream events out."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block: int | None = None
        """The open content block."""
        self.blocks = 0
        self.tools: dict[int, int] = {}
        self.finish = "stop"
        self.usage = ev.Usage(0, 0)
        self.failed: ev.Failed | None = None

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [ev.sse("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        index, self.block = self.block, None
        return [ev.sse("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(self, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.block = self.blocks
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return [*out, ev.sse("content_block_start", start)]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return ev.sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def feed(self, event: ev.ChatEvent) -> list[bytes]:
        out = self._start()
        if isinstance(event, ev.Text):
            if self.block is None or self.block in self.tools.values():
                out += self._open({"type": "text", "text": ""})
            assert self.block is not None
            out.append(self._delta(self.block, {"type": "text_delta", "text": event.text}))
        elif isinstance(event, ev.ToolStart):
            block = {
                "type": "tool_use",
                "id": event.call_id or _new_id("toolu_"),
                "name": event.name,
                "input": {},
            }
            out += self._open(block)
            assert self.block is not None
            self.tools[event.index] = self.block
        elif isinstance(event, ev.ToolArguments) and event.index in self.tools:
            index = self.tools[event.index]
            out.append(
                self._delta(index, {"type": "input_json_delta", "partial_json": event.delta})
            )
        elif isinstance(event, ev.Finish):
            self.finish = event.reason
        elif isinstance(event, ev.Usage):
            self.usage = event
        elif isinstance(event, ev.Failed):
            self.failed = event
        return out

    async def end(self) -> list[bytes]:
        out = self._start() + self._close()
        if self.failed is not None:
            error = {"type": "api_error", "message": self.failed.message}
            return [*out, ev.sse("error", {"type": "error", "error": error})]
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(self.finish, "end_turn"),
                "stop_sequence": None,
            },
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
        }
        return [
            *out,
            ev.sse("message_delta", delta),
            ev.sse("message_stop", {"type": "message_stop"}),
        ]


async def create_message(request: web.Request) -> web.StreamResponse:
    # Errors on this path leave in Anthropic's shape (the error middleware, ANTHROPIC_PATHS).
    chat, _ = to_chat(await request.read())
    request[ANSWER_SHAPE] = MessagesShape(str(chat["model"]))
    return await handle_model_request(request, Operation.CHAT, orjson.dumps(chat))
