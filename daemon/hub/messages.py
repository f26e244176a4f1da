"""Messages into the hub: ``contactsync messages add`` and ``contactsync messages import``.

The hub keeps conversation messages (:class:`daemon.hub.store.Message`) so that export instances can
send them on (:mod:`daemon.engine.export_cycle`). A message belongs to a contact, named by its hub
id or its CRM id, and has a channel, a direction, a body, an optional campaign and type, and the
time it was sent.

A message is all or nothing where it matters: a row without a known contact, a valid channel,
direction, body or time is skipped with a code. An optional value that is bad (a type not in
the list, a campaign name too long) is dropped with a code and the message is kept, as the
incoming rules do for contact fields. Every problem is a sync-log row naming the file and row.

The file path reuses :mod:`daemon.hub.csv_import`: the same whole-file check before anything is
written (encoding, CSV structure, header), the same row numbering and ragged-row handling,
and batches committed with their sync-log rows so memory holds one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from daemon.foundation.csv_read import FileMalformed, header_key, read_header
from daemon.foundation.dictionary import Code
from daemon.hub.csv_import import Columns, iter_records
from daemon.hub.database import READ_ONLY, insert_ignore
from daemon.hub.incoming import IncomingRecord
from daemon.hub.ingest import MAX_REPORTED
from daemon.hub.store import Contact, Message, utcnow
from daemon.hub.synclog import SyncContext, SyncLogBuffer, new_run_id, record

CHANNELS = ("web", "twilio", "facebook")
"""Mainstay's channels: web chat, SMS (Twilio) and Facebook Messenger."""
DIRECTIONS = ("incoming", "outgoing")
"""incoming: the learner wrote it; outgoing: a campaign, the AI or a live-chat agent did."""
MESSAGE_TYPES = ("campaign", "ai", "live_chat")
"""What sent an outgoing message: a campaign (scripts), the AI (knowledge base answers) or a
person on live chat. Incoming messages have no type."""
MAX_BODY = 10_000
INTEGRATION = "messages"

_MESSAGE = Message.__table__
_CONTACT = Contact.__table__
_LIMITS = {"campaign_id": 64, "campaign_name": 255}
MAX_EXTERNAL_ID = 255

# Header aliases of a messages file, compared as csv_import compares contact headers.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "contact_id": ("contact_id", "contact", "mainstay_id", "id"),
    "crm_id": ("crm_id", "crmid"),
    "channel": ("channel",),
    "direction": ("direction",),
    "body": ("body", "message", "text"),
    "campaign_id": ("campaign_id",),
    "campaign_name": ("campaign_name",),
    "message_type": ("type", "message_type"),
    "sent_at": ("sent_at", "timestamp", "time"),
    "external_id": ("external_id", "message_id"),
    # A conversations export (plugins/export) as a messages file: the body sits in the
    # column of its direction, and the contact's names are read-only context.
    "incoming": ("incoming",),
    "outgoing": ("outgoing",),
}
IGNORED_COLUMNS = ("first_name", "last_name")
"""Columns of a conversations export that a messages file may carry and that are ignored
(the contact's names belong to the contact, not to its messages)."""
_ALIAS = {alias: name for name, aliases in HEADER_ALIASES.items() for alias in aliases}


@dataclass(slots=True)
class MessageProblem:
    """One rejected message or value: its code, why, and where it came from."""

    code: str
    message: str
    field: str | None
    source: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field, **self.source}


@dataclass(slots=True)
class MessagesReport:
    """What an add or an import did: messages added, rows skipped, and the first problems."""

    run_id: str
    added: int = 0
    skipped: int = 0
    already_present: int = 0  # external ids the hub already had: not added again
    problem_count: int = 0
    problems: list[MessageProblem] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # of the added messages (first few only)
    file_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "added": self.added,
            "skipped": self.skipped,
            "already_present": self.already_present,
            "problem_count": self.problem_count,
            "problems": [p.as_dict() for p in self.problems],
            "ids": self.ids,
            "file_error": self.file_error,
        }


