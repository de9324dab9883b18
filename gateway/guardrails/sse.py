"""Output guardrails on a stream of OpenAI chunks (``data: {...}`` events).

Each choice's content goes through its own TextStream; a chunk carries what can be released
when it arrives, and a choice's rest goes out with its ``finish_reason`` (or before
``[DONE]``, or at the end). Tool-call arguments are held until their JSON is complete,
then scanned as a whole answer's are. A chunk left with nothing to say is dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from llmrouter.gateway.errors import error_body
from llmrouter.gateway.guardrails.content import arguments, text_fn
from llmrouter.gateway.guardrails.engine import Action, Blocked, DetectorFailed, Scanner
from llmrouter.gateway.guardrails.stream import TextStream

_TEMPLATE_FIELDS = ("id", "object", "created", "model", "system_fingerprint")


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class StreamGuard:
    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.findings: Counter[tuple[str, Action]] = Counter()
        self._texts: dict[tuple[int, str], TextStream] = {}
        self._args: dict[tuple[int, int], str] = {}
        self._template: dict[str, Any] = {}
        self._chat = True
        self._indexes: set[int] = set()
        self.report: Callable[[Counter[tuple[str, Action]]], None] | None = None
        """Told the findings once, when the stream is over (done)."""

    def done(self) -> None:
        report, self.report = self.report, None
        if report is not None:
            report(self.findings)

    def event(self, event: bytes) -> list[bytes]:
        """The events to send for one upstream event. Raises Blocked or DetectorFailed."""
        if not event.startswith(b"data: {"):
            if event.startswith(b"data: [DONE]"):
                return [*self.end(), event]
            return [event]
        try:
            chunk = orjson.loads(event[len(b"data: ") :])
        except orjson.JSONDecodeError:
            return []  # what cannot be read cannot be checked: not passed on
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices:
            return [event]
        if not self._template:
            self._template = {k: chunk[k] for k in _TEMPLATE_FIELDS if k in chunk}
        said = chunk.get("usage") is not None
        for choice in choices:
            if isinstance(choice, dict):
                said = self._choice(choice) or said
        return [_event(chunk)] if said else []

    def end(self) -> list[bytes]:
        """What is still held, when the upstream ends without a finish_reason for it."""
        choices = []
        for index in sorted(self._indexes):
            holder: dict[str, Any] = {}
            self._flush(index, holder, "content" if self._chat else "text")
            if holder:
                body = {"delta": holder} if self._chat else holder
                choices.append({"index": index, **body, "finish_reason": None})
        self._indexes.clear()
        if not choices:
            return []
        return [_event({**self._template, "choices": choices})]

    def blocked(self, exc: Exception) -> list[bytes]:
        """The ending of a stream a ``block`` rule (or a failing detector) stopped."""
        indexes = sorted(self._indexes) or [0]
        empty: dict[str, Any] = {"delta": {}} if self._chat else {"text": ""}
        choices = [{"index": i, **empty, "finish_reason": "content_filter"} for i in indexes]
        if isinstance(exc, Blocked):
            message = f"the answer was stopped by the tenant's data policy ({exc.detector})"
        else:
            message = "the answer was stopped: the tenant's data policy could not be checked"
        error = error_body(message, "invalid_request_error", "content_filter")
        return [_event({**self._template, "choices": choices}), _event(error)]

    def _choice(self, choice: dict[str, Any]) -> bool:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            index = 0
        self._indexes.add(index)
        finished = choice.get("finish_reason") is not None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._chat = True
            said = self._delta(index, delta)
            if finished:
                self._flush(index, delta, "content")
        else:
            self._chat = False
            said = self._text(index, choice, "text")
            if finished:
                self._flush(index, choice, "text")
        if finished:
            self._indexes.discard(index)
            return True
        return said or choice.get("logprobs") is not None

    def _text(self, index: int, holder: dict[str, Any], field: str) -> bool:
        text = holder.get(field)
        if not isinstance(text, str) or not text:
            return False
        stream = self._texts.get((index, field))
        if stream is None:
            stream = self._texts[(index, field)] = TextStream(self.scanner, self.findings)
        holder[field] = stream.feed(text)
        return bool(holder[field])

    def _delta(self, index: int, delta: dict[str, Any]) -> bool:
        said = self._text(index, delta, "content")
        said = said or any(delta.get(k) is not None for k in ("role", "refusal", "function_call"))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            kept = [c for c in calls if isinstance(c, dict) and self._call(index, c)]
            if kept:
                delta["tool_calls"] = kept
                said = True
            else:
                del delta["tool_calls"]
        return said

    def _call(self, index: int, call: dict[str, Any]) -> bool:
        """Holds the call's arguments until they are a whole JSON document."""
        fn = call.get("function")
        k = call.get("index", 0)
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            held = self._args.get((index, k), "") + fn["arguments"]
            if _complete_json(held):
                self._args.pop((index, k), None)
                fn["arguments"] = self._check_args(held)
            else:
                self._args[(index, k)] = held
                fn["arguments"] = ""
            if fn["arguments"]:
                return True
        return any(call.get(x) is not None for x in ("id", "type")) or bool(
            isinstance(fn, dict) and fn.get("name")
        )

    def _check_args(self, args: str) -> str:
        check = text_fn(self.scanner, self.findings)
        return arguments(args, "tool_calls.function.arguments", check)

    def _flush(self, index: int, holder: dict[str, Any], field: str) -> None:
        stream = self._texts.pop((index, field), None)
        if stream is not None:
            rest = stream.finish()
            if rest:
                holder[field] = (holder.get(field) or "") + rest
        calls = [
            {"index": k, "function": {"arguments": self._check_args(args)}}
            for (i, k), args in sorted(self._args.items())
            if i == index
        ]
        for i, k in [key for key in self._args if key[0] == index]:
            del self._args[(i, k)]
        if calls:
            holder.setdefault("tool_calls", []).extend(calls)


def _complete_json(text: str) -> bool:
    stripped = text.rstrip()
    if not stripped or stripped[-1] not in "}]":
        return False
    try:
        orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return False
    return True


__all__ = ["Blocked", "DetectorFailed", "StreamGuard"]
