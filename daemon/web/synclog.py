"""``/sync-log``: the seed's Sync Log page, and its CSV export.

The same hub queries as ``GET /api/v1/sync-log`` and ``contactsync log``
(:func:`~daemon.hub.synclog_query.query_log`, keyset on ``(timestamp, id)`` with the API's
opaque cursor), plus :func:`~daemon.hub.synclog_query.count_codes` for the counts by code.

The filters that hold no personal data (integration, direction, code, time) travel in the
query string, so a filtered view is a link staff can share. The search may be a phone, an
email or a name: it is only ever sent in a POST body (and its "next page" is a form too), so
it never lands in an address, the browser's history or any log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import select

from daemon.api.contacts import resolve
from daemon.api.errors import ApiError
from daemon.api.paging import decode_cursor, encode_cursor, time_key
from daemon.api.state import Hub, hub_of
from daemon.foundation.dictionary import ENTRIES, Code
from daemon.hub.contacts import contact_names
from daemon.hub.database import READ_ONLY
from daemon.hub.store import Contact, InstanceRow
from daemon.hub.synclog_query import count_codes, parse_when, query_log
from daemon.kit.csv_write import csv_cell, write_rows
from daemon.web.render import HEADERS, page
from daemon.web.session import Session, signed_in

router = APIRouter(include_in_schema=False)
PAGE = 50
EXPORT_BATCH = 1000
EXPORT_COLUMNS = (
    "timestamp",
    "id",
    "integration",
    "instance",
    "direction",
    "contact_id",
    "code",
    "message",
    "run_id",
    "remote_id",
)
OTHER_INTEGRATIONS = {"csv": "CSV import", "api": "Staff and API edits"}
"""Sync-log rows written outside any instance, by their ``integration``."""
NO_MATCH = ""
"""A contact id no contact has: a search that finds nobody shows no rows (not all rows)."""

Text = Annotated[str | None, Query(max_length=64)]


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of one view of the log; ``search`` is never put in a URL."""

    integration: str | None = None
    direction: str | None = None
    code: str | None = None
    since: str | None = None
    until: str | None = None
    search: str | None = None

    def params(self, **more: str) -> str:
        """The query string of this view without the search (a link's address)."""
        shown = {
            k: v
            for k, v in (
                ("integration", self.integration),
                ("direction", self.direction),
                ("code", self.code),
                ("since", self.since),
                ("until", self.until),
                *more.items(),
            )
            if v
        }
        return urlencode(shown)


def _integrations(hub: Hub) -> dict[str, str]:
    """The choices of the integration filter: each instance by the name staff know it by
    (configured now, or mirrored from before), then the rows written outside instances."""
    loaded = hub.instances()
    names = set(loaded.instances) | set(loaded.errors)
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        names |= set(conn.execute(select(InstanceRow.__table__.c.name)).scalars())
    return {**{n: n for n in sorted(names)}, **OTHER_INTEGRATIONS}


