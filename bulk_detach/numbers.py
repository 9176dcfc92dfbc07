"""Turning a cell as an operator typed it into E.164, or a reason it cannot be.

phonenumbers does the real work; this module only undoes what spreadsheets
and people do to numbers before handing them over.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

import phonenumbers

# Spreadsheets turn 14155551234 into "14155551234.0" or "1.4155551234E+10".
_EXCEL_FLOAT = re.compile(r"\d+(?:\.\d*)?(?:[eE][+]?\d+)?")
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0\u2010-\u2015]+")
_TEL_PREFIX = re.compile(r"^tel:", re.IGNORECASE)
_LOOKS_LIKE_NUMBER = re.compile(r"^\+?[\d\s\-.()/]+$")


class Normalised(NamedTuple):
    """Exactly one of the two is non-empty."""

    e164: str
    reason: str


def _ok(e164: str) -> Normalised:
    return Normalised(e164, "")


def _bad(reason: str) -> Normalised:
    return Normalised("", reason)


def _from_excel_float(text: str) -> str | None:
    """Digits of a number a spreadsheet stored as a float, or None."""
    if "." not in text and "e" not in text.lower():
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if value != value.to_integral_value():
        return None
    return str(int(value))


def normalise(cell: str, default_region: str | None = None) -> Normalised:
    """E.164 for ``cell``; national numbers need ``default_region`` (ISO, e.g. ``US``)."""
    text = _TEL_PREFIX.sub("", cell.strip()).strip()
    if not text:
        return _bad("empty cell")
    if _EXCEL_FLOAT.fullmatch(text):
        digits = _from_excel_float(text)
        if digits is not None:
            text = digits
    compact = _SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    elif compact.startswith("+00"):
        compact = "+" + compact[3:]
    candidates: list[tuple[str, str | None]] = []
    if compact.startswith("+"):
        candidates.append((compact, None))
    else:
        if default_region:
            candidates.append((compact, default_region))
        # A bare run of digits long enough to hold a country code is how
        # spreadsheets store international numbers after dropping the "+".
        if compact.isdigit() and len(compact) >= 8:
            candidates.append(("+" + compact, None))
    if not candidates:
        if compact.isdigit():
            return _bad("national number: give --default-region (e.g. US)")
        return _bad("not a phone number")
    for candidate, region in candidates:
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return _ok(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    if not _LOOKS_LIKE_NUMBER.match(text):
        return _bad("not a phone number")
    if not compact.startswith("+") and not default_region:
        return _bad("not a valid international number (national? give --default-region)")
    return _bad("not a valid phone number")
