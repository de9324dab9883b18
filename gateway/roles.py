"""Built-in roles and the permissions each grants."""

from __future__ import annotations

from typing import Final

MODELS_READ: Final = "models:read"
MODELS_INVOKE: Final = "models:invoke"
USAGE_READ: Final = "usage:read"
AUDIT_READ: Final = "audit:read"
EXPERIMENTS_READ: Final = "experiments:read"
ADMIN_READ: Final = "admin:read"

PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "admin": frozenset(
        {MODELS_READ, MODELS_INVOKE, USAGE_READ, AUDIT_READ, EXPERIMENTS_READ, ADMIN_READ}
    ),
    "developer": frozenset({MODELS_READ, MODELS_INVOKE, USAGE_READ, EXPERIMENTS_READ}),
    "analyst": frozenset({MODELS_READ, USAGE_READ, AUDIT_READ, EXPERIMENTS_READ}),
    "user": frozenset({MODELS_READ, MODELS_INVOKE}),
}


def allows(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())
