"""One pull cycle: platform pages through the incoming rules into the hub.

Each page is one transaction: the hub writes, the outbox fan-out, the links, the sync-log rows
and the cursor checkpoint commit together, after the lease is renewed. A crash anywhere
re-reads at most the page in flight, and re-reading it changes nothing (links hold the last
exchanged values).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from threading import Event

from sqlalchemy import Connection

from daemon.engine import confirm
from daemon.engine.context import CycleContext
from daemon.foundation.clock import Cancelled
from daemon.foundation.dictionary import Code
from daemon.hub import lease, links, outbox, runs
from daemon.hub.fields import Action
from daemon.hub.incoming import HUB_WON_FIRST, IncomingRecord, Outcome, RecordPlan
from daemon.hub.ingest import Ingestor
from daemon.hub.store import utcnow
from daemon.kit.connector import Page, RemoteRecord


@dataclass(slots=True)
class _Tagged:
    """A page record with the link it had when the page was planned."""

    record: RemoteRecord
    link: links.LinkRow | None


def pull_cycle(ctx: CycleContext, *, full: bool = False, cancel: Event | None = None) -> Counter:
    """Pull every page since the instance's checkpoint (or everything with ``full``)."""
    counts: Counter[str] = Counter()
    confirm.require_hub_id(ctx.db, ctx.instance, ctx.connector)
    with ctx.db.connect() as conn:
        cursor = None if full else runs.get_cursor(conn, ctx.instance.name)
    ingestor = _ingestor(ctx, on_plan=ctx.on_plan)
    with ingestor:
        for page in ctx.connector.pull(cursor):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            _page(ctx, ingestor, page, counts)
    counts.update(ingestor.report.counts)
    counts["errors"] += ingestor.report.problem_count
    if not ctx.dry_run:
        confirm.expire_overdue(ctx, counts)
    return counts


