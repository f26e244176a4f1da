"""Reading the sync log back: filters for the CLI and the HTTP API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, or_, select

from daemon.hub.database import READ_ONLY
from daemon.hub.store import SyncLog, utcnow

_SYNC_LOG = SyncLog.__table__
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """An age such as ``90m``, ``2d`` or ``4w``; raises :class:`ValueError`."""
    match = _RELATIVE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age like 12h, 30d or 4w")
    amount, unit = match.groups()
    try:
        return timedelta(**{_UNITS[unit]: int(amount)})
    except OverflowError:
        raise ValueError(f"{text!r} is too long ago") from None


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age such as ``90m``, ``2d``."""
    text = text.strip()
    if _RELATIVE.match(text):
        age = parse_age(text)
        try:
            return (now or utcnow()) - age
        except OverflowError:  # an age past year 1
            raise ValueError(f"{text!r} is too long ago") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time nor an age like 2h or 7d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # In UTC now: a time near year 1 or 9999 whose zone moves it past the calendar would
        # otherwise overflow later, in the query.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is before year 1 or after year 9999 in UTC") from None


def _where(
    *,
    integration: str | None = None,
    direction: str | None = None,
    contact_id: str | None = None,
    code: str | None = None,
    run_id: str | None = None,
    instance: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a filter: equal columns, and a time range (until exclusive)."""
    table = _SYNC_LOG
    filters = {
        table.c.integration: integration,
        table.c.direction: direction,
        table.c.contact_id: contact_id,
        table.c.code: code,
        table.c.run_id: run_id,
        table.c.instance: instance,
    }
    where = [column == value for column, value in filters.items() if value is not None]
    if since is not None:
        where.append(table.c.timestamp >= since)
    if until is not None:
        where.append(table.c.timestamp < until)
    return where


def query_log(
    engine: Engine,
    *,
    before: tuple[datetime, int] | None = None,
    limit: int = 100,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Sync-log rows, newest first, filtered by ``filters`` (``integration``, ``direction``,
    ``contact_id``, ``code``, ``run_id``, ``instance``, ``since``, ``until``); ``before`` (a
    row's ``(timestamp, id)``) resumes after that row, the keyset of the API's pages: a row
    written meanwhile is newer, so it never shifts a page as an offset would."""
    table = _SYNC_LOG
    query = select(table).where(*_where(**filters))
    query = query.order_by(table.c.timestamp.desc(), table.c.id.desc())
    if before is not None:
        at, row_id = before
        query = query.where(
            or_(table.c.timestamp < at, (table.c.timestamp == at) & (table.c.id < row_id))
        )
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return [dict(r) for r in conn.execute(query.limit(limit)).mappings()]


def count_codes(engine: Engine, *, top: int = 50, **filters: Any) -> list[tuple[str, int]]:
    """How many rows each code has under ``filters`` (as :func:`query_log` takes them), most
    first: the one problem behind many rows ("412 x blank-required-data-in-record")."""
    table = _SYNC_LOG
    counted = func.count().label("rows")
    code: Any = table.c.code
    if any(v is not None for k, v in filters.items() if k != "code"):
        # Grouped by the bare column, SQLite walks the code index over the whole table to
        # avoid a sort, even when another filter (an instance) selects a sixth of it; an
        # expression cannot use that index, so the filter's own index is used instead.
        code = (table.c.code + "").label("code")
    query = (
        select(code, counted)
        .where(*_where(**filters))
        .group_by(code)
        .order_by(counted.desc(), code)
        .limit(top)
    )
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return [(str(code), int(rows)) for code, rows in conn.execute(query)]
