"""``/api/v1/contacts``: read, search, create, edit, batch, archive.

Every edit goes through the incoming rules (:class:`~daemon.hub.ingest.Ingestor`), exactly as
a CSV row does: a blank or null value is skipped, ``UNSET`` clears the fields that allow it, a
test user is left alone, a record for an archived contact un-archives it (unless ``active``
says otherwise), a phone equal to the contact's previous phone is kept (``contact-out-of-sync``),
and a phone or CRM id another contact holds skips the record. Each problem is a sync-log row
(integration ``api``). The edit and its outbox rows commit in one transaction.

An API edit is also a *hub-side* change (design §2, rule 6): when it changes a contact's phone,
the old one becomes ``previous_phone``, in the same transaction, so a stale platform record
cannot undo it.

Paging is keyset on the hub id (random and stable): a page never repeats or skips a contact
that existed when the listing began, whatever is written meanwhile. The cursor is opaque.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from sqlalchemy import Connection, Engine, func, or_, select, update

from daemon.api.auth import needs
from daemon.api.errors import ApiError, validation_message
from daemon.api.paging import decode_cursor, encode_cursor, text_key
from daemon.api.params import utc
from daemon.api.state import API_PREFIX, Hub, hub_of
from daemon.foundation.dictionary import Code
from daemon.hub import normalize
from daemon.hub.apitokens import Role
from daemon.hub.contacts import load_schema
from daemon.hub.database import READ_ONLY
from daemon.hub.fields import CUSTOM_PREFIX, HUB_ID
from daemon.hub.incoming import IncomingRecord, Outcome, RecordPlan
from daemon.hub.ingest import Ingestor
from daemon.hub.store import Contact, CustomField, CustomValue
from daemon.hub.synclog import SyncContext, SyncLogBuffer, new_run_id

router = APIRouter(prefix=API_PREFIX, tags=["contacts"])

_CONTACT = Contact.__table__
_CUSTOM_FIELD = CustomField.__table__
_CUSTOM_VALUE = CustomValue.__table__
INTEGRATION = "api"
MAX_BATCH = 1000
MAX_PAGE = 1000
MAX_CUSTOM_KEYS = 200
"""Custom values in one record. Each unknown name is a sync-log row, so without a bound one
1.5 MB request of 100,000 made-up names wrote 100,000 rows and held the hub for 17 s."""

# --- models ---------------------------------------------------------------------------------


class ContactOut(BaseModel):
    """A contact as the API shows it; ``custom`` maps display names to values."""

    id: str
    crm_id: str | None
    enrollment_id: str | None
    first_name: str | None
    last_name: str | None
    preferred_name: str | None
    phone: str | None
    email: str | None
    archived: bool
    test_user: bool
    invalid_phone: bool
    previous_phone: str | None
    created_at: datetime
    updated_at: datetime
    custom: dict[str, str] = {}


CustomValueIn = str | int | float | bool | None


class ContactIn(BaseModel):
    """An edit, field by field, as the incoming rules read it: absent or null skips a
    field, ``"UNSET"`` clears it (where allowed); values are checked and normalised by the
    hub (phones to E.164, emails lower-cased)."""

    model_config = ConfigDict(extra="forbid")

    crm_id: str | None = None
    enrollment_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    preferred_name: str | None = None
    phone: str | None = None
    email: str | None = None
    active: StrictBool | None = Field(
        default=None, description="false archives the contact, true un-archives it."
    )
    custom: dict[str, CustomValueIn] | None = Field(
        default=None,
        max_length=MAX_CUSTOM_KEYS,
        description=f"Custom field values by display name (at most {MAX_CUSTOM_KEYS}).",
    )

    def fields(self) -> dict[str, Any]:
        """The record's hub fields, as :class:`IncomingRecord` takes them."""
        out: dict[str, Any] = self.model_dump(exclude={"custom"}, exclude_none=True)
        for name, value in (self.custom or {}).items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            out[CUSTOM_PREFIX + name] = None if value is None else str(value)
        return out


class BatchRecordIn(ContactIn):
    """A batch record: ``id`` (a hub id) makes it an edit of that contact, which must exist;
    without it, the CRM id finds the contact, else a new one is created."""

    id: str | None = None


class ProblemOut(BaseModel):
    """One problem of a record: its dictionary code, the field, and why (no personal data)."""

    code: str
    field: str | None = None
    message: str


