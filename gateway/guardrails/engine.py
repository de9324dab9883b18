"""Scanning one text with a set of rules: find, then block, redact or flag.

Redaction replaces the original characters a match came from (see normalize.py); where
matches of several detectors overlap, the union is replaced once, labelled with the
detector of the earliest match.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from llmrouter.gateway.guardrails.detectors import Detector
from llmrouter.gateway.guardrails.normalize import normalize_map

_DIGIT = re.compile(r"[0-9]")

Action = Literal["redact", "block", "flag"]


@dataclass(frozen=True, eq=False)
class Rule:
    detector: Detector
    action: Action
    order: int = 0


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    rule: Rule
    valid: bool
    """A regex match that failed its checksum still takes its place in the scan."""


class Blocked(Exception):
    """A ``block`` rule matched. Carries the detector's name, never the text."""

    def __init__(self, detector: str, where: str = "") -> None:
        super().__init__(detector)
        self.detector = detector
        self.where = where


class DetectorFailed(Exception):
    """A detector raised: the text is treated as blocked (fail closed)."""


def label(detector: str) -> str:
    return f"[REDACTED:{detector}]"


@dataclass(frozen=True, eq=False)
class Scanner:
    rules: tuple[Rule, ...]

    @property
    def hold(self) -> int:
        return max((r.detector.hold for r in self.rules), default=0)

    def spans(self, text: str, pos: int = 0) -> list[Span]:
        """Every match starting at ``pos`` or later, in text order (ties: rule order)."""
        found: list[Span] = []
        has_digit: bool | None = None
        lowered: list[str] = []
        windows: dict[int, list[tuple[int, int]]] = {}

        def lower() -> str:
            if not lowered:
                lowered.append(text.lower())
            return lowered[0]

        try:
            for rule in self.rules:
                d = rule.detector
                if d.needs_digit:
                    if has_digit is None:
                        has_digit = _DIGIT.search(text, pos) is not None
                    if not has_digit:
                        continue
                if not d.applies(text, pos, lower):
                    continue
                valid = d.valid
                for m in d.matches(text, pos, windows):
                    ok = True if valid is None else valid(m.group())
                    if isinstance(ok, bool):
                        found.append(Span(m.start(), m.end(), rule, ok))
                    else:  # the match still holds its place in the scan; a prefix is real
                        found.append(Span(m.start(), m.end(), rule, False))
                        found.append(Span(m.start(), m.start() + ok, rule, True))
        except Exception as exc:
            raise DetectorFailed(str(exc)) from exc
        if len(found) > 1:
            found.sort(key=lambda s: (s.start, s.rule.order))
        return found

    def frontier(self, text: str, pos: int, n: int) -> int:
        return min((r.detector.frontier(text, pos, n) for r in self.rules), default=n)


@dataclass
class Result:
    text: str
    findings: Counter[tuple[str, Action]] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return any(action == "redact" for _, action in self.findings)


def count(spans: list[Span], findings: Counter[tuple[str, Action]]) -> None:
    """Counts valid matches; raises Blocked for the first ``block`` one."""
    for s in spans:
        if s.valid:
            findings[(s.rule.detector.name, s.rule.action)] += 1
    for s in spans:
        if s.valid and s.rule.action == "block":
            raise Blocked(s.rule.detector.name)


def redact(raw: str, origin: list[int] | None, spans: list[Span], shift: int = 0) -> str:
    """``raw`` with the ``redact`` spans (in normalised coordinates, less ``shift``)
    replaced by their labels."""
    out: list[str] = []
    last = 0
    cur: tuple[int, int, str] | None = None
    for s in spans:
        if not s.valid or s.rule.action != "redact":
            continue
        a, b = s.start - shift, s.end - shift
        if origin is not None:
            a, b = origin[a], origin[b - 1] + 1
        if cur is not None and a < cur[1]:
            cur = (cur[0], max(cur[1], b), cur[2])
            continue
        if cur is not None:
            out.append(raw[last : cur[0]])
            out.append(label(cur[2]))
            last = cur[1]
        cur = (a, b, s.rule.detector.name)
    if cur is None:
        return raw
    out.append(raw[last : cur[0]])
    out.append(label(cur[2]))
    out.append(raw[cur[1] :])
    return "".join(out)


def scan(scanner: Scanner, raw: str) -> Result:
    """The whole text at once (a request, a complete answer). Raises Blocked."""
    norm, origin = normalize_map(raw)
    spans = scanner.spans(norm)
    result = Result(raw)
    if not spans:
        return result
    count(spans, result.findings)
    result.text = redact(raw, origin, spans)
    return result
