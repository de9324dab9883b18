"""The OIDC signing key cache against issuers that are slow, down, or move their keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from llmrouter.gateway.config import OIDCProvider
from llmrouter.gateway.errors import AuthenticationFailed
from llmrouter.gateway.jwks import JWKSCache
from tests.support.oidc import EC_KEY, RSA_KEY, Issuer, serving_issuer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def provider(issuer: Issuer) -> OIDCProvider:
    return OIDCProvider(issuer=issuer.url, audience="llmrouter")


async def test_a_slow_issuer_holds_up_only_its_own_tokens(http: aiohttp.ClientSession) -> None:
    async with (
        serving_issuer(("rsa-1", RSA_KEY)) as slow,
        serving_issuer(("ec-1", EC_KEY)) as fast,
    ):
        slow.delay_s = 1.0
        cache = JWKSCache(http)
        waiting = asyncio.create_task(cache.key(provider(slow), "rsa-1", "RS256"))
        await asyncio.sleep(0.1)  # the slow fetch is under way
        started = time.monotonic()
        await cache.key(provider(fast), "ec-1", "ES256")
        assert time.monotonic() - started < 0.5
        await waiting


async def test_a_failed_fetch_is_not_retried_by_every_waiting_request(
    http: aiohttp.ClientSession,
) -> None:
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        cache = JWKSCache(http, min_refresh_s=0.3)
        await cache.key(provider(issuer), "rsa-1", "RS256")  # discovery and keys, once
        issuer.down, issuer.delay_s = True, 0.1
        fetches = issuer.jwks_fetches

        async def unknown_key() -> str:
            try:
                await cache.key(provider(issuer), "rotated", "RS256")
            except AuthenticationFailed as exc:
                return exc.message
            return "accepted"

        await asyncio.sleep(0.35)  # an unknown key id may refetch again
        answers = await asyncio.gather(*(unknown_key() for _ in range(20)))
        assert set(answers) == {"token signed by an unknown key"}
        assert issuer.jwks_fetches == fetches + 1
        # Backing off: 0.3 s after the failure, then 0.6 s after the next one.
        await unknown_key()
        assert issuer.jwks_fetches == fetches + 1
        await asyncio.sleep(0.35)
        await unknown_key()
        assert issuer.jwks_fetches == fetches + 2
        await asyncio.sleep(0.35)
        await unknown_key()
        assert issuer.jwks_fetches == fetches + 2


async def test_an_issuer_never_reached_fails_fast_while_backing_off(
    http: aiohttp.ClientSession,
) -> None:
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        issuer.down = True
        cache = JWKSCache(http, min_refresh_s=5)
        for _ in range(10):
            with pytest.raises(AuthenticationFailed, match="keys are unavailable"):
                await cache.key(provider(issuer), "rsa-1", "RS256")
        assert issuer.discovery_fetches == 1


async def test_keys_serve_through_an_outage_up_to_max_stale(
    http: aiohttp.ClientSession,
) -> None:
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        p = OIDCProvider(issuer=issuer.url, audience="x", jwks_url=f"{issuer.url}/jwks")
        cache = JWKSCache(http, max_age_s=0.2, min_refresh_s=0.05, max_stale_s=0.8)
        await cache.key(p, "rsa-1", "RS256")
        issuer.down = True
        await asyncio.sleep(0.3)  # past max_age: a refetch is tried, fails, keys stay
        await cache.key(p, "rsa-1", "RS256")
        assert issuer.jwks_fetches == 2
        await asyncio.sleep(0.6)  # past max_stale since the last good fetch
        with pytest.raises(AuthenticationFailed, match="keys are unavailable"):
            await cache.key(p, "rsa-1", "RS256")
        issuer.down = False
        await asyncio.sleep(0.3)  # the backoff runs out; the issuer is back
        await cache.key(p, "rsa-1", "RS256")


async def test_discovery_documents_are_refreshed(http: aiohttp.ClientSession) -> None:
    async with (
        serving_issuer(("rsa-1", RSA_KEY)) as issuer,
        serving_issuer(("ec-2", EC_KEY)) as moved_to,
    ):
        cache = JWKSCache(http, max_age_s=0.2)
        await cache.key(provider(issuer), "rsa-1", "RS256")
        # The issuer moves its keys: its discovery document names another JWKS URL.
        issuer.jwks_uri = f"{moved_to.url}/jwks"
        await asyncio.sleep(0.3)
        await cache.key(provider(issuer), "ec-2", "ES256")
        assert issuer.discovery_fetches == 2
