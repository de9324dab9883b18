"""A controllable OpenAI-compatible server, for tests where control is the point:
counting what the gateway sends, and injecting slowness and failures."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Behaviour:
    status: int = 200
    """Status of every answer; not 200 answers with an OpenAI error body."""
    chunks: int = 3
    """Content chunks in a stream."""
    chunk_delay_s: float = 0.0
    """Pause before each stream chunk."""
    delay_s: float = 0.0
    """Pause before answering at all."""
    break_stream_after: int | None = None
    """Drop the connection after this many stream chunks."""
    retry_after: str | None = None
    fail_ratio: float = 0.0
    """Share of requests answered with 500, drawn from a seeded generator."""
    usage: bool = True
    """Report usage; False is a server that never does (whatever include_usage says)."""
    content: list[str] | None = None
    """A chat answer's content, one stream chunk per piece (a whole answer joins them);
    None: the default answer."""
    tool_call: tuple[str, str] | None = None
    """A chat answer calls this function (name, JSON arguments) instead of answering in text;
    a stream sends the arguments in two pieces."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    behaviour: Behaviour = field(default_factory=Behaviour)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0
    peak_in_flight: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.seen.clear()
        self.peak_in_flight = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/health", self._health)
        return app

    def _usage(self, prompt: int, completion: int) -> dict[str, Any]:
        if not self.behaviour.usage:
            return {}
        total = prompt + completion
        return {
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": total,
            }
        }

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.seen.append(Seen(request.path, dict(request.headers), body))
        b = self.behaviour
        if b.delay_s:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                await asyncio.sleep(b.delay_s)
            finally:
                self.in_flight -= 1
        if b.status != 200 or (b.fail_ratio and self.rng.random() < b.fail_ratio):
            headers = {"Retry-After": b.retry_after} if b.retry_after else None
            status = b.status if b.status != 200 else 500
            return body, web.json_response(
                {"error": {"message": f"injected failure {status}", "type": "server_error"}},
                status=status,
                headers=headers,
            )
        return body, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._begin(request)
        if failure:
            return failure
        if body.get("stream"):
            return await self._stream(request, body, chat=True)
        if self.behaviour.tool_call is not None:
            name, arguments = self.behaviour.tool_call
            function = {"name": name, "arguments": arguments}
            call = {"id": "call_fake", "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
                    **self._usage(7, 5),
                }
            )
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": "".join(self.behaviour.content or ["hello from upstream"]),
                        },
                    }
                ],
                **self._usage(7, 5),
            }
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._begin(request)
        if failure:
            return failure
        if body.get("stream"):
            return await self._stream(request, body, chat=False)
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "text": "once upon", "finish_reason": "length", "logprobs": None}
                ],
                **self._usage(3, 2),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._begin(request)
        if failure:
            return failure
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool
    ) -> web.StreamResponse:
        b = self.behaviour
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if chat and b.tool_call is not None:
            await self._stream_tool_call(resp, body, *b.tool_call)
            return resp
        for i in range(len(b.content) if chat and b.content is not None else b.chunks):
            if b.break_stream_after is not None and i >= b.break_stream_after:
                # Let the client read what was sent: aiohttp drops buffered bytes once it
                # sees the connection end mid-body.
                await asyncio.sleep(0.1)
                assert request.transport is not None
                request.transport.close()
                return resp
            if b.chunk_delay_s:
                await asyncio.sleep(b.chunk_delay_s)
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": b.content[i] if b.content is not None else f"tok{i} "},
                    "finish_reason": None,
                }
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": f"tok{i} ", "finish_reason": None}
                obj = "text_completion"
            chunk = {
                "id": "fake",
                "object": obj,
                "created": 1,
                "model": body["model"],
                "choices": [choice],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if b.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": b.chunks,
                    "total_tokens": 7 + b.chunks,
                },
            }
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream_tool_call(
        self, resp: web.StreamResponse, body: dict[str, Any], name: str, arguments: str
    ) -> None:
        half = len(arguments) // 2
        deltas: list[dict[str, Any]] = [
            {"index": 0, "id": "call_fake", "type": "function", "function": {"name": name}},
            {"index": 0, "function": {"arguments": arguments[:half]}},
            {"index": 0, "function": {"arguments": arguments[half:]}},
        ]
        for i, call in enumerate(deltas):
            delta: dict[str, Any] = {"tool_calls": [call]}
            if i == 0:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            chunk = {"id": "fake", "object": "chat.completion.chunk", "model": body["model"]}
            await resp.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode())
        end = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
        chunk = {"id": "fake", "object": "chat.completion.chunk", "model": body["model"]}
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        await resp.write(f"data: {json.dumps({**chunk, 'choices': [end]})}\n\n".encode())
        await resp.write(
            f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n".encode()
        )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


class UpstreamThread:
    """Runs a FakeUpstream on its own loop in a thread, so sync and async tests share it."""

    def __init__(self) -> None:
        self.fake = FakeUpstream()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FakeUpstream:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.fake.url = f"http://127.0.0.1:{port}/v1"
        return self.fake

    async def _start(self) -> int:
        # Hung handlers (injected delays) must not hold up the end of a test.
        self._runner = web.AppRunner(self.fake.app(), shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
