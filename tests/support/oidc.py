"""An OpenID Connect issuer whose keys and claims tests control, served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.serve import free_port

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROGUE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    """The issuer's discovery document and JWKS, served on loopback."""

    keys: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    down: bool = False
    """Answer 503 to everything, as an IdP in an outage."""
    jwks_uri: str = ""
    """What the discovery document names; empty for this issuer's own /jwks."""
    gate: asyncio.Event | None = None
    """When set, requests for keys wait until it is: a slow IdP."""

    def publish(self, kid: str, key: Any) -> None:
        algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
        jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys[kid] = {**jwk, "kid": kid, "use": "sig"}

    def app(self) -> web.Application:
        async def discovery(_: web.Request) -> web.Response:
            self.discovery_fetches += 1
            if self.down:
                return web.json_response({}, status=503)
            return web.json_response(
                {"issuer": self.url, "jwks_uri": self.jwks_uri or f"{self.url}/jwks"}
            )

        async def jwks(_: web.Request) -> web.Response:
            self.jwks_fetches += 1
            if self.gate is not None:
                await self.gate.wait()
            if self.down:
                return web.json_response({}, status=503)
            return web.json_response({"keys": list(self.keys.values())})

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        return app

    def token(
        self, key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": "llmrouter",
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "groups": ["ml-devs"],
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@contextlib.asynccontextmanager
async def serving_issuer(*published: tuple[str, Any]) -> AsyncIterator[Issuer]:
    """An issuer publishing ``(kid, private key)`` pairs, on a free loopback port."""
    issuer = Issuer()
    for kid, key in published:
        issuer.publish(kid, key)
    server = TestServer(issuer.app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    issuer.url = f"http://127.0.0.1:{server.port}"
    try:
        yield issuer
    finally:
        await server.close()
