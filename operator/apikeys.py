"""API keys: generated with high entropy and a recognisable prefix, stored as hashes."""

from __future__ import annotations

import secrets

from llmrouter.gateway.config import hash_api_key

KEY_PREFIX = "llmr_"


def generate_api_key() -> str:
    """A new key: the prefix lets secret scanners and humans recognise it; 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def fingerprint(key: str) -> str:
    """What status and logs show of a key: enough to tell keys apart, useless to an attacker."""
    return "sha256:" + hash_api_key(key)[:16]
