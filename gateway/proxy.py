"""The model request pipeline: validate → resolve → call upstream → relay → account."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.admission import estimate_tokens, plan_admission, refusal_error
from llmrouter.gateway.config import ModelRoute
from llmrouter.gateway.errors import GatewayError, NotReady, UpstreamFailed, UpstreamTimeout
from llmrouter.gateway.keys import (
    BUDGETS,
    CONFIG,
    IDENTITY,
    LEDGER,
    METRICS,
    REQUEST_ID,
    SETTINGS,
    STATE,
    UPSTREAM,
)
from llmrouter.gateway.openai_request import (
    Endpoint,
    ModelRequest,
    parse_request,
    resolve_model,
    upstream_body,
)
from llmrouter.gateway.periods import day_id, month_id
from llmrouter.gateway.roles import MODELS_INVOKE
from llmrouter.gateway.state import Plan, Settlement, StateUnavailable, to_nano
from llmrouter.gateway.usage import RequestRecord, Usage

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for "client went away before the answer was complete"


@dataclass(slots=True)
class Outcome:
    status: int = 200
    usage: Usage | None = None
    ttft_s: float | None = None


async def handle_model_request(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    started = time.perf_counter()
    identity = request[IDENTITY]
    identity.require(MODELS_INVOKE)
    req = parse_request(endpoint, await request.read())
    route = resolve_model(request[CONFIG], identity.tenant, req.model)
    plan = await _admit(request, req)
    outcome = Outcome()
    try:
        if req.stream:
            return await _stream(request, req, route, outcome, started)
        return await _complete(request, req, route, outcome)
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
        await _account(request, req, route, plan, outcome, time.perf_counter() - started)


async def _admit(request: web.Request, req: ModelRequest) -> Plan:
    identity = request[IDENTITY]
    now = request.app[SETTINGS].clock()
    max_tokens = req.body.get("max_tokens", req.body.get("max_completion_tokens"))
    plan = plan_admission(identity, estimate_tokens(len(req.raw), max_tokens), now)
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


def _headers(request: web.Request, route: ModelRoute) -> dict[str, str]:
    return {"x-llmrouter-model": route.name, "x-request-id": request[REQUEST_ID]}


async def _call_upstream(
    request: web.Request, req: ModelRequest, route: ModelRoute
) -> aiohttp.ClientResponse:
    upstream = route.upstreams[0]
    return await request.app[UPSTREAM].post(
        route,
        upstream,
        req.endpoint.value,
        upstream_body(req, upstream),
        stream=req.stream,
        request_id=request[REQUEST_ID],
    )


async def _complete(
    request: web.Request, req: ModelRequest, route: ModelRoute, outcome: Outcome
) -> web.Response:
    resp = await _call_upstream(request, req, route)
    try:
        async with resp:
            raw = await resp.read()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"model {route.name!r}: upstream did not finish in time") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream connection failed") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailed(f"model {route.name!r}: upstream answered with invalid JSON") from exc
    outcome.usage = Usage.from_openai(doc.get("usage") if isinstance(doc, dict) else None)
    return web.Response(body=raw, content_type="application/json", headers=_headers(request, route))


async def _stream(
    request: web.Request,
    req: ModelRequest,
    route: ModelRoute,
    outcome: Outcome,
    started: float,
) -> web.StreamResponse:
    resp = await _call_upstream(request, req, route)
    async with resp:
        out = web.StreamResponse(
            headers={
                **_headers(request, route),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )
        await out.prepare(request)
        try:
            await _relay_events(_upstream_lines(route, resp), out, req, outcome, started)
            await out.write_eof()
        except _StreamBroken as broken:
            # Bytes already reached the client: the only honest ending is an error event.
            logger.warning("request %s: %s", request[REQUEST_ID], broken.error.message)
            outcome.status = broken.error.status
            await _write_quietly(out, b"data: " + orjson.dumps(broken.error.body()) + b"\n\n")
        except ConnectionResetError:
            outcome.status = CLIENT_CLOSED
    return out


class _StreamBroken(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


async def _upstream_lines(route: ModelRoute, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's lines; a failure to read them becomes _StreamBroken, so that it is
    never mistaken for a failure to write to the client."""
    try:
        async for line in resp.content:
            yield line
    except TimeoutError as exc:
        raise _StreamBroken(
            UpstreamTimeout(f"model {route.name!r}: upstream stalled mid-stream")
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise _StreamBroken(
            UpstreamFailed(f"model {route.name!r}: upstream failed mid-stream")
        ) from exc


async def _write_quietly(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
        await out.write_eof()
    except ConnectionResetError:
        pass


async def _relay_events(
    lines_in: AsyncIterator[bytes],
    out: web.StreamResponse,
    req: ModelRequest,
    outcome: Outcome,
    started: float,
) -> None:
    """Pass each server-sent event on as soon as it is complete; read usage on the way."""
    lines: list[bytes] = []
    async for line in lines_in:
        if line not in (b"\n", b"\r\n"):
            lines.append(line)
            continue
        event = b"".join(lines) + line
        lines.clear()
        usage_only = b'"usage"' in event and _take_usage(event, outcome)
        if usage_only and not req.wants_usage:
            continue  # the chunk the client did not ask for
        if outcome.ttft_s is None:
            outcome.ttft_s = time.perf_counter() - started
        await out.write(event)
    if lines:
        await out.write(b"".join(lines))


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
    route: ModelRoute,
    plan: Plan,
    outcome: Outcome,
    duration_s: float,
) -> None:
    app = request.app
    identity = request[IDENTITY]
    usage = outcome.usage or Usage()
    cost = usage.cost(route.pricing)
    now = app[SETTINGS].clock()
    state = app[STATE]
    await state.release(plan, request[REQUEST_ID])
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
    spend = await state.settle(plan, settlement)
    app[BUDGETS].observe(identity.tenant, settlement.month, spend)
    record = RequestRecord(
        request_id=request[REQUEST_ID],
        tenant=identity.tenant.id,
        key_name=identity.key_name,
        model=route.name,
        endpoint=req.endpoint.label,
        status=outcome.status,
        usage=usage,
        cost_usd=cost,
        duration_s=duration_s,
        ttft_s=outcome.ttft_s,
        stream=req.stream,
    )
    app[METRICS].observe(record)
    app[LEDGER].record(record)
    if app[SETTINGS].access_log:
        logger.info(
            "request %s tenant=%s user=%s model=%s endpoint=%s status=%d in=%d out=%d "
            "cost=%s duration=%.3fs",
            record.request_id,
            record.tenant,
            identity.user,
            record.model,
            record.endpoint,
            record.status,
            usage.input_tokens,
            usage.output_tokens,
            record.cost_usd,
            duration_s,
        )