class _Batch:
    """Rows waiting for one commit, with their sync-log rows."""

    def __init__(self, context: SyncContext, report: MessagesReport) -> None:
        self.rows: list[dict[str, Any]] = []
        self.log = SyncLogBuffer(context)
        self.report = report

    def problem(
        self, code: Code, message: str, field_name: str | None, source: Mapping[str, Any]
    ) -> None:
        self.report.problem_count += 1
        if len(self.report.problems) < MAX_REPORTED:
            self.report.problems.append(MessageProblem(str(code), message, field_name, source))
        self.log.add(code, message, field=field_name, **source)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_sent_at(text: str) -> datetime:
    """An ISO 8601 time; UTC when it names no zone. Raises :class:`ValueError`."""
    parsed = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _resolve(conn: Any, records: Sequence[IncomingRecord]) -> tuple[set[str], dict[str, str]]:
    """The hub ids that exist and the CRM ids that map to a contact, for one batch."""
    ids = {_text(r.fields.get("contact_id")) for r in records} - {""}
    crm = {_text(r.fields.get("crm_id")) for r in records} - {""}
    known: set[str] = set()
    by_crm: dict[str, str] = {}
    if ids:
        known = set(conn.execute(select(_CONTACT.c.id).where(_CONTACT.c.id.in_(ids))).scalars())
    if crm:
        query = select(_CONTACT.c.crm_id, _CONTACT.c.id).where(_CONTACT.c.crm_id.in_(crm))
        by_crm = {row[0]: row[1] for row in conn.execute(query)}
    return known, by_crm


def _plan(
    record_: IncomingRecord,
    known: set[str],
    by_crm: Mapping[str, str],
    batch: _Batch,
    now: datetime,
) -> dict[str, Any] | None:
    """The row to insert for one record, or ``None`` when it is skipped (problems logged).

    Checked in this order, the first refusal skipping the message: its contact, its external
    id, its channel, direction and body, its time. The optional values come last: a bad one
    is dropped with a code and the message kept."""
    values = record_.fields
    source = dict(record_.source or {})
    given_id = _text(values.get("contact_id"))
    if given_id:
        source.setdefault("contact_id", given_id)
    contact_id = _contact_of(values, known, by_crm, batch, source)
    if contact_id is None:
        return None
    external_id = _external_id(values, batch, source)
    if external_id is None:
        return None
    if "incoming" in values or "outgoing" in values:
        values = _from_split(values, batch, source)
        if values is None:
            return None
    required = _required(values, batch, source, now)
    if required is None:
        return None
    return {
        "contact_id": contact_id,
        "external_id": external_id or None,
        **required,
        **_optional(values, batch, source),
    }


def _contact_of(
    values: Mapping[str, Any],
    known: set[str],
    by_crm: Mapping[str, str],
    batch: _Batch,
    source: Mapping[str, Any],
) -> str | None:
    """The hub contact a message belongs to, or ``None`` (logged) when none is found."""
    given_id = _text(values.get("contact_id"))
    crm_id = _text(values.get("crm_id"))
    # The hub id first; a CRM id when the row has no hub id, or one from another system (a
    # Mainstay export's mainstay_id is Mainstay's, not this hub's).
    contact_id = given_id if given_id in known else by_crm.get(crm_id, "") if crm_id else ""
    if contact_id:
        return contact_id
    if given_id or crm_id:
        what = " or ".join(n for n, v in (("hub id", given_id), ("CRM id", crm_id)) if v)
        message = f"no contact has this {what}; message skipped"
    else:
        message = "the message names no contact (contact_id or crm_id); message skipped"
    batch.problem(Code.UNKNOWN_CONTACT_ID, message, "crm_id" if crm_id else "contact_id", source)
    return None


def _external_id(values: Mapping[str, Any], batch: _Batch, source: Mapping[str, Any]) -> str | None:
    """The message's external id (``""`` for none), or ``None`` (logged) when too long."""
    external_id = _text(values.get("external_id"))
    if len(external_id) > MAX_EXTERNAL_ID:
        batch.problem(
            Code.VALUE_TOO_LONG,
            f"external_id is longer than {MAX_EXTERNAL_ID} characters; message skipped",
            "external_id",
            source,
        )
        return None
    return external_id


