"""OIDC bearer tokens against an issuer whose keys and claims the tests control."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from llmrouter.gateway.app import create_app
from llmrouter.gateway.config import GatewayConfig, OIDCProvider, TenantPolicy
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
metadata: {name: ml}
spec:
  models: [local]
  auth:
    oidc:
      issuer: ISSUER
      audience: llmrouter
      roles: {ml-devs: developer, ml-viewers: analyst, ml-admins: admin}
"""


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with serving_issuer(("rsa-1", RSA_KEY), ("ec-1", EC_KEY)) as issuer:
        yield issuer


@pytest.fixture
async def gateway(tmp_path: Path, issuer: Issuer, upstream: FakeUpstream) -> AsyncIterator[str]:
    (tmp_path / "r.yaml").write_text(RESOURCES.replace("ISSUER", issuer.url))
    source = StandaloneSource([tmp_path / "r.yaml"], None, {"local": [upstream.url]})
    app = create_app(GatewaySettings(jwks_min_refresh_s=0.5), ConfigStore(source.load()))
    async with serving(app) as url:
        yield url


async def call(
    gateway: str, token: str, path: str = "/v1/chat/completions", **headers: str
) -> tuple[int, dict[str, Any]]:
    body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}", **headers},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_rs256_and_es256_tokens_map_groups_to_roles(gateway: str, issuer: Issuer) -> None:
    assert (await call(gateway, issuer.token()))[0] == 200
    assert (await call(gateway, issuer.token(EC_KEY, "ec-1", "ES256")))[0] == 200
    status, body = await call(gateway, issuer.token(groups=["ml-viewers"]))
    assert status == 403 and "models:invoke" in body["error"]["message"]
    status, body = await call(gateway, issuer.token(groups=["other-team"]))
    assert status == 403 and "no role" in body["error"]["message"]
    # The most privileged of the user's roles wins.
    assert (await call(gateway, issuer.token(groups=["ml-viewers", "ml-admins"])))[0] == 200


async def test_usage_is_charged_to_the_token_subject(gateway: str, issuer: Issuer) -> None:
    await call(gateway, issuer.token(sub="bob"))
    token = issuer.token(sub="bob")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway}/admin/usage",
            params={"groupBy": "user"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        report = await resp.json()
    assert [g["user"] for g in report["groups"]] == ["user:bob"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": "now-120"}, "token expired"),
        ({"nbf": "now+600"}, "token not yet valid"),
        ({"aud": "someone-else"}, "token audience not accepted"),
        ({"iss": "https://evil.example"}, "token issuer not accepted"),
        ({"exp": None}, "token not accepted: MissingRequiredClaimError"),
    ],
)
async def test_bad_claims_are_401_with_a_reason(
    gateway: str, issuer: Issuer, claims: dict[str, Any], reason: str
) -> None:
    now = int(time.time())  # claims relative to when the test runs, not when it was collected
    claims = {
        k: now + int(v[3:]) if isinstance(v, str) and v.startswith("now") else v
        for k, v in claims.items()
    }
    status, body = await call(gateway, issuer.token(**claims))
    assert status == 401
    assert body["error"]["message"] == reason
    assert body["error"]["code"] == "invalid_token"


async def test_forged_and_confused_tokens_are_refused(gateway: str, issuer: Issuer) -> None:
    forged = issuer.token(ROGUE_KEY, kid="rsa-1")  # a known kid, the wrong key
    assert (await call(gateway, forged))[1]["error"]["message"] == "token signature invalid"
    header = jwt.utils.base64url_encode(b'{"alg":"none","kid":"rsa-1"}').decode()
    payload = issuer.token().split(".")[1]
    status, body = await call(gateway, f"{header}.{payload}.")
    assert (status, body["error"]["message"]) == (401, "token algorithm not accepted")
    # HS256 "signed" with the issuer's public key, hoping it is used as an HMAC secret.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = jwt.api_jws.PyJWS(algorithms=["HS256"])  # bypasses PyJWT's own PEM guard
    now = int(time.time())
    claims = (
        f'{{"iss":"{issuer.url}","aud":"llmrouter","sub":"x","exp":{now + 60},'
        f'"groups":["ml-devs"]}}'
    ).encode()
    try:
        token = confused.encode(claims, public_pem, algorithm="HS256", headers={"kid": "rsa-1"})
    except jwt.InvalidKeyError:
        token = _hs256(claims, public_pem)
    assert (await call(gateway, token))[1]["error"]["message"] == "token algorithm not accepted"
    # An RS256 header on a key published as EC.
    status, body = await call(gateway, issuer.token(RSA_KEY, kid="ec-1"))
    assert status == 401
    for garbage in ["eyJhbGciOi.not-base64.x", "eyJ" + "a" * 50 + ".b.c"]:
        status, body = await call(gateway, garbage)
        assert (status, body["error"]["message"]) == (401, "malformed token")


