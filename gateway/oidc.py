"""OpenID Connect bearer tokens: verified against the issuer's JWKS, groups mapped to roles.

Only RS256 and ES256 are accepted, each only with a key of its own type, so ``alg: none``
and HS256-signed-with-the-public-key confusion are refused before any key is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt

from llmrouter.gateway.auth import Identity
from llmrouter.gateway.config import GatewayConfig, OIDCProvider, TenantPolicy
from llmrouter.gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied

logger = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
ROLE_RANK = {"admin": 4, "developer": 3, "analyst": 2, "user": 1}
LEEWAY_S = 30
TENANT_HEADER = "x-llmrouter-tenant"


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class JWKSCache:
    """Signing keys per JWKS URL: fetched on first use, refetched when an unknown key id
    appears (rotation) at most every ``min_refresh_s``, and after ``max_age_s``."""

    def __init__(
        self, session: aiohttp.ClientSession, max_age_s: float = 600, min_refresh_s: float = 10
    ) -> None:
        self._session = session
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._keys: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._jwks_urls: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def key(self, provider: OIDCProvider, kid: str | None, alg: str) -> jwt.PyJWK:
        url = provider.jwks_url or await self._discover(provider.issuer)
        fetched_at, keys = self._keys.get(url, (0.0, []))
        age = time.monotonic() - fetched_at
        found = _select(keys, kid)
        if (found is None and age > self._min_refresh_s) or age > self._max_age_s:
            keys = await self._fetch(url, fetched_at)
            found = _select(keys, kid)
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

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                resp.raise_for_status()
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.error("cannot fetch %s: %r", url, exc)
            raise AuthenticationFailed(
                "token issuer's keys are unavailable", code="invalid_token"
            ) from exc

    async def _discover(self, issuer: str) -> str:
        if issuer not in self._jwks_urls:
            doc = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
                raise AuthenticationFailed(
                    "token issuer's keys are unavailable", code="invalid_token"
                )
            self._jwks_urls[issuer] = doc["jwks_uri"]
        return self._jwks_urls[issuer]

    async def _fetch(self, url: str, seen_at: float) -> list[dict[str, Any]]:
        async with self._lock:
            fetched_at, keys = self._keys.get(url, (0.0, []))
            if fetched_at > seen_at:  # another request fetched them while this one waited
                return keys
            doc = await self._get_json(url)
            keys = [
                k
                for k in (doc.get("keys") if isinstance(doc, dict) else None) or []
                if isinstance(k, dict)
            ]
            self._keys[url] = (time.monotonic(), keys)
            logger.info("fetched %d signing keys from %s", len(keys), url)
            return keys


def _select(keys: list[dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.get("kid") == kid), None)


def _role(provider: OIDCProvider, claims: Mapping[str, Any]) -> str | None:
    groups = claims.get(provider.groups_claim, [])
    if isinstance(groups, str):
        groups = [groups]
    roles = [provider.roles[g] for g in groups if isinstance(g, str) and g in provider.roles]
    return max(roles, key=ROLE_RANK.__getitem__) if roles else None


async def authenticate_token(
    token: str, config: GatewayConfig, headers: Mapping[str, str], keys: JWKSCache
) -> Identity:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthenticationFailed("malformed token", code="invalid_token") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AuthenticationFailed("token algorithm not accepted", code="invalid_token")
    issuer_claim = unverified.get("iss")
    issuer = str(issuer_claim or "").rstrip("/")
    candidates = [t for t in config.tenants.values() if t.oidc and t.oidc.issuer == issuer]
    if not candidates:
        raise AuthenticationFailed("token issuer not accepted", code="invalid_token")
    aud = unverified.get("aud")
    audiences = {aud} if isinstance(aud, str) else set(aud or [])
    candidates = [t for t in candidates if t.oidc and t.oidc.audience in audiences]
    if not candidates:
        raise AuthenticationFailed("token audience not accepted", code="invalid_token")
    # The header narrows the candidates before any key is fetched; each remaining tenant's
    # own keys must verify the token, or a tenant declaring another's issuer with its own
    # jwksURL could sign its way into the other tenant.
    wanted = headers.get(TENANT_HEADER)
    if wanted is not None:
        candidates = [t for t in candidates if t.id == wanted]
        if not candidates:
            raise PermissionDenied("your token gives you no role in this tenant")
    verified: list[tuple[TenantPolicy, Mapping[str, Any]]] = []
    failure: AuthenticationFailed | None = None
    for tenant in candidates:
        assert tenant.oidc is not None
        try:
            claims = await _verify(token, tenant.oidc, header.get("kid"), alg, keys, issuer_claim)
        except AuthenticationFailed as exc:
            failure = failure or exc
            continue
        verified.append((tenant, claims))
    if not verified:
        assert failure is not None
        raise failure
    return _identity(verified, headers)


async def _verify(
    token: str, provider: OIDCProvider, kid: str | None, alg: str, keys: JWKSCache, iss: Any
) -> Mapping[str, Any]:
    key = await keys.key(provider, kid, alg)
    try:
        claims: Mapping[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            issuer=iss,  # equal to the provider's but for a trailing slash
            audience=provider.audience,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationFailed("token expired", code="invalid_token") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthenticationFailed("token not yet valid", code="invalid_token") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthenticationFailed("token signature invalid", code="invalid_token") from exc
    except jwt.PyJWTError as exc:
        raise AuthenticationFailed(
            f"token not accepted: {type(exc).__name__}", code="invalid_token"
        ) from exc
    return claims


def _identity(
    verified: list[tuple[TenantPolicy, Mapping[str, Any]]], headers: Mapping[str, str]
) -> Identity:
    with_role = [
        (t, role, claims)
        for t, claims in verified
        if t.oidc and (role := _role(t.oidc, claims)) is not None
    ]
    if not with_role:
        raise PermissionDenied(
            "your groups give you no role in this tenant"
            if headers.get(TENANT_HEADER)
            else "your groups give you no role in any tenant"
        )
    if len(with_role) > 1:
        raise InvalidRequest(
            f"your token is valid for several tenants: name one in the {TENANT_HEADER} header",
            code="tenant_ambiguous",
        )
    tenant, role, claims = with_role[0]
    assert tenant.oidc is not None
    subject = claims.get(tenant.oidc.user_claim) or claims.get("sub") or "unknown"
    return Identity(tenant=tenant, key_name="oidc", role=role, user=f"user:{subject}")
