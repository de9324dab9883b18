"""RFC 8785 JSON Canonicalization Scheme (JCS): one byte string per JSON value.

Strings are written as ECMAScript's JSON.stringify writes them (orjson does the same: only
``"``, ``\\`` and control characters escaped, lowercase hex, UTF-8 otherwise), object members
are sorted by the UTF-16 code units of their names, and numbers are IEEE doubles written
the ECMAScript way. Integers beyond 2**53 have no exact double, so they are refused rather
than silently rounded; the audit records themselves use integers and strings only.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonicalizable(ValueError):
    pass


def canonical(value: Any) -> bytes:
    """The RFC 8785 bytes of a JSON value made of dict, list, str, int, float, bool, None."""
    if _plain(value):
        # No floats, ASCII member names: orjson's sorted output is already canonical, at a
        # fifteenth of the cost of the general path (the audit writer's every record).
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the general path says so
    parts: list[bytes] = []
    _write(value, parts)
    return b"".join(parts)


def _plain(value: Any) -> bool:
    if isinstance(value, str) or value is None or value is True or value is False:
        return True
    if isinstance(value, int):
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if isinstance(value, dict):
        return all(
            type(name) is str and name.isascii() and _plain(item) for name, item in value.items()
        )
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return False


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[bytes]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise NotCanonicalizable(f"integer {value} has no exact IEEE double")
        out.append(str(value).encode())
    elif isinstance(value, float):
        out.append(number(value).encode())
    elif isinstance(value, dict):
        names = list(value)
        for name in names:
            if not isinstance(name, str):
                raise NotCanonicalizable(f"object member name {name!r} is not a string")
        # UTF-16 order differs from code point order only past the BMP.
        if not all(name.isascii() for name in names):
            names.sort(key=_utf16)
        else:
            names.sort()
        out.append(b"{")
        for i, name in enumerate(names):
            if i:
                out.append(b",")
            out.append(_string(name))
            out.append(b":")
            _write(value[name], out)
        out.append(b"}")
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _write(item, out)
        out.append(b"]")
    else:
        raise NotCanonicalizable(f"{type(value).__name__} is not a JSON value")


def _string(text: str) -> bytes:
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError as exc:  # a lone surrogate: no UTF-8 for it
        raise NotCanonicalizable(f"string is not valid Unicode: {exc}") from None


def number(value: float) -> str:
    """ECMAScript's Number::toString of a finite double (ECMA-262, 7.1.12.1)."""
    if not math.isfinite(value):
        raise NotCanonicalizable(f"{value} is not a JSON number")
    if value == 0:
        return "0"
    if value < 0:
        return "-" + number(-value)
    # repr is the shortest text that reads back as the same double, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # value = 0.digits * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
