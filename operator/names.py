"""Names and label values the operator makes from user-chosen names.

Joining names with ``-`` is ambiguous (tenant ``a-b`` with key ``c`` and tenant ``a`` with
key ``b-c`` both give ``a-b-c``), and user names can be longer than what Kubernetes allows
in a derived name (253 characters) or a label value (63). Every derived name therefore
ends in a hash of the exact parts it comes from, and is cut to length before that hash.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 253
"""An object name (RFC 1123 subdomain), such as a Secret's."""
MAX_LABEL_VALUE = 63
HASH_CHARS = 10
"""40 bits: two different part lists meeting by chance is not a worry, and every place that
could be hurt by a deliberate meeting also checks what the object it finds belongs to."""


def _digest(parts: tuple[str, ...]) -> str:
    # NUL never occurs in a Kubernetes name: the joined parts decode one way only.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_CHARS]


def _trimmed(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in a letter or digit as names must."""
    return re.sub(r"[^a-z0-9]+$", "", text[:limit].lower())


def hashed_name(prefix: str, *parts: str) -> str:
    """``<prefix>-<parts joined by ->-<hash of the parts>``, at most 253 characters: readable
    in kubectl, and different for any two different part lists."""
    readable = _trimmed("-".join((prefix, *parts)), MAX_NAME - HASH_CHARS - 1)
    return f"{readable}-{_digest((prefix, *parts))}"


def label_value(value: str) -> str:
    """``value`` itself when it is a valid label value, else a cut form with a hash of it."""
    if len(value) <= MAX_LABEL_VALUE and re.fullmatch(
        r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value
    ):
        return value
    readable = _trimmed(value, MAX_LABEL_VALUE - HASH_CHARS - 1)
    return f"{readable}-{_digest((value,))}" if readable else _digest((value,))


def api_key_secret_name(tenant: str, key: str) -> str:
    """The Secret holding a tenant's API key, in the tenant's namespace."""
    return hashed_name("llmrouter-key", tenant, key)


def provider_copy_name(namespace: str, name: str) -> str:
    """The gateway namespace's copy of a Secret from another namespace."""
    return hashed_name("llmrouter-provider", namespace, name)


SERVER_KEY = "apiKey"
"""The data key of a server key Secret."""


def server_key_secret_name(model: str) -> str:
    """The Secret holding the key a llama-server of this ModelDeployment requires."""
    return hashed_name("llmrouter-server-key", model)
