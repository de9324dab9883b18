"""Chat completion chunks read as what they say (text, tool call pieces, the end, usage), and
a stream response that writes another API's events for them: what /v1/responses and
/v1/messages stream to their clients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArguments:
    index: int
    delta: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Done:
    pass


ChatEvent = Text | ToolStart | ToolArguments | Finish | Usage | Failed | Done


def _events_in(data: bytes) -> Iterator[bytes]:
    for line in data.splitlines():
        if line.startswith(b"data:"):
            yield line[5:].strip()


def read_chunk(data: bytes, seen_tools: set[int]) -> list[ChatEvent]:
    """What one or more whole chat completion SSE events say."""
    out: list[ChatEvent] = []
    for payload in _events_in(data):
        if payload == b"[DONE]":
            out.append(Done())
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        error = chunk.get("error")
        if isinstance(error, dict):
            out.append(Failed(str(error.get("code") or "error"), str(error.get("message", ""))))
            continue
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(Text(content))
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                index = int(call.get("index") or 0)
                function = call.get("function") or {}
                if index not in seen_tools:
                    seen_tools.add(index)
                    out.append(
                        ToolStart(index, str(call.get("id") or ""), str(function.get("name") or ""))
                    )
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    out.append(ToolArguments(index, arguments))
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                out.append(Finish(reason))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            out.append(
                Usage(
                    int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                )
            )
    return out


class EventWriter(Protocol):
    def feed(self, event: ChatEvent) -> list[bytes]:
        """The client's events for one chat event."""

    async def end(self) -> list[bytes]:
        """The client's closing events (once, whatever the stream said)."""


class ShapedStream(web.StreamResponse):
    """A stream response the pipeline writes chat chunks to, and the client reads in
    another API's events."""

    def __init__(self, headers: dict[str, str], writer: EventWriter) -> None:
        super().__init__(headers=headers)
        self._writer = writer
        self._seen_tools: set[int] = set()
        self._ended = False

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        for event in read_chunk(bytes(data), self._seen_tools):
            for out in self._writer.feed(event):
                await super().write(out)

    async def write_eof(self, data: bytes = b"") -> None:
        if not self._ended:
            self._ended = True
            for out in await self._writer.end():
                await super().write(out)
        await super().write_eof(data)


def sse(event: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"
