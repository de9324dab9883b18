"""Signing keys of OIDC issuers: fetched on demand, kept through an issuer's outage.

Per JWKS URL (and per issuer for discovery documents) one record with its own lock, so a
slow issuer holds up only its own tokens. A request that waited on the lock while another
fetched, successfully or not, uses that outcome instead of fetching again; after a failure
no request fetches before a backoff (``min_refresh_s``, doubling up to ``max_backoff_s``)
runs out. Keys are refreshed after ``max_age_s``; when that fails they keep serving until
``max_stale_s`` after the last successful fetch, then tokens of that issuer are refused.
Discovery documents are refreshed after ``max_age_s`` too; a failed refresh keeps the last
known JWKS URL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
import jwt

from llmrouter.gateway.config import OIDCProvider
from llmrouter.gateway.errors import AuthenticationFailed

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _FetchFailed(Exception):
    pass


@dataclass
class _Record(Generic[T]):
    value: T | None = None
    fetched_at: float = -math.inf
    """When ``value`` was fetched (monotonic)."""
    attempted_at: float = -math.inf
    """When the last fetch, successful or not, started."""
    retry_at: float = -math.inf
    """After a failure, no fetch before this."""
    failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def unavailable() -> AuthenticationFailed:
    return AuthenticationFailed("token issuer's keys are unavailable", code="invalid_token")


class JWKSCache:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_age_s: float = 600,
        min_refresh_s: float = 10,
        max_stale_s: float = 3600,
        max_backoff_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._clock = clock
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._max_stale_s = max_stale_s
        self._max_backoff_s = max_backoff_s
        self._keys: dict[str, _Record[list[dict[str, Any]]]] = {}
        self._discovered: dict[str, _Record[str]] = {}

    async def key(self, provider: OIDCProvider, kid: str | None, alg: str) -> jwt.PyJWK:
        url = provider.jwks_url or await self._jwks_url(provider.issuer)
        record = self._keys.setdefault(url, _Record())
        now = self._clock()
        found = _select(record.value or [], kid)
        old = now - record.fetched_at > self._max_age_s
        # An unknown key id may be a rotation: refetch, but at most every min_refresh_s,
        # or a flood of made-up key ids would be a flood of fetches.
        unknown = found is None and now - record.attempted_at > self._min_refresh_s
        if old or unknown:
            await self._refresh(record, url, _parse_jwks)
            found = _select(record.value or [], kid)
        if record.value is None or self._clock() - record.fetched_at > self._max_stale_s:
            raise unavailable()
        if found is None:
            raise AuthenticationFailed("token signed by an unknown key", code="invalid_token")
        if found.get("alg", alg) != alg:
            raise AuthenticationFailed("token algorithm not accepted", code="invalid_token")
        try:
            return jwt.PyJWK(found, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            raise AuthenticationFailed(
                "token algorithm not accepted", code="invalid_token"
            ) from exc

    async def _jwks_url(self, issuer: str) -> str:
        record = self._discovered.setdefault(issuer, _Record())
        if self._clock() - record.fetched_at > self._max_age_s:
            await self._refresh(record, f"{issuer}/.well-known/openid-configuration", _parse_doc)
        if record.value is None:
            raise unavailable()
        return record.value

    async def _refresh(self, record: _Record[T], url: str, parse: Callable[[Any], T]) -> None:
        """Fetch ``url`` into ``record``; on failure keep what it held and back off."""
        seen = record.attempted_at
        async with record.lock:
            now = self._clock()
            if record.attempted_at != seen or now < record.retry_at:
                return  # fetched or failed while this request waited, or backing off
            record.attempted_at = now
            try:
                value = parse(await self._get_json(url))
            except _FetchFailed as exc:
                record.failures += 1
                backoff = min(self._min_refresh_s * 2 ** (record.failures - 1), self._max_backoff_s)
                record.retry_at = self._clock() + backoff
                logger.error(
                    "cannot fetch %s (%s); %s, next try in %.1f s",
                    url,
                    exc,
                    "keeping what was fetched before" if record.value else "nothing to use",
                    backoff,
                )
                return
            record.value, record.fetched_at = value, self._clock()
            record.failures, record.retry_at = 0, -math.inf
            logger.info("fetched %s", url)

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                resp.raise_for_status()
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _FetchFailed(repr(exc)) from exc


def _parse_jwks(doc: Any) -> list[dict[str, Any]]:
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise _FetchFailed("not a JWKS document")
    return [k for k in keys if isinstance(k, dict)]


def _parse_doc(doc: Any) -> str:
    uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
    if not isinstance(uri, str):
        raise _FetchFailed("a discovery document without jwks_uri")
    return uri


def _select(keys: list[dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.get("kid") == kid), None)
