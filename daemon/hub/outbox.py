"""The outbox: contacts waiting to be pushed, one coalesced row per (connection, contact).

Every hub write fans out to the outgoing connections in the same transaction, so a change is
never lost between the write and the push. The row only says *that* a contact needs a push;
the values are read, and compared with the link's last exchanged values, at push time. That
keeps a burst of writes one push, and makes a lost field name impossible under concurrency.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from daemon.foundation.log import redact_text
from daemon.hub.store import Contact, InstanceRow, Link, Outbox, utcnow

_OUTBOX = Outbox.__table__
_INSTANCE = InstanceRow.__table__
_CONTACT = Contact.__table__
_LINK = Link.__table__

PENDING = "pending"
PARKED = "parked"
NOTIFY_CHANNEL = "contactsync_outbox"
"""PostgreSQL channel notified with the connection's name when its outbox gets work."""


def outgoing_connections(conn: Connection) -> list[str]:
    """Connections with an enabled instance that pushes."""
    query = (
        select(_INSTANCE.c.connection)
        .where(_INSTANCE.c.enabled.is_(True), _INSTANCE.c.direction.in_(("outgoing", "both")))
        .distinct()
    )
    return sorted(conn.execute(query).scalars())


def fan_out(
    conn: Connection,
    changed: Mapping[str, Iterable[str]],
    origin: str,
    now: datetime,
    *,
    exclude: str | None = None,
    only: str | None = None,
) -> int:
    """Queue each changed contact for every outgoing connection but ``exclude`` (the one the
    change came from: a pulled change is never pushed back through its own connection), or
    for ``only`` that one (if it pushes)."""
    if not changed:
        return 0
    targets = [
        c for c in outgoing_connections(conn) if c != exclude and (only is None or c == only)
    ]
    rows = [
        _new_row(connection, contact_id, sorted(set(field_names)), origin, now)
        for connection in targets
        for contact_id, field_names in changed.items()
    ]
    if rows:
        _coalesce(conn, rows)
        if conn.dialect.name == "postgresql":
            # Delivered at commit, so a daemon's pusher wakes for this change within
            # milliseconds; SQLite has no such thing and the daemon polls instead.
            for connection in targets:
                conn.execute(
                    text("SELECT pg_notify(:channel, :connection)"),
                    {"channel": NOTIFY_CHANNEL, "connection": connection},
                )
    return len(rows)


