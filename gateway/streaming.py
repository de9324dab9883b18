"""Server-sent events from a model server to the client, one whole event at a time.

Usage is read on the way, and every content event relayed is counted, so a stream that
ends without the server's usage report (cut by the client, broken, or from a server that
never reports usage) can still be charged what reached the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.accounting import Outcome
from llmrouter.gateway.config import ModelRoute
from llmrouter.gateway.errors import GatewayError, UpstreamFailed, UpstreamTimeout
from llmrouter.gateway.guardrails.sse import Blocked, DetectorFailed, StreamGuard
from llmrouter.gateway.providers import StreamTranslator
from llmrouter.gateway.usage import Usage


class StreamBroken(Exception):
    """Reading the upstream failed (never writing to the client)."""

    def __init__(self, error: GatewayError) -> None:
        self.error = error


async def upstream_events(route: ModelRoute, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's server-sent events, each whole. A failure to read them becomes
    StreamBroken, so that it is never mistaken for a failure to write to the client."""
    lines: list[bytes] = []
    try:
        async for line in resp.content:
            if line not in (b"\n", b"\r\n"):
                lines.append(line)
                continue
            yield b"".join(lines) + line
            lines.clear()
    except TimeoutError as exc:
        raise StreamBroken(
            UpstreamTimeout(f"model {route.name!r}: upstream stalled mid-stream")
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise StreamBroken(
            UpstreamFailed(f"model {route.name!r}: upstream failed mid-stream")
        ) from exc
    if lines:
        yield b"".join(lines)


async def translated(
    events: AsyncIterator[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    """A provider's events as OpenAI's; a provider's error event breaks the stream."""
    async for event in events:
        try:
            out = translator.feed(event)
        except GatewayError as exc:
            raise StreamBroken(exc) from exc
        for item in out:
            yield item


async def first_event(route: ModelRoute, events: AsyncIterator[bytes]) -> bytes:
    """The first event, within the model's first-token timeout; until it has come the
    request can still go elsewhere."""
    try:
        return await asyncio.wait_for(anext(events), route.timeouts.first_token_s)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"model {route.name!r}: no first token in time") from exc
    except StopAsyncIteration as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream ended the stream empty") from exc
    except StreamBroken as broken:
        raise broken.error from broken


async def relay(
    first: bytes,
    events: AsyncIterator[bytes],
    out: web.StreamResponse,
    wants_usage: bool,
    outcome: Outcome,
    guard: StreamGuard | None = None,
) -> None:
    """Pass each event on as soon as it is whole; read usage and count content on the way."""
    if guard is not None:
        return await _relay_guarded(first, events, out, wants_usage, outcome, guard)
    event: bytes | None = first
    while event is not None:
        usage_only = b'"usage"' in event and _take_usage(event, outcome)
        if not usage_only:
            await out.write(event)
            if event.startswith(b"data: {"):
                outcome.output_events += 1
        elif wants_usage:
            await out.write(event)
        event = await anext(events, None)


async def _relay_guarded(
    first: bytes,
    events: AsyncIterator[bytes],
    out: web.StreamResponse,
    wants_usage: bool,
    outcome: Outcome,
    guard: StreamGuard,
) -> None:
    """relay() through the tenant's output guardrails: text is held back only as long as a
    match could still be forming (gateway/guardrails/stream.py). A ``block`` finding, or a
    detector failing, ends the stream with ``finish_reason: content_filter`` and an error
    event; the upstream is not read further."""
    event: bytes | None = first
    try:
        while event is not None:
            if b'"usage"' in event and _take_usage(event, outcome):
                if wants_usage:
                    await out.write(event)
            else:
                for item in guard.event(event):
                    await out.write(item)
                    if item.startswith(b"data: {"):
                        outcome.output_events += 1
            event = await anext(events, None)
        for item in guard.end():
            await out.write(item)
    except (Blocked, DetectorFailed) as exc:
        for item in guard.blocked(exc):
            await out.write(item)
    finally:
        guard.done()


def _take_usage(event: bytes, outcome: Outcome) -> bool:
    """Record usage from a chunk; True when the chunk carries nothing but usage."""
    if not event.startswith(b"data: {"):
        return False
    try:
        chunk = orjson.loads(event[len(b"data: ") :])
    except orjson.JSONDecodeError:
        return False
    if not isinstance(chunk, dict):
        return False
    usage = Usage.from_openai(chunk.get("usage"))
    if usage is None:
        return False
    outcome.usage = usage
    return not chunk.get("choices")


async def write_quietly(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
        await out.write_eof()
    except ConnectionResetError:
        pass
