"""Normalising and validating single values into the hub's canonical form.

Canonical forms make comparisons honest: a phone is E.164, an email is lower-case, a number is
its shortest decimal text, a date is ISO 8601, a boolean is ``true``/``false``. Two values that
mean the same thing compare equal, so a platform's formatting never looks like a change.
Every failure is a :class:`InvalidValue` carrying a code from the dictionary.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from daemon.foundation.dictionary import Code

CUSTOM_TYPES = ("text", "number", "date", "boolean")
CUSTOM_TEXT_MAX = 1024

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
# Control characters a stored value may not hold: every C0 control, DEL and the C1 block.
# PostgreSQL refuses NUL in text outright; SQLite would keep it, and a terminal or a
# spreadsheet acts on the rest. One compiled search per value keeps the rule cheap.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Free text (custom text fields) may hold tab, line feed and carriage return.
_CONTROL_FREE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class InvalidValue(ValueError):
    """A value that cannot be accepted; ``code`` is its dictionary code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Parsing a phone or an address costs tens of microseconds; a daemon re-reads the same
# values every cycle, so a small, bounded cache pays for itself.
_CACHE_SIZE = 16_384


@lru_cache(maxsize=_CACHE_SIZE)
def phone(value: str, region: str = "US") -> str:
    """Return the E.164 form of ``value``, read in ``region`` when it has no country code."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidValue(Code.INVALID_PHONE, "phone cannot be read as a number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidValue(Code.INVALID_PHONE, f"phone is not a valid number (region {region})")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# The everyday address: an ASCII dot-atom local part. Its only check is this pattern plus
# its domain's, so the full validator runs once per domain instead of once per address.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
_LOCAL_MAX = 64


def email(value: str) -> str:
    """Return the lower-cased address; syntax only, no DNS (this must work offline)."""
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if at and len(local) <= _LOCAL_MAX and _PLAIN_LOCAL.match(local) and domain.isascii():
        return f"{local.lower()}@{_email_domain(domain.lower())}"
    return _email_slow(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _email_domain(domain: str) -> str:
    # A stand-in local part: whether the domain is valid does not depend on it.
    return _email_slow(f"a@{domain}").partition("@")[2]


@lru_cache(maxsize=_CACHE_SIZE)
def _email_slow(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        # The validator's own message quotes parts of the address: keep personal data out.
        raise InvalidValue(Code.INVALID_EMAIL, "email is not a valid address") from None
    return result.normalized.lower()


def text(
    value: str, max_length: int, *, code: Code = Code.VALUE_TOO_LONG, free_text: bool = False
) -> str:
    """Strip ``value`` and check its length and its characters (:func:`no_controls`)."""
    value = value.strip()
    if len(value) > max_length:
        raise InvalidValue(code, f"value is {len(value)} characters; at most {max_length}")
    return no_controls(value, free_text=free_text)


def no_controls(value: str, *, free_text: bool = False) -> str:
    """Return ``value`` if it holds no control character; tab, LF and CR pass in free text.

    The message names the character's code point and position, never the value (it may be
    personal data).
    """
    found = (_CONTROL_FREE_TEXT if free_text else _CONTROL).search(value)
    if found is None:
        return value
    raise InvalidValue(
        Code.CONTROL_CHARACTER,
        f"value holds control character U+{ord(found.group()):04X} at position {found.start() + 1}",
    )


def boolean(value: str | bool, *, code: Code = Code.INVALID_VALUE) -> bool:
    """Read true/false, yes/no, 1/0, t/f, y/n in any case."""
    if isinstance(value, bool):
        return value
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise InvalidValue(code, "value must be true or false")


def number(value: str | int | float | Decimal) -> str:
    """The shortest decimal text of a finite number: ``1.50`` → ``1.5``, ``1e2`` → ``100``."""
    raw = str(value).strip()
    if "," in raw:
        # Only as a thousands separator: "1,5" or "1,50" must not silently become 15 or 150.
        if not _GROUPED.match(raw):
            raise InvalidValue(Code.INVALID_CUSTOM_FIELD_VALUE, "value is not a number")
        raw = raw.replace(",", "")
    try:
        dec = Decimal(raw)
    except InvalidOperation:
        raise InvalidValue(Code.INVALID_CUSTOM_FIELD_VALUE, "value is not a number") from None
    if not dec.is_finite():
        raise InvalidValue(Code.INVALID_CUSTOM_FIELD_VALUE, "value is not a finite number")
    if dec and abs(dec.adjusted()) >= CUSTOM_TEXT_MAX:
        # 1e999999999 would otherwise be written out as a billion-character string.
        raise InvalidValue(Code.INVALID_CUSTOM_FIELD_VALUE, "value is too large or too small")
    # Normalise exactly: the default context would round to 28 significant digits.
    exact = Context(prec=max(len(dec.as_tuple().digits), 1))
    text_form = format(dec.normalize(exact), "f")
    return "0" if text_form in ("-0", "0") else text_form


def iso_date(value: str | date) -> str:
    """An ISO date from ``YYYY-MM-DD``, ``MM/DD/YYYY`` or an ISO datetime's date part."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raw = value.strip()
    try:
        match = _US_DATE.match(raw)
        if match:
            month, day, year = (int(g) for g in match.groups())
            return date(year, month, day).isoformat()
        if len(raw) > 10 and raw[10] in "T ":
            return datetime.fromisoformat(raw).date().isoformat()
        return date.fromisoformat(raw.replace("/", "-")).isoformat()
    except ValueError:
        raise InvalidValue(
            Code.INVALID_CUSTOM_FIELD_VALUE, "value is not a date (use YYYY-MM-DD)"
        ) from None


def custom(value: str, field_type: str) -> str:
    """The canonical text of a custom field value of ``field_type``."""
    if field_type == "number":
        return number(value)
    if field_type == "date":
        return iso_date(value)
    if field_type == "boolean":
        return "true" if boolean(value, code=Code.INVALID_CUSTOM_FIELD_VALUE) else "false"
    return text(value, CUSTOM_TEXT_MAX, free_text=True)