def _required(
    values: Mapping[str, Any], batch: _Batch, source: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    """``channel``, ``direction``, ``body`` and ``sent_at`` (``now`` when blank), or
    ``None`` (logged) at the first one missing or invalid."""
    row: dict[str, Any] = {}
    for name, allowed in (("channel", CHANNELS), ("direction", DIRECTIONS)):
        value = _text(values.get(name)).lower()
        if value not in allowed:
            batch.problem(
                Code.INVALID_VALUE,
                f"{name} must be one of {', '.join(allowed)}, not {value!r}; message skipped",
                name,
                source,
            )
            return None
        row[name] = value
    body = "" if values.get("body") is None else str(values["body"])
    if not body.strip():
        batch.problem(Code.INVALID_VALUE, "the message has no body; skipped", "body", source)
        return None
    if len(body) > MAX_BODY:
        batch.problem(
            Code.VALUE_TOO_LONG,
            f"the body is longer than {MAX_BODY} characters; message skipped",
            "body",
            source,
        )
        return None
    row["body"] = body
    sent = _text(values.get("sent_at"))
    try:
        row["sent_at"] = parse_sent_at(sent) if sent else now
    except ValueError:
        batch.problem(
            Code.INVALID_VALUE,
            f"sent_at {sent!r} is not an ISO 8601 time; message skipped",
            "sent_at",
            source,
        )
        return None
    return row


def _optional(
    values: Mapping[str, Any], batch: _Batch, source: Mapping[str, Any]
) -> dict[str, Any]:
    """The optional values (``None`` where blank); a bad one is dropped with a code."""
    row: dict[str, Any] = {}
    for name, limit in _LIMITS.items():
        value = _text(values.get(name))
        if len(value) > limit:
            batch.problem(
                Code.VALUE_TOO_LONG,
                f"{name} is longer than {limit} characters; value skipped, message kept",
                name,
                source,
            )
            value = ""
        row[name] = value or None
    kind = _text(values.get("message_type")).lower()
    if kind and kind not in MESSAGE_TYPES:
        batch.problem(
            Code.INVALID_VALUE,
            f"type must be one of {', '.join(MESSAGE_TYPES)}, not {kind!r}; "
            "value skipped, message kept",
            "message_type",
            source,
        )
        kind = ""
    row["message_type"] = kind or None
    return row


def _insert(conn: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows``; one whose external id the hub (or this batch) already has is left
    out (``ON CONFLICT DO NOTHING``, so two imports at once cannot both add it). Returns
    the new ids."""
    if not rows:
        return []
    statement = insert_ignore(_MESSAGE, conn.dialect.name).returning(_MESSAGE.c.id)
    return list(conn.execute(statement, rows).scalars())


def _from_split(
    values: Mapping[str, Any], batch: _Batch, source: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A conversations-export row (``incoming`` / ``outgoing`` cells) as direction and body;
    ``None`` (logged) when both cells or neither hold text."""
    incoming = "" if values.get("incoming") is None else str(values["incoming"])
    outgoing = "" if values.get("outgoing") is None else str(values["outgoing"])
    if bool(incoming.strip()) == bool(outgoing.strip()):
        batch.problem(
            Code.INVALID_VALUE,
            "exactly one of incoming and outgoing must hold the message; skipped",
            "incoming" if incoming.strip() else "body",
            source,
        )
        return None
    direction, body = ("incoming", incoming) if incoming.strip() else ("outgoing", outgoing)
    return {**values, "direction": direction, "body": body}


def _write(engine: Engine, records: Sequence[IncomingRecord], batch: _Batch) -> None:
    now = utcnow()
    with engine.begin() as conn:
        known, by_crm = _resolve(conn, records)
        for record_ in records:
            row = _plan(record_, known, by_crm, batch, now)
            if row is None:
                batch.report.skipped += 1
            else:
                batch.rows.append(row)
        added = _insert(conn, batch.rows)
        room = MAX_REPORTED - len(batch.report.ids)
        batch.report.ids.extend(added[: max(room, 0)])
        batch.log.write(conn)
    batch.report.added += len(added)
    batch.report.already_present += len(batch.rows) - len(added)
    batch.rows.clear()
    batch.log.emit()


def add_messages(
    engine: Engine,
    records: Iterable[IncomingRecord],
    *,
    batch_size: int = 1000,
    context: SyncContext | None = None,
    report: MessagesReport | None = None,
) -> MessagesReport:
    """Add messages given as records of field values (the names of :data:`HEADER_ALIASES`),
    committing every ``batch_size``; problems become sync-log rows."""
    context = context or SyncContext(INTEGRATION, "incoming", new_run_id())
    report = report or MessagesReport(context.run_id)
    pending: list[IncomingRecord] = []
    for record_ in records:
        pending.append(record_)
        if len(pending) >= batch_size:
            _write(engine, pending, _Batch(context, report))
            pending = []
    if pending:
        _write(engine, pending, _Batch(context, report))
    return report


def add_message(engine: Engine, **values: Any) -> MessagesReport:
    """Add one message (``contact_id`` or ``crm_id``, ``channel``, ``direction``, ``body``,
    optional ``campaign_id``, ``campaign_name``, ``message_type``, ``sent_at``)."""
    return add_messages(engine, [IncomingRecord(values, source={"source": "cli"})])


def map_message_header(header: Sequence[str]) -> Columns:
    """Each header cell's message field; an unknown or repeated column is
    :class:`~daemon.hub.csv_import.FileMalformed`."""
    columns = Columns([])
    seen: dict[str, int] = {}
    for position, raw in enumerate(header, start=1):
        key = header_key(raw)
        target = _ALIAS.get(key)
        if target is None and key in IGNORED_COLUMNS:
            columns.fields.append(None)
            continue
        if target is None:
            known = ", ".join(HEADER_ALIASES)
            raise FileMalformed(f"unknown column {raw.strip()!r} (column {position}); use {known}")
        if target in seen:
            raise FileMalformed(f"columns {seen[target]} and {position} both map to {target!r}")
        seen[target] = position
        columns.fields.append(target)
    if "channel" not in seen:
        raise FileMalformed("the header has no 'channel' column")
    split = "incoming" in seen or "outgoing" in seen
    if split and ("direction" in seen or "body" in seen):
        raise FileMalformed("use direction and body, or incoming and outgoing, not both")
    for needed in () if split else ("direction", "body"):
        if needed not in seen:
            raise FileMalformed(f"the header has no {needed!r} column")
    if "contact_id" not in seen and "crm_id" not in seen:
        raise FileMalformed("the header needs a contact_id (or mainstay_id) or a crm_id column")
    return columns


def import_messages(
    engine: Engine,
    path: Path,
    *,
    batch_size: int = 1000,
    delimiter: str = ",",
    instance: str | None = None,
) -> MessagesReport:
    """Import a CSV file of messages; a malformed file imports nothing (``file_error``)."""
    context = SyncContext(INTEGRATION, "incoming", new_run_id(), instance)
    report = MessagesReport(context.run_id)
    try:
        columns = map_message_header(read_header(path, delimiter))
    except FileMalformed as exc:
        report.file_error = str(exc)
    except OSError as exc:
        report.file_error = f"file cannot be read: {exc.strerror}"
    if report.file_error is not None:
        report.problem_count += 1
        report.problems.append(
            MessageProblem(str(Code.FILE_MALFORMED), report.file_error, None, {"file": path.name})
        )
        record(
            engine,
            context,
            Code.FILE_MALFORMED,
            f"file not imported: {report.file_error}",
            file=path.name,
        )
        return report

    def bad_row(row_number: int, message: str) -> None:
        # A ragged row: logged with the file and row at once, never dropped silently.
        source = {"file": path.name, "row": row_number}
        report.skipped += 1
        report.problem_count += 1
        if len(report.problems) < MAX_REPORTED:
            report.problems.append(MessageProblem(str(Code.FILE_MALFORMED), message, None, source))
        record(engine, context, Code.FILE_MALFORMED, message + "; row skipped", **source)

    records = iter_records(path, columns, delimiter, bad_row)
    return add_messages(engine, records, batch_size=batch_size, context=context, report=report)


def list_messages(
    engine: Engine,
    *,
    contact_id: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Messages in id order (newest last), optionally of one contact, after ``after_id``."""
    query = select(_MESSAGE).where(_MESSAGE.c.id > after_id).order_by(_MESSAGE.c.id).limit(limit)
    if contact_id:
        query = query.where(_MESSAGE.c.contact_id == contact_id)
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