def _hs256(payload: bytes, secret: bytes) -> str:
    import hashlib
    import hmac

    enc = jwt.utils.base64url_encode
    signing_input = enc(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}') + b"." + enc(payload)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + enc(signature)).decode()


async def test_rotated_keys_are_fetched_again(gateway: str, issuer: Issuer) -> None:
    assert (await call(gateway, issuer.token()))[0] == 200
    fetches = issuer.jwks_fetches
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.publish("rsa-2", rotated)
    # Unknown key ids refetch at most every jwks_min_refresh_s (0.5 s here): a flood of
    # them right after a fetch costs the issuer nothing.
    for _ in range(5):
        assert (await call(gateway, issuer.token(rotated, kid="rsa-2")))[0] == 401
    assert issuer.jwks_fetches == fetches
    await asyncio.sleep(0.6)
    assert (await call(gateway, issuer.token(rotated, kid="rsa-2")))[0] == 200
    assert issuer.jwks_fetches == fetches + 1
    assert (await call(gateway, issuer.token()))[0] == 200


async def test_a_tenant_declaring_anothers_issuer_cannot_sign_its_way_in(
    issuer: Issuer, upstream: FakeUpstream
) -> None:
    # Two tenants trust one issuer and audience; the rogue one names its own jwksURL.
    # (compile refuses such a pair; the gateway must hold on its own all the same.)
    admins = {"ml-admins": "admin"}
    async with serving_issuer(("rogue-1", ROGUE_KEY)) as rogue_jwks:
        config = GatewayConfig(
            tenants={
                "default/victim": TenantPolicy(
                    id="default/victim",
                    display_name="victim",
                    models=frozenset(),
                    oidc=OIDCProvider(issuer=issuer.url, audience="llmrouter", roles=admins),
                ),
                "default/rogue": TenantPolicy(
                    id="default/rogue",
                    display_name="rogue",
                    models=frozenset(),
                    oidc=OIDCProvider(
                        issuer=issuer.url,
                        audience="llmrouter",
                        jwks_url=f"{rogue_jwks.url}/jwks",
                        roles=admins,
                    ),
                ),
            }
        )
        forged = issuer.token(ROGUE_KEY, kid="rogue-1", groups=["ml-admins"])
        async with serving(create_app(GatewaySettings(), ConfigStore(config))) as gateway:
            status, body = await get(gateway, forged, "/admin/usage", tenant="default/victim")
            assert (status, body["error"]["message"]) == (401, "token signed by an unknown key")
            # Without the header the forged token is the rogue tenant's only.
            status, body = await get(gateway, forged, "/admin/usage")
            assert (status, body["tenant"]) == (200, "default/rogue")
            # The issuer's own tokens are the victim's only.
            status, body = await get(gateway, issuer.token(groups=["ml-admins"]), "/admin/usage")
            assert (status, body["tenant"]) == (200, "default/victim")


async def get(
    gateway: str, token: str, path: str, tenant: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if tenant is not None:
        headers["x-llmrouter-tenant"] = tenant
    async with aiohttp.ClientSession() as http, http.get(f"{gateway}{path}", headers=headers) as r:
        return r.status, await r.json()


ROGUE_TENANT = """
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: aaa-rogue}
spec:
  models: [local]
  auth:
    oidc:
      issuer: ISSUER
      audience: rogue-app
      jwksURL: ROGUE_JWKS
      roles: {ml-admins: admin}
"""


async def test_a_tenant_naming_anothers_issuer_with_its_own_audience_cannot_sign_its_way_in(
    tmp_path: Path, issuer: Issuer, upstream: FakeUpstream
) -> None:
    # What compile lets through: the victim's issuer, another audience, the rogue's own keys.
    # A token listing both audiences is a candidate for both tenants.
    async with serving_issuer(("rogue-1", ROGUE_KEY)) as rogue_jwks:
        resources = RESOURCES + ROGUE_TENANT.replace("ROGUE_JWKS", f"{rogue_jwks.url}/jwks")
        (tmp_path / "r.yaml").write_text(resources.replace("ISSUER", issuer.url))
        source = StandaloneSource([tmp_path / "r.yaml"], None, {"local": [upstream.url]})
        app = create_app(GatewaySettings(), ConfigStore(source.load()))
        forged = issuer.token(
            ROGUE_KEY, kid="rogue-1", aud=["llmrouter", "rogue-app"], groups=["ml-admins"]
        )
        async with serving(app) as gateway:
            status, body = await get(gateway, forged, "/admin/usage", tenant="default/ml")
            assert (status, body["error"]["message"]) == (401, "token signed by an unknown key")
            status, body = await get(gateway, forged, "/admin/usage")
            assert (status, body["tenant"]) == (200, "default/aaa-rogue")
