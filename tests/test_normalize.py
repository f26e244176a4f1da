"""Normalising single values into the hub's canonical forms."""

from __future__ import annotations

import socket
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.foundation.dictionary import Code
from daemon.hub import normalize
from daemon.hub.normalize import InvalidValue

# --- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("(202) 555-0143", "+12025550143"),
        ("202.555.0143", "+12025550143"),
        ("202 555 0143", "+12025550143"),
        ("2025550143", "+12025550143"),
        ("1-202-555-0143", "+12025550143"),
        ("+1 (415) 555-0199", "+14155550199"),
        ("  617 555 0112  ", "+16175550112"),
        ("+44 20 7946 0958", "+442079460958"),  # a country code wins over the region
    ],
)
def test_phones_become_e164_read_in_the_us_by_default(raw, e164):
    assert normalize.phone(raw) == e164


def test_the_region_decides_how_a_national_number_is_read():
    assert normalize.phone("020 7946 0958", "GB") == "+442079460958"
    assert normalize.phone("0412 345 678", "AU") == "+61412345678"
    # The same digits are not a valid US number.
    with pytest.raises(InvalidValue):
        normalize.phone("020 7946 0958")


@pytest.mark.parametrize(
    "raw", ["123", "202-555-014", "not a phone", "+1 202 555 01430", "555-0143", "+999 1234"]
)
def test_invalid_phones_are_rejected_with_invalid_phone(raw):
    with pytest.raises(InvalidValue) as caught:
        normalize.phone(raw)
    assert caught.value.code is Code.INVALID_PHONE
    # The message never repeats the number (no personal data in the sync log).
    digits = "".join(c for c in raw if c.isdigit())
    assert not digits or digits not in caught.value.message


# --- emails ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ada.Lovelace@Example.EDU", "ada.lovelace@example.edu"),
        ("  grace@example.edu ", "grace@example.edu"),
        ("ALAN+tag@Uni.AC.UK", "alan+tag@uni.ac.uk"),
    ],
)
def test_emails_are_lower_cased(raw, expected):
    assert normalize.email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["ada", "ada@", "@example.edu", "ada@example", "a b@example.edu", "ada@@example.edu"]
)
def test_invalid_emails_are_rejected_without_quoting_them(raw):
    with pytest.raises(InvalidValue) as caught:
        normalize.email(raw)
    assert caught.value.code is Code.INVALID_EMAIL
    assert "ada" not in caught.value.message


def test_email_validation_works_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("email validation must not touch the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)

    # A domain that has no mail server anywhere is still syntactically fine.
    assert normalize.email("Someone@No-Such-Domain-Anywhere.example") == (
        "someone@no-such-domain-anywhere.example"
    )


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.50", "1.5"),
        ("2027", "2027"),
        ("2027.0", "2027"),
        ("  3.14159 ", "3.14159"),
        ("1e2", "100"),
        ("1E-3", "0.001"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("+7", "7"),
        ("-12.50", "-12.5"),
        ("1,000", "1000"),
        ("1,234,567.25", "1234567.25"),
        (".5", "0.5"),
        ("100", "100"),
        ("12345678901234567890123456789.5", "12345678901234567890123456789.5"),
    ],
)
def test_numbers_take_their_shortest_decimal_form(raw, expected):
    assert normalize.number(raw) == expected


@pytest.mark.parametrize(
    "raw", ["abc", "", "1.2.3", "NaN", "Infinity", "-inf", "1,5", "1,50", "12,34", "1e999999999"]
)
def test_non_numbers_are_invalid_custom_field_values(raw):
    with pytest.raises(InvalidValue) as caught:
        normalize.number(raw)
    assert caught.value.code is Code.INVALID_CUSTOM_FIELD_VALUE


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01", "2024-05-01"),
        ("5/1/2024", "2024-05-01"),
        ("05/01/2024", "2024-05-01"),
        ("2024/05/01", "2024-05-01"),
        ("2024-05-01T23:30:00", "2024-05-01"),
        ("2024-05-01 08:00:00+02:00", "2024-05-01"),
        ("2024-02-29", "2024-02-29"),
    ],
)
def test_dates_become_iso(raw, expected):
    assert normalize.iso_date(raw) == expected


def test_date_objects_become_iso():
    assert normalize.iso_date(date(2024, 5, 1)) == "2024-05-01"
    assert normalize.iso_date(datetime(2024, 5, 1, 12, 0)) == "2024-05-01"


