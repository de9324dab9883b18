"""Identifying values (API key names, OIDC subjects, client addresses) as keyed HMACs.

Whoever holds the key can tell whether two records name the same person, or find the
records of one (``llmrouter audit hmac``); a reader of the log without it learns neither.
A plain hash would not do: names are few and guessable.
"""

from __future__ import annotations

import hashlib
import hmac
import os

PREFIX = "hmac-sha256:"
MIN_KEY_BYTES = 16


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit HMAC key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._memo: dict[str, str] = {}

    @classmethod
    def random(cls) -> Pseudonyms:
        return cls(os.urandom(32))

    def of(self, value: str) -> str:
        # Few distinct names: each one's HMAC is computed once per process.
        found = self._memo.get(value)
        if found is None:
            digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
            found = PREFIX + digest
            if len(self._memo) < 100_000:
                self._memo[value] = found
        return found

    def digest(self, data: bytes) -> str:
        """The HMAC of bytes that are seldom repeated (a prompt): never remembered."""
        return PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()


def read_key(text: bytes) -> bytes:
    """A key file's bytes, less a trailing newline (files made with echo or an editor)."""
    return text.rstrip(b"\r\n")
