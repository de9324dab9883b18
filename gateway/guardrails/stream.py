"""Scanning text that arrives in pieces, releasing it as early as that gives the same
result as scanning it whole.

The text seen so far is normalised per character (so pieces normalise alike however they
are split). A match attempt starting before the scanner's frontier cannot change with more
text: the detectors' frontiers account for the longest match, the characters a match can
be made of, and a private key's END line. Text is released up to the frontier, moved back
to the start of any match it would cut; matches starting before that point are final, and
those after it are scanned again from there with the next piece, as a scan of the whole
text would have found them.

The one exception to exactness: text held beyond ``MAX_HOLD`` characters (a chain of
overlapping matches that never ends) is released at the frontier even inside a match.
"""

from __future__ import annotations

from collections import Counter

from llmrouter.gateway.guardrails.engine import Action, Scanner, count, redact
from llmrouter.gateway.guardrails.normalize import normalize_map

CONTEXT = 16
"""Released characters kept for the look-behind of the next match."""

MAX_HOLD = 32 * 1024


class TextStream:
    def __init__(self, scanner: Scanner, findings: Counter[tuple[str, Action]]) -> None:
        self.scanner = scanner
        self.findings = findings
        self.raw = ""
        """Original text not released yet."""
        self.norm = ""
        """Its normalisation."""
        self.origin: list[int] | None = None
        """Index in ``raw`` of each character of ``norm``; None: the same index."""
        self.context = ""

    def feed(self, piece: str) -> str:
        """Takes a piece; returns the text that can be released now. Raises Blocked."""
        if not piece:
            return ""
        norm, origin = normalize_map(piece)
        if origin is not None or self.origin is not None:
            if self.origin is None:
                self.origin = list(range(len(self.norm)))
            base = len(self.raw)
            if origin is None:
                self.origin.extend(range(base, base + len(norm)))
            else:
                self.origin.extend(base + i for i in origin)
        self.raw += piece
        self.norm += norm
        return self._release(final=False)

    def finish(self) -> str:
        """The rest, at the end of the text. Raises Blocked."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self.context + self.norm
        pos = len(self.context)
        n = len(text)
        if n == pos:
            out, self.raw = self.raw, ""  # only invisible characters
            return out
        p = n if final else self.scanner.frontier(text, pos, n)
        if p <= pos and len(self.norm) <= MAX_HOLD:
            return ""
        spans = self.scanner.spans(text, pos)
        forced = p <= pos
        if forced:
            p = max(pos + 1, n - self.scanner.hold)
            spans = [s for s in spans if s.end <= p]
        moved = True
        while moved and p > pos and not forced:
            moved = False
            for s in spans:
                if s.start < p < s.end:
                    p, moved = s.start, True
            if self.origin is not None:
                # Never between two characters that come from one original character.
                while pos < p < n and self.origin[p - pos - 1] == self.origin[p - pos]:
                    p, moved = p - 1, True
        if p <= pos:
            return ""
        final_spans = [s for s in spans if s.start < p]
        count(final_spans, self.findings)
        cut = p - pos
        raw_cut = len(self.raw) if cut >= len(self.norm) else self._raw_index(cut)
        origin = self.origin
        out = redact(self.raw[:raw_cut], origin, final_spans, shift=pos)
        self.context = text[max(0, p - CONTEXT) : p]
        self.raw = self.raw[raw_cut:]
        self.norm = self.norm[cut:]
        if origin is not None:
            self.origin = [i - raw_cut for i in origin[cut:]] or None
        return out

    def _raw_index(self, cut: int) -> int:
        return cut if self.origin is None else self.origin[cut]
