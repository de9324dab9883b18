"""Prompt-injection heuristics, on input only: phrases that try to override the system
prompt, chat-template tokens a client has no reason to send, and invisible characters
(counted during normalisation). Heuristics misfire, so their default action is ``flag``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from llmrouter.gateway.guardrails.detectors import Detector


@dataclass(frozen=True, eq=False)
class KeywordDetector(Detector):
    """Matched only where one of its keywords starts a word, in the lower-cased text: a
    case-insensitive alternation tried at every position is what made this the slowest
    detector."""

    def matches(
        self, text: str, pos: int, windows: dict[int, list[tuple[int, int]]] | None = None
    ) -> Iterator[Any]:
        pattern = cast(re.Pattern[str], self.pattern)
        low = text.lower()
        if len(low) != len(text):  # a few characters lower-case to two
            yield from re.compile(pattern.pattern, re.IGNORECASE).finditer(text, pos)
            return
        starts = sorted({i for word in self.keywords for i in _occurrences(low, word, pos)})
        end = -1
        for i in starts:
            if i < end or (i > 0 and low[i - 1].isalnum()):
                continue
            m = pattern.match(low, i, min(len(low), i + self.max_length + 1))
            if m is not None:
                end = m.end()
                yield m


def _occurrences(text: str, word: str, pos: int) -> Iterator[int]:
    i = text.find(word, pos)
    while i != -1:
        yield i
        i = text.find(word, i + 1)


OVERRIDE = KeywordDetector(
    "injection_override",
    re.compile(
        r"(?:(?:ignore|disregard|forget|override|bypass)\s{1,3}(?:all\s{1,3}|any\s{1,3}"
        r"|the\s{1,3}|your\s{1,3}|of\s{1,3}|everything\s{1,3}){0,3}(?:previous|prior|above|earlier"
        r"|preceding|system|original|safety)\s{1,3}(?:instructions?|prompts?|rules|directions"
        r"|messages?|guidelines|context)"
        r"|you\s{1,3}are\s{1,3}now\s{1,3}(?:in\s{1,3})?(?:dan|developer\s{1,3}mode|jailbroken)"
        r"|(?:reveal|print|repeat|show)\s{1,3}(?:me\s{1,3})?(?:your|the)\s{1,3}(?:system|hidden"
        r"|initial)\s{1,3}(?:prompt|instructions))\b"
    ),
    max_length=120,
    keywords=(
        "ignore",
        "disregard",
        "forget",
        "override",
        "bypass",
        "you",
        "reveal",
        "print",
        "repeat",
        "show",
    ),
)

TEMPLATE = Detector(
    "injection_template",
    re.compile(
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id"
        r"|end_header_id|begin_of_text|end_of_text)\|>|\[/?INST\]|<</?SYS>>"
    ),
    max_length=20,
    literals=("<|", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
)

INVISIBLE = "injection_invisible"
"""Not a pattern: invisible characters removed by normalisation, counted per text."""