class RecordResult(BaseModel):
    """What happened to one record."""

    outcome: str = Field(description="created, updated, unchanged, skipped or ignored")
    contact_id: str | None = None
    problems: list[ProblemOut] = []


class WriteResult(RecordResult):
    """A single edit's result, with the contact as it now is."""

    contact: ContactOut | None = None


class BatchResult(RecordResult):
    """One batch record's result, in the order sent."""

    index: int


class BatchIn(BaseModel):
    """Up to 1,000 records, each applied (or refused) on its own."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class BatchOut(BaseModel):
    """A result per record, and the counts per outcome."""

    run_id: str
    summary: dict[str, int]
    results: list[BatchResult]


class ContactPage(BaseModel):
    """One page; ``next_cursor`` is null on the last."""

    contacts: list[ContactOut]
    next_cursor: str | None


# --- reading ---------------------------------------------------------------------------------


def _views(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[ContactOut]:
    """Contacts with their custom values, read in one more query for the whole page."""
    custom: dict[str, dict[str, str]] = {r["id"]: {} for r in rows}
    if custom:
        query = (
            select(_CUSTOM_VALUE.c.contact_id, _CUSTOM_FIELD.c.name, _CUSTOM_VALUE.c.value)
            .join(_CUSTOM_FIELD, _CUSTOM_FIELD.c.id == _CUSTOM_VALUE.c.field_id)
            .where(_CUSTOM_VALUE.c.contact_id.in_(custom))
            .order_by(_CUSTOM_FIELD.c.name)
        )
        for contact_id, name, value in conn.execute(query):
            custom[contact_id][name] = value
    return [ContactOut.model_validate({**r, "custom": custom[r["id"]]}) for r in rows]


def resolve(engine: Engine, key: str, region: str) -> str | None:
    """The hub id of the contact ``key`` names: a hub id, else a CRM id, else a phone (as
    written, or in any spelling the hub's phone rules read)."""
    candidates = [(_CONTACT.c.id, key), (_CONTACT.c.crm_id, key), (_CONTACT.c.phone, key)]
    with contextlib.suppress(normalize.InvalidValue):  # not a phone: the others may match
        candidates.append((_CONTACT.c.phone, normalize.phone(key, region)))
    with engine.connect().execution_options(**READ_ONLY) as conn:
        for column, value in candidates:
            found = conn.execute(select(_CONTACT.c.id).where(column == value)).scalar()
            if found is not None:
                return str(found)
    return None


def read_contact(engine: Engine, contact_id: str) -> ContactOut | None:
    """One contact by hub id."""
    with engine.connect().execution_options(**READ_ONLY) as conn:
        row = conn.execute(select(_CONTACT).where(_CONTACT.c.id == contact_id)).mappings().first()
        return _views(conn, [row])[0] if row is not None else None


@router.get("/contacts", response_model=ContactPage, **needs(Role.READ))
def list_contacts(
    request: Request,
    search: Annotated[
        str | None,
        Query(max_length=320, description="Part of a name, email or phone; or a CRM id or id."),
    ] = None,
    archived: Annotated[bool | None, Query(description="Only archived (or not).")] = None,
    test_user: Annotated[bool | None, Query(description="Only test users (or not).")] = None,
    crm_id: Annotated[str | None, Query(max_length=255)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    updated_since: Annotated[
        datetime | None, Query(description="RFC 3339 (UTC without a zone).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ContactPage:
    """Contacts in hub-id order, a page at a time (keyset: no repeat or gap under writes)."""
    query = select(_CONTACT).order_by(_CONTACT.c.id).limit(limit + 1)
    if cursor:
        query = query.where(_CONTACT.c.id > decode_cursor(cursor, text_key))
    if archived is not None:
        query = query.where(_CONTACT.c.archived.is_(archived))
    if test_user is not None:
        query = query.where(_CONTACT.c.test_user.is_(test_user))
    if crm_id is not None:
        query = query.where(_CONTACT.c.crm_id == crm_id)
    if email is not None:
        query = query.where(_CONTACT.c.email == email.strip().lower())
    if updated_since is not None:
        query = query.where(_CONTACT.c.updated_at >= utc("updated_since", updated_since))
    if search:
        like = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like += "%"
        query = query.where(
            or_(
                func.lower(_CONTACT.c.first_name).like(like, escape="\\"),
                func.lower(_CONTACT.c.last_name).like(like, escape="\\"),
                func.lower(_CONTACT.c.preferred_name).like(like, escape="\\"),
                func.lower(_CONTACT.c.email).like(like, escape="\\"),
                _CONTACT.c.phone.like(like, escape="\\"),
                _CONTACT.c.crm_id == search,
                _CONTACT.c.id == search,
            )
        )
    with hub_of(request).engine.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(query).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        views = _views(conn, rows)
    return ContactPage(contacts=views, next_cursor=encode_cursor(rows[-1]["id"]) if more else None)


@router.get("/contacts/{contact}", response_model=ContactOut, **needs(Role.READ))
def get_contact(request: Request, contact: str) -> ContactOut:
    """One contact, by hub id, CRM id or phone."""
    hub = hub_of(request)
    contact_id = resolve(hub.engine, contact, hub.region)
    view = read_contact(hub.engine, contact_id) if contact_id else None
    if view is None:
        raise ApiError(404, Code.API_NOT_FOUND, "no contact has this id, CRM id or phone")
    return view


# --- writing ---------------------------------------------------------------------------------


def apply_records(hub: Hub, records: list[IncomingRecord]) -> tuple[str, list[RecordPlan]]:
    """Run ``records`` through the incoming rules in one transaction (a batch is at most
    :data:`MAX_BATCH`); return the run id and each record's plan, in order."""
    context = SyncContext(INTEGRATION, "incoming", new_run_id())
    plans: list[RecordPlan] = []
    old_phones: dict[str, str | None] = {}

    def before(conn: Connection, batch: list[IncomingRecord]) -> None:
        # The phones before the edit, of every contact it may touch (by hub id or CRM id).
        ids = {str(r.fields[HUB_ID]) for r in batch if r.fields.get(HUB_ID)}
        crms = {str(r.fields["crm_id"]).strip() for r in batch if r.fields.get("crm_id")}
        old_phones.clear()
        if ids or crms:
            query = select(_CONTACT.c.id, _CONTACT.c.phone).where(
                or_(_CONTACT.c.id.in_(ids), _CONTACT.c.crm_id.in_(crms))
            )
            old_phones.update({r.id: r.phone for r in conn.execute(query)})

    def after(conn: Connection, batch_plans: list[RecordPlan]) -> None:
        # A hub-side phone change keeps the old number as previous_phone (rule 6).
        moved = {
            plan.contact_id: old_phones.get(plan.contact_id or "")
            for plan in batch_plans
            if plan.outcome is Outcome.UPDATED and any(f.field == "phone" for f in plan.changes)
        }
        for contact_id, old in moved.items():
            if old is not None:
                conn.execute(
                    update(_CONTACT).where(_CONTACT.c.id == contact_id).values(previous_phone=old)
                )

    ingestor = Ingestor(
        hub.engine,
        load_schema(hub.engine, hub.region),
        context,
        batch_size=MAX_BATCH,
        on_plan=plans.append,
    )
    with ingestor:
        ingestor.batch(records, before=before, after=after)
    return context.run_id, plans


def _problems(plan: RecordPlan) -> list[ProblemOut]:
    return [ProblemOut(code=str(p.code), field=p.field, message=p.message) for p in plan.problems]


# A skipped record's HTTP status, by the code that skipped it.
_SKIP_STATUS = {
    Code.DUPLICATE_CONTACT: 409,
    Code.DUPLICATE_CRM_ID: 409,
    Code.UNKNOWN_CONTACT_ID: 404,
}


def _write_one(hub: Hub, fields: dict[str, Any], source: dict[str, Any]) -> JSONResponse:
    _, (plan,) = apply_records(hub, [IncomingRecord(fields, source=source)])
    result = WriteResult(
        outcome=str(plan.outcome), contact_id=plan.contact_id, problems=_problems(plan)
    )
    if plan.outcome is Outcome.SKIPPED:
        # The last problem is the one that skipped the record; the others are field-level.
        last = plan.problems[-1]
        code = Code(last.code)
        raise ApiError(
            _SKIP_STATUS.get(code, 422),
            code,
            last.message,
            result=result.model_dump(mode="json"),
        )
    if plan.contact_id is not None:
        result.contact = read_contact(hub.engine, plan.contact_id)
    status = 201 if plan.outcome is Outcome.CREATED else 200
    return JSONResponse(result.model_dump(mode="json"), status_code=status)


def _existing(hub: Hub, key: str) -> str:
    contact_id = resolve(hub.engine, key, hub.region)
    if contact_id is None:
        raise ApiError(404, Code.API_NOT_FOUND, "no contact has this id, CRM id or phone")
    return contact_id


_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": WriteResult, "description": "updated, unchanged, or ignored (a test user)"},
    201: {"model": WriteResult, "description": "created"},
    409: {"description": "duplicate-contact or duplicate-unique-id-crmId; nothing written"},
}


@router.post(
    "/contacts", response_model=WriteResult, responses=_WRITE_RESPONSES, **needs(Role.STAFF)
)
def create_contact(request: Request, body: ContactIn) -> JSONResponse:
    """Create a contact (first name, last name and phone needed). A CRM id the hub knows
    makes this an edit of that contact, as in a CSV import."""
    return _write_one(hub_of(request), body.fields(), {"request": "create"})


@router.patch(
    "/contacts/{contact}",
    response_model=WriteResult,
    responses=_WRITE_RESPONSES,
    **needs(Role.STAFF),
)
def update_contact(request: Request, contact: str, body: ContactIn) -> JSONResponse:
    """Edit a contact (by hub id, CRM id or phone), field by field."""
    hub = hub_of(request)
    fields = {HUB_ID: _existing(hub, contact), **body.fields()}
    return _write_one(hub, fields, {"request": "update"})


@router.post(
    "/contacts/{contact}:archive",
    response_model=WriteResult,
    responses=_WRITE_RESPONSES,
    **needs(Role.STAFF),
)
def archive_contact(request: Request, contact: str) -> JSONResponse:
    """Archive a contact (a test user is left alone)."""
    hub = hub_of(request)
    fields = {HUB_ID: _existing(hub, contact), "active": False}
    return _write_one(hub, fields, {"request": "archive"})


@router.post(
    "/contacts/{contact}:unarchive",
    response_model=WriteResult,
    responses=_WRITE_RESPONSES,
    **needs(Role.STAFF),
)
def unarchive_contact(request: Request, contact: str) -> JSONResponse:
    """Un-archive a contact."""
    hub = hub_of(request)
    fields = {HUB_ID: _existing(hub, contact), "active": True}
    return _write_one(hub, fields, {"request": "unarchive"})


@router.post("/contacts:batch", response_model=BatchOut, **needs(Role.STAFF))
def batch_contacts(request: Request, body: Annotated[BatchIn, Body()]) -> BatchOut:
    """Up to 1,000 records in one transaction, each with its own result: a bad record is
    refused (and logged) alone, the good ones apply. Within a batch the first record with a
    CRM id wins, as within one CSV file."""
    hub = hub_of(request)
    results: dict[int, BatchResult] = {}
    records: list[IncomingRecord] = []
    indexes: list[int] = []
    refused = SyncLogBuffer(SyncContext(INTEGRATION, "incoming", new_run_id()))
    for index, raw in enumerate(body.records):
        try:
            parsed = BatchRecordIn.model_validate(raw)
        except ValidationError as exc:
            message = validation_message(list(exc.errors()))
            refused.add(Code.API_INVALID_REQUEST, message, request="batch", index=index)
            results[index] = BatchResult(
                index=index,
                outcome=str(Outcome.SKIPPED),
                problems=[ProblemOut(code=str(Code.API_INVALID_REQUEST), message=message)],
            )
            continue
        fields = parsed.fields()
        fields.pop(HUB_ID, None)
        if parsed.id is not None:
            fields = {HUB_ID: parsed.id, **fields}
        records.append(IncomingRecord(fields, source={"request": "batch", "index": index}))
        indexes.append(index)
    run_id = refused.context.run_id
    if records:
        run_id, plans = apply_records(hub, records)
        for index, plan in zip(indexes, plans, strict=True):
            results[index] = BatchResult(
                index=index,
                outcome=str(plan.outcome),
                contact_id=plan.contact_id,
                problems=_problems(plan),
            )
    if refused.rows:
        with hub.engine.begin() as conn:
            refused.write(conn)
        refused.emit()
    ordered = [results[i] for i in range(len(body.records))]
    summary = {str(o): 0 for o in Outcome}
    for result in ordered:
        summary[result.outcome] += 1
    return BatchOut(run_id=run_id, summary=summary, results=ordered)
