"""One push cycle: the outbox through the outgoing rules to the platform.

Rows are claimed in id order with a moving lower bound, so a cycle ends even while the hub
keeps writing. Values are read at push time and compared with the link's last exchanged
values, so a value that came from the platform is never sent back (echo suppression), and an
empty hub value is never sent at all.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from threading import Event
from typing import Any

from sqlalchemy import Connection, func, select, update

from daemon.engine import confirm
from daemon.engine.context import CycleContext
from daemon.engine.pull import ingest_found, match_keys
from daemon.foundation.clock import Cancelled
from daemon.foundation.dictionary import Code
from daemon.hub import lease, links, outbox
from daemon.hub.fields import CUSTOM_PREFIX, DEFAULT_FIELDS, current_value
from daemon.hub.store import Contact, CustomField, CustomValue, utcnow
from daemon.hub.synclog import SyncLogBuffer
from daemon.kit.connector import PushItem, PushResult, PushStatus, RemoteField

_CONTACT = Contact.__table__
_CUSTOM_FIELD = CustomField.__table__
_CUSTOM_VALUE = CustomValue.__table__


@dataclass(slots=True)
class PushPlan:
    """What one outbox row turned into: an item to send, or the reason it was not sent."""

    row: dict[str, Any]
    item: PushItem | None = None
    sent: dict[str, Any] = field(default_factory=dict)  # hub field -> canonical value
    link: links.LinkRow | None = None
    skip: str | None = None  # why nothing is sent
    linked: bool = False  # linked by the lookup to a record the platform already held
    error: tuple[Code, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"contact_id": self.row["contact_id"]}
        if self.item is not None:
            out["action"] = "update" if self.item.remote_id else "create"
            out["remote_id"] = self.item.remote_id
            out["fields"] = dict(self.item.fields)
        else:
            out["action"] = "link" if self.linked else "skip"
            out["reason"] = self.skip or (self.error[1] if self.error else "")
        return out


def push_cycle(ctx: CycleContext, *, cancel: Event | None = None) -> Counter:
    """Push every due outbox row of the instance's connection.

    The claiming, planning and recording stay on this thread, in claim order; only the
    connector's ``push`` calls run in a pool, up to ``push_concurrency`` batches at a time
    when the connector declares ``concurrent_push``. No contact is ever in two batches in
    flight: a row is claimed once per cycle (the lower bound moves past it) and a hub write
    meanwhile coalesces into the same row, which ``outbox.done`` then leaves for next cycle.
    """
    counts: Counter[str] = Counter()
    width = ctx.instance.config.push_concurrency
    if not ctx.connector.capabilities.concurrent_push or ctx.dry_run:
        width = 1
    pool = ThreadPoolExecutor(width, thread_name_prefix="push") if width > 1 else None
    in_flight: deque[tuple[list[PushPlan], Future[list[PushResult]]]] = deque()
    try:
        for plans, items in _planned_batches(ctx, counts, cancel):
            if pool is None:
                _record(ctx, plans, _send(ctx, items), counts)
                continue
            in_flight.append((plans, pool.submit(_send, ctx, items)))
            if len(in_flight) >= width:
                plans, future = in_flight.popleft()
                _record(ctx, plans, future.result(), counts)
        while in_flight:
            plans, future = in_flight.popleft()
            _record(ctx, plans, future.result(), counts)
    except BaseException:
        # Batches that did get through are recorded (their rows done, their links saved);
        # the failed and unsent ones stay pending for the next cycle. Then the first error
        # stops the cycle, as it would with one batch at a time.
        for plans, future in in_flight:
            try:
                results = future.result()
            except BaseException:
                continue
            _record(ctx, plans, results, counts)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if ctx.connector.capabilities.confirms_later and not ctx.dry_run:
        confirm.expire_overdue(ctx, counts)
    return counts


def _send(ctx: CycleContext, items: list[PushItem]) -> list[PushResult]:
    return ctx.connector.push(items) if items else []


def _planned_batches(
    ctx: CycleContext, counts: Counter, cancel: Event | None
) -> Iterator[tuple[list[PushPlan], list[PushItem]]]:
    """Claim and plan the outbox batch by batch; yield each batch's plans and items."""
    connection = ctx.instance.connection
    catalogue = _catalogue(ctx)
    after_id = 0
    # The preview of a first sync plans, after the outbox, the contacts the push's seed
    # would queue: those with no link that the previewed pull did not link either.
    seen = set(ctx.preview_exclude or ())
    seeding, after_contact = False, ""
    size = ctx.instance.config.push_batch_size
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        now = utcnow()
        with ctx.db.begin() as conn:
            lease.renew(conn, connection, ctx.owner, now)
            rows = [] if seeding else outbox.claim(conn, connection, now, size, after_id=after_id)
            if not rows and ctx.preview_exclude is not None:
                seeding = True
                rows = outbox.unlinked_rows(conn, connection, seen, size, after_contact)
            if not rows:
                return
            if seeding:
                after_contact = rows[-1]["contact_id"]
            else:
                after_id = rows[-1]["id"]
                if ctx.preview_exclude:
                    # The previewed pull links these: their push is that link's first
                    # exchange, not the create an unlinked row would plan.
                    rows = [r for r in rows if r["contact_id"] not in ctx.preview_exclude]
                seen.update(r["contact_id"] for r in rows)
                if not rows:
                    continue
            plans = _plan(conn, ctx, rows, catalogue)
        plans = _link_existing(ctx, plans, catalogue, counts)
        plans = _read_before_write(ctx, plans, catalogue, counts)
        counts["read"] += len(rows)
        if ctx.on_plan is not None:
            for plan in plans:
                ctx.on_plan(plan)
        if ctx.dry_run:
            counts["would_send"] += sum(1 for p in plans if p.item is not None)
            continue
        yield plans, [p.item for p in plans if p.item is not None]


