"""Validation and rewriting of OpenAI API request bodies: plain functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from llmrouter.gateway.config import ModelRoute, Upstream
from llmrouter.gateway.errors import InvalidRequest
from llmrouter.gateway.json_body import parse_object


class Operation(Enum):
    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"
    EMBEDDINGS = "/embeddings"

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def streams(self) -> bool:
        return self is not Operation.EMBEDDINGS


# The field each operation cannot do without.
_REQUIRED_FIELD = {
    Operation.CHAT: "messages",
    Operation.COMPLETIONS: "prompt",
    Operation.EMBEDDINGS: "input",
}


@dataclass(frozen=True, slots=True)
class ModelRequest:
    operation: Operation
    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    wants_usage: bool
    """Whether a streaming client asked for the usage chunk itself."""
    max_output: int | None = None
    """The client's own max_completion_tokens or max_tokens."""
    output_cap: int | None = None
    """The output cap sent upstream for the model being tried (see with_output_cap)."""

    def with_body(self, body: dict[str, Any]) -> ModelRequest:
        """The same request with a body the gateway changed (an experiment variant's
        parameters): only fields of known types changed, so it is not validated again."""
        return ModelRequest(
            self.operation,
            body,
            orjson.dumps(body),
            self.model,
            self.stream,
            self.wants_usage,
            _max_output(body) if self.operation.streams else None,
            None,
        )

    def with_output_cap(self, route: ModelRoute) -> ModelRequest:
        cap = output_cap(self, route)
        current = self.max_output if self.output_cap is None else self.output_cap
        if cap == current:
            return self  # the body already says it: sent untouched
        # The constructor, not dataclasses.replace: this is on every request's path.
        return ModelRequest(
            self.operation,
            self.body,
            self.raw,
            self.model,
            self.stream,
            self.wants_usage,
            self.max_output,
            cap,
        )


def output_cap(req: ModelRequest, route: ModelRoute) -> int | None:
    """The most output tokens a request may produce on ``route``: the client's own cap
    within the model's ``max_output_tokens``, else the model's. None when the operation
    produces no tokens (embeddings)."""
    if not req.operation.streams:
        return None
    if req.max_output is None:
        return route.max_output_tokens
    return min(req.max_output, route.max_output_tokens)


def _max_output(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(f"{name!r} must be a positive integer", param=name)
        return value
    return None


def parse_request(operation: Operation, raw: bytes) -> ModelRequest:
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    body = parse_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is required and must be a non-empty string",
            code="missing_model",
            param="model",
        )
    field = _REQUIRED_FIELD[operation]
    if field not in body:
        raise InvalidRequest(f"{field!r} is required", code="missing_field", param=field)
    if operation is Operation.CHAT and (
        not isinstance(body["messages"], list) or not body["messages"]
    ):
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    if stream and not operation.streams:
        raise InvalidRequest(f"{operation.value} does not stream", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    wants_usage = bool(stream and options and options.get("include_usage") is True)
    max_output = _max_output(body) if operation.streams else None
    return ModelRequest(operation, body, raw, model, stream, wants_usage, max_output)


def upstream_body(req: ModelRequest, upstream: Upstream) -> bytes:
    """The body to send upstream: the client's bytes untouched unless something must change."""
    changes: dict[str, Any] = {}
    if upstream.model is not None and upstream.model != req.model:
        changes["model"] = upstream.model
    if req.output_cap is not None and req.output_cap != req.max_output:
        # The cap the budget reserved for: a server must not produce more than was paid for.
        field = "max_completion_tokens" if "max_completion_tokens" in req.body else "max_tokens"
        changes[field] = req.output_cap
    if req.stream and not req.wants_usage:
        # Usage is needed for accounting even when the client did not ask for it.
        changes["stream_options"] = {
            **(req.body.get("stream_options") or {}),
            "include_usage": True,
        }
    if not changes:
        return req.raw
    return orjson.dumps({**req.body, **changes})
