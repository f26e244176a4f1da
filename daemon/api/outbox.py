"""``/api/v1/outbox`` and ``/api/v1/contacts/{contact}/links``: what waits to be pushed,
and which remote records a contact is linked to.

The same hub functions as ``contactsync outbox`` and ``contactsync links show``
(:mod:`daemon.hub.outbox`, :mod:`daemon.hub.links`). Retrying re-arms a row (pending, no
attempts, due now, its version bumped so a push in flight neither deletes nor re-parks it);
dropping deletes it, and its change is not pushed. Both are staff's: acting on the sync log
and its queue is their job. An outbox row names its connection and contact, never values:
those are read at push time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from daemon.api.auth import needs
from daemon.api.contacts import resolve
from daemon.api.errors import ApiError
from daemon.api.instances import NO_INSTANCE
from daemon.api.paging import decode_cursor, encode_cursor, int_key
from daemon.api.params import RowId
from daemon.api.state import API_PREFIX, Hub, hub_of
from daemon.foundation.dictionary import Code
from daemon.foundation.log import redact
from daemon.hub import links, outbox
from daemon.hub.apitokens import Role
from daemon.hub.database import READ_ONLY
from daemon.hub.store import InstanceRow, utcnow

router = APIRouter(prefix=API_PREFIX, tags=["outbox"])
MAX_PAGE = 1000
_INSTANCE = InstanceRow.__table__
_NO_ROW = "no such outbox row (pushed or dropped since?); GET /api/v1/outbox lists them"


class OutboxRow(BaseModel):
    """A contact waiting to be pushed through a connection: the changed fields' names, where
    the change came from, attempts, the next attempt time, pending or parked, the last
    error (redacted when it was written)."""

    id: int
    connection: str
    contact_id: str
    fields: list[str]
    origin: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class OutboxPage(BaseModel):
    rows: list[OutboxRow]
    next_cursor: str | None


class Acted(BaseModel):
    """The ids of the rows re-armed or dropped."""

    ids: list[int]


class RetryParkedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str | None = Field(default=None, description="Only this connection's rows.")


class LinkOut(BaseModel):
    """A link: the connection, the remote id, its state (active, pending, deleted), the last
    values exchanged (canonical hub form), and when."""

    connection: str
    remote_id: str
    contact_id: str
    state: str
    values: dict[str, Any]
    remote_modified_at: datetime | None
    updated_at: datetime


def _connection_of(hub: Hub, instance: str) -> str:
    """The connection an instance uses: as configured now, else as last mirrored."""
    loaded = hub.instances().instances.get(instance)
    if loaded is not None:
        return loaded.connection
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        found = conn.execute(
            select(_INSTANCE.c.connection).where(_INSTANCE.c.name == instance)
        ).scalar()
    if found is None:
        raise ApiError(404, Code.API_NOT_FOUND, NO_INSTANCE)
    return str(found)


@router.get("/outbox", response_model=OutboxPage, **needs(Role.READ))
def list_outbox(
    request: Request,
    connection: Annotated[str | None, Query(max_length=64)] = None,
    instance: Annotated[
        str | None, Query(max_length=128, description="Its connection's rows.")
    ] = None,
    contact: Annotated[
        str | None, Query(max_length=320, description="A hub id, CRM id or phone.")
    ] = None,
    state: Literal["pending", "parked"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> OutboxPage:
    """Outbox rows, oldest first (keyset on the row id)."""
    hub = hub_of(request)
    if instance is not None:
        named = _connection_of(hub, instance)
        if connection is not None and connection != named:
            return OutboxPage(rows=[], next_cursor=None)
        connection = named
    contact_id = None
    if contact is not None:
        contact_id = resolve(hub.engine, contact, hub.region) or contact
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        rows = outbox.list_rows(
            conn,
            connection=connection,
            state=state,
            contact_id=contact_id,
            after_id=decode_cursor(cursor, int_key) if cursor else 0,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return OutboxPage(
        rows=[OutboxRow.model_validate({**r, "fields": r["fields"] or []}) for r in rows],
        next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
    )


@router.post("/outbox/{row}/retry", response_model=Acted, **needs(Role.STAFF))
def retry_row(request: Request, row: RowId) -> Acted:
    """Re-arm one row: pending, no attempts, due now (the daemon's next push sends it)."""
    with hub_of(request).engine.begin() as conn:
        found = outbox.rearm(conn, utcnow(), ids=[row])
    if not found:
        raise ApiError(404, Code.API_NOT_FOUND, _NO_ROW)
    return Acted(ids=found)


@router.post("/outbox:retry-parked", response_model=Acted, **needs(Role.STAFF))
def retry_parked(request: Request, body: RetryParkedIn) -> Acted:
    """Re-arm every parked row (of one connection)."""
    with hub_of(request).engine.begin() as conn:
        found = outbox.rearm(conn, utcnow(), connection=body.connection, all_parked=True)
    return Acted(ids=found)


@router.delete("/outbox/{row}", response_model=Acted, **needs(Role.STAFF))
def drop_row(request: Request, row: RowId) -> Acted:
    """Drop one row: its change is not pushed (a later edit of the contact queues it again)."""
    with hub_of(request).engine.begin() as conn:
        found = outbox.drop(conn, ids=[row])
    if not found:
        raise ApiError(404, Code.API_NOT_FOUND, _NO_ROW)
    return Acted(ids=found)


@router.get("/contacts/{contact}/links", response_model=list[LinkOut], **needs(Role.READ))
def contact_links(request: Request, contact: str) -> list[LinkOut]:
    """The links of a contact (by hub id, CRM id or phone), tombstones included."""
    hub = hub_of(request)
    contact_id = resolve(hub.engine, contact, hub.region)
    if contact_id is None:
        raise ApiError(404, Code.API_NOT_FOUND, "no contact has this id, CRM id or phone")
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        rows = [r for r in links.find(conn, contact_id) if r["contact_id"] == contact_id]
    return [LinkOut.model_validate({**r, "values": redact(r["values"] or {})}) for r in rows]