def _link_existing(
    ctx: CycleContext, plans: list[PushPlan], catalogue: Mapping[str, RemoteField], counts: Counter
) -> list[PushPlan]:
    """Before anything is created, ask the platform which of the batch's unlinked contacts it
    already holds (``lookup``, by its key such as an email) and link those through the
    incoming matching rules, as a pull would have; they are then planned as updates of the
    values the first-exchange policy gave the hub. A contact whose key the platform holds
    on a record that did not link to it (an ambiguous match) is not created either: that
    would duplicate the person or overwrite another's record."""
    creates = [p for p in plans if p.item is not None and p.item.remote_id is None]
    if not creates or not ctx.connector.capabilities.looks_up:
        return plans
    found = ctx.connector.lookup([p.item for p in creates if p.item is not None])
    if not found:
        return plans
    planned = ingest_found(ctx, found)
    keys = match_keys(ctx)
    linked = {p.contact_id for p in planned if p.matched is not None and p.contact_id}
    held = {f.value for p in planned for f in p.fields if f.field in keys and f.value is not None}
    replan: list[dict[str, Any]] = []
    for plan in creates:
        contact_id = plan.row["contact_id"]
        if contact_id in linked:
            counts["linked"] += 1
            replan.append(plan.row)
            plan.item, plan.linked = None, True
            plan.skip = "linked to the record the platform already holds"
        elif any(v in held for k, v in plan.sent.items() if k in keys):
            # Parked until the contact changes: staff decide which contact the record is.
            plan.item = None
            plan.error = (
                Code.AMBIGUOUS_MATCH,
                "the platform holds a record with this contact's match key that matches "
                "other contacts too; not created",
            )
    if not replan or ctx.dry_run:
        return plans  # a dry run kept no link: the plan says "link", not what it sends
    with ctx.db.begin() as conn:
        again = {p.row["contact_id"]: p for p in _plan(conn, ctx, replan, catalogue)}
    return [again.get(p.row["contact_id"], p) if p.linked else p for p in plans]


