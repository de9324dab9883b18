"""Middlewares, one concern each. Order (outermost first): shedding → errors →
authentication."""

from __future__ import annotations

import functools
import logging
import os
import re

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from llmrouter.gateway.audit_events import refused
from llmrouter.gateway.auth import authenticate_key, presented_credential
from llmrouter.gateway.errors import (
    ANTHROPIC_PATHS,
    GatewayError,
    Overloaded,
    anthropic_error,
    error_body,
)
from llmrouter.gateway.keys import (
    CLIENT_REQUEST_ID,
    CONFIG,
    IDENTITY,
    JWKS,
    LOAD,
    METRICS,
    REQUEST_ID,
    SETTINGS,
    STORE,
)
from llmrouter.gateway.oidc import authenticate_token, looks_like_jwt

logger = logging.getLogger(__name__)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# aiohttp's own HTTP errors, as OpenAI error types and codes.
_HTTP_ERRORS = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def json_error(
    status: int, body: dict[str, object], request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-request-id": request_id, **(headers or {})},
    )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-shaped JSON error; no stack trace reaches a client."""
    # A client's id is never an identity: two requests sharing one must not share a slot.
    request_id = os.urandom(16).hex()
    request[REQUEST_ID] = request_id
    incoming = request.headers.get("x-request-id", "")
    echo = request_id
    if _SAFE_REQUEST_ID.match(incoming):
        request[CLIENT_REQUEST_ID] = echo = incoming
    try:
        return await handler(request)
    except GatewayError as exc:
        refused(request, exc)
        if exc.shape is None and request.path in ANTHROPIC_PATHS:
            exc.shape = anthropic_error
        return json_error(exc.status, exc.body(), echo, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_, code = _HTTP_ERRORS.get(exc.status, ("invalid_request_error", "http_error"))
        message = exc.reason
        if exc.status == 413:
            limit = request.app[SETTINGS].max_body_bytes
            message = f"request body too large (limit {limit} bytes)"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        body = error_body(message, type_, code)
        if request.path in ANTHROPIC_PATHS:
            body = anthropic_error(GatewayError(message, status=exc.status))
        return json_error(exc.status, body, echo, headers)
    except ConnectionResetError:
        # The client went away before its answer was written: an ordinary event, counted
        # (499) where the request is accounted. aiohttp drops this answer unsent.
        logger.debug("request %s: the client disconnected", request_id)
        return web.Response(status=499)
    except Exception:
        logger.exception("request %s %s (%s) failed", request.method, request.path, request_id)
        return json_error(500, error_body("internal error", "server_error", "internal_error"), echo)


_PROBES = frozenset({"/healthz", "/readyz"})


@web.middleware
async def shedding(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Past the cap on requests in flight, refuse at once: under overload a queue only
    grows until every client times out, while a quick 503 lets a client go elsewhere and
    keeps the requests already admitted fast. Probes are never refused: a full process is
    alive and ready. Outermost, and answering without an exception: a refusal must cost
    far less than a request, or refusing would itself take the capacity it protects."""
    if request.path in _PROBES:
        return await handler(request)
    load = request.app[LOAD]
    if load.in_flight >= load.max_in_flight:
        request.app[METRICS].overloaded.inc()
        return web.Response(
            status=Overloaded.status,
            body=_overloaded_body(load.max_in_flight),
            content_type="application/json",
            headers=_RETRY_AFTER,
        )
    load.in_flight += 1
    try:
        return await handler(request)
    finally:
        load.in_flight -= 1


_RETRY_AFTER = {"Retry-After": "1"}


@functools.cache
def _overloaded_body(limit: int) -> bytes:
    message = f"the gateway is at its limit of {limit} requests in flight; retry shortly"
    return orjson.dumps(Overloaded(message).body())


async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, every answer ends its connection (``Connection: close``): a client
    with a kept-alive connection sends its next request on a new one, to a process that
    still listens, instead of finding this one closed under it. (on_response_prepare)"""
    if request.app[LOAD].draining:
        response.force_close()
        response.headers["Connection"] = "close"


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API routes need a key; health and metrics do not."""
    if request.path.startswith(("/v1/", "/admin/")):
        config = request.app[STORE].current
        request[CONFIG] = config
        credential = presented_credential(request.headers)
        if looks_like_jwt(credential):
            request[IDENTITY] = await authenticate_token(
                credential, config, request.headers, request.app[JWKS]
            )
        else:
            request[IDENTITY] = authenticate_key(credential, config)
    return await handler(request)
