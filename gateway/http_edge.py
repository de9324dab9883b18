"""What the gateway does with clients that are malformed or slow before a handler runs.

aiohttp answers a request it cannot parse (a header line over 8190 bytes, more than 128
headers, a bad chunk size, bytes that are not HTTP) itself, as ``text/plain``, and logs it with
a stack trace. ``GatewayRunner`` answers those with the OpenAI-shaped error every other
failure gets, and logs one line: they are a client's mistake, not the gateway's.

Slow clients are bounded twice: a connection that has not sent a whole request head within
``header_timeout_s`` of opening, or of its previous answer, is closed (idle kept-alive
connections alike), and a body that has not arrived within ``body_timeout_s`` of the handler
asking for it is answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from llmrouter.gateway.errors import error_body
from llmrouter.gateway.keys import CLIENT_REQUEST_ID, REQUEST_ID, SETTINGS

logger = logging.getLogger(__name__)

MAX_HEADER_LINE = 8190
"""aiohttp's bound on the request line and on each header line (``max_line_size``,
``max_field_size``)."""
MAX_HEADERS = 128
"""aiohttp's bound on the number of request headers (``max_headers``)."""


def _refusal(exc: BaseException | None) -> tuple[int, str, str]:
    """Status, code and message for a request aiohttp could not parse. The parser's own
    message quotes the client's bytes; the answer does not echo them."""
    if isinstance(exc, LineTooLong):
        return (
            431,
            "header_too_large",
            (f"the request line or a header is longer than {MAX_HEADER_LINE} bytes"),
        )
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return 431, "header_too_large", f"the request has more than {MAX_HEADERS} headers"
    return 400, "invalid_http", "the request is not valid HTTP/1.1"


class GatewayRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer went out: nothing can follow it on this connection.
            raise ConnectionError("an answer was already being sent")
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            # Not a client's malformed request: a fault of the gateway, worth its trace.
            self.log_exception("request from %s failed", request.remote, exc_info=exc)
            status, type_, code, text = 500, "server_error", "internal_error", "internal error"
        else:
            status, code, text = _refusal(exc)
            type_ = "invalid_request_error"
            first = (exc.message or "").splitlines()[0][:200] if exc.message else ""
            logger.info("refused a malformed request from %s (%s): %s", request.remote, code, first)
        response = web.Response(
            status=status,
            body=orjson.dumps(error_body(text, type_, code)),
            content_type="application/json",
        )
        response.force_close()
        return response


class GatewayServer(Server):
    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests as OpenAI errors."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # The application builds its Server itself; only the protocol factory differs.
        server.__class__ = GatewayServer
        return server


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reads the body within ``body_timeout_s`` before the handler sees it (the handler's
    own read then returns it at once): a client trickling its body cannot hold a request
    open. Innermost, so that only authenticated requests are read at all."""
    if request.body_exists:
        timeout = request.app[SETTINGS].body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            message = f"the request body did not arrive within {timeout:g} s"
            return await _closing(request, 408, "request_timeout", message)
        except RequestPayloadError as exc:
            # A chunked or compressed body that does not decode: the client's bytes.
            logger.info("refused a request body that does not decode: %s", exc)
            return await _closing(request, 400, "invalid_body", "the request body does not decode")
    return await handler(request)


async def _closing(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """Answers, then closes the connection at once: what is left of the body must not be
    read as a next request, nor waited for (aiohttp would otherwise linger up to 10 s
    reading it, from the very client that was too slow)."""
    response = web.Response(
        status=status,
        body=orjson.dumps(error_body(message, "invalid_request_error", code)),
        content_type="application/json",
        headers={"x-request-id": request.get(CLIENT_REQUEST_ID) or request[REQUEST_ID]},
    )
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response
