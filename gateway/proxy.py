"""The model request pipeline:
validate → resolve → admit → attempt (endpoints, then fallbacks) → relay → account.

A request is retried on another endpoint or a fallback model only until its first byte
has reached the client: a stream is committed when the upstream's first event arrives,
and a failure after that ends the stream with an error event instead. Events are relayed
by llmrouter.gateway.streaming; what a request is charged is llmrouter.gateway.accounting's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.accounting import Outcome, account
from llmrouter.gateway.admission import Ask, ask_for, refusal_error
from llmrouter.gateway.answer_shape import shaped, stream_response
from llmrouter.gateway.cache import CACHE_HEADER, cache_key, cacheable
from llmrouter.gateway.config import GatewayConfig, ModelRoute
from llmrouter.gateway.data_policy import check_answer, check_request, stream_guard
from llmrouter.gateway.endpoints import Endpoint, choose
from llmrouter.gateway.errors import (
    GatewayError,
    NoHealthyUpstream,
    NotReady,
    UpstreamFailed,
    UpstreamTimeout,
)
from llmrouter.gateway.experiments.assignment import (
    EXPERIMENT_HEADER,
    Trial,
    assign,
    experiment_for,
    unit_of,
    with_variant,
)
from llmrouter.gateway.keys import (
    CACHE,
    CLIENT_REQUEST_ID,
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
from llmrouter.gateway.providers import Adapter, adapter_for
from llmrouter.gateway.roles import MODELS_INVOKE
from llmrouter.gateway.routing import fallback_chain, resolve, with_trial
from llmrouter.gateway.state import Plan, StateUnavailable
from llmrouter.gateway.streaming import (
    StreamBroken,
    first_event,
    relay,
    translated,
    upstream_events,
    write_quietly,
)
from llmrouter.gateway.tracing import note
from llmrouter.gateway.usage import Usage, output_estimate

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for "client went away before the answer was complete"


async def handle_model_request(
    request: web.Request, operation: Operation, body: bytes | None = None
) -> web.StreamResponse:
    """``body``: the request in chat's shape, for endpoints that translate another API."""
    started = time.perf_counter()
    identity = request[IDENTITY]
    identity.require(MODELS_INVOKE)
    req = parse_request(operation, await request.read() if body is None else body)
    config = request[CONFIG]
    resolution = resolve(config, identity.tenant, req.model, req.body, request.headers)
    trial = _trial(request, req)
    if trial is not None:
        resolution = with_trial(config, req.model, trial)
        req = req.with_body(with_variant(req.body, trial.variant))
    req = check_request(request, req)
    chain = fallback_chain(config, identity.tenant, resolution.route)
    ask = ask_for(req, chain)
    plan = await _admit(request, ask)
    outcome = Outcome(route=resolution.route, steps=list(resolution.steps), trial=trial)
    note(request, req, outcome)
    try:
        # A measured request is never answered from the cache: it would skew its variant.
        measured = trial is not None and trial.measured
        key = None if measured else _cache_key(request, req, resolution.route)
        if key is not None:
            cached = await request.app[CACHE].get(key)
            if cached is not None:
                outcome.cache = "hit"
                return await shaped(
                    request,
                    web.Response(
                        body=cached,
                        content_type="application/json",
                        headers=_headers(request, outcome),
                    ),
                )
            outcome.cache = "miss"
        answer = await _attempt(request, req, chain, outcome, started)
        sent = await shaped(request, answer)
        await _send(request, sent)
        if key is not None and outcome.route is resolution.route:
            await _cache_put(request, key, answer)
        return sent
    except GatewayError as exc:
        outcome.status = exc.status
        if trial is not None:  # a failure says which variant failed, as an answer would
            exc.headers = {**(exc.headers or {}), EXPERIMENT_HEADER: trial.label}
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        outcome.status = CLIENT_CLOSED
        raise
    except Exception:
        outcome.status = 500
        raise
    finally:
        try:
            await account(request, req, ask, plan, outcome, time.perf_counter() - started)
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


async def _admit(request: web.Request, ask: Ask) -> Plan:
    identity = request[IDENTITY]
    now = request.app[SETTINGS].clock()
    plan = request.app[PLANS].plan(identity, ask, now)
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
    request: web.Request,
    req: ModelRequest,
    chain: list[ModelRoute],
    outcome: Outcome,
    started: float,
) -> web.StreamResponse:
    """Endpoints of the model, then of each fallback, until one answers."""
    app = request.app
    config: GatewayConfig = request[CONFIG]
    table = app[ENDPOINTS]
    max_attempts = app[SETTINGS].max_attempts
    deadline = started + outcome.route.timeouts.total_s
    last: GatewayError | None = None
    for route in chain:
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
                    request, req.with_output_cap(route), route, endpoint, outcome, started, deadline
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
            events = upstream_events(route, resp)
            translator = adapter.stream(req)
            if translator is not None:
                events = translated(events, translator)
            first = await first_event(route, events)
            outcome.committed = outcome.answered = True
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


def _trial(request: web.Request, req: ModelRequest) -> Trial | None:
    """The experiment this request takes part in, if any (see experiments.assignment)."""
    config, identity = request[CONFIG], request[IDENTITY]
    requested = config.resolve(req.model)
    if requested is None or not config.experiments:
        return None
    tenant = identity.tenant.id
    policy = experiment_for(config, tenant, requested.name)
    if policy is None:
        return None
    unit = unit_of(
        policy,
        tenant,
        identity.user,
        identity.key_name,
        req.body,
        request.headers,
        request[REQUEST_ID],
    )
    return assign(policy, unit) if unit is not None else None


def _headers(request: web.Request, outcome: Outcome) -> dict[str, str]:
    headers = {
        "x-llmrouter-model": outcome.route.name,
        "x-llmrouter-route": "; ".join(outcome.steps) or "direct",
        "x-request-id": request.get(CLIENT_REQUEST_ID) or request[REQUEST_ID],
        "x-llmrouter-request-id": request[REQUEST_ID],
    }
    if outcome.trial is not None:
        headers[EXPERIMENT_HEADER] = outcome.trial.label
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
    outcome.answered = True
    raw = adapter.response(raw, req)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream answered with invalid JSON") from exc
    outcome.usage = Usage.from_openai(doc.get("usage") if isinstance(doc, dict) else None)
    if outcome.usage is None:
        outcome.output_estimate = output_estimate(doc)
    raw = check_answer(request, raw, doc)
    return web.Response(
        body=raw, content_type="application/json", headers=_headers(request, outcome)
    )


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
    out = stream_response(
        request,
        {
            **_headers(request, outcome),
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        },
    )
    await out.prepare(request)
    outcome.ttft_s = time.perf_counter() - started
    try:
        await relay(first, events, out, req.wants_usage, outcome, stream_guard(request))
        await out.write_eof()
    except StreamBroken as broken:
        # Bytes already reached the client: the only honest ending is an error event.
        logger.warning("request %s: %s", request[REQUEST_ID], broken.error.message)
        endpoint.failed(time.monotonic())
        outcome.status = broken.error.status
        await write_quietly(out, b"data: " + orjson.dumps(broken.error.body()) + b"\n\n")
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