def hinted_pull(
    ctx: CycleContext, remote_ids: Sequence[str], *, cancel: Event | None = None
) -> Counter:
    """A targeted pull: the records a webhook or a change stream named, read by id
    (:meth:`~daemon.kit.connector.Connector.read`) and run through the very page path of
    :func:`pull_cycle` (rules, conflict policy, merges, links, echo suppression), without
    moving the pull's checkpoint: the scheduled pull still reads everything since it.

    A record the read does not return (deleted, merged away) is left to the scheduled pull
    and the deletion scan, which know what became of it."""
    with ctx.db.connect() as conn:
        first = runs.get_cursor(conn, ctx.instance.name) is None
    if first:
        # The first pull has not finished: it links what both sides hold (first_sync) before
        # anything is read by id, and a hint must not let the push seed before that.
        counts = pull_cycle(ctx, cancel=cancel)
        counts["hinted"] += len(remote_ids)
        return counts
    counts: Counter[str] = Counter()
    confirm.require_hub_id(ctx.db, ctx.instance, ctx.connector)
    ids = list(dict.fromkeys(remote_ids))
    ingestor = _ingestor(ctx, on_plan=ctx.on_plan)
    with ingestor:
        for start in range(0, len(ids), HINTED_CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            records = ctx.connector.read(ids[start : start + HINTED_CHUNK])
            _page(ctx, ingestor, Page(records, None), counts, checkpoint=False)
    counts["hinted"] += len(ids)
    counts.update(ingestor.report.counts)
    counts["errors"] += ingestor.report.problem_count
    return counts


HINTED_CHUNK = 500
"""Ids read and committed per page of a targeted pull (a connector splits them into its
platform's batch size: five HubSpot batch reads)."""


def _ingestor(
    ctx: CycleContext,
    *,
    on_plan: Callable[[RecordPlan], None] | None,
    quiet: Collection[str] = (),
) -> Ingestor:
    """The incoming rules as this instance applies them (its connection, conflict policy,
    match keys, first-exchange policy and the plugins' hooks), for a pull or a push's reads."""
    return Ingestor(
        ctx.db,
        ctx.schema,
        ctx.sync_context,
        dry_run=ctx.dry_run,
        connection=ctx.instance.connection,
        conflict_policy=ctx.instance.config.conflict,
        resolve_conflict=ctx.resolve_conflict,
        match_record=ctx.match_record,
        match_on=match_keys(ctx),
        first_sync=ctx.instance.config.first_sync,
        on_plan=on_plan,
        quiet=quiet,
    )


def match_keys(ctx: CycleContext) -> tuple[str, ...]:
    """The instance's ``match_on``, or its connector's default."""
    configured = ctx.instance.config.match_on
    return tuple(configured if configured is not None else ctx.connector.match_on)


def ingest_found(ctx: CycleContext, records: list[RemoteRecord]) -> list[RecordPlan]:
    """Run records a push read (its lookup of unlinked contacts, its read before writing
    linked ones) through the incoming rules, as a pull would, without moving the pull's
    checkpoint. Unlinked ones that match one contact are linked (``first_sync`` settles
    their values); a linked one changed on the platform since the last exchange has the
    conflict policy applied, its winning values written to the hub and its link updated.
    In a dry run nothing is kept. Where the instance pulls, the pull has logged an
    ambiguous record already, so this does not log it again."""
    plans: list[RecordPlan] = []
    pulls = ctx.instance.direction.pulls
    quiet = [Code.AMBIGUOUS_MATCH] if pulls else []
    # An instance that only sends maps nothing in: its records are read for their match keys
    # alone, so the lookup still finds the contact (and links it, never creating a second
    # record on the platform). Their other fields never reach the hub.
    keys = () if pulls else match_keys(ctx)
    ingestor = _ingestor(ctx, on_plan=plans.append, quiet=quiet)
    with ingestor:
        _page(ctx, ingestor, Page(records, None), Counter(), checkpoint=False, keys=keys)
    return plans


def _page(
    ctx: CycleContext,
    ingestor: Ingestor,
    page: Page,
    counts: Counter,
    *,
    checkpoint: bool = True,
    keys: Collection[str] = (),
) -> None:
    connection = ctx.instance.connection
    counts["read"] += len(page.records)
    tagged: dict[str, _Tagged] = {}
    incoming: list[IncomingRecord] = []
    deleted: list[RemoteRecord] = []
    for record in page.records:
        if record.deleted:
            deleted.append(record)
            continue
        values, problems = ctx.mapper.to_hub(record, keys=keys)
        incoming.append(
            IncomingRecord(
                values,
                remote_id=record.remote_id,
                modified_at=record.modified_at,
                problems=problems,
                raw=record,
                source=record.source,
            )
        )
        tagged[record.remote_id] = _Tagged(record, None)

    merges = {r.remote_id: r.merged_from for r in page.records if r.merged_from}
    settled = confirm.Settled()
    # What the hooks count, for the attempt that commits only: a batch may be tried more
    # than once (a re-plan, or trials that set a poison record aside), each from ``before``.
    hooked: Counter[str] = Counter()

    def before(conn: Connection, records: list[IncomingRecord]) -> None:
        hooked.clear()
        now = utcnow()
        lease.renew(conn, connection, ctx.owner, now)
        if merges:
            hooked["merged"] += links.follow_merges(conn, connection, merges, now)
        known = links.by_remote_ids(conn, connection, [r.remote_id or "" for r in records])
        for item in records:
            link = known.get(item.remote_id or "")
            if link is not None:
                item.linked_contact_id = link.contact_id
                item.last_exchanged = link.values
                tagged[link.remote_id].link = link
        # Writes the platform confirms later: this page may be what confirms them.
        if not settled.decided:
            found = confirm.attach(conn, connection, records, known, ctx.schema)
            settled.previous, settled.still_pending = found.previous, found.still_pending
            settled.confirmed, settled.decided = found.confirmed, True
        for remote_id, link in settled.previous.items():
            tagged[remote_id].link = link
        settled.drop_handles(conn, connection)

    def after(conn: Connection, plans: list[RecordPlan]) -> None:
        now = utcnow()
        _save_links(conn, ctx, plans, tagged, now, settled.still_pending)
        if deleted:
            _tombstone(conn, ctx, deleted, now, hooked)
        if checkpoint:
            runs.set_cursor(conn, ctx.instance.name, page.cursor, now)

    if incoming or deleted:
        ingestor.batch(incoming, before=before, after=after)
        counts.update(hooked)
        if settled.confirmed:
            counts["confirmed"] += settled.confirmed
    elif not ctx.dry_run and checkpoint:
        with ctx.db.begin() as conn:
            lease.renew(conn, connection, ctx.owner, utcnow())
            runs.set_cursor(conn, ctx.instance.name, page.cursor, utcnow())


def _save_links(
    conn: Connection,
    ctx: CycleContext,
    plans: list[RecordPlan],
    tagged: dict[str, _Tagged],
    now: datetime,
    still_pending: Collection[str] = (),
) -> None:
    rows = []
    known = {remote_id for remote_id, tag in tagged.items() if tag.link is not None}
    for plan in plans:
        remote_id = plan.record.remote_id
        if plan.contact_id is None or remote_id is None or remote_id in still_pending:
            continue  # a pending write's link waits, untouched, for a read that shows it
        if plan.outcome not in (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED):
            continue
        previous = tagged[remote_id].link
        values = dict(previous.values) if previous else {}
        for field_plan in plan.fields:
            # Remember what the platform holds now, applied or not (a conflict the hub won
            # included): the next pull then sees only the platform's next change.
            if field_plan.action is Action.CLEAR:
                values[field_plan.field] = None
            elif field_plan.action is Action.SET or (
                field_plan.action is Action.SKIP and field_plan.value is not None
            ):
                values[field_plan.field] = field_plan.value
        link = links.LinkRow(
            ctx.instance.connection,
            remote_id,
            plan.contact_id,
            links.ACTIVE,
            values,
            tagged[remote_id].record.modified_at,
        )
        if link != previous:  # a re-read of an unchanged record writes nothing
            rows.append(link)
    links.save(conn, rows, now)
    hub_won = {
        plan.contact_id: {f.field for f in plan.fields if f.reason == HUB_WON_FIRST}
        for plan in plans
        if plan.contact_id is not None
    }
    new = [r for r in rows if r.remote_id not in known]
    _queue_first_exchange(conn, ctx, new, now, hub_won)


def _queue_first_exchange(
    conn: Connection,
    ctx: CycleContext,
    new: list[links.LinkRow],
    now: datetime,
    hub_won: dict[str, set[str]],
) -> None:
    """A record linked for the first time may lack what the hub has: a field blank on the
    platform, one mapped outgoing only (the hub id a platform keeps in an external-id
    field), or one where the first-exchange policy kept the hub's value. Queue such
    contacts for this connection's push, which sends only what differs from the link (the
    link holds the platform's values); a pulled change itself is never queued back
    (``exclude`` in hubwrite)."""
    outgoing = ctx.mapper.outgoing_hub_fields
    if ctx.dry_run or not new or not outgoing:
        return
    missing = {
        link.contact_id: [
            f for f in outgoing if f not in link.values or f in hub_won.get(link.contact_id, ())
        ]
        for link in new
    }
    due = {contact_id: fields for contact_id, fields in missing.items() if fields}
    outbox.fan_out(conn, due, ctx.instance.name, now, only=ctx.instance.connection)


def _tombstone(
    conn: Connection, ctx: CycleContext, deleted: list[RemoteRecord], now: datetime, counts: Counter
) -> None:
    known = links.by_remote_ids(conn, ctx.instance.connection, [r.remote_id for r in deleted])
    stones = []
    for record in deleted:
        link = known.get(record.remote_id)
        if link is None or link.state == links.DELETED:
            continue
        link.state = links.DELETED
        stones.append(link)
        counts["tombstoned"] += 1
    links.save(conn, stones, now)


DELETES_STREAM = "deletes"


def deletes_cycle(ctx: CycleContext, *, cancel: Event | None = None) -> Counter:
    """Run the connector's deletion scan: each deleted record leaves a tombstone, and each
    page commits with the scan's own checkpoint (apart from the pull's)."""
    counts: Counter[str] = Counter()
    with ctx.db.connect() as conn:
        cursor = runs.get_cursor(conn, ctx.instance.name, DELETES_STREAM)
    for page in ctx.connector.scan_deletes(cursor):
        if cancel is not None and cancel.is_set():
            raise Cancelled
        counts["read"] += len(page.records)
        if ctx.dry_run:
            continue
        with ctx.db.begin() as conn:
            now = utcnow()
            lease.renew(conn, ctx.instance.connection, ctx.owner, now)
            _tombstone(conn, ctx, [r for r in page.records if r.deleted], now, counts)
            if page.cursor is not None:
                runs.set_cursor(conn, ctx.instance.name, page.cursor, now, DELETES_STREAM)
    return counts
