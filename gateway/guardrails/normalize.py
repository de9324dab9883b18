"""Text normalisation before matching: each character is replaced by its NFKC form, and
zero-width, bidi-control and tag characters are removed, so that an address in full-width
forms or a key split by U+200B is still found.

Normalisation is per character (compatibility mapping; canonical composition across
characters is left out: every pattern matches ASCII, which never composes). That makes it
independent of where a stream splits the text, and lets each normalised character point
back to the original one: redaction replaces original text, and text without findings
reaches the client untouched.
"""

from __future__ import annotations

import unicodedata

# Zero-width (U+200B-U+200D, U+2060-U+2064, U+FEFF, U+180E), soft hyphen, bidi marks,
# embeddings, overrides and isolates (U+200E/F, U+202A-U+202E, U+2066-U+2069, U+061C), and
# the tag block (U+E0000-U+E007F, used to smuggle invisible ASCII).
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x2069),
    (0xFEFF, 0xFEFF),
    (0xE0000, 0xE007F),
)

_FOLDED: dict[str, str] = {}


def invisible(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _INVISIBLE_RANGES)


def fold(c: str) -> str:
    """One character's normalised form: empty for an invisible one."""
    f = _FOLDED.get(c)
    if f is None:
        if invisible(c):
            f = ""
        else:
            f = "".join(x for x in unicodedata.normalize("NFKC", c) if not invisible(x))
        if len(_FOLDED) < 65536:
            _FOLDED[c] = f
    return f


def count_invisible(text: str) -> int:
    if text.isascii():
        return 0
    return sum(1 for c in text if not c.isascii() and invisible(c))


def normalize_map(text: str) -> tuple[str, list[int] | None]:
    """The normalised text and, for each of its characters, the index of the original
    character it comes from; None when the text is its own normalisation."""
    if text.isascii():
        return text, None
    if all(fold(c) == c for c in set(text) if not c.isascii()):
        return text, None
    pieces: list[str] = []
    origin: list[int] = []
    for i, c in enumerate(text):
        f = c if c.isascii() else fold(c)
        pieces.append(f)
        origin.extend([i] * len(f))
    return "".join(pieces), origin


def normalize(text: str) -> str:
    return normalize_map(text)[0]
