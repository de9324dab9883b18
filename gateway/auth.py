"""API key authentication: from request headers to an Identity, against GatewayConfig."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmrouter.gateway.config import GatewayConfig, TenantPolicy, hash_api_key
from llmrouter.gateway.errors import AuthenticationFailed, PermissionDenied
from llmrouter.gateway.roles import allows

MAX_KEY_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: TenantPolicy
    key_name: str
    role: str

    def require(self, permission: str) -> None:
        if not allows(self.role, permission):
            raise PermissionDenied(
                f"role {self.role!r} of key {self.key_name!r} lacks permission {permission!r}"
            )


def presented_key(headers: Mapping[str, str]) -> str:
    """The API key from ``Authorization: Bearer`` or ``x-api-key``."""
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
    if len(key) > MAX_KEY_LENGTH:
        raise AuthenticationFailed("invalid API key")
    return key


def authenticate(headers: Mapping[str, str], config: GatewayConfig) -> Identity:
    # Looking up the key's sha256 rather than the key itself means a timing difference
    # in the lookup can only reveal bits of a hash, never of a key.
    entry = config.api_keys.get(hash_api_key(presented_key(headers)))
    if entry is None:
        raise AuthenticationFailed("invalid API key")
    tenant = config.tenants.get(entry.tenant)
    if tenant is None:
        raise AuthenticationFailed("invalid API key")
    return Identity(tenant=tenant, key_name=entry.name, role=entry.role)
