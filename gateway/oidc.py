"""OpenID Connect bearer tokens: verified against the issuer's JWKS, groups mapped to roles.

Only RS256 and ES256 are accepted, each only with a key of its own type, so ``alg: none``
and HS256-signed-with-the-public-key confusion are refused before any key is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from llmrouter.gateway.auth import Identity
from llmrouter.gateway.config import GatewayConfig, OIDCProvider, TenantPolicy
from llmrouter.gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from llmrouter.gateway.jwks import JWKSCache as JWKSCache

ALGORITHMS = ("RS256", "ES256")
ROLE_RANK = {"admin": 4, "developer": 3, "analyst": 2, "user": 1}
LEEWAY_S = 30
TENANT_HEADER = "x-llmrouter-tenant"


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def _role(provider: OIDCProvider, claims: Mapping[str, Any]) -> str | None:
    groups = claims.get(provider.groups_claim, [])
    if isinstance(groups, str):
        groups = [groups]
    elif not isinstance(groups, list):
        return None  # a number, an object: no groups an IdP would send
    roles = [provider.roles[g] for g in groups if isinstance(g, str) and g in provider.roles]
    return max(roles, key=ROLE_RANK.__getitem__) if roles else None


async def authenticate_token(
    token: str, config: GatewayConfig, headers: Mapping[str, str], keys: JWKSCache
) -> Identity:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        # PyJWT raises TypeError for some claims of the wrong type (an "iss" that is a
        # number), before any signature is checked: a forged token's choice.
        raise AuthenticationFailed("malformed token", code="invalid_token") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AuthenticationFailed("token algorithm not accepted", code="invalid_token")
    iss = unverified.get("iss")
    if not isinstance(iss, str):
        raise AuthenticationFailed("token issuer not accepted", code="invalid_token")
    issuer = iss.rstrip("/")
    candidates = [t for t in config.tenants.values() if t.oidc and t.oidc.issuer == issuer]
    if not candidates:
        raise AuthenticationFailed("token issuer not accepted", code="invalid_token")
    aud = unverified.get("aud")
    # Unverified yet: a number or a list of objects must be refused, not crash.
    listed = aud if isinstance(aud, list) else [aud]
    audiences = {a for a in listed if isinstance(a, str)}
    candidates = [t for t in candidates if t.oidc and t.oidc.audience in audiences]
    if not candidates:
        raise AuthenticationFailed("token audience not accepted", code="invalid_token")
    # The header narrows the candidates before any key is fetched; each remaining tenant's
    # own keys must verify the token, or a tenant declaring another's issuer with its own
    # jwksURL could sign its way into the other tenant.
    wanted = headers.get(TENANT_HEADER)
    named = candidates if wanted is None else [t for t in candidates if t.id == wanted]
    # Naming a tenant the token cannot be for is refused only once the token verified:
    # a forged token learns nothing of which tenants trust which issuer.
    verified = await _verify_each(token, named or candidates, header.get("kid"), alg, keys, iss)
    if not named:
        raise PermissionDenied("your groups give you no role in this tenant")
    return _identity(verified, headers)


async def _verify_each(
    token: str, tenants: list[TenantPolicy], kid: str | None, alg: str, keys: JWKSCache, iss: Any
) -> list[tuple[TenantPolicy, Mapping[str, Any]]]:
    """The tenants whose own keys verify the token; the first failure when none does."""
    verified: list[tuple[TenantPolicy, Mapping[str, Any]]] = []
    failure: AuthenticationFailed | None = None
    for tenant in tenants:
        assert tenant.oidc is not None
        try:
            verified.append((tenant, await _verify(token, tenant.oidc, kid, alg, keys, iss)))
        except AuthenticationFailed as exc:
            failure = failure or exc
    if not verified:
        assert failure is not None
        raise failure
    return verified


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
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
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
