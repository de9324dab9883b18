"""OpenAI's Responses API (POST /v1/responses, GET /v1/responses/{id}) on the chat
completions pipeline: a request becomes a chat request (instructions, input items, function
tools and their outputs, an earlier response's conversation), and the chat answer, whole or
streamed, becomes a response object or the Responses stream events.

Responses are kept in the state store for ``previous_response_id`` and retrieval, under
the tenant's name: an id never finds another tenant's response. ``store: false`` keeps none.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from llmrouter.gateway import chat_events as ev
from llmrouter.gateway.answer_shape import ANSWER_SHAPE
from llmrouter.gateway.errors import InvalidRequest, ModelNotFound, NotReady
from llmrouter.gateway.json_body import parse_object
from llmrouter.gateway.keys import IDENTITY, REQUEST_ID, STATE
from llmrouter.gateway.openai_request import Operation
from llmrouter.gateway.proxy import handle_model_request
from llmrouter.gateway.roles import MODELS_INVOKE
from llmrouter.gateway.state import StateUnavailable

logger = logging.getLogger(__name__)

STORE_TTL_S = 7 * 24 * 3600
"""How long a stored response can be continued or retrieved."""

# Fields passed to chat completions as they are.
_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls", "seed")
# Fields accepted and echoed, with no effect on a chat model.
_ACCEPTED = {
    "include",
    "metadata",
    "reasoning",
    "truncation",
    "service_tier",
    "store",
    "stream_options",
    "prompt_cache_key",
    "safety_identifier",
    "top_logprobs",
}
_KNOWN = {
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "text",
    "stream",
    "previous_response_id",
    *_PASSED,
    *_ACCEPTED,
}
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def _stored_name(tenant: str, response_id: str) -> str:
    return f"responses:{tenant}:{response_id}"


@dataclass(slots=True)
class ResponsesRequest:
    body: dict[str, Any]
    chat: dict[str, Any]
    """The chat completions request, without an earlier response's conversation."""
    input_messages: list[dict[str, Any]]
    stream: bool
    store: bool
    previous_response_id: str | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"'{where}.content[{j}].text' must be a string", param=f"{where}.content"
                )
            parts.append({"type": "text", "text": text})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str) and part["detail"] != "auto":
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequest(
                f"content part {kind!r} at '{where}.content[{j}]' is not supported here "
                "(text, and images by URL, are)",
                code="unsupported_content",
                param=f"{where}.content",
            )
    return parts


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Text alone goes as a string: every chat server takes that, not all take parts.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(value: Any) -> list[dict[str, Any]]:
    """Responses ``input`` (a string, or items) as chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty array", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"'{where}.role' must be user, assistant, system or developer", param=where
                )
            parts = _text_parts(item.get("content"), where)
            if role != "user" and any(p["type"] != "text" for p in parts):
                raise InvalidRequest(f"'{where}': only user messages hold images", param=where)
            messages.append({"role": role, "content": _chat_content(parts)})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if not all(isinstance(v, str) and v for v in (call_id, name)) or not isinstance(
                arguments, str
            ):
                raise InvalidRequest(
                    f"'{where}' needs 'call_id', 'name' and 'arguments' strings", param=where
                )
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and i > 0
                and (value[i - 1].get("type") == "function_call" or "tool_calls" not in last)
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"'{where}.call_id' must be a string", param=where)
            if isinstance(output, list):
                output = "".join(p["text"] for p in _text_parts(output, where) if "text" in p)
            if not isinstance(output, str):
                raise InvalidRequest(f"'{where}.output' must be a string", param=where)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # a chat model neither reads nor needs another model's reasoning
        else:
            raise InvalidRequest(
                f"input item type {kind!r} at '{where}' is not supported here",
                code="unsupported_item",
                param=where,
            )
    return messages


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(
                f"tool type {kind!r} at 'tools[{i}]' is not supported here: function tools are",
                code="unsupported_tool",
                param=f"tools[{i}]",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"'tools[{i}].name' must be a string", param=f"tools[{i}]")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("name"), str)
    ):
        return {"type": "function", "function": {"name": value["name"]}}
    raise InvalidRequest(
        "'tool_choice' must be auto, none, required or a function by name", param="tool_choice"
    )


def _response_format(value: Any) -> dict[str, Any] | None:
    fmt = value.get("format") if isinstance(value, dict) else None
    if value is None or fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "'text.format' must be text, json_object or json_schema with a schema", param="text"
    )


def parse(raw: bytes) -> ResponsesRequest:
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    body = parse_object(raw)
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequest(
            f"unknown or unsupported parameter {unknown[0]!r}",
            code="unknown_parameter",
            param=unknown[0],
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is required and must be a non-empty string",
            code="missing_model",
            param="model",
        )
    if "input" not in body:
        raise InvalidRequest("'input' is required", code="missing_field", param="input")
    messages = input_messages(body["input"])
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise InvalidRequest("'store' must be true or false", param="store")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest(
            "'previous_response_id' must be a string", param="previous_response_id"
        )
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    chat: dict[str, Any] = {"model": model}
    cap = body.get("max_output_tokens")
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer", param="max_output_tokens"
            )
        chat["max_tokens"] = cap
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if stream:
        # Usage comes to the answer shape, which puts it in response.completed.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if instructions:
        chat["messages"] = [{"role": "system", "content": instructions}]
    return ResponsesRequest(body, chat, messages, stream, store, previous)


def chat_body(req: ResponsesRequest) -> bytes:
    chat = dict(req.chat)
    chat["messages"] = [*chat.get("messages", []), *req.history, *req.input_messages]
    return orjson.dumps(chat)


@dataclass(slots=True)
class Built:
    """What an answer said, in the Responses API's items."""

    output: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    finish: str | None = None
    error: dict[str, str] | None = None


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content if text or status == "completed" else [],
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def assistant_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A response's output as the chat message that continues its conversation."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item["type"] == "message"
        for part in item["content"]
    )
    message: dict[str, Any] = {"role": "assistant", "content": text}
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


