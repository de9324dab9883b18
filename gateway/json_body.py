"""Request bodies as JSON objects, refused when parsers could disagree on what they say.

- **Duplicate keys** are refused (400 ``duplicate_key``) rather than resolved: the gateway
  forwards the client's own bytes, and a model server whose parser keeps the first of two
  ``"model"`` or ``"max_tokens"`` keys would act on a request the gateway never authorized
  or reserved for (this parser keeps the last).
- **Nesting** deeper than ``MAX_DEPTH`` arrays and objects is refused (400
  ``invalid_json``); checking costs time linear in the body's length, which
  ``--max-body-bytes`` bounds, and never recursion.
- Bytes that are not UTF-8, unpaired surrogates, numbers out of range, ``NaN`` are not JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from llmrouter.gateway.errors import InvalidRequest

MAX_DEPTH = 128
"""Far more than OpenAI request bodies use (JSON schemas of tools nest a few levels)."""

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
"""Opening brackets to +1, closing ones to -1 (as int8)."""


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a valid JSON text nest."""
    outside = _outside_strings(raw)
    steps = np.frombuffer(outside.translate(_STEPS, _NOT_BRACKETS), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int64).max()) if len(steps) else 0


def parse_object(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds, or InvalidRequest saying why it is refused."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    # Fewer opening brackets than the bound cannot nest past it: the common case is free.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and depth(raw) > MAX_DEPTH:
        raise InvalidRequest(
            f"request body nests arrays and objects more than {MAX_DEPTH} levels deep",
            code="invalid_json",
        )
    if _pairs_in_text(raw) != _pairs_in_value(body):
        # A key given twice was merged into one by the parser: find it to say which.
        try:
            json.loads(raw, object_pairs_hook=_unique)
        except _DuplicateKey as exc:
            raise InvalidRequest(
                f"request body has the key {exc.key!r} twice in one object",
                code="duplicate_key",
            ) from None
    return body


def _outside_strings(raw: bytes) -> bytes:
    """The bytes of a valid JSON text that are not inside a string."""
    # In valid JSON a backslash only occurs in a string, as an escape: without the escaped
    # backslashes and then the escaped quotes, every quote left opens or closes a string.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[0::2])


def _pairs_in_text(raw: bytes) -> int:
    """Members of all objects as written: outside strings, a colon only follows a key."""
    return _outside_strings(raw).count(b":")


def _pairs_in_value(value: Any) -> int:
    """Members of all objects as parsed (a key given twice counts once)."""
    if isinstance(value, dict):
        return len(value) + sum(
            _pairs_in_value(v) for v in value.values() if isinstance(v, dict | list)
        )
    if isinstance(value, list):
        return sum(_pairs_in_value(v) for v in value if isinstance(v, dict | list))
    return 0