def _coalesce(conn: Connection, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(_OUTBOX)
    # A new write re-arms a parked or backed-off row and bumps its version, so a push that
    # was in flight when it happened does not delete it.
    stmt = stmt.on_conflict_do_update(
        index_elements=["connection", "contact_id"],
        set_={
            "fields": stmt.excluded.fields,
            "origin": stmt.excluded.origin,
            "state": PENDING,
            "attempts": 0,
            "last_error": None,
            "next_attempt_at": stmt.excluded.next_attempt_at,
            "updated_at": stmt.excluded.updated_at,
            "version": _OUTBOX.c.version + 1,
        },
    )
    conn.execute(stmt, rows)


def seed_unlinked(conn: Connection, connection: str, origin: str, now: datetime) -> int:
    """Queue every contact with no link on ``connection`` (the first sync's push half).

    One ``INSERT … SELECT``: the hub may hold far more contacts than fit in memory at once.
    """
    linked = select(_LINK.c.contact_id).where(_LINK.c.connection == connection)
    queued = select(_OUTBOX.c.contact_id).where(_OUTBOX.c.connection == connection)
    template = _new_row(connection, "", [], origin, now)
    columns = [c for c in template if c != "contact_id"]
    source = select(
        _CONTACT.c.id,
        *(literal(template[c], type_=_OUTBOX.c[c].type) for c in columns),
    ).where(
        _CONTACT.c.test_user.is_(False),
        _CONTACT.c.id.not_in(linked),
        _CONTACT.c.id.not_in(queued),
    )
    result = conn.execute(insert(_OUTBOX).from_select(["contact_id", *columns], source))
    return max(result.rowcount or 0, 0)


def unlinked_rows(
    conn: Connection, connection: str, exclude: Collection[str], limit: int, after: str = ""
) -> list[dict[str, Any]]:
    """What :func:`seed_unlinked` would queue, as outbox-shaped rows that are not stored:
    up to ``limit`` contacts with no link on ``connection``, not test users and not in
    ``exclude``, in id order after ``after`` (the preview of a first sync plans them)."""
    linked = select(_LINK.c.contact_id).where(_LINK.c.connection == connection)
    query = (
        select(_CONTACT.c.id)
        .where(
            _CONTACT.c.test_user.is_(False),
            _CONTACT.c.id.not_in(linked),
            _CONTACT.c.id > after,
        )
        .order_by(_CONTACT.c.id)
    )
    rows: list[dict[str, Any]] = []
    for (contact_id,) in conn.execute(query):
        if contact_id in exclude:
            continue
        rows.append({"id": 0, **_new_row(connection, contact_id, [], "preview", utcnow())})
        if len(rows) >= limit:
            break
    return rows


def _new_row(
    connection: str, contact_id: str, fields: list[str], origin: str, now: datetime
) -> dict[str, Any]:
    return {
        "connection": connection,
        "contact_id": contact_id,
        "fields": fields,
        "origin": origin,
        "version": 1,
        "attempts": 0,
        "state": PENDING,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def claim(
    conn: Connection, connection: str, now: datetime, limit: int, *, after_id: int = 0
) -> list[dict[str, Any]]:
    """The next due rows of a connection with an id above ``after_id``, oldest first; locked
    on PostgreSQL so that a second worker skips them instead of waiting."""
    query = (
        select(_OUTBOX)
        .where(
            _OUTBOX.c.connection == connection,
            _OUTBOX.c.state == PENDING,
            _OUTBOX.c.next_attempt_at <= now,
            _OUTBOX.c.id > after_id,
        )
        .order_by(_OUTBOX.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [dict(r) for r in conn.execute(query).mappings()]


def done(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Delete pushed rows, unless a newer write coalesced into them meanwhile."""
    params = [{"rid": r["id"], "ver": r["version"]} for r in rows]
    if params:
        conn.execute(
            delete(_OUTBOX).where(
                and_(_OUTBOX.c.id == bindparam("rid"), _OUTBOX.c.version == bindparam("ver"))
            ),
            params,
        )


def retry_delay(attempts: int, base: float = 30.0, cap: float = 3600.0) -> timedelta:
    """Back-off before the next attempt: 30 s, 1 min, 2 min … at most an hour."""
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


def failed(
    conn: Connection,
    row: Mapping[str, Any],
    error: str,
    now: datetime,
    max_attempts: int,
    *,
    park_now: bool = False,
) -> bool:
    """Record a failed attempt; park the row after ``max_attempts``. Returns whether it was
    parked: never when a newer write re-armed the row meanwhile (the failure is not its)."""
    attempts = row["attempts"] + 1
    parked = park_now or attempts >= max_attempts
    # The platform's own words may quote a credential; staff read last_error in the CLI.
    error = redact_text(error)
    result = conn.execute(
        update(_OUTBOX)
        .where(_OUTBOX.c.id == row["id"], _OUTBOX.c.version == row["version"])
        .values(
            attempts=attempts,
            state=PARKED if parked else PENDING,
            last_error=error,
            next_attempt_at=now + retry_delay(attempts),
            updated_at=now,
        )
    )
    return parked and result.rowcount == 1


# --- operator repairs (``contactsync outbox``) --------------------------------------------------


def _selection(
    ids: Iterable[int] | None, connection: str | None, all_parked: bool
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of an operator's selection: some ids, or every parked row."""
    where: list[ColumnElement[bool]] = []
    if ids is not None:
        where.append(_OUTBOX.c.id.in_(list(ids)))
    if all_parked:
        where.append(_OUTBOX.c.state == PARKED)
    if connection is not None:
        where.append(_OUTBOX.c.connection == connection)
    if ids is None and not all_parked:
        raise ValueError("name the rows: ids, or all_parked")
    return where


def list_rows(
    conn: Connection,
    *,
    connection: str | None = None,
    state: str | None = None,
    contact_id: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Outbox rows, oldest first, optionally of one connection, one contact or in one
    state; ``after_id`` resumes after that row (the API's keyset)."""
    query = select(_OUTBOX).where(_OUTBOX.c.id > after_id).order_by(_OUTBOX.c.id).limit(limit)
    if connection is not None:
        query = query.where(_OUTBOX.c.connection == connection)
    if contact_id is not None:
        query = query.where(_OUTBOX.c.contact_id == contact_id)
    if state is not None:
        query = query.where(_OUTBOX.c.state == state)
    return [dict(r) for r in conn.execute(query).mappings()]


def rearm(
    conn: Connection,
    now: datetime,
    *,
    ids: Iterable[int] | None = None,
    connection: str | None = None,
    all_parked: bool = False,
) -> list[int]:
    """Make the selected rows due now with a fresh attempt count; returns their ids.

    The version is bumped like a hub write does, so a push that has one of them in flight
    neither deletes nor re-parks it when it finishes.
    """
    where = _selection(ids, connection, all_parked)
    found = sorted(conn.execute(select(_OUTBOX.c.id).where(*where)).scalars())
    if found:
        conn.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id.in_(found))
            .values(
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
                version=_OUTBOX.c.version + 1,
            )
        )
    return found


def drop(
    conn: Connection,
    *,
    ids: Iterable[int] | None = None,
    connection: str | None = None,
    all_parked: bool = False,
) -> list[int]:
    """Delete the selected rows (their changes will not be pushed); returns their ids."""
    where = _selection(ids, connection, all_parked)
    found = sorted(conn.execute(select(_OUTBOX.c.id).where(*where)).scalars())
    if found:
        conn.execute(delete(_OUTBOX).where(_OUTBOX.c.id.in_(found)))
    return found


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Rows per connection and state: ``{"mem": {"pending": 3, "parked": 1}}``."""
    query = select(_OUTBOX.c.connection, _OUTBOX.c.state, func.count()).group_by(
        _OUTBOX.c.connection, _OUTBOX.c.state
    )
    out: dict[str, dict[str, int]] = {}
    for connection, state, count in conn.execute(query):
        out.setdefault(connection, {})[state] = count
    return out