class ResponsesShape:
    """The answer shape of one /v1/responses request."""

    def __init__(self, request: web.Request, req: ResponsesRequest) -> None:
        self.request = request
        self.req = req
        self.id = _new_id("resp_")
        self.created_at = int(time.time())

    def response(self, built: Built | None, model: str) -> dict[str, Any]:
        body = self.req.body
        status = "in_progress"
        incomplete = None
        if built is not None:
            status = "completed"
            if built.error is not None:
                status = "failed"
            elif built.finish in _FINISH_INCOMPLETE:
                status = "incomplete"
                incomplete = {"reason": _FINISH_INCOMPLETE[built.finish]}
        usage = None
        if built is not None and built.error is None:
            usage = {
                "input_tokens": built.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": built.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": built.input_tokens + built.output_tokens,
            }
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": built.error if built is not None else None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": built.output if built is not None else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": self.req.previous_response_id,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "text": body.get("text") or {"format": {"type": "text"}},
            "truncation": body.get("truncation", "disabled"),
            "metadata": body.get("metadata") or {},
            "store": self.req.store,
            "user": body.get("user"),
            "usage": usage,
        }

    async def keep(self, response: dict[str, Any]) -> None:
        if not self.req.store or response["status"] == "failed":
            return
        tenant = self.request[IDENTITY].tenant.id
        record = {
            "tenant": tenant,
            "messages": [
                *self.req.history,
                *self.req.input_messages,
                assistant_message(response["output"]),
            ],
            "response": response,
        }
        try:
            await self.request.app[STATE].remember(
                _stored_name(tenant, self.id), orjson.dumps(record), STORE_TTL_S
            )
        except StateUnavailable:
            logger.warning(
                "request %s: response %s not stored: state unavailable",
                self.request[REQUEST_ID],
                self.id,
            )

    async def whole(self, answer: web.Response) -> web.Response:
        assert isinstance(answer.body, bytes)
        doc = orjson.loads(answer.body)
        choice = (doc.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        built = Built(finish=choice.get("finish_reason"))
        content = message.get("content")
        if isinstance(content, str) and content:
            built.output.append(_message_item(_new_id("msg_"), content, "completed"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            built.output.append(
                _call_item(
                    _new_id("fc_"),
                    call.get("id") or _new_id("call_"),
                    function.get("name", ""),
                    function.get("arguments", ""),
                    "completed",
                )
            )
        usage = doc.get("usage") or {}
        built.input_tokens = int(usage.get("prompt_tokens") or 0)
        built.output_tokens = int(usage.get("completion_tokens") or 0)
        response = self.response(built, str(doc.get("model") or self.req.body["model"]))
        await self.keep(response)
        headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-")}
        return web.Response(
            body=orjson.dumps(response), content_type="application/json", headers=headers
        )

    def stream(self, headers: dict[str, str]) -> web.StreamResponse:
        return ev.ShapedStream(headers, ResponsesEvents(self))


class ResponsesEvents:
    """Chat chunks in, Responses stream events out."""

    def __init__(self, shape: ResponsesShape) -> None:
        self.shape = shape
        self.model = str(shape.req.body["model"])
        self.seq = 0
        self.built = Built()
        self.started = False
        self.text_index: int | None = None
        self.text = ""
        self.calls: dict[int, int] = {}
        """Chat tool call index → output index."""
        self.done = False

    def _event(self, kind: str, **doc: Any) -> bytes:
        out = ev.sse(kind, {"type": kind, "sequence_number": self.seq, **doc})
        self.seq += 1
        return out

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        response = self.shape.response(None, self.model)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _close_text(self) -> list[bytes]:
        if self.text_index is None:
            return []
        index, self.text_index = self.text_index, None
        item = self.built.output[index]
        item.update(_message_item(item["id"], self.text, "completed"))
        part = item["content"][0]
        base = {"item_id": item["id"], "output_index": index, "content_index": 0}
        self.text = ""
        return [
            self._event("response.output_text.done", **base, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **base, part=part),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def feed(self, event: ev.ChatEvent) -> list[bytes]:
        if self.done:
            return []
        out = self._start()
        if isinstance(event, ev.Text):
            if self.text_index is None:
                self.text_index = len(self.built.output)
                item = _message_item(_new_id("msg_"), "", "in_progress")
                self.built.output.append(item)
                base = {"item_id": item["id"], "output_index": self.text_index}
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                out += [
                    self._event(
                        "response.output_item.added", output_index=self.text_index, item=item
                    ),
                    self._event("response.content_part.added", **base, content_index=0, part=part),
                ]
            self.text += event.text
            item_id = self.built.output[self.text_index]["id"]
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=self.text_index,
                    content_index=0,
                    delta=event.text,
                    logprobs=[],
                )
            )
        elif isinstance(event, ev.ToolStart):
            out += self._close_text()
            index = self.calls[event.index] = len(self.built.output)
            item = _call_item(
                _new_id("fc_"), event.call_id or _new_id("call_"), event.name, "", "in_progress"
            )
            self.built.output.append(item)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
        elif isinstance(event, ev.ToolArguments) and event.index in self.calls:
            index = self.calls[event.index]
            item = self.built.output[index]
            item["arguments"] += event.delta
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=event.delta,
                )
            )
        elif isinstance(event, ev.Finish):
            self.built.finish = event.reason
        elif isinstance(event, ev.Usage):
            self.built.input_tokens, self.built.output_tokens = (
                event.input_tokens,
                event.output_tokens,
            )
        elif isinstance(event, ev.Failed):
            self.built.error = {"code": event.code, "message": event.message}
        return out

    async def end(self) -> list[bytes]:
        if self.done:
            return []
        out = self._start()
        self.done = True
        out += self._close_text()
        for index in self.calls.values():
            item = self.built.output[index]
            item["status"] = "completed"
            out += [
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                ),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        response = self.shape.response(self.built, self.model)
        await self.shape.keep(response)
        kind = {"failed": "response.failed", "incomplete": "response.incomplete"}.get(
            response["status"], "response.completed"
        )
        out.append(self._event(kind, response=response))
        return out


