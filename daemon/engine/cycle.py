"""The sync engine: one pull or push cycle of one instance, start to finish.

This module is the frame around :mod:`daemon.engine.pull` and :mod:`daemon.engine.push`: it takes
the connection's lease, builds the connector, records the run, turns every failure into a coded
sync-log row, backs the instance off when the platform says so, and always gives the lease
back. A plugin's exception ends its own cycle and nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from threading import Event
from typing import Any

import pluggy
import structlog
from sqlalchemy import Engine, exists, select, update

from daemon.config.instances import Instance
from daemon.engine.context import CycleContext
from daemon.engine.export_cycle import export_cycle
from daemon.engine.mapping import Mapper, MappingError, Transform
from daemon.engine.pull import deletes_cycle, hinted_pull, pull_cycle
from daemon.engine.push import push_cycle
from daemon.engine.registry import notify
from daemon.foundation.clock import Cancelled
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger, redact_text
from daemon.hub import lease, outbox, runs
from daemon.hub.contacts import load_schema
from daemon.hub.database import insert_ignore
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceRow, InstanceState, SyncRun, utcnow
from daemon.hub.synclog import SyncContext, new_run_id, record
from daemon.kit.connector import Connector, ConnectorContext, ConnectorError

log = get_logger("contactsync.engine")
_STATE = InstanceState.__table__
_INSTANCE = InstanceRow.__table__
_RUN = SyncRun.__table__

DEFAULT_BACKOFF = timedelta(minutes=1)
# A failed cycle without the platform's own Retry-After backs the instance off for
# DEFAULT_BACKOFF, doubled for each failure in a row, up to MAX_BACKOFF: 1, 2, 4, 8, 16, 32,
# then 60 minutes. A platform that is down for a day is asked 30 times, not 1,440, and one
# that comes back is tried again within the hour; a cycle that ends well resets the count.
MAX_BACKOFF = timedelta(hours=1)


def backoff_after(failures: int) -> timedelta:
    """How long an instance waits after its ``failures``-th failed cycle in a row."""
    # Past 2**6 minutes the cap holds anyway; the bound keeps the power small.
    return min(DEFAULT_BACKOFF * 2 ** min(max(failures, 1) - 1, 16), MAX_BACKOFF)


# The sync log's direction for each kind: a push and an export send, a pull and a deletion
# scan receive.
_SYNC_DIRECTION = {
    CycleKind.PULL: "incoming",
    CycleKind.DELETES: "incoming",
    CycleKind.PUSH: "outgoing",
    CycleKind.EXPORT: "outgoing",
}


@dataclass
class CycleReport:
    """How a cycle ended: ``ok``, ``failed``, ``interrupted``, ``busy`` or ``backoff``."""

    run_id: str
    instance: str
    direction: CycleKind
    outcome: str
    counts: dict[str, int] = field(default_factory=dict)
    code: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Cycle:
    """One cycle's fixed facts, from :meth:`SyncEngine.run` to its report."""

    instance: Instance
    kind: CycleKind
    run_id: str
    holder: str  # the lease holder: this process and run
    log_context: SyncContext  # what each sync-log row of the cycle is tagged with
    started: datetime
    full: bool
    dry_run: bool
    cancel: Event | None
    on_plan: Callable[[Any], None] | None
    preview_exclude: frozenset[str] | None = None
    remote_ids: tuple[str, ...] | None = None  # a targeted pull of these records


