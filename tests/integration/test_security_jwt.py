"""Attacks on OIDC bearer tokens, each against a gateway on loopback whose two tenants trust
two issuers: every forged, confused or misdirected token is refused with an OpenAI-shaped
401 (403 for a genuine token naming a tenant it is not for), and no URL a token names is
ever fetched."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.fake_upstream import FakeUpstream
from tests.support.oidc import EC_KEY, ROGUE_KEY, RSA_KEY, Issuer, serving_issuer
from tests.support.serve import serving

RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: local}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: alpha}
spec:
  models: [local]
  auth:
    oidc: {issuer: ALPHA, audience: alpha, roles: {devs: developer}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: beta}
spec:
  models: [local]
  auth:
    oidc: {issuer: BETA, audience: beta, roles: {devs: developer}}
"""

BETA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Recorder:
    """A loopback TCP listener that counts every connection made to it, HTTP or not."""

    port: int = 0
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            self.received.append(await asyncio.wait_for(reader.read(4096), 1))
        writer.close()

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[Recorder]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class World:
    gateway: str
    alpha: Issuer
    beta: Issuer

    async def call(self, token: str, **headers: str) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{self.gateway}/v1/models",
                headers={"Authorization": f"Bearer {token}", **headers},
            ) as resp,
        ):
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()


@pytest.fixture
async def world(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[World]:
    async with (
        serving_issuer(("rsa-1", RSA_KEY), ("ec-1", EC_KEY)) as alpha,
        serving_issuer(("beta-1", BETA_KEY)) as beta,
    ):
        text = RESOURCES.replace("ALPHA", alpha.url).replace("BETA", beta.url)
        (tmp_path / "r.yaml").write_text(text)
        source = StandaloneSource([tmp_path / "r.yaml"], None, {"local": [upstream.url]})
        app = create_app(GatewaySettings(jwks_min_refresh_s=0.5), ConfigStore(source.load()))
        async with serving(app) as url:
            yield World(url, alpha, beta)


def refused(status: int, body: dict[str, Any], message: str | None = None) -> None:
    """An OpenAI-shaped 401 for a token, with nothing but the four error fields."""
    assert status == 401, body
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["code"], error["param"]) == (
        "authentication_error",
        "invalid_token",
        None,
    )
    if message is not None:
        assert error["message"] == message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assemble(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(signature)}"


def claims_for(issuer: Issuer, aud: str = "alpha", **more: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": aud, "sub": "mallory", "exp": now + 300, "groups": ["devs"]}
    return claims | more


async def test_a_genuine_token_passes(world: World) -> None:
    # The baseline every attack below departs from by one thing.
    status, body = await world.call(world.alpha.token(aud="alpha", groups=["devs"]))
    assert status == 200, body
    status, body = await world.call(
        world.beta.token(BETA_KEY, "beta-1", aud="beta", groups=["devs"])
    )
    assert status == 200, body


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "noNe"])
@pytest.mark.parametrize("signature", [b"", b"anything"])
async def test_alg_none_in_any_letter_case(world: World, alg: str, signature: bytes) -> None:
    token = assemble({"alg": alg, "kid": "rsa-1", "typ": "JWT"}, claims_for(world.alpha), signature)
    refused(*await world.call(token), "token algorithm not accepted")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256", "rs256", "PS256", "RS256 "])
async def test_other_algorithms_are_refused_before_any_key_is_used(world: World, alg: str) -> None:
    fetches = world.alpha.jwks_fetches
    token = assemble({"alg": alg, "kid": "rsa-1"}, claims_for(world.alpha), b"x" * 32)
    refused(*await world.call(token), "token algorithm not accepted")
    assert world.alpha.jwks_fetches == fetches


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    unsigned = assemble(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(mac)}"


async def test_hs256_signed_with_the_issuers_public_key_is_refused(world: World) -> None:
    # The classic confusion: a verifier that takes the RSA public key as an HMAC secret
    # would accept these, and anyone can fetch that key.
    public = RSA_KEY.public_key()
    secrets = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1),
        json.dumps(RSAAlgorithm.to_jwk(public, as_dict=True)).encode(),
    ]
    for secret in secrets:
        token = hs256({"alg": "HS256", "kid": "rsa-1"}, claims_for(world.alpha), secret)
        refused(*await world.call(token), "token algorithm not accepted")


async def test_a_key_is_used_only_with_its_own_algorithm(world: World) -> None:
    # ES256 named over the RSA key and RS256 over the EC key: never verified across types.
    refused(*await world.call(world.alpha.token(EC_KEY, "rsa-1", "ES256", aud="alpha")))
    refused(*await world.call(world.alpha.token(RSA_KEY, "ec-1", "RS256", aud="alpha")))