async def create_response(request: web.Request) -> web.StreamResponse:
    identity = request[IDENTITY]
    identity.require(MODELS_INVOKE)
    req = parse(await request.read())
    if req.previous_response_id is not None:
        record = await _recall(request, req.previous_response_id)
        if record is None:
            raise InvalidRequest(
                f"previous response {req.previous_response_id!r} not found (responses are "
                f"kept {STORE_TTL_S // 3600} hours, and only when stored)",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        req.history = list(record["messages"])
    request[ANSWER_SHAPE] = ResponsesShape(request, req)
    return await handle_model_request(request, Operation.CHAT, chat_body(req))


async def _recall(request: web.Request, response_id: str) -> dict[str, Any] | None:
    tenant = request[IDENTITY].tenant.id
    try:
        raw = await request.app[STATE].recall(_stored_name(tenant, response_id))
    except StateUnavailable as exc:
        raise NotReady(
            "stored responses cannot be read now: shared state unavailable",
            code="state_unavailable",
            headers={"Retry-After": "1"},
        ) from exc
    if raw is None:
        return None
    record = orjson.loads(raw)
    # The tenant is in the name already; a record that says otherwise is never shown.
    if not isinstance(record, dict) or record.get("tenant") != tenant:
        return None
    return record


async def get_response(request: web.Request) -> web.Response:
    request[IDENTITY].require(MODELS_INVOKE)
    response_id = request.match_info["response_id"]
    record = await _recall(request, response_id)
    if record is None:
        raise ModelNotFound(f"response {response_id!r} not found", code="not_found")
    return web.json_response(record["response"], dumps=lambda d: orjson.dumps(d).decode())


async def delete_response(request: web.Request) -> web.Response:
    request[IDENTITY].require(MODELS_INVOKE)
    response_id = request.match_info["response_id"]
    record = await _recall(request, response_id)
    if record is None:
        raise ModelNotFound(f"response {response_id!r} not found", code="not_found")
    tenant = request[IDENTITY].tenant.id
    try:
        await request.app[STATE].take(_stored_name(tenant, response_id))
    except StateUnavailable as exc:
        raise NotReady(
            "stored responses cannot be deleted now: shared state unavailable",
            code="state_unavailable",
            headers={"Retry-After": "1"},
        ) from exc
    return web.json_response({"id": response_id, "object": "response", "deleted": True})
