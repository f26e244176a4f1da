"""The sync log: every sync error is one SQL row and one JSON log line.

Rows are buffered while a batch is planned and written in the batch's own transaction, so a
rolled-back batch leaves no orphan rows; the JSON lines are emitted after the commit for the
same reason. Messages never carry personal data: the row references the contact by id.
Old rows are pruned (:func:`prune_sync_log`) after ``[log] retention_days``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select

from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger, redact
from daemon.hub.database import READ_ONLY
from daemon.hub.store import SyncLog, utcnow

_SYNC_LOG = SyncLog.__table__
log = get_logger("contactsync.sync")
PRUNE_CHUNK = 5000


def new_run_id() -> str:
    """A fresh id for one run (a cycle, an import)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class SyncContext:
    """Where errors come from: the integration, the direction, and the run."""

    integration: str
    direction: str
    run_id: str
    instance: str | None = None


@dataclass(slots=True)
class SyncLogBuffer:
    """Sync-log rows of one batch, waiting for its commit."""

    context: SyncContext
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        code: Code,
        message: str,
        *,
        contact_id: str | None = None,
        remote_id: str | None = None,
        **details: Any,
    ) -> None:
        """Queue one error."""
        self.rows.append(
            {
                "timestamp": utcnow(),
                "integration": self.context.integration,
                "direction": self.context.direction,
                "instance": self.context.instance,
                "run_id": self.context.run_id,
                "contact_id": contact_id,
                "remote_id": remote_id,
                "code": str(code),
                "message": redact(message),
                "details": redact({k: v for k, v in details.items() if v is not None}),
            }
        )

    def write(self, conn: Connection) -> None:
        """Insert the queued rows inside the caller's transaction."""
        if self.rows:
            conn.execute(insert(_SYNC_LOG), self.rows)

    def emit(self) -> None:
        """Log each row as a JSON line (after the commit), then forget them."""
        for row in self.rows:
            log.warning(
                "sync_error",
                code=row["code"],
                integration=row["integration"],
                direction=row["direction"],
                instance=row["instance"],
                run_id=row["run_id"],
                contact_id=row["contact_id"],
                remote_id=row["remote_id"],
                message=row["message"],
                **row["details"],
            )
        self.rows.clear()


def record(engine: Engine, context: SyncContext, code: Code, message: str, **kwargs: Any) -> None:
    """Write and emit one error at once, in its own transaction."""
    buffer = SyncLogBuffer(context)
    buffer.add(code, message, **kwargs)
    with engine.begin() as conn:
        buffer.write(conn)
    buffer.emit()


def prune_sync_log(
    engine: Engine,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    chunk_size: int = PRUNE_CHUNK,
) -> int:
    """Delete the sync-log rows older than ``older_than`` (before ``now - older_than``) and
    return how many went; with ``dry_run``, only count them.

    Rows go in chunks of ``chunk_size``, each in its own short transaction, so pruning a
    huge table never holds the write lock (SQLite's, or PostgreSQL's row locks) for long and
    the daemon's own writes interleave.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    try:
        cutoff = (now or utcnow()) - older_than
    except OverflowError:  # before the year 1: nothing is that old
        return 0
    old = _SYNC_LOG.c.timestamp < cutoff
    if dry_run:
        with engine.connect().execution_options(**READ_ONLY) as conn:
            return int(
                conn.execute(select(func.count()).select_from(_SYNC_LOG).where(old)).scalar() or 0
            )
    total = 0
    while True:
        chunk = select(_SYNC_LOG.c.id).where(old).limit(chunk_size).scalar_subquery()
        with engine.begin() as conn:
            deleted = conn.execute(delete(_SYNC_LOG).where(_SYNC_LOG.c.id.in_(chunk))).rowcount
        total += deleted
        if deleted < chunk_size:
            break
    if total:
        log.info("sync_log_pruned", rows=total, cutoff=cutoff.isoformat())
    return total
