"""``/api/v1/sync-log``: the sync log, newest first, filtered, a page at a time.

The same query as ``contactsync log`` (:func:`~daemon.hub.synclog_query.query_log`), with a
keyset on ``(timestamp, id)``: rows written while a client pages are newer than its cursor,
so a page never repeats or skips a row. A row holds ids and codes, and ``details`` already
redacted of secrets when it was written; its ``message`` is the human text staff read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from daemon.api.auth import needs
from daemon.api.contacts import resolve
from daemon.api.errors import ApiError
from daemon.api.paging import decode_cursor, encode_cursor, time_key
from daemon.api.state import API_PREFIX, hub_of
from daemon.foundation.dictionary import Code
from daemon.hub.apitokens import Role
from daemon.hub.synclog_query import parse_when, query_log

router = APIRouter(prefix=API_PREFIX, tags=["sync log"])
MAX_PAGE = 1000


class SyncLogRow(BaseModel):
    """One sync-log row: the seed's columns (timestamp, id, integration, direction, contact,
    code) and the run context."""

    id: int
    timestamp: datetime
    integration: str
    direction: str
    contact_id: str | None
    code: str
    instance: str | None
    run_id: str | None
    remote_id: str | None
    message: str
    details: dict[str, Any]


class SyncLogPage(BaseModel):
    """One page; ``next_cursor`` is null on the last."""

    rows: list[SyncLogRow]
    next_cursor: str | None


def _when(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise ApiError(422, Code.API_INVALID_REQUEST, f"{name}: {exc}") from None


@router.get("/sync-log", response_model=SyncLogPage, **needs(Role.READ))
def list_sync_log(
    request: Request,
    code: Annotated[str | None, Query(max_length=64, description="A dictionary code.")] = None,
    integration: Annotated[
        str | None, Query(max_length=64, description="csv, api, hubspot …")
    ] = None,
    instance: Annotated[str | None, Query(max_length=128)] = None,
    direction: Literal["incoming", "outgoing"] | None = None,
    contact: Annotated[
        str | None, Query(max_length=320, description="A hub id, CRM id or phone.")
    ] = None,
    run: Annotated[str | None, Query(max_length=32, description="A run id.")] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="RFC 3339, or an age: 90m, 2d, 4w.")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description="As since; exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SyncLogPage:
    """Sync-log rows, newest first (keyset paging: no repeat or gap while rows are added)."""
    hub = hub_of(request)
    contact_id = None
    if contact is not None:
        # A contact deleted since keeps its rows: an id that resolves to nobody is used as is.
        contact_id = resolve(hub.engine, contact, hub.region) or contact
    rows = query_log(
        hub.engine,
        code=code,
        integration=integration,
        instance=instance,
        direction=direction,
        contact_id=contact_id,
        run_id=run,
        since=_when("since", since),
        until=_when("until", until),
        before=decode_cursor(cursor, time_key) if cursor else None,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return SyncLogPage(
        rows=[SyncLogRow.model_validate({**r, "details": r["details"] or {}}) for r in rows],
        next_cursor=encode_cursor([last["timestamp"].isoformat(), last["id"]]) if last else None,
    )
