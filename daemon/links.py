"""Links: which remote record on a connection is which contact, and what was last exchanged.

A link is unique by (connection, remote id) and by (connection, contact). Its ``values`` are
the canonical hub-form values last exchanged per hub field; echo suppression and "apply only
what changed" read them. A record deleted on the platform leaves a *tombstone* (state
``deleted``): sync never re-creates the contact there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from daemon.database import upsert
from daemon.store import Link

_LINK = Link.__table__

ACTIVE = "active"
PENDING = "pending"
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


def _row(mapping: Mapping[str, Any]) -> LinkRow:
    return LinkRow(
        mapping["connection"],
        mapping["remote_id"],
        mapping["contact_id"],
        mapping["state"],
        dict(mapping["values"] or {}),
        mapping["remote_modified_at"],
    )


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