KID_TRICKS = [
    "../../../../../../dev/null",
    "/dev/null",
    "../../etc/passwd",
    "file:///etc/passwd",
    "rsa-1/../rsa-1",
    "rsa-1\x00",
    "' OR '1'='1",
    "rsa-1' --",
    '" OR ""="',
    "rsa-1; DROP TABLE keys",
    "*",
    "%",
    "",
    "x" * 4_000,
]


@pytest.mark.parametrize("kid", KID_TRICKS, ids=range(len(KID_TRICKS)))
async def test_kid_tricks_find_no_key(world: World, kid: str) -> None:
    # Signed with a key the attacker holds, under a key id that a verifier looking keys up
    # in files or SQL might resolve to something predictable (an empty file, any row).
    token = jwt.encode(claims_for(world.alpha), ROGUE_KEY, algorithm="RS256", headers={"kid": kid})
    refused(*await world.call(token), "token signed by an unknown key")
    # HS256 with an empty secret, as /dev/null would give, is refused before any lookup.
    token = hs256({"alg": "HS256", "kid": kid}, claims_for(world.alpha), b"")
    refused(*await world.call(token), "token algorithm not accepted")


async def test_a_kid_that_is_not_a_string_is_refused(world: World) -> None:
    for kid in [1, None, ["rsa-1"], {"$ne": ""}, True]:
        header = {"alg": "RS256", "kid": kid}
        forged = assemble(header, claims_for(world.alpha), b"sig")
        status, body = await world.call(forged)
        refused(status, body)


async def test_jku_x5u_and_embedded_keys_are_never_used(world: World) -> None:
    """Headers that point at keys (jku, x5u) or carry one (jwk, x5c): the attacker's own key
    served or embedded; the gateway refuses the token and connects nowhere."""
    rogue_jwk = {**RSAAlgorithm.to_jwk(ROGUE_KEY.public_key(), as_dict=True), "kid": "rsa-1"}
    async with Recorder().listening() as recorder:
        url = f"{recorder.url}/jwks.json"
        headers: list[dict[str, Any]] = [
            {"jku": url},
            {"jku": url, "kid": "rogue"},
            {"x5u": url},
            {"x5u": url, "kid": "rogue"},
            {"jwk": rogue_jwk},
            {"jwk": {**rogue_jwk, "kid": "rogue"}, "kid": "rogue"},
            {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
            {"jku": url, "x5u": url, "jwk": rogue_jwk},
        ]
        for extra in headers:
            token = jwt.encode(
                claims_for(world.alpha),
                ROGUE_KEY,
                algorithm="RS256",
                headers={"kid": "rsa-1", **extra},
            )
            refused(*await world.call(token))
        # Give any fetch the gateway might have started in the background time to land.
        await asyncio.sleep(0.5)
        assert recorder.connections == 0, recorder.received


async def test_the_recorder_does_see_a_connection(world: World) -> None:
    # The listener the test above relies on is not blind.
    async with Recorder().listening() as recorder:
        _, writer = await asyncio.open_connection("127.0.0.1", recorder.port)
        writer.write(b"GET /jwks.json HTTP/1.1\r\n\r\n")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.2)
        assert recorder.connections == 1


async def test_an_unknown_critical_header_is_refused(world: World) -> None:
    # RFC 7515 §4.1.11: a verifier must reject a token whose "crit" names an extension it
    # does not understand, even when the signature is good.
    token = jwt.encode(
        claims_for(world.alpha),
        RSA_KEY,
        algorithm="RS256",
        headers={"kid": "rsa-1", "crit": ["exp-ext"], "exp-ext": 1},
    )
    refused(*await world.call(token))


