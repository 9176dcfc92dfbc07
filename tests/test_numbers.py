"""Cell -> E.164 normalisation."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_detach.numbers import normalise

REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "AU", "JP", "NG", "MX"]
FORMATS = [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL]


@st.composite
def formatted_numbers(draw: st.DrawFn) -> tuple[str, str]:
    region = draw(st.sampled_from(REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    text = phonenumbers.format_number(example, draw(st.sampled_from(FORMATS)))
    sep = draw(st.sampled_from([" ", "-", ".", ""]))
    text = text.replace(" ", sep) if text.startswith("+") else text
    prefix = draw(st.sampled_from(["", "tel:", "00"]))
    text = "00" + text.lstrip("+") if prefix == "00" else prefix + text
    pad = draw(st.sampled_from(["", " ", "  \t"]))
    return pad + text + pad, e164


@settings(max_examples=300, deadline=None)
@given(formatted_numbers())
def test_any_accepted_formatting_gives_the_same_e164(case: tuple[str, str]) -> None:
    text, e164 = case
    assert normalise(text).e164 == e164


@pytest.mark.parametrize(
    ("cell", "region", "e164"),
    [
        ("(415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", "US", "+14155550123"),
        ("020 7946 0123", "GB", "+442079460123"),
        ("14155550123", None, "+14155550123"),  # Excel dropped the +
        ("14155550123.0", None, "+14155550123"),
        ("1.4155550123E10", None, "+14155550123"),
        ("1.4155550123E+10", None, "+14155550123"),
        ("+1 (415) 555-0123", "GB", "+14155550123"),  # explicit country wins over region
        ("14155550123", "GB", "+14155550123"),  # not a GB number: read as international
        ("TEL:+14155550123", None, "+14155550123"),
    ],
)
def test_known_formats(cell: str, region: str | None, e164: str) -> None:
    assert normalise(cell, region) == (e164, "")


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("n/a", "not a phone number"),
        ("(415) 555-0123", "--default-region"),
        ("12345", "--default-region"),
        ("+1 415 555", "not a valid"),
        ("1.5E3", "--default-region"),
        ("=HYPERLINK(1)", "not a phone number"),
    ],
)
def test_rejects_say_why(cell: str, reason: str) -> None:
    e164, why = normalise(cell)
    assert e164 == "" and reason in why
