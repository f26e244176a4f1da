"""Links: which remote record on a connection is which contact, and what was last exchanged.

A link is unique by (connection, remote id) and by (connection, contact). Its ``values`` are
the canonical hub-form values last exchanged per hub field; echo suppression and "apply only
what changed" read them. A record deleted on the platform leaves a *tombstone* (state
``deleted``): sync never re-creates the contact there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, update

from daemon.hub.database import upsert
from daemon.hub.store import Link

_LINK = Link.__table__

ACTIVE = "active"
PENDING = "pending"  # pushed, not yet seen by a pull (platforms that confirm later)
UNCONFIRMED = "unconfirmed"  # pending past the instance's confirmation window
DELETED = "deleted"


@dataclass(slots=True)
class LinkRow:
    """A link as the engine handles it."""

    connection: str
    remote_id: str
    contact_id: str
    state: str
    values: dict[str, Any]
    remote_modified_at: datetime | None = None
    # When the row was last written (for a pending link: when the write was sent). Not
    # compared: a re-read that changes nothing else must not count as a change.
    updated_at: datetime | None = field(default=None, compare=False)


def _row(mapping: Mapping[str, Any]) -> LinkRow:
    return LinkRow(
        mapping["connection"],
        mapping["remote_id"],
        mapping["contact_id"],
        mapping["state"],
        dict(mapping["values"] or {}),
        mapping["remote_modified_at"],
        mapping.get("updated_at"),
    )


def from_row(mapping: Mapping[str, Any]) -> LinkRow:
    """A :class:`LinkRow` from a ``link`` table row."""
    return _row(mapping)


def by_remote_ids(
    conn: Connection, connection: str, remote_ids: Iterable[str]
) -> dict[str, LinkRow]:
    """Links of the given remote records, keyed by remote id."""
    ids = list(set(remote_ids))
    if not ids:
        return {}
    query = select(_LINK).where(_LINK.c.connection == connection, _LINK.c.remote_id.in_(ids))
    return {r["remote_id"]: _row(r) for r in conn.execute(query).mappings()}


def by_contact_ids(
    conn: Connection, connection: str, contact_ids: Iterable[str]
) -> dict[str, LinkRow]:
    """Links of the given contacts, keyed by contact id."""
    ids = list(set(contact_ids))
    if not ids:
        return {}
    query = select(_LINK).where(_LINK.c.connection == connection, _LINK.c.contact_id.in_(ids))
    return {r["contact_id"]: _row(r) for r in conn.execute(query).mappings()}


def save(conn: Connection, links: Iterable[LinkRow], now: datetime) -> None:
    """Insert or update links by (connection, remote id)."""
    rows = [
        {
            "connection": link.connection,
            "remote_id": link.remote_id,
            "contact_id": link.contact_id,
            "state": link.state,
            "values": link.values,
            "remote_modified_at": link.remote_modified_at,
            "updated_at": now,
        }
        for link in links
    ]
    if rows:
        conn.execute(
            upsert(
                _LINK,
                conn.dialect.name,
                ("connection", "remote_id"),
                ("contact_id", "state", "values", "remote_modified_at", "updated_at"),
            ),
            rows,
        )


def drop_contact_links(conn: Connection, connection: str, contact_ids: Iterable[str]) -> None:
    """Forget links of these contacts on a connection (before they are re-linked)."""
    ids = list(set(contact_ids))
    if ids:
        conn.execute(
            delete(_LINK).where(_LINK.c.connection == connection, _LINK.c.contact_id.in_(ids))
        )


# --- operator repairs (``contactsync links``) ---------------------------------------------------


def find(conn: Connection, key: str, connection: str | None = None) -> list[dict[str, Any]]:
    """Links whose hub contact id or remote id is ``key``, as full rows."""
    query = (
        select(_LINK)
        .where(or_(_LINK.c.contact_id == key, _LINK.c.remote_id == key))
        .order_by(_LINK.c.connection, _LINK.c.id)
    )
    if connection is not None:
        query = query.where(_LINK.c.connection == connection)
    return [dict(r) for r in conn.execute(query).mappings()]


def reset(
    conn: Connection,
    connection: str,
    *,
    contact_id: str | None = None,
    remote_id: str | None = None,
) -> int:
    """Delete links of a connection: one contact's, one remote record's, or (neither given)
    all of them. Tombstones go too, so a deleted record may be linked or created again.
    Returns how many were deleted."""
    query = delete(_LINK).where(_LINK.c.connection == connection)
    if contact_id is not None:
        query = query.where(_LINK.c.contact_id == contact_id)
    if remote_id is not None:
        query = query.where(_LINK.c.remote_id == remote_id)
    return conn.execute(query).rowcount


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Links per connection and state: ``{"mem": {"active": 10, "deleted": 1}}``."""
    query = select(_LINK.c.connection, _LINK.c.state, func.count()).group_by(
        _LINK.c.connection, _LINK.c.state
    )
    out: dict[str, dict[str, int]] = {}
    for connection, state, count in conn.execute(query):
        out.setdefault(connection, {})[state] = count
    return out


def follow_merges(
    conn: Connection, connection: str, merges: Mapping[str, Iterable[str]], now: datetime
) -> int:
    """Move the links of merged-away records to their survivor (``survivor -> old ids``).

    When the survivor is already linked, the old links are tombstoned instead: the platform
    now has one record for what the hub holds as two contacts, and staff decide (the
    contacts are never merged by sync).
    """
    moved = 0
    for survivor, old_ids in merges.items():
        old = by_remote_ids(conn, connection, old_ids)
        if not old:
            continue
        if by_remote_ids(conn, connection, [survivor]):
            for link in old.values():
                link.state = DELETED
            save(conn, old.values(), now)
            continue
        first, *rest = sorted(old.values(), key=lambda link: link.remote_id)
        conn.execute(
            update(_LINK)
            .where(_LINK.c.connection == connection, _LINK.c.remote_id == first.remote_id)
            .values(remote_id=survivor, updated_at=now)
        )
        for link in rest:
            link.state = DELETED
        save(conn, rest, now)
        moved += 1
    return moved