def at_run_time(claims: dict[str, Any]) -> dict[str, Any]:
    """``"now+60"`` as epoch seconds when the test runs, not when the module is collected
    (a long suite would otherwise have passed an nbf before its test starts)."""
    return {
        k: int(time.time()) + int(v[3:]) if isinstance(v, str) and v.startswith("now") else v
        for k, v in claims.items()
    }


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": "now-3600"}, "token expired"),
        ({"exp": "now-31"}, "token expired"),
        ({"nbf": "now+3600"}, "token not yet valid"),
        ({"nbf": "now+60"}, "token not yet valid"),
        ({"iat": "now+3600"}, None),
        ({"exp": "never"}, None),
        ({"exp": None}, None),
        ({"aud": "beta"}, "token audience not accepted"),
        ({"aud": ["someone", "else"]}, "token audience not accepted"),
        ({"aud": None}, "token audience not accepted"),
        ({"iss": "https://evil.example"}, "token issuer not accepted"),
        ({"iss": None}, "token issuer not accepted"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
async def test_claims_that_do_not_hold_are_refused(
    world: World, claims: dict[str, Any], message: str | None
) -> None:
    token = world.alpha.token(**({"aud": "alpha", "groups": ["devs"]} | at_run_time(claims)))
    refused(*await world.call(token), message)


async def test_the_issuer_must_match_exactly(world: World) -> None:
    # A look-alike issuer (the real one with a path, another port, a suffix) is another issuer.
    for iss in [f"{world.alpha.url}/x", f"{world.alpha.url}.evil", world.alpha.url.upper()]:
        refused(*await world.call(world.alpha.token(aud="alpha", iss=iss)))


async def test_tokens_for_another_tenant(world: World) -> None:
    # Beta's IdP minting a token with alpha's audience, and alpha's with beta's: each issuer
    # speaks for its own tenant only.
    refused(
        *await world.call(world.beta.token(BETA_KEY, "beta-1", aud="alpha")),
        "token audience not accepted",
    )
    refused(*await world.call(world.alpha.token(aud="beta")), "token audience not accepted")
    # Beta's key signing a token that claims alpha's issuer: not alpha's key.
    forged = world.alpha.token(BETA_KEY, "rsa-1", aud="alpha")
    refused(*await world.call(forged), "token signature invalid")
    forged = world.alpha.token(BETA_KEY, "beta-1", aud="alpha")
    refused(*await world.call(forged), "token signed by an unknown key")
    # A genuine beta token naming alpha: authenticated, but not alpha's (403), and the answer
    # says nothing of alpha.
    token = world.beta.token(BETA_KEY, "beta-1", aud="beta", groups=["devs"])
    status, body = await world.call(token, **{"x-llmrouter-tenant": "default/alpha"})
    assert status == 403 and body["error"]["code"] == "permission_denied", body
    assert "alpha" not in json.dumps(body) and world.alpha.url not in json.dumps(body)


async def test_signature_tampering_is_refused(world: World) -> None:
    genuine = world.alpha.token(aud="alpha", groups=["devs"])
    header, payload, signature = genuine.split(".")
    decoded_header = json.loads(base64.urlsafe_b64decode(header + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    mac = base64.urlsafe_b64decode(signature + "==")
    # Claims changed under the genuine signature: who, which groups, until when.
    for change in [{"sub": "admin"}, {"groups": ["devs", "admins"]}, {"exp": 9_999_999_999}]:
        token = assemble(decoded_header, claims | change, mac)
        refused(*await world.call(token), "token signature invalid")
    refused(*await world.call(f"{header}.{payload}."), "token signature invalid")
    refused(*await world.call(f"{header}.{payload}.{signature[:-4]}"))


async def test_malformed_tokens_are_refused(world: World) -> None:
    for token in [
        "eyJ.eyJ.",
        "eyJhbGciOiJSUzI1NiJ9..",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        b64(b'{"alg":"RS256","kid":"rsa-1"}') + "." + b64(b"[]") + ".c2ln",
        b64(b'{"alg":"RS256","kid":"rsa-1"}') + "." + b64(b"\xff\xfe") + ".c2ln",
        "eyJ" + "A" * 6_000 + ".e30.c2ln",
    ]:
        status, body = await world.call(token)
        refused(status, body)


def rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str = "rsa-1") -> str:
    """Signed by hand: PyJWT will not encode some of the claims these tests need."""
    unsigned = assemble({"alg": "RS256", "kid": kid}, claims).rsplit(".", 1)[0]
    signature = key.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{unsigned}.{b64(signature)}"


WRONG_TYPES: list[dict[str, Any]] = [
    {"aud": 5},
    {"aud": [{}]},
    {"aud": [["alpha"]]},
    {"aud": {"alpha": 1}},
    {"iss": 5},
    {"iss": ["x"]},
    {"iss": {}},
    {"exp": [1]},
    {"exp": {}},
    {"nbf": [1]},
    {"nbf": "soon"},
    {"iat": {}},
]


@pytest.mark.parametrize("claims", WRONG_TYPES, ids=json.dumps)
async def test_claims_of_the_wrong_type_are_refused_not_a_crash(
    world: World, claims: dict[str, Any]
) -> None:
    # Forged: unsigned claims are read to pick the tenant before any key is used, so their
    # types are the attacker's choice. Genuine: an IdP's odd claims are no crash either.
    for key in (ROGUE_KEY, RSA_KEY):
        refused(*await world.call(rs256(claims_for(world.alpha) | claims, key)))


@pytest.mark.parametrize("groups", [5, None, {"devs": True}, [["devs"]], [{}], "devs", ["devs"]])
async def test_odd_group_claims_of_a_genuine_token_are_no_crash(world: World, groups: Any) -> None:
    # A list of groups, or one group as a string; anything else gives no role (403).
    status, body = await world.call(rs256(claims_for(world.alpha, groups=groups), RSA_KEY))
    if groups in ("devs", ["devs"]):
        assert status == 200, body
    else:
        assert (status, body["error"]["code"]) == (403, "permission_denied"), body
