"""The OIDC signing key cache against issuers that are slow, down, or move their keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from llmrouter.gateway.config import OIDCProvider
from llmrouter.gateway.errors import AuthenticationFailed
from llmrouter.gateway.jwks import JWKSCache
from tests.support.oidc import EC_KEY, RSA_KEY, Issuer, serving_issuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
        slow.gate = asyncio.Event()
        cache = JWKSCache(http)
        waiting = asyncio.create_task(cache.key(provider(slow), "rsa-1", "RS256"))
        while slow.jwks_fetches == 0:  # the slow fetch is under way
            await asyncio.sleep(0.01)
        await asyncio.wait_for(cache.key(provider(fast), "ec-1", "ES256"), 5)
        assert not waiting.done()
        slow.gate.set()
        await waiting


async def test_a_failed_fetch_is_not_retried_by_every_waiting_request(
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        cache = JWKSCache(http, min_refresh_s=10, max_backoff_s=40, clock=clock)
        await cache.key(provider(issuer), "rsa-1", "RS256")  # discovery and keys, once
        issuer.down, issuer.gate = True, asyncio.Event()

        async def unknown_key() -> str:
            try:
                await cache.key(provider(issuer), "rotated", "RS256")
            except AuthenticationFailed as exc:
                return exc.message
            return "accepted"

        clock.now += 11  # an unknown key id may refetch again
        calls = [asyncio.create_task(unknown_key()) for _ in range(20)]
        while issuer.jwks_fetches == 1:  # one fetch under way, the others wait on it
            await asyncio.sleep(0.01)
        issuer.gate.set()
        assert set(await asyncio.gather(*calls)) == {"token signed by an unknown key"}
        assert issuer.jwks_fetches == 2
        # Backing off: 10 s after that failure, then 20, 40, 40.
        for backoff, fetches in [(10, 3), (20, 4), (40, 5), (40, 6)]:
            clock.now += backoff - 1
            await unknown_key()
            assert issuer.jwks_fetches == fetches - 1
            clock.now += 1.5
            await unknown_key()
            assert issuer.jwks_fetches == fetches
        # Back up: the next fetch after the backoff succeeds and the backoff starts over.
        issuer.down = False
        clock.now += 40
        await unknown_key()
        clock.now += 11
        await unknown_key()
        assert issuer.jwks_fetches == 8


async def test_an_issuer_never_reached_fails_fast_while_backing_off(
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        issuer.down = True
        cache = JWKSCache(http, min_refresh_s=5, clock=clock)
        for _ in range(10):
            with pytest.raises(AuthenticationFailed, match="keys are unavailable"):
                await cache.key(provider(issuer), "rsa-1", "RS256")
        assert issuer.discovery_fetches == 1
        issuer.down = False
        clock.now += 5
        await cache.key(provider(issuer), "rsa-1", "RS256")
        assert issuer.discovery_fetches == 2


async def test_keys_serve_through_an_outage_up_to_max_stale(
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        p = OIDCProvider(issuer=issuer.url, audience="x", jwks_url=f"{issuer.url}/jwks")
        cache = JWKSCache(http, max_age_s=600, max_stale_s=3600, clock=clock)
        await cache.key(p, "rsa-1", "RS256")
        issuer.down = True
        clock.now += 601  # past max_age: a refetch is tried, fails, the keys stay
        await cache.key(p, "rsa-1", "RS256")
        assert issuer.jwks_fetches == 2
        clock.now += 2900  # still within max_stale of the last good fetch
        await cache.key(p, "rsa-1", "RS256")
        clock.now += 600  # past it
        with pytest.raises(AuthenticationFailed, match="keys are unavailable"):
            await cache.key(p, "rsa-1", "RS256")
        issuer.down = False
        clock.now += 300  # the backoff runs out; the issuer is back
        await cache.key(p, "rsa-1", "RS256")


async def test_discovery_documents_are_refreshed(http: aiohttp.ClientSession) -> None:
    clock = Clock()
    async with (
        serving_issuer(("rsa-1", RSA_KEY)) as issuer,
        serving_issuer(("ec-2", EC_KEY)) as moved_to,
    ):
        cache = JWKSCache(http, max_age_s=600, clock=clock)
        await cache.key(provider(issuer), "rsa-1", "RS256")
        # The issuer moves its keys: its discovery document names another JWKS URL.
        issuer.jwks_uri = f"{moved_to.url}/jwks"
        clock.now += 601
        await cache.key(provider(issuer), "ec-2", "ES256")
        assert issuer.discovery_fetches == 2
        # A discovery refresh that fails keeps the JWKS URL known before.
        issuer.down = True
        clock.now += 601
        await cache.key(provider(issuer), "ec-2", "ES256")
        assert issuer.discovery_fetches == 3
