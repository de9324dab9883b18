"""Calls to model servers speaking the OpenAI API, with errors translated at this edge."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

from llmrouter.gateway.config import ModelRoute, Upstream
from llmrouter.gateway.credentials import CredentialSource, env_var_name
from llmrouter.gateway.errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamFailed,
    UpstreamMisconfigured,
    UpstreamTimeout,
)
from llmrouter.gateway.openai_request import ModelRequest
from llmrouter.gateway.providers import adapter_for
from llmrouter.gateway.tracing import attempt_failed, upstream_attempt

logger = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 * 1024


class UpstreamClient:
    def __init__(self, session: aiohttp.ClientSession, credentials: CredentialSource) -> None:
        self._session = session
        self._credentials = credentials

    async def post(
        self,
        route: ModelRoute,
        upstream: Upstream,
        req: ModelRequest,
        *,
        request_id: str,
        deadline_s: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send ``req`` in the upstream's own shape; return the open 2xx response."""
        adapter = adapter_for(upstream.protocol)
        url = adapter.url(upstream, req.operation)
        body = adapter.body(req, upstream)
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "X-Request-Id": request_id,
            **adapter.headers(self._secret(route, upstream)),
        }
        with upstream_attempt(route, upstream, req, headers) as span:
            try:
                return await self._send(route, upstream, req, url, body, headers, deadline_s)
            except GatewayError as exc:
                attempt_failed(span, exc.code)
                raise

    async def _send(
        self,
        route: ModelRoute,
        upstream: Upstream,
        req: ModelRequest,
        url: str,
        body: bytes,
        headers: dict[str, str],
        deadline_s: float | None,
    ) -> aiohttp.ClientResponse:
        t = route.timeouts
        total = t.total_s if deadline_s is None else max(0.001, min(t.total_s, deadline_s))
        timeout = aiohttp.ClientTimeout(
            total=total,
            sock_connect=t.connect_s,
            # Streams: no byte for first_token seconds means the server stalled.
            sock_read=t.first_token_s if req.stream else None,
        )
        try:
            resp = await self._session.post(url, data=body, headers=headers, timeout=timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {route.name!r}: upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            logger.warning("model %s: upstream %s failed: %r", route.name, upstream.base_url, exc)
            raise UpstreamFailed(
                f"model {route.name!r}: upstream unavailable", code="upstream_unavailable"
            ) from exc
        if resp.status >= 300:
            try:
                raise await _translate_status(route, resp)
            finally:
                resp.release()
        return resp

    def _secret(self, route: ModelRoute, upstream: Upstream) -> str | None:
        if upstream.credential is None:
            return None
        secret = self._credentials.get(upstream.credential)
        if secret is None:
            logger.error(
                "model %s: credential %s/%s not found (standalone: set %s)",
                route.name,
                upstream.credential.secret,
                upstream.credential.key,
                env_var_name(upstream.credential),
            )
            raise UpstreamMisconfigured(
                f"model {route.name!r} has no provider credential configured",
                code="upstream_credential_missing",
            )
        return secret


async def _translate_status(route: ModelRoute, resp: aiohttp.ClientResponse) -> GatewayError:
    try:
        raw = await resp.content.read(MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    message = _upstream_message(raw) or resp.reason or "error"
    logger.warning("model %s: upstream answered %d: %s", route.name, resp.status, message)
    if resp.status in (401, 403):
        # The upstream refused the gateway's own credential: not the client's doing.
        return UpstreamMisconfigured(
            f"model {route.name!r}: upstream refused the gateway's credentials",
            code="upstream_auth_failed",
        )
    if resp.status == 429:
        headers = (
            {"Retry-After": resp.headers["Retry-After"]} if "Retry-After" in resp.headers else {}
        )
        return UpstreamBusy(f"model {route.name!r} is busy: {message}", headers=headers)
    if 400 <= resp.status < 500:
        err = GatewayError(message, status=resp.status, code="upstream_rejected")
        err.type = "invalid_request_error"
        return err
    return UpstreamFailed(f"model {route.name!r}: upstream error {resp.status}: {message}")


def _upstream_message(raw: bytes) -> str | None:
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return None
