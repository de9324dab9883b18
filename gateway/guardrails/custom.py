"""A tenant's own patterns: run by RE2, whose matching time is linear in the text whatever
the pattern, and refused unless their longest match is bounded (a stream keeps that many
characters back)."""

from __future__ import annotations

import importlib
import re
import string
import warnings
from typing import Any

import re2

from llmrouter.gateway.guardrails.detectors import Detector

# Python's own regex parser (re._parser), which typeshed does not describe.
sre_parse: Any = importlib.import_module("re._parser")

MAX_PATTERN_LENGTH = 1024
"""The longest match a tenant pattern may declare."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20


def longest_match(regex: str) -> int | None:
    """The most characters ``regex`` can match; None when unbounded. Python's parser reads
    the RE2 syntax this needs (repeats, groups, classes); what it cannot read is refused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, hi = sre_parse.parse(regex).getwidth()
    return None if hi >= sre_parse.MAXREPEAT else int(hi)


_CATEGORIES = {
    # RE2's \d, \w and \s are ASCII.
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_SPACE": " \t\n\r\f\v",
}


def alphabet_of(regex: str) -> frozenset[str] | None:
    """Every character a match of ``regex`` can consume; None when that is any (``.``, a
    negated class, a wide range). A stream only holds back the trailing run of these."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = sre_parse.parse(regex)
    chars: set[str] = set()
    if not _collect(parsed, chars):
        return None
    if parsed.state.flags & re.IGNORECASE:
        chars |= {c.swapcase() for c in chars}
    return frozenset(chars)


def _collect(items: Any, chars: set[str]) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            chars.add(chr(arg))
        elif name == "IN":
            for sub_op, sub_arg in arg:
                sub = str(sub_op)
                if sub == "LITERAL":
                    chars.add(chr(sub_arg))
                elif sub == "RANGE" and sub_arg[1] - sub_arg[0] <= 256:
                    chars.update(chr(c) for c in range(sub_arg[0], sub_arg[1] + 1))
                elif sub == "CATEGORY" and str(sub_arg) in _CATEGORIES:
                    chars.update(_CATEGORIES[str(sub_arg)])
                else:
                    return False
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if not _collect(arg[2], chars):
                return False
        elif name == "SUBPATTERN":
            if not _collect(arg[3], chars):
                return False
        elif name == "BRANCH":
            if not all(_collect(branch, chars) for branch in arg[1]):
                return False
        elif name != "AT":
            return False
    return True


def check_pattern(regex: str, max_length: int) -> str | None:
    """Why the pattern cannot be used, or None."""
    try:
        compile_re2(regex)
    except re2.error as exc:
        return f"not a valid RE2 pattern: {_reason(exc)}"
    try:
        longest = longest_match(regex)
    except Exception:
        return "its longest match cannot be worked out; use plain repeats, groups and classes"
    if longest is None:
        return "matches text of any length (`*`, `+` or `{n,}`); bound every repeat, e.g. `{1,64}`"
    if longest == 0:
        return "matches only empty text"
    if longest > max_length:
        return f"can match {longest} characters, more than maxLength {max_length}"
    return None


def _reason(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def compile_re2(regex: str) -> Any:
    return re2.compile(regex, _OPTIONS)


def custom_detector(name: str, regex: str, max_length: int) -> Detector:
    problem = check_pattern(regex, max_length)
    if problem is not None:
        raise ValueError(f"pattern {name!r}: {problem}")
    longest = longest_match(regex)
    assert longest is not None
    return Detector(
        f"custom:{name}", compile_re2(regex), max_length=longest, alphabet=alphabet_of(regex)
    )