def _read_before_write(
    ctx: CycleContext, plans: list[PushPlan], catalogue: Mapping[str, RemoteField], counts: Counter
) -> list[PushPlan]:
    """Two-way truth whatever the order of cycles: before updating linked records, read them
    (``read``) and run the ones changed on the platform since the last exchange through the
    incoming rules, as the next pull would. The conflict policy then settles each field both
    sides changed (a ``sync-conflict`` row, as on a pull): a platform value that wins is
    written to the hub and not overwritten; a hub value that wins is sent. The batch is then
    planned again from the hub and the updated links."""
    updates = [p for p in plans if p.item is not None and p.item.remote_id and p.link]
    if not updates or not ctx.connector.capabilities.reads_before_write:
        return plans
    by_remote = {p.link.remote_id: p for p in updates if p.link is not None}
    records = ctx.connector.read(list(by_remote))
    counts["read_before_write"] += len(records)
    # Every record read goes through the rules: one unchanged since the last exchange plans
    # as unchanged (rule 10) and writes nothing, so no modification time needs trusting.
    changed = [r for r in records if r.remote_id in by_remote]
    if not changed:
        return plans
    ingest_found(ctx, changed)
    if ctx.dry_run:
        return plans
    rows = [by_remote[r.remote_id].row for r in changed]
    with ctx.db.begin() as conn:
        again = {p.row["contact_id"]: p for p in _plan(conn, ctx, rows, catalogue)}
    return [again.get(p.row["contact_id"], p) for p in plans]


def _catalogue(ctx: CycleContext) -> dict[str, RemoteField]:
    return {f.name: f for f in ctx.connector.describe()}


def _plan(
    conn: Connection,
    ctx: CycleContext,
    rows: list[dict[str, Any]],
    catalogue: Mapping[str, RemoteField],
) -> list[PushPlan]:
    contact_ids = [r["contact_id"] for r in rows]
    contacts = {
        r["id"]: dict(r)
        for r in conn.execute(select(_CONTACT).where(_CONTACT.c.id.in_(contact_ids))).mappings()
    }
    custom: dict[str, dict[str, str]] = {}
    query = (
        select(_CUSTOM_VALUE.c.contact_id, _CUSTOM_FIELD.c.name, _CUSTOM_VALUE.c.value)
        .join(_CUSTOM_FIELD, _CUSTOM_FIELD.c.id == _CUSTOM_VALUE.c.field_id)
        .where(_CUSTOM_VALUE.c.contact_id.in_(contact_ids))
    )
    for cid, name, value in conn.execute(query):
        custom.setdefault(cid, {})[name] = value
    known = links.by_contact_ids(conn, ctx.instance.connection, contact_ids)
    required = [
        hub
        for hub in ctx.mapper.outgoing_hub_fields
        if (remote := _remote_of(ctx, hub)) and catalogue.get(remote, _NO_FIELD).required
    ]
    unique = [
        hub
        for hub in ctx.mapper.outgoing_hub_fields
        if (remote := _remote_of(ctx, hub))
        and catalogue.get(remote, _NO_FIELD).unique
        and hub in DEFAULT_FIELDS
    ]
    plans = []
    for row in rows:
        plan = PushPlan(row, link=known.get(row["contact_id"]))
        contact = contacts.get(row["contact_id"])
        if contact is None:
            plan.skip = "contact no longer exists"
        elif contact["test_user"]:
            plan.skip = "test user"  # outgoing rule 1
        elif plan.link is not None and plan.link.state == links.DELETED:
            plan.skip = "deleted on the platform (tombstone)"  # outgoing rule 7
        else:
            _fill(conn, ctx, plan, contact, custom.get(contact["id"], {}), required, unique)
        plans.append(plan)
    return plans


class _NoField:
    required = False
    unique = False


_NO_FIELD: Any = _NoField()


def _remote_of(ctx: CycleContext, hub: str) -> str | None:
    for rule in ctx.mapper.outgoing:
        if rule.field.hub == hub:
            return rule.field.remote
    return None


