"""Query and path parameters read alike by every route: times and row ids, bounded.

A value the database cannot hold is refused here (``api-invalid-request``), never passed on
to come back as a 500: a time without a zone (the hub's time columns are UTC and refuse a
naive one), a time that leaves the calendar once moved to UTC, an id past a 64-bit integer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path

from daemon.api.errors import ApiError
from daemon.foundation.dictionary import Code

MAX_ROW_ID = 2**63 - 1
"""The largest id an integer primary key holds (SQLite and PostgreSQL ``BIGINT``)."""

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id.")]


def utc(name: str, value: datetime | None) -> datetime | None:
    """``value`` in UTC (a time without a zone is read as UTC, as ``contactsync log`` does)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ApiError(
            422, Code.API_INVALID_REQUEST, f"{name}: before year 1 or after year 9999 in UTC"
        ) from None
