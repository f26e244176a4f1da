"""Opaque keyset cursors, shared by every listing of the API.

A cursor is the key of the last row of a page (a hub id, or a ``[timestamp, id]`` pair),
wrapped so that a client treats it as opaque: versioned JSON in URL-safe base64. A cursor the
API did not give is ``api-invalid-request`` (400), never a 500 or a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from daemon.api.errors import ApiError
from daemon.api.params import MAX_ROW_ID
from daemon.foundation.dictionary import Code

_T = TypeVar("_T")


def encode_cursor(after: Any) -> str:
    """The cursor that resumes after the row whose key is ``after`` (JSON-serialisable)."""
    raw = json.dumps({"v": 1, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, read: Callable[[Any], _T]) -> _T:
    """The key in ``cursor``, passed through ``read`` (which raises ``ValueError``,
    ``TypeError`` or ``KeyError`` for a key of the wrong shape)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError
        return read(data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError):
        raise ApiError(
            400, Code.API_INVALID_REQUEST, "cursor: not one this API gave; start without it"
        ) from None


def int_key(after: Any) -> int:
    """A cursor key that is a row id (of a 64-bit integer key)."""
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_ROW_ID:
        raise TypeError
    return after


def time_key(after: Any) -> tuple[datetime, int]:
    """A cursor key ``[timestamp, row id]``; the time in UTC, as the API wrote it."""
    at, row_id = after
    if not isinstance(at, str):
        raise TypeError
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError
    return when.astimezone(UTC), int_key(row_id)


def text_key(after: Any) -> str:
    """A cursor key that is a string (a hub id)."""
    if not isinstance(after, str):
        raise TypeError
    return after
