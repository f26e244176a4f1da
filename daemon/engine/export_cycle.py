"""The export cycle: exactly-once message exports, the engine's side of every exporter
(design §4).

An *exporter* (:class:`daemon.kit.exporter.Exporter`) is a connector that sends the hub's
conversation messages one way, as files; the ``export`` plugin writes Mainstay's conversations
CSV over SFTP. The engine runs :func:`export_cycle` on the instance's ``schedule.export``.

How exactly-once holds:

1. A cycle first uploads every batch still ``pending`` from an earlier cycle (an upload that
   failed, a process killed mid-upload), under the name recorded for it and with the same
   messages, so the far side overwrites the file rather than receiving a second one.
2. Then it *cuts* new batches: the messages after the instance's watermark (a message id, kept
   in ``sync_cursor`` under the stream ``export``), up to ``max_rows`` of them that match the
   filter. The batch row (id range, file name, filter) and the new watermark commit in one
   transaction *before* the upload, fenced by the connection's lease.
3. The upload streams the batch's rows from the hub in id order, ``CHUNK`` at a time, so
   memory stays bounded whatever the batch size; only a finished upload marks the batch
   ``uploaded``.

A crash before step 2 commits leaves nothing recorded (the next cycle cuts the same batch
afresh); after it, the batch is pending and re-uploaded. Ids are the order of arrival in the
hub, so a historical import of old messages is exported after what was already sent. The
upper bound of a cycle is taken so that no message can commit later below it: SQLite has one
writer and the message table never reuses ids (AUTOINCREMENT); PostgreSQL briefly takes a
SHARE lock on the table, which waits for inserts in flight.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from threading import Event
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, text, update

from daemon.engine.context import CycleContext
from daemon.foundation.clock import Cancelled
from daemon.foundation.log import get_logger
from daemon.hub import lease, runs
from daemon.hub.database import READ_ONLY
from daemon.hub.store import Contact, ExportBatch, Message, utcnow
from daemon.kit.connector import ConnectorError
from daemon.kit.exporter import BatchInfo, Exporter, ExportRow, MessageFilter, UploadRejected

log = get_logger("contactsync.export")
STREAM = "export"
"""The ``sync_cursor`` stream holding an exporter's watermark (the last message id cut)."""
CHUNK = 1000
"""Messages read from the hub per query while a file is written."""
RENEW_EVERY = 30.0
"""Seconds between lease renewals while a file is written."""
PENDING = "pending"
UPLOADED = "uploaded"

_MESSAGE = Message.__table__
_CONTACT = Contact.__table__
_BATCH = ExportBatch.__table__

FaultHook = Callable[[str, "BatchInfo"], None]
FAULT_HOOK: FaultHook | None = None
"""Tests only: called with ``"recorded"`` after a batch is committed and before its upload,
and with ``"uploaded"`` after the upload and before the batch is marked; a crash test kills
the process there."""


# --- the cycle ------------------------------------------------------------------------------


def message_condition(message_filter: MessageFilter) -> Any:
    """``message_filter`` as an SQL condition on the message and contact tables."""
    m = _MESSAGE.c
    conditions = [_CONTACT.c.test_user.is_(False)]
    if message_filter.channels:
        conditions.append(m.channel.in_(message_filter.channels))
    if message_filter.directions:
        conditions.append(m.direction.in_(message_filter.directions))
    if message_filter.message_types:
        conditions.append(
            or_(m.direction != "outgoing", m.message_type.in_(message_filter.message_types))
        )
    if message_filter.since is not None:
        conditions.append(m.sent_at >= message_filter.since)
    return and_(*conditions)


@dataclass
class _Cycle:
    ctx: CycleContext
    exporter: Exporter
    cancel: Event | None
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def instance(self) -> str:
        return self.ctx.instance.name

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("export cancelled")

    def renew(self, conn: Connection) -> None:
        lease.renew(conn, self.ctx.instance.connection, self.ctx.owner, utcnow())


