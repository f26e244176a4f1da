"""``/contacts/{id}``: one contact as staff see it, edit it and un-park its changes.

The page reads what the API reads: the contact with its custom fields
(:func:`~daemon.api.contacts.read_contact`), its links (:func:`daemon.hub.links.find`), its
outbox rows (:func:`daemon.hub.outbox.list_rows`), its sync-log rows and its messages. An
edit goes through the incoming rules exactly as ``PATCH /api/v1/contacts/{id}`` does
(:func:`~daemon.api.contacts.apply_records`: blank keeps, ``UNSET`` clears, a hub-side phone
change keeps the old one as ``previous_phone``, each problem a sync-log row); "retry now"
re-arms a parked row as ``POST /api/v1/outbox/{row}/retry`` does
(:func:`daemon.hub.outbox.rearm`). Both are staff's and carry the session's form token.

A contact is addressed by its hub id only: a phone or an email never goes into an address.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from daemon.api.contacts import ContactIn, apply_records, read_contact
from daemon.api.errors import ApiError
from daemon.api.state import Hub, hub_of
from daemon.foundation.dictionary import Code
from daemon.foundation.log import redact
from daemon.hub import links, outbox
from daemon.hub.apitokens import Role
from daemon.hub.database import READ_ONLY
from daemon.hub.fields import HUB_ID
from daemon.hub.incoming import IncomingRecord, Outcome
from daemon.hub.messages import list_messages
from daemon.hub.store import CustomField, utcnow
from daemon.hub.synclog_query import query_log
from daemon.web.render import HEADERS, page
from daemon.web.session import Session, check_form, require, signed_in

router = APIRouter(include_in_schema=False)
RECENT = 25
EDITABLE = (
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("preferred_name", "Preferred name"),
    ("phone", "Phone"),
    ("email", "Email"),
    ("crm_id", "CRM id"),
    ("enrollment_id", "Enrollment id"),
)
"""The hub fields the edit form offers, with their labels."""
CUSTOM_INPUT = "custom:"
"""The form-field prefix of a custom field's input (its display name follows)."""
NO_CONTACT = "no contact has this hub id"


def _custom_fields(hub: Hub) -> list[tuple[str, str]]:
    table = CustomField.__table__
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(select(table.c.name, table.c.type).order_by(table.c.name))
        return [(str(name), str(kind)) for name, kind in rows]


def _render(
    request: Request,
    session: Session,
    contact_id: str,
    *,
    result: Any = None,
    status: int = 200,
) -> HTMLResponse:
    hub = hub_of(request)
    contact = read_contact(hub.engine, contact_id)
    if contact is None:
        raise ApiError(404, Code.API_NOT_FOUND, NO_CONTACT)
    with hub.engine.connect().execution_options(**READ_ONLY) as conn:
        linked = [r for r in links.find(conn, contact_id) if r["contact_id"] == contact_id]
        queued = outbox.list_rows(conn, contact_id=contact_id, limit=100)
    for link in linked:
        link["values"] = redact(link["values"] or {})
        link["outbox"] = [r for r in queued if r["connection"] == link["connection"]]
    unlinked = [r for r in queued if r["connection"] not in {k["connection"] for k in linked}]
    return page(
        request,
        "contact.html",
        status=status,
        session=session,
        contact=contact,
        editable=EDITABLE,
        custom_fields=_custom_fields(hub),
        custom_input=CUSTOM_INPUT,
        links=linked,
        unlinked=unlinked,
        log_rows=query_log(hub.engine, contact_id=contact_id, limit=RECENT),
        messages=list_messages(hub.engine, contact_id=contact_id, limit=RECENT),
        result=result,
        staff=session.may(Role.STAFF),
    )


@router.get("/contacts/{contact_id}", response_class=HTMLResponse)
def contact_page(
    request: Request, contact_id: str, session: Annotated[Session, Depends(signed_in)]
) -> HTMLResponse:
    """The contact: fields, custom fields, links, pending and parked changes, log, messages."""
    return _render(request, session, contact_id)


@router.post("/contacts/{contact_id}", response_class=HTMLResponse)
async def edit_contact(
    request: Request, contact_id: str, session: Annotated[Session, Depends(signed_in)]
) -> HTMLResponse:
    """Apply the edit form through the incoming rules; the page shows what happened."""
    form = await request.form()
    csrf = form.get("csrf")
    check_form(session, csrf if isinstance(csrf, str) else None)
    require(session, Role.STAFF)
    hub = hub_of(request)
    current = read_contact(hub.engine, contact_id)
    if current is None:
        raise ApiError(404, Code.API_NOT_FOUND, NO_CONTACT)
    sent: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str) or len(value) > 1000:
            continue  # an upload or an oversized value: the rules would refuse it anyway
        if key in dict(EDITABLE):
            sent[key] = value
        elif key.startswith(CUSTOM_INPUT):
            custom[key.removeprefix(CUSTOM_INPUT)] = value
    # Only what staff changed is sent: an untouched field is skipped by the rules anyway
    # (equal values), but not sending it keeps the sync log and the outbox to the real edit.
    before = current.model_dump()
    changed = {k: v for k, v in sent.items() if v.strip() != (before.get(k) or "")}
    changed_custom = {k: v for k, v in custom.items() if v.strip() != current.custom.get(k, "")}
    edit = ContactIn.model_validate({**changed, "custom": changed_custom or None})
    fields = {HUB_ID: contact_id, **edit.fields()}
    # Fields left blank are dropped by the rules (blank keeps the hub's value); UNSET clears.
    _, (plan,) = apply_records(hub, [IncomingRecord(fields, source={"request": "web"})])
    status = 422 if plan.outcome is Outcome.SKIPPED else 200
    return _render(request, session, contact_id, result=plan, status=status)


@router.post("/contacts/{contact_id}/outbox/{row}/retry")
def retry_now(
    request: Request,
    contact_id: str,
    row: int,
    session: Annotated[Session, Depends(signed_in)],
    csrf: Annotated[str | None, Form(max_length=128)] = None,
) -> RedirectResponse:
    """Re-arm one of the contact's outbox rows: pending, no attempts, due now."""
    check_form(session, csrf)
    require(session, Role.STAFF)
    hub = hub_of(request)
    with hub.engine.begin() as conn:
        mine = {r["id"] for r in outbox.list_rows(conn, contact_id=contact_id, limit=100)}
        found = outbox.rearm(conn, utcnow(), ids=[row]) if row in mine else []
    if not found:
        raise ApiError(404, Code.API_NOT_FOUND, "no such change waiting (pushed since?)")
    return RedirectResponse(f"/contacts/{contact_id}?retried={row}", 303, headers=HEADERS)
