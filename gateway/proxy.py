"""The model request pipeline:
validate → resolve → admit → attempt (endpoints, then fallbacks) → relay → account.

A request is retried on another endpoint or a fallback model only until its first byte
has reached the client: a stream is committed when the upstream's first event arrives,
and a failure after that ends the stream with an error event instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.admission import estimate_tokens, refusal_error
from llmrouter.gateway.cache import CACHE_HEADER, cache_key, cacheable
from llmrouter.gateway.config import GatewayConfig, ModelRoute
from llmrouter.gateway.endpoints import Endpoint, choose
from llmrouter.gateway.errors import (
    GatewayError,
    NoHealthyUpstream,
    NotReady,
    UpstreamFailed,
    UpstreamTimeout,
)
from llmrouter.gateway.keys import (
    BUDGETS,
    CACHE,
    CONFIG,
    ENDPOINTS,
    IDENTITY,
    METRICS,
    PLANS,
    REQUEST_ID,
    SETTINGS,
    STATE,
    UPSTREAM,
)
from llmrouter.gateway.openai_request import ModelRequest, Operation, parse_request
from llmrouter.gateway.periods import day_id, month_id
from llmrouter.gateway.providers import Adapter, StreamTranslator, adapter_for
from llmrouter.gateway.roles import MODELS_INVOKE
from llmrouter.gateway.routing import fallback_chain, resolve
from llmrouter.gateway.state import Plan, Settlement, StateUnavailable, to_nano
from llmrouter.gateway.usage import RequestRecord, Usage

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for "client went away before the answer was complete"


@dataclass(slots=True)
class Outcome:
    route: ModelRoute
    steps: list[str] = field(default_factory=list)
    status: int = 200
    usage: Usage | None = None
    ttft_s: float | None = None
    attempts: int = 0
    committed: bool = False
    """The first byte went to the client: no more retries."""
    cache: str | None = None
    """``hit`` or ``miss`` for a cacheable request."""


async def handle_model_request(request: web.Request, operation: Operation) -> web.StreamResponse:
    started = time.perf_counter()
    identity = request[IDENTITY]
    identity.require(MODELS_INVOKE)
    req = parse_request(operation, await request.read())
    resolution = resolve(request[CONFIG], identity.tenant, req.model, req.body, request.headers)
    plan = await _admit(request, req)
    outcome = Outcome(route=resolution.route, steps=list(resolution.steps))
    try:
        key = _cache_key(request, req, resolution.route)
        if key is not None:
            cached = await request.app[CACHE].get(key)
            if cached is not None:
                outcome.cache = "hit"
                return web.Response(
                    body=cached, content_type="application/json", headers=_headers(request, outcome)
                )
            outcome.cache = "miss"
        answer = await _attempt(request, req, outcome, started)
        await _send(request, answer)
        if key is not None and outcome.route is resolution.route:
            await _cache_put(request, key, answer)
        return answer
    except GatewayError as exc:
        outcome.status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        outcome.status = CLIENT_CLOSED
        raise
    except Exception:
        outcome.status = 500
        raise
    finally:
        try:
            await _account(request, req, plan, outcome, time.perf_counter() - started)
        except Exception:
            # The answer may be on its way already: a failure to count it must not replace it.
            logger.exception("request %s: accounting failed", request[REQUEST_ID])


async def _send(request: web.Request, answer: web.StreamResponse) -> None:
    """Answer the client now, before usage is counted: accounting adds nothing to latency.
    A request arriving in the moment between may be admitted before this one is counted, as
    a request at another replica may be."""
    if not answer.prepared:
        await answer.prepare(request)
        await answer.write_eof()


async def _admit(request: web.Request, req: ModelRequest) -> Plan:
    identity = request[IDENTITY]
    now = request.app[SETTINGS].clock()
    max_tokens = req.body.get("max_tokens", req.body.get("max_completion_tokens"))
    plan = request.app[PLANS].plan(identity, estimate_tokens(len(req.raw), max_tokens), now)
    try:
        refusal = await request.app[STATE].admit(plan, request[REQUEST_ID], now)
    except StateUnavailable as exc:
        raise NotReady(
            "limits cannot be checked: shared state unavailable",
            code="state_unavailable",
            headers={"Retry-After": "1"},
        ) from exc
    if refusal is not None:
        request.app[METRICS].refusals.labels(identity.tenant.id, refusal.name).inc()
        raise refusal_error(refusal)
    return plan


async def _attempt(
    request: web.Request, req: ModelRequest, outcome: Outcome, started: float
) -> web.StreamResponse:
    """Endpoints of the model, then of each fallback, until one answers."""
    app = request.app
    config: GatewayConfig = request[CONFIG]
    table = app[ENDPOINTS]
    max_attempts = app[SETTINGS].max_attempts
    deadline = started + outcome.route.timeouts.total_s
    last: GatewayError | None = None
    for route in fallback_chain(config, request[IDENTITY].tenant, outcome.route):
        if last is not None:
            outcome.steps.append(f"fallback->{route.name} ({last.code})")
        tried: set[str] = set()
        while outcome.attempts < max_attempts and time.perf_counter() < deadline:
            endpoint = choose(
                table.endpoints(config, route),
                time.monotonic(),
                tried,
                strategy=app[SETTINGS].balancer,
            )
            if endpoint is None:
                break
            tried.add(endpoint.url)
            outcome.attempts += 1
            outcome.route = route
            try:
                return await _try_endpoint(
                    request, req, route, endpoint, outcome, started, deadline
                )
            except GatewayError as exc:
                if not exc.retryable or outcome.committed:
                    raise
                last = exc
                app[METRICS].upstream_failures.labels(route.name, exc.code).inc()
    if last is not None:
        raise last
    raise NoHealthyUpstream(
        f"model {outcome.route.name!r}: no healthy endpoint to send the request to",
        headers={"Retry-After": "1"},
    )


async def _try_endpoint(
    request: web.Request,
    req: ModelRequest,
    route: ModelRoute,
    endpoint: Endpoint,
    outcome: Outcome,
    started: float,
    deadline: float,
) -> web.StreamResponse:
    table = request.app[ENDPOINTS]
    upstream = table.upstream(endpoint)
    attempt_started = time.perf_counter()
    endpoint.begin(time.monotonic())
    try:
        resp = await request.app[UPSTREAM].post(
            route,
            upstream,
            req,
            request_id=request[REQUEST_ID],
            deadline_s=deadline - time.perf_counter(),
        )
        adapter = adapter_for(upstream.protocol)
        async with resp:
            if not req.stream:
                answer = await _complete(request, req, route, adapter, resp, outcome)
                endpoint.succeeded(time.perf_counter() - attempt_started)
                return answer
            events = _events(route, resp)
            translator = adapter.stream(req)
            if translator is not None:
                events = _translated(events, translator)
            first = await _first_event(route, events)
            outcome.committed = True
            return await _stream(request, req, route, endpoint, outcome, started, first, events)
    except GatewayError as exc:
        if outcome.committed:
            raise
        if exc.endpoint_fault:
            endpoint.failed(time.monotonic())
        else:
            endpoint.abandoned()
        raise
    except BaseException:
        if not outcome.committed:
            endpoint.abandoned()
        raise


def _headers(request: web.Request, outcome: Outcome) -> dict[str, str]:
    headers = {
        "x-llmrouter-model": outcome.route.name,
        "x-llmrouter-route": "; ".join(outcome.steps) or "direct",
        "x-request-id": request[REQUEST_ID],
    }
    if outcome.cache is not None:
        headers[CACHE_HEADER] = outcome.cache
    return headers


def _cache_key(request: web.Request, req: ModelRequest, route: ModelRoute) -> str | None:
    if request.app[SETTINGS].cache_ttl_s <= 0 or not cacheable(req, request.headers):
        return None
    return cache_key(request[IDENTITY].tenant.id, route.name, req)


async def _cache_put(request: web.Request, key: str, answer: web.StreamResponse) -> None:
    settings = request.app[SETTINGS]
    if isinstance(answer, web.Response) and answer.status == 200:
        body = answer.body
        if isinstance(body, bytes) and len(body) <= settings.cache_max_bytes:
            await request.app[CACHE].put(key, body, settings.cache_ttl_s)


async def _complete(
    request: web.Request,
    req: ModelRequest,
    route: ModelRoute,
    adapter: Adapter,
    resp: aiohttp.ClientResponse,
    outcome: Outcome,
) -> web.Response:
    try:
        raw = await resp.read()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"model {route.name!r}: upstream did not finish in time") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream connection failed") from exc
    raw = adapter.response(raw, req)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream answered with invalid JSON") from exc
    outcome.usage = Usage.from_openai(doc.get("usage") if isinstance(doc, dict) else None)
    return web.Response(
        body=raw, content_type="application/json", headers=_headers(request, outcome)
    )


class _StreamBroken(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


async def _events(route: ModelRoute, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's server-sent events, each whole. A failure to read them becomes
    _StreamBroken, so that it is never mistaken for a failure to write to the client."""
    lines: list[bytes] = []
    try:
        async for line in resp.content:
            if line not in (b"\n", b"\r\n"):
                lines.append(line)
                continue
            yield b"".join(lines) + line
            lines.clear()
    except TimeoutError as exc:
        raise _StreamBroken(
            UpstreamTimeout(f"model {route.name!r}: upstream stalled mid-stream")
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise _StreamBroken(
            UpstreamFailed(f"model {route.name!r}: upstream failed mid-stream")
        ) from exc
    if lines:
        yield b"".join(lines)


async def _translated(
    events: AsyncIterator[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    """A provider's events as OpenAI's; a provider's error event breaks the stream."""
    async for event in events:
        try:
            out = translator.feed(event)
        except GatewayError as exc:
            raise _StreamBroken(exc) from exc
        for translated in out:
            yield translated


async def _first_event(route: ModelRoute, events: AsyncIterator[bytes]) -> bytes:
    """The first event, within the model's first-token timeout; until it has come the
    request can still go elsewhere."""
    try:
        return await asyncio.wait_for(anext(events), route.timeouts.first_token_s)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"model {route.name!r}: no first token in time") from exc
    except StopAsyncIteration as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream ended the stream empty") from exc
    except _StreamBroken as broken:
        raise broken.error from broken


async def _stream(
    request: web.Request,
    req: ModelRequest,
    route: ModelRoute,
    endpoint: Endpoint,
    outcome: Outcome,
    started: float,
    first: bytes,
    events: AsyncIterator[bytes],
) -> web.StreamResponse:
    out = web.StreamResponse(
        headers={
            **_headers(request, outcome),
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        }
    )
    await out.prepare(request)
    outcome.ttft_s = time.perf_counter() - started
    try:
        await _relay(first, events, out, req, outcome)
        await out.write_eof()
    except _StreamBroken as broken:
        # Bytes already reached the client: the only honest ending is an error event.
        logger.warning("request %s: %s", request[REQUEST_ID], broken.error.message)
        endpoint.failed(time.monotonic())
        outcome.status = broken.error.status
        await _write_quietly(out, b"data: " + orjson.dumps(broken.error.body()) + b"\n\n")
        return out
    except ConnectionResetError:
        endpoint.abandoned()
        outcome.status = CLIENT_CLOSED
        return out
    except BaseException:
        endpoint.abandoned()  # e.g. cancelled: the endpoint's in-flight count must not leak
        raise
    endpoint.succeeded(outcome.ttft_s)
    return out


async def _write_quietly(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
        await out.write_eof()
    except ConnectionResetError:
        pass


async def _relay(
    first: bytes,
    events: AsyncIterator[bytes],
    out: web.StreamResponse,
    req: ModelRequest,
    outcome: Outcome,
) -> None:
    """Pass each event on as soon as it is whole; read usage on the way."""
    event: bytes | None = first
    while event is not None:
        usage_only = b'"usage"' in event and _take_usage(event, outcome)
        if not usage_only or req.wants_usage:
            await out.write(event)
        event = await anext(events, None)


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


async def _account(
    request: web.Request,
    req: ModelRequest,
    plan: Plan,
    outcome: Outcome,
    duration_s: float,
) -> None:
    app = request.app
    identity = request[IDENTITY]
    route = outcome.route
    usage = outcome.usage or Usage()
    cost = usage.cost(route.pricing)
    now = app[SETTINGS].clock()
    state = app[STATE]
    settlement = Settlement(
        at=now,
        tenant=identity.tenant.id,
        day=day_id(now),
        month=month_id(now),
        model=route.name,
        user=identity.user,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_nano=to_nano(cost),
    )
    spend = await state.finish(plan, request[REQUEST_ID], settlement)
    app[BUDGETS].observe(identity.tenant, settlement.month, spend)
    record = RequestRecord(
        request_id=request[REQUEST_ID],
        tenant=identity.tenant.id,
        key_name=identity.key_name,
        model=route.name,
        endpoint=req.operation.label,
        status=outcome.status,
        usage=usage,
        cost_usd=cost,
        duration_s=duration_s,
        ttft_s=outcome.ttft_s,
        stream=req.stream,
    )
    app[METRICS].observe(record)
    if app[SETTINGS].access_log:
        logger.info(
            "request %s tenant=%s user=%s model=%s route=%r endpoint=%s status=%d "
            "attempts=%d in=%d out=%d cost=%s duration=%.3fs",
            record.request_id,
            record.tenant,
            identity.user,
            record.model,
            "; ".join(outcome.steps),
            record.endpoint,
            record.status,
            outcome.attempts,
            usage.input_tokens,
            usage.output_tokens,
            record.cost_usd,
            duration_s,
        )