class SyncEngine:
    """Runs cycles. One per process; safe to call from several threads for different
    connections (each cycle holds its connection's lease)."""

    def __init__(
        self,
        db: Engine,
        transforms: Mapping[str, Transform] | None = None,
        *,
        region: str = "US",
        owner: str | None = None,
        pm: pluggy.PluginManager | None = None,
    ) -> None:
        self.db = db
        self.transforms = dict(transforms or {})
        self.region = region
        self.owner = owner or lease.owner_id()
        self.pm = pm

    def run(
        self,
        instance: Instance,
        direction: str,
        *,
        full: bool = False,
        dry_run: bool = False,
        cancel: Event | None = None,
        on_plan: Callable[[Any], None] | None = None,
        respect_backoff: bool = True,
        preview_exclude: frozenset[str] | None = None,
        remote_ids: Sequence[str] | None = None,
    ) -> CycleReport:
        """Run one cycle of ``direction`` (a :class:`CycleKind` or its value); never raises
        for a platform or plugin failure. An unknown kind is a ``ValueError``.

        ``preview_exclude`` (a dry-run push only) previews the push of a first sync: the
        contacts its seed would queue are planned too, except these. ``remote_ids`` (a pull
        only) makes it a targeted pull of those records (:func:`~daemon.engine.pull.
        hinted_pull`), what a webhook or a change stream wakes."""
        if remote_ids is not None and CycleKind(direction) != CycleKind.PULL:
            raise ValueError("remote_ids is for a pull")
        kind = CycleKind(direction)
        run_id = new_run_id()
        # Every log line of the cycle, a connector's or httpx's included, carries these.
        with structlog.contextvars.bound_contextvars(
            instance=instance.name, run_id=run_id, direction=str(kind)
        ):
            cycle = _Cycle(
                instance,
                kind,
                run_id,
                holder=f"{self.owner}/{run_id[:12]}",
                log_context=SyncContext(
                    instance.config.type, _SYNC_DIRECTION[kind], run_id, instance.name
                ),
                started=utcnow(),
                full=full,
                dry_run=dry_run,
                cancel=cancel,
                on_plan=on_plan,
                preview_exclude=preview_exclude if dry_run else None,
                remote_ids=tuple(remote_ids) if remote_ids is not None else None,
            )
            return self._run(cycle, respect_backoff=respect_backoff)

    def _run(self, cycle: _Cycle, *, respect_backoff: bool) -> CycleReport:
        """Refuse the cycle (the instance backs off, the connection is busy) or run it
        holding the connection's lease, then report it."""
        report = CycleReport(cycle.run_id, cycle.instance.name, cycle.kind, "ok")
        name = cycle.instance.name
        if respect_backoff and not cycle.dry_run and self._backing_off(name, cycle.started):
            report.outcome = "backoff"
            return report
        # The lease is held per cycle, not per engine: a scheduled pull, a push and a manual
        # sync of one connection in this process must exclude each other as two daemons do.
        if not lease.acquire(self.db, cycle.instance.connection, cycle.holder, cycle.started):
            report.outcome = "busy"
            return report
        counts = self._run_leased(cycle, report)
        self._report(cycle, report, counts)
        return report

    def _run_leased(self, cycle: _Cycle, report: CycleReport) -> Counter[str]:
        """The cycle proper, lease held: tell the observers, build the connector, record the
        run's start, run the kind's work, and turn any failure into ``report``'s outcome, code
        and error. Whatever happens, the connector is closed, its state saved and the lease
        released."""
        instance = cycle.instance
        connector: Connector | None = None
        counts: Counter[str] = Counter()
        state: dict[str, Any] = {}
        try:
            # First, so that every sync_finished has its sync_started, even when building
            # the connector fails (the hookspecs promise the pair).
            self._notify(
                "sync_started", instance=instance.name, run_id=cycle.run_id, direction=cycle.kind
            )
            self._ensure_state(instance.name)
            state = self._connector_state(instance.name)
            connector = self._connector(cycle, state)
            ctx = self._context(cycle, connector)
            if not cycle.dry_run:
                # Holding the lease, any run of this instance still marked running died
                # with its process (a crash, a kill): close it before starting ours.
                runs.abandon(self.db, instance.name, cycle.started)
                runs.start(self.db, cycle.run_id, instance.name, cycle.kind, cycle.started)
            self._work(cycle, ctx, counts)
        except ConnectorError as exc:
            report.outcome, report.code, report.error = "failed", str(exc.code), exc.message
            self._back_off(instance.name, exc.retry_after)
        except (Cancelled, lease.LeaseLost) as exc:
            report.outcome, report.error = "interrupted", str(exc) or "cancelled"
        except MappingError as exc:
            report.outcome, report.code, report.error = "failed", str(Code.CONFIG_INVALID), str(exc)
        except Exception as exc:  # a plugin's bug must not kill the daemon
            log.exception("cycle_crashed", instance=instance.name, run_id=cycle.run_id)
            report.outcome, report.code = "failed", str(Code.INTERNAL_ERROR)
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            if connector is not None:
                try:
                    connector.close()
                except Exception:
                    log.exception("connector_close_failed", instance=instance.name)
            if not cycle.dry_run and connector is not None:
                # Only a connector that ran can have rotated a token worth keeping.
                self._save_connector_state(instance, cycle.holder, state)
            lease.release(self.db, instance.connection, cycle.holder)
        return counts

    def _connector(self, cycle: _Cycle, state: dict[str, Any]) -> Connector:
        """The instance's connector for this cycle; in a dry run it reports nothing to the
        sync log."""
        context = cycle.log_context
        return cycle.instance.connector_class(
            cycle.instance.settings,
            ConnectorContext(
                cycle.instance.name,
                state,
                reporter=None
                if cycle.dry_run
                else lambda code, message, details: record(
                    self.db, context, code, message, **details
                ),
                dry_run=cycle.dry_run,
            ),
        )

    def _context(self, cycle: _Cycle, connector: Connector) -> CycleContext:
        """What pull, push, confirm and export read for this cycle."""
        instance = cycle.instance
        return CycleContext(
            self.db,
            instance,
            connector,
            Mapper(instance, self.transforms),
            load_schema(self.db, self.region),
            cycle.holder,
            cycle.log_context,
            dry_run=cycle.dry_run,
            on_plan=cycle.on_plan,
            resolve_conflict=_conflict_hook(self.pm, instance.name),
            match_record=_match_hook(self.pm, instance.name),
            preview_exclude=cycle.preview_exclude,
        )

    def _work(self, cycle: _Cycle, ctx: CycleContext, counts: Counter[str]) -> None:
        """Run the kind's work, adding its totals to ``counts``; a push first seeds, once,
        the contacts the connection has no link for (counted even if the push then fails)."""
        if cycle.kind == CycleKind.PULL and cycle.remote_ids is not None:
            counts.update(hinted_pull(ctx, cycle.remote_ids, cancel=cycle.cancel))
        elif cycle.kind == CycleKind.PULL:
            counts.update(pull_cycle(ctx, full=cycle.full, cancel=cycle.cancel))
        elif cycle.kind == CycleKind.EXPORT:
            counts.update(export_cycle(ctx, cancel=cycle.cancel))
        elif cycle.kind == CycleKind.DELETES:
            counts.update(deletes_cycle(ctx, cancel=cycle.cancel))
        else:
            if not cycle.dry_run:
                counts["seeded"] = self._seed(cycle.instance)
            counts += push_cycle(ctx, cancel=cycle.cancel)

    def _report(self, cycle: _Cycle, report: CycleReport, counts: Counter[str]) -> None:
        """Tell the sync log, the observers and the run history how the cycle ended.

        The observers hear ``sync_error`` (a failure with a code, not in a dry run) and then
        always ``sync_finished``, as :mod:`daemon.hookspecs` promises."""
        name, run_id = cycle.instance.name, cycle.run_id
        if report.error:
            # A platform or a plugin may quote a credential in its error; the report goes to
            # the run history, the sync log and the CLI.
            report.error = redact_text(report.error)
        report.counts = dict(counts)
        if report.code and not cycle.dry_run:
            record(self.db, cycle.log_context, Code(report.code), report.error or report.code)
            self._notify(
                "sync_error",
                instance=name,
                run_id=run_id,
                direction=cycle.kind,
                error=report.error or report.code,
                code=report.code,
            )
        self._notify(
            "sync_finished",
            instance=name,
            run_id=run_id,
            direction=cycle.kind,
            counts=report.counts,
            duration_seconds=(utcnow() - cycle.started).total_seconds(),
            outcome=report.outcome,
        )
        if not cycle.dry_run:
            runs.finish(self.db, run_id, report.outcome, report.counts, utcnow(), report.error)
            if report.outcome == "ok":
                self._recovered(name)
        log.info(
            "sync_cycle",
            instance=name,
            run_id=run_id,
            direction=str(cycle.kind),
            outcome=report.outcome,
            dry_run=cycle.dry_run,
            **report.counts,
        )

    def _notify(self, hook: str, **kwargs: Any) -> None:
        if self.pm is not None:
            notify(self.pm, hook, **kwargs)

    # --- instance state -------------------------------------------------------------------

    def _backing_off(self, name: str, now: datetime) -> bool:
        with self.db.connect() as conn:
            until = conn.execute(
                select(_STATE.c.backoff_until).where(_STATE.c.instance == name)
            ).scalar()
        return until is not None and until > now

    def _back_off(self, name: str, retry_after: float | None) -> None:
        with self.db.begin() as conn:
            failures = 1 + (
                conn.execute(select(_STATE.c.failures).where(_STATE.c.instance == name)).scalar()
                or 0
            )
            delay = timedelta(seconds=retry_after) if retry_after else backoff_after(failures)
            conn.execute(
                update(_STATE)
                .where(_STATE.c.instance == name)
                .values(backoff_until=utcnow() + delay, failures=failures)
            )

    def _recovered(self, name: str) -> None:
        """A cycle ended well: the next failure backs off from the first step again."""
        with self.db.begin() as conn:
            conn.execute(
                update(_STATE)
                .where(_STATE.c.instance == name, _STATE.c.failures > 0)
                .values(failures=0)
            )

    def _connector_state(self, name: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            value = conn.execute(
                select(_STATE.c.connector_state).where(_STATE.c.instance == name)
            ).scalar()
        return dict(value or {})

    def _save_connector_state(self, instance: Instance, holder: str, state: dict[str, Any]) -> None:
        # Fenced like a page: a run that lost its lease must not overwrite the state (a
        # rotated refresh token, say) that the run which took over has saved since.
        with self.db.begin() as conn:
            try:
                lease.renew(conn, instance.connection, holder, utcnow())
            except lease.LeaseLost:
                return
            conn.execute(
                update(_STATE)
                .where(_STATE.c.instance == instance.name)
                .values(connector_state=dict(state))
            )

    def _ensure_state(self, name: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                insert_ignore(_STATE, conn.dialect.name),
                [{"instance": name, "connector_state": {}}],
            )

    def _update_state(self, name: str, **values: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(update(_STATE).where(_STATE.c.instance == name).values(**values))

    def _seed(self, instance: Instance) -> int:
        """The first sync's push half: queue every contact the connection has no link for,
        once, after the first full pull linked what already existed."""
        with self.db.begin() as conn:
            seeded = conn.execute(
                select(_STATE.c.seeded_at).where(_STATE.c.instance == instance.name)
            ).scalar()
            if seeded is not None:
                return 0
            if instance.direction.pulls:
                pulled = conn.execute(
                    select(
                        exists().where(
                            _RUN.c.instance == instance.name,
                            _RUN.c.direction == CycleKind.PULL,
                            _RUN.c.outcome == "ok",
                        )
                    )
                ).scalar()
                if not pulled:
                    return 0
            now = utcnow()
            count = outbox.seed_unlinked(conn, instance.connection, f"seed:{instance.name}", now)
            conn.execute(
                update(_STATE).where(_STATE.c.instance == instance.name).values(seeded_at=now)
            )
            return count


def _conflict_hook(pm: pluggy.PluginManager | None, name: str) -> Callable[..., Any] | None:
    """The ``resolve_conflict`` hook bound to an instance; ``None`` when no plugin has it."""
    if pm is None or not pm.hook.resolve_conflict.get_hookimpls():
        return None

    def resolve(
        contact_id: str,
        field_name: str,
        hub_value: Any,
        hub_changed_at: datetime | None,
        remote_value: Any,
        remote_modified_at: datetime | None,
        policy: str,
    ) -> Any:
        return pm.hook.resolve_conflict(
            instance=name,
            contact_id=contact_id,
            field=field_name,
            hub_value=hub_value,
            hub_changed_at=hub_changed_at,
            remote_value=remote_value,
            remote_modified_at=remote_modified_at,
            policy=policy,
        )

    return resolve


def _match_hook(pm: pluggy.PluginManager | None, name: str) -> Callable[..., Any] | None:
    """The ``match_record`` hook bound to an instance; ``None`` when no plugin has it."""
    if pm is None or not pm.hook.match_record.get_hookimpls():
        return None

    def match(record: Any, hub_fields: Any, candidates: Any) -> Any:
        return pm.hook.match_record(
            instance=name, record=record, hub_fields=hub_fields, candidates=candidates
        )

    return match