def _when(name: str, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise ApiError(422, Code.API_INVALID_REQUEST, f"{name}: {exc}") from None


def _contact_of(hub: Hub, search: str) -> str:
    """The hub id a search names: a hub id, CRM id or phone (as the API resolves them), else
    an email; :data:`NO_MATCH` when nobody has it."""
    found = resolve(hub.engine, search, hub.region)
    if found is None and "@" in search:
        table = Contact.__table__
        with hub.engine.connect().execution_options(**READ_ONLY) as conn:
            found = conn.execute(
                select(table.c.id).where(table.c.email == search.strip().lower()).limit(1)
            ).scalar()
    return found or NO_MATCH


def _query(hub: Hub, filters: Filters) -> dict[str, Any]:
    """``filters`` as :func:`query_log` takes them."""
    out: dict[str, Any] = {
        "direction": filters.direction,
        "code": filters.code,
        "since": _when("since", filters.since),
        "until": _when("until", filters.until),
    }
    if filters.integration in OTHER_INTEGRATIONS:
        out["integration"] = filters.integration
    elif filters.integration:
        # An instance, by name; one removed since keeps its rows, so any name is looked for.
        out["instance"] = filters.integration
    if filters.search:
        out["contact_id"] = _contact_of(hub, filters.search)
    return out


def _render(request: Request, session: Session, filters: Filters, cursor: str | None) -> Any:
    hub = hub_of(request)
    choices = _integrations(hub)
    query = _query(hub, filters)
    before = decode_cursor(cursor, time_key) if cursor else None
    rows = query_log(hub.engine, before=before, limit=PAGE + 1, **query)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_cursor = (
        encode_cursor([rows[-1]["timestamp"].isoformat(), rows[-1]["id"]]) if more else None
    )
    return page(
        request,
        "sync_log.html",
        session=session,
        filters=filters,
        choices=choices,
        codes=sorted(ENTRIES),
        counts=count_codes(hub.engine, **query),
        rows=rows,
        names=contact_names(hub.engine, (r["contact_id"] for r in rows)),
        next_cursor=next_cursor,
        first_page=cursor is None,
    )


def _query_filters(
    integration: Text = None,
    direction: Literal["incoming", "outgoing", ""] | None = None,
    code: Text = None,
    since: Text = None,
    until: Text = None,
) -> Filters:
    """The view's filters as the query string gives them (the page and its export)."""
    return Filters(integration or None, direction or None, code or None, since, until)


def _form_filters(
    search: Annotated[str, Form(max_length=320)] = "",
    integration: Annotated[str, Form(max_length=64)] = "",
    direction: Annotated[Literal["incoming", "outgoing", ""], Form()] = "",
    code: Annotated[str, Form(max_length=64)] = "",
    since: Annotated[str, Form(max_length=64)] = "",
    until: Annotated[str, Form(max_length=64)] = "",
) -> Filters:
    """The view's filters and its search as a form's body gives them: a search for one
    contact (by id, CRM id, phone or email) comes only in a body, so it is in no URL or log."""
    return Filters(
        integration or None, direction or None, code or None, since, until, search.strip() or None
    )


@router.get("/sync-log", response_class=HTMLResponse)
def sync_log(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
    filters: Annotated[Filters, Depends(_query_filters)],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    """The Sync Log, newest first, filtered by the query string."""
    return _render(request, session, filters, cursor)


@router.post("/sync-log", response_class=HTMLResponse)
def sync_log_search(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
    filters: Annotated[Filters, Depends(_form_filters)],
    cursor: Annotated[str, Form(max_length=512)] = "",
) -> Any:
    """The Sync Log searched for one contact, the search in the body. A read changes
    nothing: no form token."""
    return _render(request, session, filters, cursor or None)


def _export(hub: Hub, query: dict[str, Any]) -> Iterator[bytes]:
    """Every row of the view as CSV, a keyset batch at a time: memory stays bounded whatever
    the number of rows, and the kit's writer escapes cells that a spreadsheet would run as a
    formula."""

    def rows() -> Iterator[list[str]]:
        before: tuple[datetime, int] | None = None
        while True:
            batch = query_log(hub.engine, before=before, limit=EXPORT_BATCH, **query)
            for row in batch:
                yield [csv_cell(row[c]) for c in EXPORT_COLUMNS]
            if len(batch) < EXPORT_BATCH:
                return
            before = (batch[-1]["timestamp"], batch[-1]["id"])

    return write_rows(EXPORT_COLUMNS, rows())


def _csv(hub: Hub, filters: Filters) -> StreamingResponse:
    query = _query(hub, filters)
    headers = {
        **HEADERS,
        "Content-Disposition": 'attachment; filename="sync-log.csv"',
    }
    return StreamingResponse(_export(hub, query), media_type="text/csv", headers=headers)


@router.get("/sync-log.csv")
def export_csv(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
    filters: Annotated[Filters, Depends(_query_filters)],
) -> StreamingResponse:
    """The filtered rows as a CSV file, streamed."""
    return _csv(hub_of(request), filters)


@router.post("/sync-log.csv")
def export_csv_search(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
    filters: Annotated[Filters, Depends(_form_filters)],
) -> StreamingResponse:
    """The searched view's rows as CSV (the search in the body, as for the page)."""
    return _csv(hub_of(request), filters)
