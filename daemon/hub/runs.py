"""Run history and pull checkpoints.

A run is one cycle of one instance, and its kind is a :class:`CycleKind`: the value the
``sync_run.direction`` column stores, the scheduler's job suffix (``<instance>:pull``) and what
the observer hooks receive. It lives here, in the hub, because the hub stores it and every
layer above (engine, runtime, cli) and the hookspecs read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from daemon.hub.database import upsert
from daemon.hub.store import InstanceState, RunKey, SyncCursor, SyncRun

_RUN = SyncRun.__table__
_CURSOR = SyncCursor.__table__
_STATE = InstanceState.__table__
_RUN_KEY = RunKey.__table__


class CycleKind(StrEnum):
    """What one cycle of an instance does. A ``StrEnum``: ``CycleKind.PULL == "pull"``, so
    the values stored in ``sync_run.direction`` and plugins comparing strings keep working."""

    PULL = "pull"
    """Read the platform's changes into the hub."""
    PUSH = "push"
    """Send the hub's queued changes to the platform."""
    DELETES = "deletes"
    """Scan the platform for records deleted there (a pulling instance's deletion scan)."""
    EXPORT = "export"
    """Cut and upload an exporter's file of new messages."""


CONTACTS_STREAM = "contacts"
RUNNING = "running"  # the outcome of a run that has not finished (the column's default)


def start(engine: Engine, run_id: str, instance: str, direction: str, now: datetime) -> None:
    """Record that a run began."""
    with engine.begin() as conn:
        conn.execute(
            _RUN.insert().values(
                id=run_id, instance=instance, direction=direction, started_at=now, counts={}
            )
        )
        conn.execute(update(_STATE).where(_STATE.c.instance == instance).values(last_run_id=run_id))


def abandon(engine: Engine, instance: str, now: datetime) -> list[str]:
    """Mark the runs of ``instance`` still ``running`` as ``interrupted`` and forget the keys
    they remembered. Only the holder of the instance's connection lease may call this: no
    live run of the instance can exist then, so these died with their process."""
    with engine.begin() as conn:
        dead = (
            conn.execute(
                select(_RUN.c.id).where(_RUN.c.instance == instance, _RUN.c.outcome == RUNNING)
            )
            .scalars()
            .all()
        )
        if dead:
            conn.execute(
                update(_RUN)
                .where(_RUN.c.id.in_(dead))
                .values(
                    outcome="interrupted",
                    finished_at=now,
                    error="the process running it stopped before it finished",
                )
            )
            conn.execute(delete(_RUN_KEY).where(_RUN_KEY.c.run_id.in_(dead)))
    return list(dead)


def finish(
    engine: Engine,
    run_id: str,
    outcome: str,
    counts: Mapping[str, int],
    now: datetime,
    error: str | None = None,
) -> None:
    """Record how a run ended: ``ok``, ``failed`` or ``interrupted``."""
    with engine.begin() as conn:
        conn.execute(
            update(_RUN)
            .where(_RUN.c.id == run_id)
            .values(outcome=outcome, counts=dict(counts), finished_at=now, error=error)
        )


def get_cursor(conn: Connection, instance: str, stream: str = CONTACTS_STREAM) -> str | None:
    """The last committed checkpoint of a stream."""
    return conn.execute(
        select(_CURSOR.c.value).where(_CURSOR.c.instance == instance, _CURSOR.c.stream == stream)
    ).scalar()


def set_cursor(
    conn: Connection,
    instance: str,
    value: str | None,
    now: datetime,
    stream: str = CONTACTS_STREAM,
) -> None:
    """Checkpoint a stream inside the caller's (page) transaction."""
    conn.execute(
        upsert(_CURSOR, conn.dialect.name, ("instance", "stream"), ("value", "updated_at")),
        [{"instance": instance, "stream": stream, "value": value, "updated_at": now}],
    )


def recent(engine: Engine, instance: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs, newest first."""
    query = select(_RUN).order_by(_RUN.c.started_at.desc()).limit(limit)
    if instance:
        query = query.where(_RUN.c.instance == instance)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def reset_cursor(conn: Connection, instance: str, stream: str = CONTACTS_STREAM) -> bool:
    """Forget a stream's checkpoint, so the next pull reads everything; whether one existed."""
    result = conn.execute(
        delete(_CURSOR).where(_CURSOR.c.instance == instance, _CURSOR.c.stream == stream)
    )
    return result.rowcount > 0
