"""One run at a time per connection: a lease row in the hub.

A scheduled cycle, a manual ``contactsync sync`` and a second daemon on another host all take
the lease of the instance's connection before touching it. The lease expires, so a node that
dies hands its work over, and every page renews it inside the page's own transaction: a node
that lost its lease cannot commit a checkpoint (fencing). Being a row in the hub, it works the
same on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, or_, update

from daemon.database import insert_ignore
from daemon.store import SyncLease

_LEASE = SyncLease.__table__
DEFAULT_TTL = timedelta(minutes=5)


class LeaseLost(RuntimeError):
    """Another node holds (or took over) the lease."""


class LeaseBusy(RuntimeError):
    """The lease is held by another run."""


def owner_id() -> str:
    """A name for this process that is unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(
    engine: Engine, name: str, owner: str, now: datetime, ttl: timedelta = DEFAULT_TTL
) -> bool:
    """Take the lease if it is free, expired or already ours."""
    with engine.begin() as conn:
        conn.execute(insert_ignore(_LEASE, conn.dialect.name), [{"name": name}])
        result = conn.execute(
            update(_LEASE)
            .where(
                _LEASE.c.name == name,
                or_(_LEASE.c.owner.is_(None), _LEASE.c.owner == owner, _LEASE.c.expires_at < now),
            )
            .values(owner=owner, expires_at=now + ttl)
        )
        return result.rowcount == 1


def renew(
    conn: Connection, name: str, owner: str, now: datetime, ttl: timedelta = DEFAULT_TTL
) -> None:
    """Extend the lease inside the caller's transaction; raise :class:`LeaseLost` if it is no
    longer ours, which rolls the caller's page back."""
    result = conn.execute(
        update(_LEASE)
        .where(_LEASE.c.name == name, _LEASE.c.owner == owner)
        .values(expires_at=now + ttl)
    )
    if result.rowcount != 1:
        raise LeaseLost(f"{name}: the lease passed to another run")


def release(engine: Engine, name: str, owner: str) -> None:
    """Give the lease back."""
    with engine.begin() as conn:
        conn.execute(
            update(_LEASE)
            .where(_LEASE.c.name == name, _LEASE.c.owner == owner)
            .values(owner=None, expires_at=None)
        )
