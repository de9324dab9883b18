"""Checksums that tell a real identifier from a number that only looks like one."""

from __future__ import annotations

import re

# IBAN length per country (ISO 13616 registry, the countries most often seen).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27,
    "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26,
    "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
    "UA": 29,
}  # fmt: skip


_NOT_DIGIT = re.compile(r"[^0-9]")


def digits_of(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


def luhn(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def payment_card(text: str) -> bool:
    """13 to 19 digits of a known card scheme's prefix that pass Luhn."""
    number = digits_of(text)
    if not 13 <= len(number) <= 19 or not luhn(number):
        return False
    two = int(number[:2])
    four = int(number[:4])
    return (
        number[0] == "4"  # Visa
        or 51 <= two <= 55
        or 2221 <= four <= 2720  # Mastercard
        or two in (34, 37)  # American Express
        or two in (30, 36, 38, 39)  # Diners Club
        or number.startswith(("6011", "65", "64", "62"))  # Discover, UnionPay
        or 3528 <= four <= 3589  # JCB
    )


def iban(text: str) -> bool:
    compact = text.replace(" ", "")
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    value = "".join(str(int(c, 36)) for c in rearranged)
    return int(value) % 97 == 1


def iban_prefix(text: str) -> bool | int:
    """Whether ``text`` is an IBAN, or the length of the IBAN it starts with (the pattern
    may have taken a following group of characters too, when the IBAN's own last group is
    complete)."""
    expected = IBAN_LENGTHS.get(text[:2])
    if expected is None:
        return False
    count = 0
    for i, c in enumerate(text):
        if c != " ":
            count += 1
        if count == expected:
            end = i + 1
            if end < len(text) and text[end] != " ":
                return False
            if not iban(text[:end]):
                return False
            return True if end == len(text) else end
    return False


def us_ssn(text: str) -> bool:
    """The SSA's format rules: no area 000, 666 or 9xx, no group 00, no serial 0000, and
    not the numbers published in advertising."""
    area, group, serial = text.split("-")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return text not in ("078-05-1120", "219-09-9999", "123-45-6789")


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni(text: str) -> bool:
    """Spanish DNI/NIE: the letter is the number mod 23 (NIE: X, Y, Z stand for 0, 1, 2)."""
    compact = text.replace("-", "").upper()
    head = compact[:-1]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    return _DNI_LETTERS[int(head) % 23] == compact[-1]