def _hub_values(contact: Mapping[str, Any], custom: Mapping[str, str], names: list[str]) -> dict:
    values: dict[str, Any] = {}
    for name in names:
        if name.startswith(CUSTOM_PREFIX):
            value = custom.get(name[len(CUSTOM_PREFIX) :])
        elif name in DEFAULT_FIELDS:
            value = current_value(contact, name)
        else:
            value = contact.get(name)
        if isinstance(value, datetime):
            value = value.isoformat()
        if value is not None and value != "":
            values[name] = value  # outgoing rule 2: an empty hub value is never sent
    return values


def _fill(
    conn: Connection,
    ctx: CycleContext,
    plan: PushPlan,
    contact: Mapping[str, Any],
    custom: Mapping[str, str],
    required: list[str],
    unique: list[str],
) -> None:
    values = _hub_values(contact, custom, ctx.mapper.outgoing_hub_fields)
    link = plan.link
    if link is not None:
        # Echo suppression: what the platform already has is not sent again.
        values = {k: v for k, v in values.items() if link.values.get(k, _MISSING) != v}
        if not values:
            plan.skip = "nothing changed since the last exchange"
            return
    else:
        if not (ctx.instance.config.create_remote and ctx.connector.capabilities.create):
            plan.skip = "not linked, and this instance does not create records"
            return
        missing = [name for name in required if name not in values]
        if missing:
            plan.error = (
                Code.MISSING_REMOTE_REQUIRED_FIELD,
                f"the platform needs {', '.join(missing)} to create a record",
            )
            return
        for name in unique:
            if name not in values:
                continue  # no value, nothing to collide on (a required one was caught above)
            shared = conn.execute(
                select(func.count())
                .select_from(_CONTACT)
                .where(
                    _CONTACT.c[name] == values[name],
                    _CONTACT.c.id != contact["id"],
                    _CONTACT.c.test_user.is_(False),
                )
            ).scalar()
            if shared:
                plan.error = (
                    Code.DUPLICATE_REMOTE_KEY,
                    f"{name} is shared with {shared} other contact(s)",
                )
                return
    remote_values, problems = ctx.mapper.to_remote(values)
    if problems:
        values = {k: v for k, v in values.items() if k not in {p.field for p in problems}}
        plan.error = (problems[0].code, problems[0].message)
    if not remote_values:
        plan.skip = plan.skip or "nothing to send"
        return
    plan.sent = values
    plan.item = PushItem(contact["id"], link.remote_id if link else None, remote_values)


_MISSING = object()


@dataclass
class _Recorded:
    """What recording one batch's answers collects inside its transaction."""

    conn: Connection
    buffer: SyncLogBuffer
    now: datetime
    counts: Counter
    finished: list[dict[str, Any]] = field(default_factory=list)  # outbox rows done with
    new_links: list[links.LinkRow] = field(default_factory=list)


def _record(
    ctx: CycleContext, plans: list[PushPlan], results: list[PushResult], counts: Counter
) -> None:
    """Write one batch's outcome in one transaction, fenced by the connection's lease.

    Every plan ends as exactly one of: done (sent and linked, or nothing to send), retried
    later, or parked; each refusal is one sync-log row. The rows reach the log only once the
    transaction committed."""
    by_contact = {r.contact_id: r for r in results}
    buffer = SyncLogBuffer(ctx.sync_context)
    now = utcnow()
    with ctx.db.begin() as conn:
        lease.renew(conn, ctx.instance.connection, ctx.owner, now)
        out = _Recorded(conn, buffer, now, counts)
        for plan in plans:
            if plan.item is None:
                _record_unsent(ctx, out, plan)
                continue
            contact_id = plan.row["contact_id"]
            if plan.error is not None:  # a field left out; the rest was sent
                buffer.add(plan.error[0], plan.error[1], contact_id=contact_id)
            result = by_contact.get(contact_id) or PushResult(
                contact_id, PushStatus.TRANSIENT, message="the connector gave no answer"
            )
            _record_answer(ctx, out, plan, plan.item, result)
        _save_links(ctx, out, plans)
        outbox.done(conn, out.finished)
        buffer.write(conn)
    buffer.emit()