@pytest.mark.parametrize(
    "raw", ["2023-02-29", "13/01/2024", "2024-13-01", "yesterday", "01-05", "2024-05-01Tnoon"]
)
def test_impossible_dates_are_invalid_custom_field_values(raw):
    with pytest.raises(InvalidValue) as caught:
        normalize.iso_date(raw)
    assert caught.value.code is Code.INVALID_CUSTOM_FIELD_VALUE


# --- booleans --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["true", "TRUE", "True", "t", "yes", "Y", "1", " yes "])
def test_true_spellings(raw):
    assert normalize.boolean(raw) is True


@pytest.mark.parametrize("raw", ["false", "FALSE", "f", "no", "N", "0", " No "])
def test_false_spellings(raw):
    assert normalize.boolean(raw) is False


def test_booleans_pass_through():
    assert normalize.boolean(True) is True
    assert normalize.boolean(False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "yess", "on"])
def test_other_booleans_are_invalid(raw):
    with pytest.raises(InvalidValue) as caught:
        normalize.boolean(raw)
    assert caught.value.code is Code.INVALID_VALUE


# --- text and custom values ------------------------------------------------------------------


def test_text_is_stripped_and_capped():
    assert normalize.text("  Ada  ", 64) == "Ada"
    assert normalize.text("x" * 64, 64) == "x" * 64
    with pytest.raises(InvalidValue) as caught:
        normalize.text("x" * 65, 64)
    assert caught.value.code is Code.VALUE_TOO_LONG


@pytest.mark.parametrize(
    ("raw", "field_type", "expected"),
    [
        ("2027.50", "number", "2027.5"),
        ("12/31/2024", "date", "2024-12-31"),
        ("Yes", "boolean", "true"),
        ("0", "boolean", "false"),
        ("  Admitted ", "text", "Admitted"),
    ],
)
def test_custom_values_are_canonical_text(raw, field_type, expected):
    assert normalize.custom(raw, field_type) == expected


@pytest.mark.parametrize(
    ("raw", "field_type"), [("soon", "number"), ("soon", "date"), ("soon", "boolean")]
)
def test_bad_custom_values_are_invalid_custom_field_values(raw, field_type):
    with pytest.raises(InvalidValue) as caught:
        normalize.custom(raw, field_type)
    assert caught.value.code is Code.INVALID_CUSTOM_FIELD_VALUE


def test_custom_text_is_capped():
    assert normalize.custom("x" * normalize.CUSTOM_TEXT_MAX, "text") == "x" * 1024
    with pytest.raises(InvalidValue):
        normalize.custom("x" * (normalize.CUSTOM_TEXT_MAX + 1), "text")


# The fast path for plain addresses must agree with the full validator on every input.
_LOCAL_CHARS = "abcXYZ019.!#$%&'*+/=?^_`{|}~-\"@ (),:;<>[]\\é"
_DOMAINS = [
    "example.edu",
    "EXAMPLE.com",
    "a.b.c.org",
    "localhost",
    "x..y.com",
    "-bad.com",
    "münchen.de",
    "example",
    "1.2.3.4",
    "[127.0.0.1]",
    "ex_ample.com",
    "e.co",
]


@given(
    local=st.text(alphabet=_LOCAL_CHARS, min_size=0, max_size=70),
    domain=st.sampled_from(_DOMAINS),
)
@settings(max_examples=300, deadline=None)
def test_email_fast_path_agrees_with_the_full_validator(local, domain):
    from daemon.hub.normalize import _email_slow

    value = f"{local}@{domain}"
    try:
        expected = _email_slow(value.strip())
    except normalize.InvalidValue:
        expected = None
    try:
        got = normalize.email(value)
    except normalize.InvalidValue:
        got = None
    assert got == expected


# --- control characters (issue 16 §2) ---------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\t", "\n"])
def test_a_control_character_inside_a_text_value_is_refused_by_code_point(char):
    from daemon.hub.normalize import text

    with pytest.raises(InvalidValue) as caught:
        text(f"Ada{char}Lovelace", 64)
    assert caught.value.code == "control-character-in-value"
    assert f"U+{ord(char):04X} at position 4" in caught.value.message
    assert "Ada" not in caught.value.message  # the value itself is personal data


def test_free_text_keeps_tab_and_line_ends_but_not_nul():
    from daemon.hub.normalize import custom

    assert custom("line one\r\nline\ttwo", "text") == "line one\r\nline\ttwo"
    with pytest.raises(InvalidValue):
        custom("line\x00two", "text")


def test_bidi_and_other_format_characters_are_text_not_controls():
    from daemon.hub.normalize import text

    assert text("Ada\u202eLovelace\u200d", 64) == "Ada\u202eLovelace\u200d"