def export_cycle(ctx: CycleContext, *, cancel: Event | None = None) -> Counter[str]:
    """One export cycle of an exporter instance: re-upload pending batches, then cut and
    upload new ones until no message is left. Raises :class:`ConnectorError` when an upload
    fails (the engine logs it with its code and backs the instance off)."""
    exporter = ctx.connector
    if not isinstance(exporter, Exporter):
        raise TypeError(f"{type(exporter).__name__} is not an Exporter")
    cycle = _Cycle(ctx, exporter, cancel)
    if ctx.dry_run:  # what a real cycle would send, without recording or writing anything
        cycle.counts["pending"] = len(pending_batches(ctx.db, cycle.instance))
        cycle.counts["would_export"] = _count_new(cycle)
        return cycle.counts
    for batch in pending_batches(ctx.db, cycle.instance):
        cycle.check_cancel()
        _upload(cycle, batch)
        cycle.counts["retried"] += 1
    bound = safe_upper_bound(ctx)
    while True:
        cycle.check_cancel()
        batch = _cut(cycle, bound)
        if batch is None:
            break
        _upload(cycle, batch)
    return cycle.counts


def pending_batches(db: Any, instance: str) -> list[BatchInfo]:
    """The batches of ``instance`` recorded but not yet uploaded, oldest first."""
    query = (
        select(_BATCH)
        .where(_BATCH.c.instance == instance, _BATCH.c.state == PENDING)
        .order_by(_BATCH.c.id)
    )
    with db.connect().execution_options(**READ_ONLY) as conn:
        return [BatchInfo.from_row(row) for row in conn.execute(query).mappings()]


def safe_upper_bound(ctx: CycleContext) -> int:
    """The highest message id below which no message can still appear."""
    with ctx.db.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Waits for the transactions inserting messages now; later ones get higher ids.
            conn.execute(text("LOCK TABLE message IN SHARE MODE"))
        return int(conn.execute(select(func.max(_MESSAGE.c.id))).scalar() or 0)


def _filtered(message_filter: MessageFilter, after: int, last: int) -> Any:
    return (
        select(_MESSAGE.c.id)
        .select_from(_MESSAGE.join(_CONTACT, _CONTACT.c.id == _MESSAGE.c.contact_id))
        .where(_MESSAGE.c.id > after, _MESSAGE.c.id <= last, message_condition(message_filter))
    )


def _count_new(cycle: _Cycle) -> int:
    """Messages after the watermark that the filter would export now."""
    with cycle.ctx.db.connect().execution_options(**READ_ONLY) as conn:
        after = int(runs.get_cursor(conn, cycle.instance, STREAM) or 0)
        last = int(conn.execute(select(func.max(_MESSAGE.c.id))).scalar() or 0)
        query = _filtered(cycle.exporter.message_filter(), after, last).subquery()
        return int(conn.execute(select(func.count()).select_from(query)).scalar() or 0)


def _cut(cycle: _Cycle, bound: int) -> BatchInfo | None:
    """Record the next batch after the watermark, with the watermark moved past it, in one
    transaction; ``None`` when no message is left to export."""
    exporter = cycle.exporter
    message_filter = exporter.message_filter()
    limit = max(1, exporter.max_rows)
    with cycle.ctx.db.begin() as conn:
        cycle.renew(conn)
        now = utcnow()
        after = int(runs.get_cursor(conn, cycle.instance, STREAM) or 0)
        if after >= bound:
            return None
        ids = _filtered(message_filter, after, bound).order_by(_MESSAGE.c.id)
        # The id of the limit-th matching message ends a full batch; fewer than that left,
        # the batch runs to the bound (and the watermark passes the non-matching rest).
        last = conn.execute(ids.offset(limit - 1).limit(1)).scalar() or bound
        count = conn.execute(
            select(func.count()).select_from(_filtered(message_filter, after, last).subquery())
        ).scalar()
        runs.set_cursor(conn, cycle.instance, str(last), now, STREAM)
        if not count:
            return None
        file_name = _unique_name(conn, cycle, now)
        spec = {"filter": message_filter.as_spec(), "render": exporter.render_spec()}
        batch_id = conn.execute(
            insert(_BATCH)
            .values(
                instance=cycle.instance,
                file_name=file_name,
                after_message_id=after,
                last_message_id=last,
                rows=count,
                spec=spec,
                state=PENDING,
                attempts=0,
                created_at=now,
            )
            .returning(_BATCH.c.id)
        ).scalar_one()
    batch = BatchInfo(batch_id, cycle.instance, file_name, after, last, count, spec)
    log.info("export_batch_recorded", batch=batch_id, file=file_name, rows=count)
    cycle.counts["batches"] += 1
    _fault("recorded", batch)
    return batch


