"""Writing a planned batch to the hub with a handful of bulk statements.

One ``executemany`` per kind of change instead of one ORM object per row: that is what keeps a
million-row import at tens of thousands of rows a second.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, update

from daemon.hub import outbox
from daemon.hub.database import insert_ignore, upsert
from daemon.hub.incoming import Changes
from daemon.hub.store import Contact, CustomValue, RunKey, utcnow

_CONTACT = Contact.__table__
_CUSTOM_VALUE = CustomValue.__table__
_RUN_KEY = RunKey.__table__


def write_changes(
    conn: Connection,
    changes: Changes,
    *,
    origin: str = "hub",
    exclude_connection: str | None = None,
    now: datetime | None = None,
) -> None:
    """Apply ``changes`` inside the caller's transaction, and queue the changed contacts for
    every outgoing connection but ``exclude_connection`` (where the change came from)."""
    dialect = conn.dialect.name
    # Within a batch one contact may take the phone or CRM id another gave up earlier. The
    # plan is unique row by row, but the statements below run grouped, not in plan order, so
    # first release every unique value that changes; the UPDATEs then write the final ones.
    for column in ("phone", "crm_id"):
        moving = [row["id"] for row in changes.updated.values() if column in row]
        if moving:
            conn.execute(
                update(_CONTACT).where(_CONTACT.c.id == bindparam("_id")).values({column: None}),
                [{"_id": contact_id} for contact_id in moving],
            )
    if changes.created:
        conn.execute(insert(_CONTACT), list(changes.created.values()))
    # Rows with the same set of changed columns share one UPDATE statement.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in changes.updated.values():
        groups[tuple(sorted(k for k in row if k != "id"))].append(row)
    for columns, rows in groups.items():
        stmt = (
            update(_CONTACT)
            .where(_CONTACT.c.id == bindparam("_id"))
            .values({c: bindparam(f"v_{c}") for c in columns})
        )
        conn.execute(stmt, [{**{f"v_{c}": r[c] for c in columns}, "_id": r["id"]} for r in rows])
    if changes.custom_set:
        conn.execute(
            upsert(_CUSTOM_VALUE, dialect, ("contact_id", "field_id"), ("value",)),
            [
                {"contact_id": cid, "field_id": fid, "value": value}
                for (cid, fid), value in changes.custom_set.items()
            ],
        )
    if changes.custom_clear:
        conn.execute(
            delete(_CUSTOM_VALUE).where(
                and_(
                    _CUSTOM_VALUE.c.contact_id == bindparam("cid"),
                    _CUSTOM_VALUE.c.field_id == bindparam("fid"),
                )
            ),
            [{"cid": cid, "fid": fid} for cid, fid in changes.custom_clear],
        )
    if changes.run_keys:
        conn.execute(insert_ignore(_RUN_KEY, dialect), changes.run_keys)
    if changes.changed_fields:
        outbox.fan_out(
            conn, changes.changed_fields, origin, now or utcnow(), exclude=exclude_connection
        )


def forget_run(conn: Connection, run_id: str) -> None:
    """Drop the keys a finished run remembered."""
    conn.execute(delete(_RUN_KEY).where(_RUN_KEY.c.run_id == run_id))
