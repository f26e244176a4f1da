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
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, or_, select, update

from daemon.hub.database import insert_ignore
from daemon.hub.store import SyncLease

_LEASE = SyncLease.__table__
DEFAULT_TTL = timedelta(minutes=5)


class LeaseLost(RuntimeError):
    """Another node holds (or took over) the lease."""


class LeaseBusy(RuntimeError):
    """The lease is held by another run."""


def owner_id() -> str:
    """A name for this process that is unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _died_here(owner: str | None) -> bool:
    """Whether ``owner`` (as :func:`owner_id` makes it) names a process of this host that no
    longer exists: a daemon killed before it could give its lease back."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's process, say)
    return False


def acquire(
    engine: Engine, name: str, owner: str, now: datetime, ttl: timedelta = DEFAULT_TTL
) -> bool:
    """Take the lease if it is free, expired, already ours, or held by a process of this
    host that died (a restart after a crash need not wait for the lease to expire)."""
    with engine.begin() as conn:
        conn.execute(insert_ignore(_LEASE, conn.dialect.name), [{"name": name}])
        free = [_LEASE.c.owner.is_(None), _LEASE.c.owner == owner, _LEASE.c.expires_at < now]
        current = conn.execute(select(_LEASE.c.owner).where(_LEASE.c.name == name)).scalar()
        if current is not None and current != owner and _died_here(current):
            # Compared by value in the UPDATE: if anyone took it meanwhile, nothing matches.
            free.append(_LEASE.c.owner == current)
        result = conn.execute(
            update(_LEASE)
            .where(_LEASE.c.name == name, or_(*free))
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


def holders(
    conn: Connection, names: Iterable[str], now: datetime
) -> dict[str, tuple[str, datetime]]:
    """Who holds each of the named leases now: name -> (owner, expires_at). Expired and free
    leases are left out."""
    wanted = list(set(names))
    if not wanted:
        return {}
    query = select(_LEASE).where(
        _LEASE.c.name.in_(wanted), _LEASE.c.owner.is_not(None), _LEASE.c.expires_at >= now
    )
    return {r["name"]: (r["owner"], r["expires_at"]) for r in conn.execute(query).mappings()}
