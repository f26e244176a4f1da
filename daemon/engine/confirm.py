"""Writes a platform confirms later: pending links, their confirmation, and their expiry.

Some platforms accept a write now and apply it later (Slate imports an uploaded file within
minutes to an hour). Their connectors answer :attr:`~daemon.kit.connector.PushStatus.PENDING`
with a handle, and the push leaves a *pending* link: keyed by the real remote id for an
update, by the handle for a record not created yet. A later pull settles it:

- **A new record.** The platform's record comes back carrying the hub id (the instance maps
  its hub-id export onto ``id``). The pending link of that contact, still keyed by the handle,
  is replaced by the pull's link to the real remote id, and the values pushed count as the
  last exchanged ones, so the pull does not take them for a remote change.
- **An update.** The record is confirmed once it changed on the platform after the push
  (its modification time is later than the pending link's) or already holds every value the
  link expects. Until then it is a stale read: the fields whose values differ from the
  pushed ones are left out of the pull (applying them would undo the hub's newer change),
  and the link stays pending.
- **Too late.** A pending link older than the instance's ``confirm_within_seconds`` becomes
  ``unconfirmed``, with a ``remote-unconfirmed`` sync-log row. It no longer shields stale
  reads; a later pull that sees the record still confirms it, and the next hub change to the
  contact is pushed again.

``contactsync status`` counts pending and unconfirmed links per connection and shows when
the oldest pending write was sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, select, update

from daemon.config.instances import Direction, Instance
from daemon.engine.context import CycleContext
from daemon.engine.mapping import MappingError
from daemon.foundation.dictionary import Code
from daemon.hub import lease, links
from daemon.hub.fields import HUB_ID, Action, Schema, is_blank, plan_field
from daemon.hub.incoming import IncomingRecord
from daemon.hub.store import Link, utcnow
from daemon.hub.synclog import SyncContext, SyncLogBuffer
from daemon.kit.connector import Connector

_LINK = Link.__table__
WAITING = (links.PENDING, links.UNCONFIRMED)


@dataclass(slots=True)
class Settled:
    """What :func:`attach` found for a page: the pending links each record settles
    (``previous`` by remote id, for the pull to carry their values over), the remote ids
    whose links stay pending, and how many were confirmed."""

    previous: dict[str, links.LinkRow] = field(default_factory=dict)
    still_pending: set[str] = field(default_factory=set)
    confirmed: int = 0
    decided: bool = False  # a retried batch reuses the decisions: its records were changed

    def drop_handles(self, conn: Connection, connection: str) -> None:
        """Delete the settled links keyed by a handle (every attempt of the batch): the
        pull saves each under the real remote id, and a contact has one link per
        connection."""
        links.drop_contact_links(conn, connection, [p.contact_id for p in self.previous.values()])


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def attach(
    conn: Connection,
    connection: str,
    records: Iterable[IncomingRecord],
    known: Mapping[str, links.LinkRow],
    schema: Schema,
) -> Settled:
    """Settle the pending links the records of one pull page touch (module docstring).

    ``known`` holds the links found by the records' remote ids. Records are changed in
    place: a new record is attached to its contact and the values pushed; a stale read of
    a pending update loses the fields that would undo the push. Runs inside the page's
    transaction, before the incoming rules, once per page (a retried batch keeps the
    answer: see :attr:`Settled.decided`); then :meth:`Settled.drop_handles`.
    """
    settled = Settled(decided=True)
    records = list(records)
    # New records: no link by remote id, but a hub id whose contact waits for one.
    by_hub_id: dict[str, IncomingRecord] = {}
    for record in records:
        hub_id = record.fields.get(HUB_ID)
        if record.remote_id and record.remote_id not in known and not is_blank(hub_id):
            by_hub_id.setdefault(str(hub_id).strip(), record)
    waiting = {
        contact_id: link
        for contact_id, link in links.by_contact_ids(conn, connection, by_hub_id).items()
        if link.state in WAITING
    }
    for contact_id, link in waiting.items():
        record = by_hub_id[contact_id]
        assert record.remote_id is not None
        record.linked_contact_id = contact_id
        record.last_exchanged = link.values
        settled.previous[record.remote_id] = link
        settled.confirmed += 1
    # Updates: a pending link found by the remote id itself.
    for record in records:
        link = known.get(record.remote_id or "")
        if link is None or link.state != links.PENDING:
            continue
        stale = _stale_fields(record, link, schema)
        if stale is None:
            settled.confirmed += 1
            continue
        for name in stale:
            record.fields.pop(name, None)
        settled.still_pending.add(link.remote_id)
    return settled


def _stale_fields(record: IncomingRecord, link: links.LinkRow, schema: Schema) -> list[str] | None:
    """``None`` when the record shows the pending write; else the fields it would undo."""
    pushed_at = _aware(link.updated_at)
    modified = _aware(record.modified_at)
    if modified is not None and pushed_at is not None and modified > pushed_at:
        return None  # changed on the platform after the push: the import has run
    stale = []
    for name, raw in record.fields.items():
        if name == HUB_ID or name not in link.values:
            continue
        plan = plan_field(name, raw, schema)
        expected = link.values[name]
        if plan.action is Action.SET and plan.value != expected:
            stale.append(name)
        elif plan.action is Action.SKIP and expected is not None:
            stale.append(name)  # blank there: the pushed value has not landed
    return stale or None


def expire(
    conn: Connection,
    connection: str,
    buffer: SyncLogBuffer,
    within: timedelta,
    now: datetime,
) -> list[links.LinkRow]:
    """Turn pending links older than ``within`` into ``unconfirmed`` ones, each with a
    ``remote-unconfirmed`` row in ``buffer`` (the caller writes it in this transaction and
    emits it after the commit). Returns the links that expired."""
    cutoff = now - within
    rows = conn.execute(
        select(_LINK).where(
            _LINK.c.connection == connection,
            _LINK.c.state == links.PENDING,
            _LINK.c.updated_at < cutoff,
        )
    ).mappings()
    expired = [links.from_row(r) for r in rows]
    if not expired:
        return []
    conn.execute(
        update(_LINK)
        .where(
            _LINK.c.connection == connection,
            _LINK.c.remote_id.in_([link.remote_id for link in expired]),
            _LINK.c.state == links.PENDING,
        )
        .values(state=links.UNCONFIRMED, updated_at=now)
    )
    hours = within.total_seconds() / 3600
    for link in expired:
        sent = _aware(link.updated_at)
        buffer.add(
            Code.REMOTE_UNCONFIRMED,
            f"the platform accepted this write at {sent:%Y-%m-%d %H:%M:%S} UTC but no pull "
            f"has seen it within {hours:g} h",
            contact_id=link.contact_id,
            remote_id=link.remote_id,
        )
    return expired


def expire_overdue(ctx: CycleContext, counts: Counter) -> None:
    """After a whole pull or push of the instance, its connection's writes still unseen past
    ``confirm_within_seconds`` become ``remote-unconfirmed``. The push runs it too, so a
    connection that no instance pulls still tells staff its writes went unconfirmed."""
    within = timedelta(seconds=ctx.instance.config.confirm_within_seconds)
    buffer = SyncLogBuffer(outgoing_context(ctx.sync_context))
    with ctx.db.begin() as conn:
        now = utcnow()
        lease.renew(conn, ctx.instance.connection, ctx.owner, now)
        expired = expire(conn, ctx.instance.connection, buffer, within, now)
        buffer.write(conn)
    buffer.emit()
    if expired:
        counts["unconfirmed"] += len(expired)


def oldest_pending(conn: Connection) -> dict[str, datetime]:
    """Per connection, when its oldest still-pending write was sent."""
    query = (
        select(_LINK.c.connection, func.min(_LINK.c.updated_at))
        .where(_LINK.c.state == links.PENDING)
        .group_by(_LINK.c.connection)
    )
    return {connection: _aware(when) for connection, when in conn.execute(query) if when}


def require_hub_id(db: Engine, instance: Instance, connector: Connector) -> None:
    """Refuse (``config-invalid``) to pull for a connector that confirms later unless the
    instance maps a remote field onto the hub id, when this instance pushes or its
    connection has writes waiting (another instance pushes on it, Mainstay-style): without
    it, a pushed record would come back unrecognised and be created in the hub again."""
    if not connector.capabilities.confirms_later:
        return
    if any(f.hub == HUB_ID for f in instance.mapped(Direction.INCOMING)):
        return
    if not instance.direction.pushes:
        with db.connect() as conn:
            waiting = conn.execute(
                select(func.count())
                .select_from(_LINK)
                .where(_LINK.c.connection == instance.connection, _LINK.c.state.in_(WAITING))
            ).scalar()
        if not waiting:
            return
    raise MappingError(
        f"{instance.name}: a {instance.config.type} instance must map the hub id export "
        f'incoming ([[fields]] hub = "{HUB_ID}", direction = "incoming") on a connection '
        "that pushes: pushed records are recognised by it when a pull sees them"
    )


def outgoing_context(context: SyncContext) -> SyncContext:
    """The sync-log context of an expiry found by a pull: the write was outgoing."""
    return SyncContext(context.integration, "outgoing", context.run_id, context.instance)


__all__ = [
    "Settled",
    "attach",
    "expire",
    "oldest_pending",
    "outgoing_context",
    "require_hub_id",
]