def _record_unsent(ctx: CycleContext, out: _Recorded, plan: PushPlan) -> None:
    """A plan with nothing sent: an error parks its row, otherwise it is done (skipped)."""
    if plan.error is None:
        out.finished.append(plan.row)
        out.counts["skipped"] += 1
        return
    code, message = plan.error
    out.buffer.add(code, message, contact_id=plan.row["contact_id"])
    # Waits for the data to change: a hub write re-arms the row.
    outbox.failed(
        out.conn, plan.row, message, out.now, ctx.instance.config.max_attempts, park_now=True
    )
    out.counts["failed"] += 1


def _record_answer(
    ctx: CycleContext, out: _Recorded, plan: PushPlan, item: PushItem, result: PushResult
) -> None:
    """The platform's answer to one sent item: link an accepted record, else a failure."""
    contact_id = plan.row["contact_id"]
    if result.status in (PushStatus.OK, PushStatus.PENDING):
        remote_id = result.remote_id or item.remote_id or result.handle
        if remote_id is not None:
            _record_link(ctx, out, plan, item, result, remote_id)
            return
        result = PushResult(
            contact_id, PushStatus.TRANSIENT, message="the connector returned no record id"
        )
    message = result.message or str(result.status)
    parked = outbox.failed(out.conn, plan.row, message, out.now, ctx.instance.config.max_attempts)
    if result.status is PushStatus.REJECTED or parked:
        out.buffer.add(
            result.code or Code.REMOTE_REJECTED,
            f"{message}{' (parked)' if parked else ''}",
            contact_id=contact_id,
            remote_id=item.remote_id,
        )
    out.counts["failed"] += 1


def _record_link(
    ctx: CycleContext,
    out: _Recorded,
    plan: PushPlan,
    item: PushItem,
    result: PushResult,
    remote_id: str,
) -> None:
    """An accepted record: its link (active, or pending until confirmed) holds the values
    now exchanged, and the row is done."""
    contact_id = plan.row["contact_id"]
    values = dict(plan.link.values) if plan.link else {}
    values.update(plan.sent)
    state = links.ACTIVE if result.status is PushStatus.OK else links.PENDING
    out.new_links.append(
        links.LinkRow(
            ctx.instance.connection,
            remote_id,
            contact_id,
            state,
            values,
            plan.link.remote_modified_at if plan.link else None,
        )
    )
    out.finished.append(plan.row)
    if item.remote_id is not None:
        out.counts["updated"] += 1
    else:
        # An upsert that found the record the platform already held linked it; nothing new.
        out.counts["linked" if result.existed else "created"] += 1
    if ctx.instance.config.owns_crm_id:
        _adopt_crm_id(out.conn, contact_id, remote_id, out.buffer)


def _save_links(ctx: CycleContext, out: _Recorded, plans: list[PushPlan]) -> None:
    """Save the batch's links. A platform may answer with another record id than the one
    updated (HubSpot after a merge gives the survivor's): the contact's link moves to it."""
    known_links = {p.row["contact_id"]: p.link for p in plans if p.link is not None}
    moved = [
        link.contact_id
        for link in out.new_links
        if (old := known_links.get(link.contact_id)) is not None and old.remote_id != link.remote_id
    ]
    links.drop_contact_links(out.conn, ctx.instance.connection, moved)
    links.save(out.conn, out.new_links, out.now)


def _adopt_crm_id(conn: Connection, contact_id: str, remote_id: str, buffer: SyncLogBuffer) -> None:
    # This connection's record id is the hub's CRM id: write it back on first link.
    taken = conn.execute(
        select(_CONTACT.c.id).where(_CONTACT.c.crm_id == remote_id, _CONTACT.c.id != contact_id)
    ).first()
    if taken:
        buffer.add(
            Code.DUPLICATE_CRM_ID,
            "another contact has this record id as CRM id",
            contact_id=contact_id,
            remote_id=remote_id,
        )
        return
    conn.execute(
        update(_CONTACT)
        .where(_CONTACT.c.id == contact_id, _CONTACT.c.crm_id.is_(None))
        .values(crm_id=remote_id)
    )
