"""What ``contactsync status`` shows of each instance: the hub's side of its sync state.

Everything comes from the hub's own tables (runs, instance state, leases, outbox, links,
cursors), so the CLI sees exactly what the daemon sees. A handful of grouped queries cover
every instance at once; the cost does not grow with the number of instances.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from daemon.config.instances import LoadResult
from daemon.config.settings import ConfigError
from daemon.engine import confirm
from daemon.foundation.dictionary import Code
from daemon.hub import lease, links, outbox, runs
from daemon.hub.database import READ_ONLY
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceRow, InstanceState, SyncCursor, SyncRun, utcnow

_RUN = SyncRun.__table__
_STATE = InstanceState.__table__
_CURSOR = SyncCursor.__table__
_INSTANCE = InstanceRow.__table__

# The kinds whose last run ``contactsync status`` shows; export is an exporter's one cycle.
DIRECTIONS = (CycleKind.PULL, CycleKind.PUSH, CycleKind.EXPORT)
OUTBOX_STATES = (outbox.PENDING, outbox.PARKED)
# Always listed; ``unconfirmed`` (pending past the window) shows when there are any.
LINK_STATES = (links.ACTIVE, links.PENDING, links.DELETED)

# An instance's state, first match wins: its file is broken; a secret it references is not
# available to this process (fine for the daemon, which has its own); it is switched off; it
# waits out a back-off; it is fine.
CONFIG_INVALID = str(Code.CONFIG_INVALID)
# Streams of the sync_cursor table besides the pull's: a change stream's checkpoint (its
# replay id, daemon.runtime.intake), and what status shows of webhooks and streams.
CHANGES_STREAM = "changes"
EVENTS_STREAM = "events"
SECRET_UNAVAILABLE = "secret-unavailable"


def status_rows(
    db: Engine, loaded: LoadResult, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Each instance as ``contactsync status --json`` and ``GET /api/v1/instances`` show it,
    by name: its config (as loaded now, or as last mirrored when its file is broken), its
    :func:`instance_status`, ``config_error``, ``not_in_this_shell`` and ``state``."""
    connections: dict[str, str | None] = {n: i.connection for n, i in loaded.instances.items()}
    connections |= dict.fromkeys(loaded.errors)
    hub = instance_status(db, connections, now)
    return [_status_row(name, loaded, hub[name]) for name in sorted(connections)]


def _status_row(name: str, loaded: LoadResult, hub: dict[str, Any]) -> dict[str, Any]:
    instance = loaded.instances.get(name)
    error = loaded.errors.get(name)
    # An invalid file shows the instance as last mirrored: what the daemon still runs.
    mirrored = hub.pop("mirrored") or {}
    config = {
        "type": instance.config.type if instance else mirrored.get("type"),
        "direction": str(instance.direction) if instance else mirrored.get("direction"),
        "enabled": instance.config.enabled if instance else mirrored.get("enabled"),
    }
    row = {
        "name": name,
        **config,
        **hub,
        "config_error": error_dict(error) if error else None,
        # Each secret this process could not have, and where it is meant to come from; never
        # a value. (A list: print_json masks any value under a key such as
        # "settings.api_key".)
        "not_in_this_shell": [
            {"setting": key, "reason": reason}
            for key, reason in (instance.unavailable_secrets if instance else {}).items()
        ],
    }
    return {**row, "state": _state(row)}


def error_dict(error: ConfigError) -> dict[str, str]:
    """A broken instance file as shown: the file, the key and the reason."""
    return {"file": error.path, "key": error.key, "reason": error.reason}


def _state(row: dict[str, Any]) -> str:
    if row["config_error"]:
        return CONFIG_INVALID
    if row["not_in_this_shell"]:
        return SECRET_UNAVAILABLE
    if row["enabled"] is False:
        return "disabled"
    if row["backoff_until"]:
        return "backing-off"
    return "ok"