def _unique_name(conn: Connection, cycle: _Cycle, now: datetime) -> str:
    """The file name for a batch cut ``now``: a millisecond later while the name is taken
    (two batches cut within one millisecond must not share a file)."""
    created = now
    for _ in range(10_000):
        name = cycle.exporter.file_name(created)
        taken = conn.execute(
            select(_BATCH.c.id).where(
                _BATCH.c.instance == cycle.instance, _BATCH.c.file_name == name
            )
        ).first()
        if taken is None:
            return name
        created += timedelta(milliseconds=1)
    raise RuntimeError(f"{type(cycle.exporter).__name__}.file_name ignores its time")


def iter_rows(db: Any, batch: BatchInfo, chunk: int = CHUNK) -> Iterator[ExportRow]:
    """The batch's messages in id order, read ``chunk`` at a time (keyset paging): the
    memory of a 200k-row file is one chunk."""
    m, c = _MESSAGE.c, _CONTACT.c
    columns = (
        *(m.id, m.contact_id, c.crm_id, c.first_name, c.last_name, m.channel, m.direction),
        *(m.body, m.campaign_id, m.campaign_name, m.message_type, m.sent_at),
    )
    condition = message_condition(batch.message_filter)
    after = batch.after_id
    while True:
        query = (
            select(*columns)
            .select_from(_MESSAGE.join(_CONTACT, c.id == m.contact_id))
            .where(m.id > after, m.id <= batch.last_id, condition)
            .order_by(m.id)
            .limit(chunk)
        )
        with db.connect().execution_options(**READ_ONLY) as conn:
            rows = [ExportRow(*row) for row in conn.execute(query)]
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1].message_id


def _fenced(cycle: _Cycle, rows: Iterator[ExportRow]) -> Iterator[ExportRow]:
    """``rows``, renewing the connection's lease every :data:`RENEW_EVERY` seconds: a long
    upload keeps it, and one whose lease passed to another node stops (``LeaseLost``, the
    temporary file removed) instead of racing the new holder for the same name."""
    renewed = time.monotonic()
    for row in rows:
        if time.monotonic() - renewed >= RENEW_EVERY:
            cycle.check_cancel()
            with cycle.ctx.db.begin() as conn:
                cycle.renew(conn)
            renewed = time.monotonic()
        yield row


def _upload(cycle: _Cycle, batch: BatchInfo) -> None:
    db = cycle.ctx.db
    try:
        size = cycle.exporter.write_batch(batch, _fenced(cycle, iter_rows(db, batch)))
    except ConnectorError as exc:
        _failed(cycle, batch, exc.message)
        # Re-raised with the file named, so the cycle's sync-log row says which batch waits.
        error = type(exc)(
            f"upload of {batch.file_name} failed: {exc.message}; "
            "the batch is kept and uploaded again under the same name",
            retry_after=exc.retry_after,
        )
        raise error from exc
    except OSError as exc:
        _failed(cycle, batch, str(exc))
        raise UploadRejected(
            f"upload of {batch.file_name} refused: {exc}; "
            "the batch is kept and uploaded again under the same name"
        ) from exc
    _fault("uploaded", batch)
    with db.begin() as conn:
        cycle.renew(conn)
        conn.execute(
            update(_BATCH)
            .where(_BATCH.c.id == batch.id)
            .values(
                state=UPLOADED,
                bytes=size,
                uploaded_at=utcnow(),
                attempts=_BATCH.c.attempts + 1,
                last_error=None,
            )
        )
    cycle.counts["files"] += 1
    cycle.counts["messages"] += batch.rows
    log.info("export_batch_uploaded", batch=batch.id, file=batch.file_name, bytes=size)


def _failed(cycle: _Cycle, batch: BatchInfo, error: str) -> None:
    with cycle.ctx.db.begin() as conn:
        conn.execute(
            update(_BATCH)
            .where(_BATCH.c.id == batch.id)
            .values(attempts=_BATCH.c.attempts + 1, last_error=error[:2000])
        )


def _fault(point: str, batch: BatchInfo) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(point, batch)


def list_batches(db: Any, instance: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest batches, newest first (for the CLI)."""
    query = select(_BATCH).order_by(_BATCH.c.id.desc()).limit(limit)
    if instance:
        query = query.where(_BATCH.c.instance == instance)
    with db.connect().execution_options(**READ_ONLY) as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


__all__ = [
    "export_cycle",
    "iter_rows",
    "list_batches",
    "pending_batches",
]
