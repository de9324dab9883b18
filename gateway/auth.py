"""API key authentication: from request headers to an Identity, against GatewayConfig."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmrouter.gateway.config import GatewayConfig, Limits, TenantPolicy, hash_api_key
from llmrouter.gateway.errors import AuthenticationFailed, PermissionDenied
from llmrouter.gateway.roles import allows

MAX_CREDENTIAL_LENGTH = 16 * 1024
NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """Who a request is from. Compared and hashed as an object: the identity of a key is
    made once per configuration and used as a key of memos."""

    tenant: TenantPolicy
    key_name: str
    """The API key's name, or ``oidc`` for a user with a token."""
    role: str
    user: str
    """Who usage is charged to within the tenant: ``key:<name>`` or ``user:<subject>``."""
    key_limits: Limits | None = None

    def require(self, permission: str) -> None:
        if not allows(self.role, permission):
            raise PermissionDenied(
                f"role {self.role!r} of key {self.key_name!r} lacks permission {permission!r}"
            )


def presented_credential(headers: Mapping[str, str]) -> str:
    """The API key or token from ``Authorization: Bearer`` or ``x-api-key``."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "Authorization header must be 'Bearer <api key>'", code="invalid_authorization"
            )
        key = token.strip()
    else:
        key = (headers.get("x-api-key") or "").strip()
        if not key:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key",
            )
    if len(key) > MAX_CREDENTIAL_LENGTH:
        raise AuthenticationFailed("invalid API key")
    try:
        # Header bytes that are not UTF-8 arrive as surrogates, which no key can contain.
        key.encode()
    except UnicodeEncodeError:
        raise AuthenticationFailed("invalid API key") from None
    return key


def authenticate_key(key: str, config: GatewayConfig) -> Identity:
    # Looking up the key's sha256 rather than the key itself means a timing difference
    # in the lookup can only reveal bits of a hash, never of a key.
    digest = hash_api_key(key)
    identities = config.derived
    identity: Identity | None = identities.get(("key", digest))
    if identity is not None:
        return identity
    entry = config.api_keys.get(digest)
    if entry is None:
        raise AuthenticationFailed("invalid API key")
    tenant = config.tenants.get(entry.tenant)
    if tenant is None:
        raise AuthenticationFailed("invalid API key")
    # Only keys of the configuration are remembered: as many as it has.
    identity = identities["key", digest] = Identity(
        tenant=tenant,
        key_name=entry.name,
        role=entry.role,
        user=f"key:{entry.name}",
        key_limits=entry.limits if entry.limits != NO_LIMITS else None,
    )
    return identity