def instance_status(
    db: Engine, connections: Mapping[str, str | None], now: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """The hub-side state of each named instance.

    ``connections`` maps an instance name to its connection, or to ``None`` when its file is
    invalid now; the connection it was last mirrored with is used then. Each value holds
    ``mirrored`` (the ``instance`` row or ``None``), ``last_runs`` (``pull``, ``push``, ``export``:
    run id, outcome, started/finished times, counts, error), ``backoff_until`` (only while
    it lasts), ``next_pull_at``, ``next_push_at``, ``next_deletes_at``, ``lease`` (owner and
    expiry while held), ``outbox`` and ``links`` (counts per state of the connection:
    ``pending`` writes wait for a pull to confirm them, ``unconfirmed`` ones waited past the
    window),
    ``pending_since`` (when the oldest pending write was sent) and ``cursor_updated_at``
    (the last checkpoint of the contacts stream), and ``events``: the last webhook or stream
    event received (``last_event_at``, ``source``) and whether a stream is connected
    (``stream_connected``), or ``None`` when the instance has had neither.
    """
    now = now or utcnow()
    names = list(connections)
    with db.connect().execution_options(**READ_ONLY) as conn:
        mirrored = _mirrored(conn, names)
        last = _last_runs(conn, names)
        states = _states(conn, names)
        cursors = _cursor_times(conn, names)
        events = _events(conn, names)
        resolved = {
            name: connection or (mirrored.get(name) or {}).get("connection")
            for name, connection in connections.items()
        }
        held = lease.holders(conn, [c for c in resolved.values() if c], now)
        queued = outbox.counts(conn)
        linked = links.counts(conn)
        waiting = confirm.oldest_pending(conn)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        connection = resolved[name]
        state = states.get(name, {})
        backoff = state.get("backoff_until")
        holder = held.get(connection) if connection else None
        out[name] = {
            "connection": connection,
            "mirrored": mirrored.get(name),
            "last_runs": {d: last.get((name, d)) for d in DIRECTIONS},
            "backoff_until": backoff if backoff is not None and backoff > now else None,
            "next_pull_at": state.get("next_pull_at"),
            "next_push_at": state.get("next_push_at"),
            "next_deletes_at": state.get("next_deletes_at"),
            "lease": {"owner": holder[0], "expires_at": holder[1]} if holder else None,
            "outbox": _counts(queued.get(connection or "", {}), OUTBOX_STATES),
            "links": _counts(linked.get(connection or "", {}), LINK_STATES),
            "pending_since": waiting.get(connection or ""),
            "cursor_updated_at": cursors.get(name),
            "events": events.get(name),
        }
    return out


def _counts(found: Mapping[str, int], states: tuple[str, ...]) -> dict[str, int]:
    # Every known state is present, zeros included, so scripts need no defaults.
    return {state: found.get(state, 0) for state in states} | dict(found)


def _mirrored(conn: Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    query = select(_INSTANCE).where(_INSTANCE.c.name.in_(names))
    return {
        r["name"]: {k: r[k] for k in ("type", "connection", "direction", "enabled")}
        for r in conn.execute(query).mappings()
    }


def _last_runs(conn: Connection, names: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    latest = (
        select(_RUN.c.instance, _RUN.c.direction, func.max(_RUN.c.started_at).label("started"))
        .where(_RUN.c.instance.in_(names))
        .group_by(_RUN.c.instance, _RUN.c.direction)
        .subquery()
    )
    query = select(_RUN).join(
        latest,
        and_(
            _RUN.c.instance == latest.c.instance,
            _RUN.c.direction == latest.c.direction,
            _RUN.c.started_at == latest.c.started,
        ),
    )
    return {
        (r["instance"], r["direction"]): {
            "run_id": r["id"],
            "outcome": r["outcome"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "counts": dict(r["counts"] or {}),
            "error": r["error"],
        }
        for r in conn.execute(query).mappings()
    }


def _states(conn: Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    query = select(
        _STATE.c.instance,
        _STATE.c.backoff_until,
        _STATE.c.next_pull_at,
        _STATE.c.next_push_at,
        _STATE.c.next_deletes_at,
    ).where(_STATE.c.instance.in_(names))
    return {r["instance"]: dict(r) for r in conn.execute(query).mappings()}


def _cursor_times(conn: Connection, names: list[str]) -> dict[str, datetime]:
    query = select(_CURSOR.c.instance, _CURSOR.c.updated_at).where(
        _CURSOR.c.instance.in_(names), _CURSOR.c.stream == runs.CONTACTS_STREAM
    )
    return {instance: updated for instance, updated in conn.execute(query)}


def _events(conn: Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    query = select(_CURSOR.c.instance, _CURSOR.c.value).where(
        _CURSOR.c.instance.in_(names), _CURSOR.c.stream == EVENTS_STREAM
    )
    out: dict[str, dict[str, Any]] = {}
    for instance, value in conn.execute(query):
        try:
            found = json.loads(value or "{}")
        except ValueError:  # written by this module only; a broken one shows as none
            continue
        if isinstance(found, dict):
            out[instance] = found
    return out
