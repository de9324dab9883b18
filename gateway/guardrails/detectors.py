r"""The built-in detectors: a pattern with a bounded longest match, the characters a match
can be made of, literals one of which every match contains (a cheap pre-check), and a
checksum where the identifier has one.

Patterns are anchored on both sides by one-character look-arounds, so that a match
depends on at most one character either side of it: that, the longest match and the
alphabet are what lets a stream release text early (see stream.py). A pattern starts with
a character class and looks behind after it (``\d(?<![\d-]\d)`` rather than
``(?<![\d-])\d``): Python's engine then skips ahead to candidate characters, several
times faster on prose.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator
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
    keywords: tuple[str, ...] = ()
    """Lower-case words one of which a match contains, whatever its case."""
    valid: Callable[[str], bool | int] | None = None
    """Whether a match is the real thing; an int: only its first so many characters are."""
    needs_digit: bool = False
    runs: re.Pattern[str] | None = None
    """Runs of characters every match lies inside (and that look-aheads may see one past):
    the pattern only runs inside them, not over the whole text. Detectors that share one
    find the runs once per text."""
    shortest: int = 0
    """The shortest match: runs shorter than this are skipped."""
    anchor: str | None = None
    """With an alphabet: the pattern only runs over the alphabet runs around this literal."""
    prefixes: tuple[str, ...] = ()
    """Every match starts with one of these, after a character outside ``boundary``: a
    stream need not hold back a word that cannot begin one."""
    boundary: frozenset[str] = frozenset()

    def matches(
        self, text: str, pos: int, windows: dict[int, list[tuple[int, int]]] | None = None
    ) -> Iterator[Any]:
        """The pattern's matches from ``pos``, as ``finditer`` gives them over the whole text.
        Matching only inside runs gives the same: a match lies inside one run, and the
        character after the run is kept for the look-ahead."""
        if self.runs is not None:
            key = id(self.runs)
            found = None if windows is None else windows.get(key)
            if found is None:
                found = [m.span() for m in self.runs.finditer(text, pos)]
                if windows is not None:
                    windows[key] = found
            for start, end in found:
                if end - start >= self.shortest:
                    yield from self.pattern.finditer(text, start, end + 1)
        elif self.anchor is not None and self.alphabet is not None:
            for start, end in self._anchored(text, pos):
                yield from self.pattern.finditer(text, start, end + 1)
        else:
            yield from self.pattern.finditer(text, pos)

    def _anchored(self, text: str, pos: int) -> Iterator[tuple[int, int]]:
        assert self.anchor is not None and self.alphabet is not None
        alphabet, n = self.alphabet, len(text)
        i = text.find(self.anchor, pos)
        window: tuple[int, int] | None = None
        while i != -1:
            a, lo = i, max(pos, i - self.max_length)
            while a > lo and text[a - 1] in alphabet:
                a -= 1
            b, hi = i + 1, min(n, i + 1 + self.max_length)
            while b < hi and text[b] in alphabet:
                b += 1
            if window is not None and a <= window[1]:
                window = (window[0], b)
            else:
                if window is not None:
                    yield window
                window = (a, b)
            i = text.find(self.anchor, i + 1)
        if window is not None:
            yield window

    @property
    def hold(self) -> int:
        """Characters a stream keeps back: a whole match and the character after it."""
        return self.max_length + 1

    def applies(self, text: str, pos: int, lower: Callable[[], str]) -> bool:
        if self.literals and not any(text.find(lit, pos) != -1 for lit in self.literals):
            return False
        if self.keywords:
            low = lower()
            return any(low.find(word, pos) != -1 for word in self.keywords)
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
        if self.prefixes and i < n and n - i <= 64:
            return self._first_start(text, i, n)
        return i

    def _first_start(self, text: str, i: int, n: int) -> int:
        """The first position of the trailing run where a match could still begin."""
        for s in range(i, n):
            if s > 0 and text[s - 1] in self.boundary:
                continue
            tail = text[s:n]
            if any(p.startswith(tail) or tail.startswith(p) for p in self.prefixes):
                return s
        return n


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


# Where numbers are (phone, card, SSN), and uppercase-and-digit codes (IBAN, DNI/NIE): each
# detector's alphabet lies within its group's, and its shortest match is no shorter.
_NUMBER_RUNS = re.compile(r"[0-9+(][0-9 .()+-]{8,}")
_CODE_RUNS = re.compile(r"[0-9A-Z][0-9A-Z -]{7,}")


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
            anchor="@",
        ),
        Detector(
            "phone",
            re.compile(
                # +CC and groups (E.164 written with separators), or North American
                # (NXX) NXX-XXXX with separators: bare digit runs are too often not phones.
                r"[+(0-9](?<![\w+.-].)(?:(?<=\+)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
                r"|(?<=\()\d{3}\) ?\d{3}[.-]\d{4}|(?<=\d)\d{2}[.-]\d{3}[.-]\d{4})(?![\w-])"
            ),
            max_length=4 + 5 * 7,
            alphabet=_chars(_DIGITS, " .-()+"),
            valid=_phone,
            needs_digit=True,
            runs=_NUMBER_RUNS,
            shortest=9,
        ),
        Detector(
            "payment_card",
            # Digits in one run, or in groups with one kind of separator (4-4-4-4, Amex
            # 4-6-5): a loose pattern would swallow a neighbouring number and fail Luhn.
            re.compile(
                r"\d(?<![\d.-]\d)(?:\d{12,18}|\d{3}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"
                r"|\d{3}([ -])\d{6}\2\d{4,5})(?![\d])"
            ),
            max_length=23,
            alphabet=_chars(_DIGITS, " -"),
            valid=checksums.payment_card,
            needs_digit=True,
            runs=_NUMBER_RUNS,
            shortest=13,
        ),
        Detector(
            "iban",
            re.compile(
                r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                r"(?![A-Za-z0-9])"
            ),
            max_length=4 + 7 * 5 + 4,
            alphabet=_chars(_UPPER_ALNUM, " "),
            valid=checksums.iban_prefix,
            needs_digit=True,
            runs=_CODE_RUNS,
            shortest=15,
        ),
        Detector(
            "us_ssn",
            re.compile(r"\d(?<![\d-]\d)\d{2}-\d{2}-\d{4}(?![\d-])"),
            max_length=11,
            alphabet=_chars(_DIGITS, "-"),
            valid=checksums.us_ssn,
            needs_digit=True,
            runs=_NUMBER_RUNS,
            shortest=11,
        ),
        Detector(
            "es_dni",
            re.compile(r"[0-9XYZ](?<![\w-].)\d{7}-?[A-Z](?![\w-])"),
            max_length=10,
            alphabet=_chars(_UPPER_ALNUM, "-"),
            valid=checksums.es_dni,
            needs_digit=True,
            runs=_CODE_RUNS,
            shortest=9,
        ),
        Detector(
            "aws_access_key",
            re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
            max_length=20,
            alphabet=_chars(_UPPER_ALNUM),
            literals=("AKIA", "ASIA", "ABIA", "ACCA"),
            prefixes=("AKIA", "ASIA", "ABIA", "ACCA"),
            boundary=_chars(_ALNUM),
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
                r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,251}"
                r"|ithub_pat_[A-Za-z0-9_]{22,244})(?![A-Za-z0-9_])"
            ),
            max_length=255,
            alphabet=_chars(_ALNUM, "_"),
            literals=("gh", "github_pat_"),
            prefixes=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            boundary=_chars(_ALNUM, "_"),
        ),
        Detector(
            "slack_token",
            re.compile(r"x(?<![A-Za-z0-9-]x)ox[abposr]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])"),
            max_length=255,
            alphabet=_chars(_ALNUM, "-"),
            literals=("xox",),
            prefixes=tuple(f"xox{c}-" for c in "abposr"),
            boundary=_chars(_ALNUM, "-"),
        ),
        Detector(
            "stripe_key",
            re.compile(r"[sr](?<![A-Za-z0-9_][sr])k_(?:live|test)_[A-Za-z0-9]{16,247}(?![\w])"),
            max_length=255,
            alphabet=_chars(_ALNUM, "_"),
            literals=("_live_", "_test_"),
            prefixes=("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
            boundary=_chars(_ALNUM, "_"),
        ),
        Detector(
            "anthropic_key",
            re.compile(
                r"s(?<![A-Za-z0-9_-]s)k-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,200}"
                r"(?![A-Za-z0-9_-])"
            ),
            max_length=220,
            alphabet=_chars(_B64URL),
            literals=("sk-ant-",),
            prefixes=("sk-ant-",),
            boundary=_chars(_B64URL),
        ),
        Detector(
            "openai_key",
            re.compile(
                r"s(?<![A-Za-z0-9_-]s)k-(?!ant-)(?:proj-|svcacct-|admin-|None-)?"
                r"[A-Za-z0-9_-]{20,200}(?![A-Za-z0-9_-])"
            ),
            max_length=211,
            alphabet=_chars(_B64URL),
            literals=("sk-",),
            prefixes=("sk-",),
            boundary=_chars(_B64URL),
        ),
        Detector(
            "jwt",
            re.compile(
                r"e(?<![A-Za-z0-9_-]e)yJ[A-Za-z0-9_-]{5,2000}\.eyJ[A-Za-z0-9_-]{5,4000}"
                r"\.[A-Za-z0-9_-]{10,1000}(?![A-Za-z0-9_-])"
            ),
            max_length=7010,
            alphabet=_chars(_B64URL, "."),
            literals=("eyJ",),
            prefixes=("eyJ",),
            boundary=_chars(_B64URL),
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
