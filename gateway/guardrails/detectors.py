"""The built-in detectors: a pattern with a bounded longest match, the characters a match
can be made of, literals one of which every match contains (a cheap pre-check), and a
checksum where the identifier has one.

Patterns are anchored on both sides by one-character look-arounds, so that a match
depends on at most one character either side of it: that, the longest match and the
alphabet are what lets a stream release text early (see stream.py).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llmrouter.gateway.guardrails import checksums


class Pattern(Protocol):
    def finditer(self, text: str, pos: int = ..., endpos: int = ...) -> Any: ...


@dataclass(frozen=True, eq=False)
class Detector:
    name: str
    pattern: Pattern
    max_length: int
    """The longest text a match can cover."""
    alphabet: frozenset[str] | None = None
    """Every character a match can consume; None: any."""
    literals: tuple[str, ...] = ()
    """A match contains one of these; empty: no pre-check."""
    valid: Callable[[str], bool | int] | None = None
    """Whether a match is the real thing; an int: only its first so many characters are."""
    needs_digit: bool = False

    @property
    def hold(self) -> int:
        """Characters a stream keeps back: a whole match and the character after it."""
        return self.max_length + 1

    def applies(self, text: str, pos: int) -> bool:
        if self.literals:
            return any(text.find(lit, pos) != -1 for lit in self.literals)
        return True

    def frontier(self, text: str, pos: int, n: int) -> int:
        """A position before which every match attempt is decided by ``text[:n]``, whatever
        follows: an attempt needs a run of alphabet characters reaching the end, or fewer
        than ``hold`` characters to the end."""
        lo = max(pos, n - self.hold)
        if self.alphabet is None:
            return lo
        i = n
        alphabet = self.alphabet
        while i > lo and text[i - 1] in alphabet:
            i -= 1
        return i


_BEGIN = "-----BEGIN"


@dataclass(frozen=True, eq=False)
class PemDetector(Detector):
    """A private-key block is held from its BEGIN line until its END line (or the longest
    block), not for its whole length after every character."""

    def frontier(self, text: str, pos: int, n: int) -> int:
        i = text.find(_BEGIN, pos, n)
        while i != -1:
            if n - i <= self.max_length:
                m = _PEM_COMPLETE.match(text, i, n)
                if m is None:
                    return i
                i = text.find(_BEGIN, m.end(), n)
            else:
                i = text.find(_BEGIN, i + 1, n)
        # The end may be the start of a BEGIN still arriving.
        for k in range(min(len(_BEGIN), n - pos), 0, -1):
            if text.endswith(_BEGIN[:k], 0, n):
                return n - k
        return n


def _chars(*parts: str) -> frozenset[str]:
    return frozenset("".join(parts))


_DIGITS = string.digits
_ALNUM = string.ascii_letters + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits
_B64URL = _ALNUM + "_-"

_PEM_BODY = 8192
_PEM_HEAD = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----"
_PEM_COMPLETE = re.compile(
    _PEM_HEAD + rf"[\s\S]{{0,{_PEM_BODY}}}?-----END[A-Z0-9 ]{{0,40}}PRIVATE KEY-----"
)


def _phone(text: str) -> bool:
    return 8 <= len(checksums.digits_of(text)) <= 15


BUILTIN: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "email",
            re.compile(
                r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
                r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,3}"
                r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
            ),
            max_length=64 + 1 + 63 + 4 * 64 + 25,
            alphabet=_chars(_ALNUM, "._%+-@"),
            literals=("@",),
        ),
        Detector(
            "phone",
            re.compile(
                # +CC and groups (E.164 written with separators), or North American
                # (NXX) NXX-XXXX with separators: bare digit runs are too often not phones.
                r"(?<![\w+.-])(?:\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
                r"|(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4})(?![\w-])"
            ),
            max_length=4 + 5 * 7,
            alphabet=_chars(_DIGITS, " .-()+"),
            valid=_phone,
            needs_digit=True,
        ),
        Detector(
            "payment_card",
            # Digits in one run, or in groups with one kind of separator (4-4-4-4, Amex
            # 4-6-5): a loose pattern would swallow a neighbouring number and fail Luhn.
            re.compile(
                r"(?<![\d.-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"
                r"|\d{4}([ -])\d{6}\2\d{4,5})(?![\d])"
            ),
            max_length=23,
            alphabet=_chars(_DIGITS, " -"),
            valid=checksums.payment_card,
            needs_digit=True,
        ),
        Detector(
            "iban",
            re.compile(
                r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                r"(?![A-Za-z0-9])"
            ),
            max_length=4 + 7 * 5 + 4,
            alphabet=_chars(_UPPER_ALNUM, " "),
            valid=checksums.iban_prefix,
            needs_digit=True,
        ),
        Detector(
            "us_ssn",
            re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"),
            max_length=11,
            alphabet=_chars(_DIGITS, "-"),
            valid=checksums.us_ssn,
            needs_digit=True,
        ),
        Detector(
            "es_dni",
            re.compile(r"(?<![\w-])(?:\d{8}|[XYZ]\d{7})-?[A-Z](?![\w-])"),
            max_length=10,
            alphabet=_chars(_UPPER_ALNUM, "-"),
            valid=checksums.es_dni,
            needs_digit=True,
        ),
        Detector(
            "aws_access_key",
            re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
            max_length=20,
            alphabet=_chars(_UPPER_ALNUM),
            literals=("AKIA", "ASIA", "ABIA", "ACCA"),
        ),
        PemDetector(
            "private_key",
            re.compile(
                _PEM_HEAD + rf"(?:[\s\S]{{0,{_PEM_BODY}}}?-----END[A-Z0-9 ]{{0,40}}PRIVATE KEY-----"
                rf"|[A-Za-z0-9+/=\s:,-]{{0,{_PEM_BODY}}})"
            ),
            max_length=2 * 56 + _PEM_BODY,
            literals=(_BEGIN,),
        ),
        Detector(
            "github_token",
            re.compile(
                r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}"
                r"|github_pat_[A-Za-z0-9_]{22,244})(?![A-Za-z0-9_])"
            ),
            max_length=255,
            alphabet=_chars(_ALNUM, "_"),
            literals=("gh", "github_pat_"),
        ),
        Detector(
            "slack_token",
            re.compile(r"(?<![A-Za-z0-9-])xox[abposr]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])"),
            max_length=255,
            alphabet=_chars(_ALNUM, "-"),
            literals=("xox",),
        ),
        Detector(
            "stripe_key",
            re.compile(r"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}(?![\w])"),
            max_length=255,
            alphabet=_chars(_ALNUM, "_"),
            literals=("_live_", "_test_"),
        ),
        Detector(
            "anthropic_key",
            re.compile(
                r"(?<![A-Za-z0-9_-])sk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,200}"
                r"(?![A-Za-z0-9_-])"
            ),
            max_length=220,
            alphabet=_chars(_B64URL),
            literals=("sk-ant-",),
        ),
        Detector(
            "openai_key",
            re.compile(
                r"(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?"
                r"[A-Za-z0-9_-]{20,200}(?![A-Za-z0-9_-])"
            ),
            max_length=211,
            alphabet=_chars(_B64URL),
            literals=("sk-",),
        ),
        Detector(
            "jwt",
            re.compile(
                r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,2000}\.eyJ[A-Za-z0-9_-]{5,4000}"
                r"\.[A-Za-z0-9_-]{10,1000}(?![A-Za-z0-9_-])"
            ),
            max_length=7010,
            alphabet=_chars(_B64URL, "."),
            literals=("eyJ",),
        ),
    )
}

PII = ("email", "phone", "payment_card", "iban", "us_ssn", "es_dni")
SECRETS = (
    "aws_access_key",
    "private_key",
    "github_token",
    "slack_token",
    "stripe_key",
    "anthropic_key",
    "openai_key",
    "jwt",
)
NATIONAL_IDS = ("us_ssn", "es_dni")
