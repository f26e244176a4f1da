"""The built-in value transforms a mapping can name (``transform = "year"``).

Each is a ``to_hub`` / ``to_remote`` pair of plain functions. ``to_hub`` may be lenient about
what a platform sends; ``to_remote`` starts from the hub's canonical form, so for a canonical
hub value ``to_hub(to_remote(value)) == value``. A value that cannot be converted raises
``ValueError`` whose message never quotes the value: it may be personal data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import phonenumbers

from daemon.sdk import hookimpl, normalize

YEAR_MIN, YEAR_MAX = 1900, 2199
_PLAIN_YEAR = re.compile(r"^(\d{4})(?:\.0+)?$")  # "2027", and "2027.0" from a float column
_YEAR_IN_TEXT = re.compile(r"(?<!\d)(\d{4})(?!\d)")


def year(value: Any) -> str:
    """A four-digit year from a date, a number, or text such as ``"2027-05-15"``,
    ``"5/15/2027"`` or ``"Class of 2027"``. Used both ways."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a year")
    if isinstance(value, datetime | date):
        number = value.year
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal):
        if value != int(value):
            raise ValueError("a year must be a whole number")
        number = int(value)
    elif isinstance(value, str):
        number = _year_from_text(value.strip())
    else:
        raise ValueError(f"a {type(value).__name__} is not a year")
    if not YEAR_MIN <= number <= YEAR_MAX:
        raise ValueError(f"a year must be between {YEAR_MIN} and {YEAR_MAX}")
    return f"{number:04d}"


def _year_from_text(text: str) -> int:
    plain = _PLAIN_YEAR.match(text)
    if plain:
        return int(plain.group(1))
    try:
        return int(normalize.iso_date(text)[:4])
    except ValueError:
        pass
    # Free text ("Class of 2027", "Fall 2027"): one four-digit number, or it is ambiguous.
    found = set(_YEAR_IN_TEXT.findall(text))
    if len(found) != 1:
        raise ValueError("value does not name exactly one four-digit year")
    return int(found.pop())


def phone_to_hub(value: Any) -> str:
    """A US phone in any common spelling (``5551234567``, ``(555) 123-4567``) -> E.164."""
    return normalize.phone(_text(value), "US")


def phone_to_10digit(value: Any) -> str:
    """A hub phone (E.164) -> the ten digits SIS and SFTP files expect, without ``+1``."""
    try:
        parsed = phonenumbers.parse(_text(value), "US")
    except phonenumbers.NumberParseException:
        raise ValueError("phone cannot be read as a number") from None
    national = str(parsed.national_number)
    if parsed.country_code != 1 or len(national) != 10:
        raise ValueError("only a North American number fits a 10-digit phone field")
    return national


def lowercase(value: Any) -> str:
    """Lower-cased text, both ways (user names, emails on platforms that keep case)."""
    return _text(value).strip().lower()


def yes_no_to_hub(value: Any) -> str:
    """``Y``/``N`` (or yes/no, true/false, 1/0) -> the hub's ``"true"``/``"false"``."""
    return "true" if normalize.boolean(_bool_input(value)) else "false"


def yes_no_to_remote(value: Any) -> str:
    """A hub boolean (``True``, ``"true"`` …) -> ``"Y"`` or ``"N"``."""
    return "Y" if normalize.boolean(_bool_input(value)) else "N"


def digits(value: Any) -> str:
    """Only the digits of ``value``, both ways (ids stored with dashes on one side)."""
    if isinstance(value, bool):
        raise ValueError("a boolean has no digits")
    result = re.sub(r"\D", "", _text(value))
    if not result:
        raise ValueError("value has no digits")
    return result


def _text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text, got a {type(value).__name__}")
    return value


def _bool_input(value: Any) -> str | bool:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected a boolean, got a {type(value).__name__}")


BUILTIN_TRANSFORMS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "year": (year, year),
    "phone_10digit": (phone_to_hub, phone_to_10digit),
    "lowercase": (lowercase, lowercase),
    "yes_no": (yes_no_to_hub, yes_no_to_remote),
    "digits": (digits, digits),
}
"""Name -> (to_hub, to_remote)."""


@hookimpl
def register_transforms(register: Callable[..., None]) -> None:
    """Register the built-in transforms, the same way a third-party plugin would."""
    for name, (to_hub, to_remote) in BUILTIN_TRANSFORMS.items():
        register(name, to_hub, to_remote)
