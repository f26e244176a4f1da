"""When cycles run: APScheduler 3 as a trigger, and nothing more.

Every instance gets a pull job and a push job (where its direction allows), named
``<instance>:pull`` and ``<instance>:push``, from its ``[schedule]``: an ``every N<unit>``
interval or a crontab line in the schedule's time zone. APScheduler keeps its jobs in memory
only: every durable fact (cursors, outbox, runs, leases) is in the hub's tables, and the next
run times are copied into ``instance_state`` so ``contactsync status`` sees what the daemon
will do. A restart picks those times up again, so a daemon restarted every few minutes still
pulls on a 15-minute schedule, and a time missed while it was down runs at once.

Jobs never overlap (``max_instances=1``), a backlog of missed times runs once (``coalesce``),
and a time missed by more than the misfire grace is skipped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ADDED,
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_MODIFIED,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, bindparam, select, update

from daemon.config.instances import Instance, interval_seconds
from daemon.config.settings import DaemonSettings
from daemon.foundation.log import get_logger
from daemon.hub.database import READ_ONLY, insert_ignore
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.connector import Connector
from daemon.kit.exporter import is_exporter

log = get_logger("contactsync.scheduler")
_STATE = InstanceState.__table__


def has_deletion_scan(instance: Instance) -> bool:
    """Whether the instance's connector overrides :meth:`Connector.scan_deletes`."""
    return instance.connector_class.scan_deletes is not Connector.scan_deletes


HINTED_PULL = "every 1h"
"""The pull schedule of an instance whose platform sends change hints (webhooks, a stream)
and whose file sets no ``schedule.pull`` of its own: the hints bring changes within seconds,
so the scheduled pull only catches what a lost hint missed, and spends less of the rate
limit on empty polls. It takes effect once a hint has arrived, so an instance whose webhooks
were never registered keeps the ordinary default."""

BUSY_RETRY = timedelta(seconds=1)
"""A cycle that found its connection busy (the pull and push of one connection exclude each
other) tries again this soon: a woken push until it runs, a scheduled cycle a few times."""
BUSY_RETRIES = 10
AFTERCARE_DELAY = 0.05
"""Seconds the aftercare thread waits after a change, so a burst of them is one batch."""
_TIME_EVENTS = (
    EVENT_JOB_ADDED
    | EVENT_JOB_REMOVED
    | EVENT_JOB_MODIFIED
    | EVENT_JOB_SUBMITTED
    | EVENT_JOB_MAX_INSTANCES
    | EVENT_JOB_MISSED
)

CycleRunner = Callable[[str, str], str | None]
"""Runs one cycle: ``(instance name, "pull" | "push") -> outcome`` (``"busy"`` …)."""


def job_id(name: str, direction: str) -> str:
    """The job of one instance and direction: ``"<name>:pull"``."""
    return f"{name}:{direction}"


def make_trigger(text: str, timezone: str) -> BaseTrigger:
    """The trigger of a schedule line: an interval for ``every N<unit>``, else a crontab
    line read in ``timezone`` (so "0 9 * * *" is 9 o'clock there, across DST changes)."""
    zone = ZoneInfo(timezone)
    seconds = interval_seconds(text)
    if seconds is not None:
        return IntervalTrigger(seconds=seconds, timezone=zone)
    return CronTrigger.from_crontab(text, timezone=zone)


class Scheduler:
    """The pull and push jobs of every enabled instance, on a pool of ``workers`` threads.

    ``run_cycle`` is called on a worker thread for each due job and returns the cycle's
    outcome. :meth:`schedule` and :meth:`unschedule` follow the configuration as it
    changes; :meth:`wake` runs the pushes of some connections now.
    """

    def __init__(self, engine: Engine, settings: DaemonSettings, run_cycle: CycleRunner) -> None:
        self.engine = engine
        self._run_cycle = run_cycle
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(settings.workers)},
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": settings.misfire_grace_seconds,
            },
            timezone=ZoneInfo("UTC"),
        )
        self._scheduler.add_listener(
            self._after_run, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
        )
        self._scheduler.add_listener(self._times_changed, _TIME_EVENTS)
        self._lock = threading.Lock()
        self._instances: dict[str, Instance] = {}
        self._specs: dict[str, tuple[str, str]] = {}  # job id -> (schedule line, time zone)
        self._running: set[str] = set()
        # Pushes asked for by a wake that no run started since has served yet.
        self._woken: set[str] = set()
        self._retry: set[str] = set()
        self._busy: dict[str, int] = {}  # job id -> busy outcomes in a row
        self._hinted: set[str] = set()  # instances that received a change hint
        # Work for the aftercare thread: jobs to run again after a delay, and instances
        # whose next run times changed and are not yet copied to the hub.
        self._follow_ups: dict[str, timedelta] = {}
        self._dirty: set[str] = set()
        self._pending = threading.Condition()
        self._caring = False
        self._aftercare = threading.Thread(
            target=self._aftercare_loop, name="scheduler-aftercare", daemon=True
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start triggering jobs."""
        self._caring = True
        self._aftercare.start()
        self._scheduler.start()

    @property
    def running(self) -> bool:
        """Whether the scheduler's thread is triggering jobs."""
        return bool(self._scheduler.running)

    def shutdown(self) -> None:
        """Stop triggering; cycles already running go on (the service cancels and awaits
        them within its grace time)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._pending:
            self._caring = False
            self._pending.notify_all()
        if self._aftercare.is_alive():
            self._aftercare.join(timeout=1)

    # --- what is scheduled ----------------------------------------------------------------

    def schedule(self, instance: Instance) -> None:
        """Add or replace the jobs of ``instance``; a disabled one has none."""
        name = instance.name
        if not instance.config.enabled:
            self.unschedule(name)
            return
        exporter = is_exporter(instance.connector_class)
        wanted = {
            CycleKind.PULL: instance.direction.pulls and not exporter,
            CycleKind.PUSH: instance.direction.pushes and not exporter,
            # Only for connectors with a deletion scan of their own (the rest report deletes
            # in their pull), on its own, slower schedule.
            CycleKind.DELETES: (
                instance.direction.pulls and has_deletion_scan(instance) and not exporter
            ),
            # An exporter (daemon.engine.export_cycle) has this one job instead.
            CycleKind.EXPORT: exporter,
        }
        stored = self._stored_next_runs(name)
        now = utcnow()
        with self._lock:
            self._instances[name] = instance
        for direction, allowed in wanted.items():
            jid = job_id(name, direction)
            if not allowed:
                self._remove(jid)
                continue
            line = self._line(instance, direction)
            spec = (line, instance.config.schedule.timezone)
            trigger = make_trigger(*spec)
            # A push new to this process runs at once: hub writes made while no daemon ran
            # are pending, and the read before each write keeps an early push safe.
            owed = None if direction == CycleKind.PUSH else stored.get(direction)
            first = self._first_run(jid, spec, trigger, owed, now)
            if direction == CycleKind.PUSH and first <= now:
                # Owed like a woken push: if the pull holds the connection's lease right
                # now, the push tries again in a second, not in an hour. Marked before the
                # job exists, or its first run could start unmarked.
                with self._lock:
                    self._woken.add(jid)
            self._scheduler.add_job(
                self._run_job,
                trigger,
                args=(name, direction),
                id=jid,
                name=jid,
                replace_existing=True,
                next_run_time=first,
            )
            with self._lock:
                self._specs[jid] = spec

    def _line(self, instance: Instance, direction: str) -> str:
        """The schedule line of ``direction``: the file's, or :data:`HINTED_PULL` for the
        pull of an instance that receives hints and sets none."""
        schedule = instance.config.schedule
        if (
            direction == CycleKind.PULL
            and "pull" not in schedule.model_fields_set
            and instance.name in self._hinted
        ):
            return HINTED_PULL
        return str(getattr(schedule, direction))

    def hints_flow(self, name: str) -> None:
        """Instance ``name`` received a change hint: its pull moves to :data:`HINTED_PULL`
        unless its file sets one (once; a later hint changes nothing)."""
        with self._lock:
            if name in self._hinted:
                return
            self._hinted.add(name)
            instance = self._instances.get(name)
        if instance is not None and "pull" not in instance.config.schedule.model_fields_set:
            log.info("pull_slowed_by_hints", instance=name, schedule=HINTED_PULL)
            self.schedule(instance)

    def unschedule(self, name: str) -> None:
        """Remove the jobs of instance ``name`` (removed or disabled); a running cycle is
        not stopped here."""
        with self._lock:
            self._instances.pop(name, None)
        for direction in CycleKind:
            self._remove(job_id(name, direction))
        self._mark(name)  # no jobs: recorded as no next runs

    def scheduled(self) -> list[str]:
        """The names of the instances with jobs."""
        with self._lock:
            return sorted(self._instances)

    def next_run(self) -> datetime | None:
        """The soonest next run of any instance's job."""
        times = [
            job.next_run_time
            for job in self._scheduler.get_jobs()
            if job.next_run_time is not None and job.id.rpartition(":")[0] in self._instances
        ]
        return min(times, default=None)

    def add_periodic(
        self, jid: str, func: Callable[[], object], every: timedelta, first_in: timedelta
    ) -> None:
        """A housekeeping job (not an instance's): ``func`` every ``every``, first after
        ``first_in``. Its id must not contain a colon, which instance job ids do."""
        self._scheduler.add_job(
            func,
            IntervalTrigger(seconds=every.total_seconds()),
            id=jid,
            name=jid,
            replace_existing=True,
            next_run_time=utcnow() + first_in,
        )

    # --- waking ---------------------------------------------------------------------------

    def wake(self, connections: Iterable[str]) -> list[str]:
        """Run now the push jobs of the instances pushing on ``connections``; returns their
        job ids. A push running right now runs again as soon as it ends, so a change that
        came in behind its moving lower bound is not left for the next schedule."""
        wanted = set(connections)
        with self._lock:
            jobs = [
                job_id(name, CycleKind.PUSH)
                for name, instance in self._instances.items()
                if instance.connection in wanted
            ]
        return self._wake_jobs(jobs)

    def run_now(self, name: str) -> list[str]:
        """Run every cycle of instance ``name`` now (pull, push, or its export; the slower
        deletion scan keeps its schedule), as :meth:`wake` does a push: one running now runs
        again when it ends. Returns the job ids; none for an instance without jobs."""
        kinds = (CycleKind.PULL, CycleKind.PUSH, CycleKind.EXPORT)
        return self._wake_jobs([job_id(name, kind) for kind in kinds])

    def _wake_jobs(self, jobs: Iterable[str]) -> list[str]:
        """Mark the scheduled ones of ``jobs`` owed and run the idle ones now."""
        woken: list[str] = []
        idle: list[tuple[str, bool]] = []
        with self._lock:
            for jid in jobs:
                if jid in self._specs:
                    self._woken.add(jid)
                    woken.append(jid)
                    if jid not in self._running:
                        # A sibling that found the connection busy goes first; this follows.
                        idle.append((jid, bool(self._waiting_siblings(jid))))
        for jid, behind in idle:
            self._run_soon(jid, BUSY_RETRY if behind else timedelta(0))
        return woken

    def _waiting_siblings(self, jid: str) -> list[str]:
        """The other jobs of ``jid``'s instance that last found the connection busy and are
        not running: they are owed the connection next. Call with ``_lock`` held."""
        name = jid.rpartition(":")[0]
        return [
            other
            for other in self._busy
            if other != jid and other.rpartition(":")[0] == name and other not in self._running
        ]

    # --- running --------------------------------------------------------------------------

    def _run_job(self, name: str, direction: str) -> str | None:
        jid = job_id(name, direction)
        with self._lock:
            self._running.add(jid)
            owed = jid in self._woken
            self._woken.discard(jid)  # this run serves every wake made before it started
        outcome: str | None = None
        try:
            outcome = self._run_cycle(name, direction)
        except Exception:  # the runner logs its own; this is the last line of defence
            log.exception("cycle_crashed", instance=name, direction=direction)
        with self._lock:
            if outcome != "busy":
                self._busy.pop(jid, None)
            else:
                # Another node may hold the lease for a long cycle: a scheduled run gives up
                # after a few tries (its schedule comes round); a woken push is owed.
                tries = self._busy[jid] = self._busy.get(jid, 0) + 1
                if owed:
                    self._woken.add(jid)
                if owed or tries <= BUSY_RETRIES:
                    self._retry.add(jid)
        return outcome

    def _after_run(self, event: JobExecutionEvent) -> None:
        """After a job ran (called once APScheduler no longer counts it as running): run it
        again if a wake came in meanwhile, or soon if its connection was busy.

        The rescheduling is left to the aftercare thread. This listener may run on the
        scheduler's own thread (a run that ended before its future got its callback), in the
        middle of handling this very job, before the job's next run time is updated: a
        reschedule made here would read that stale time, or be overwritten.
        """
        jid = event.job_id
        name = jid.rpartition(":")[0]
        with self._lock:
            self._running.discard(jid)
            known = name in self._instances
            retry = jid in self._retry
            again = jid in self._woken
            self._retry.discard(jid)
            # This run held the connection (it was not refused as busy) and has let it go: a
            # sibling that found it busy goes first. Otherwise a stream of woken pushes, each
            # run again the moment the last ends, would starve the pull for good.
            waiting = [] if jid in self._busy else self._waiting_siblings(jid)
        if not known:
            return
        with self._pending:
            for other in waiting:
                self._follow_ups[other] = timedelta(0)
            if retry or (again and waiting):
                self._follow_ups[jid] = BUSY_RETRY
            elif again:
                self._follow_ups[jid] = timedelta(0)
            self._dirty.add(name)
            self._pending.notify_all()

    def _run_soon(self, jid: str, delay: timedelta) -> None:
        job = self._scheduler.get_job(jid)
        if job is None:
            return
        target = utcnow() + delay
        if job.next_run_time is None or target < job.next_run_time:
            try:
                self._scheduler.modify_job(jid, next_run_time=target)
            except JobLookupError:  # unscheduled meanwhile
                return

    def _remove(self, jid: str) -> None:
        with self._lock:
            self._specs.pop(jid, None)
            self._woken.discard(jid)
            self._retry.discard(jid)
            self._busy.pop(jid, None)
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(jid)

    def _first_run(
        self,
        jid: str,
        spec: tuple[str, str],
        trigger: BaseTrigger,
        stored: datetime | None,
        now: datetime,
    ) -> datetime:
        """When a (re)scheduled job first runs.

        An unchanged schedule keeps its time; a changed one starts afresh. A job new to this
        process takes the time a previous daemon recorded, if still ahead; an instance never
        run, or one overdue while no daemon ran, runs now.
        """
        existing = self._scheduler.get_job(jid)
        natural = trigger.get_next_fire_time(None, now) or now
        if existing is not None:
            with self._lock:
                same = self._specs.get(jid) == spec
            if same and existing.next_run_time is not None:
                return existing.next_run_time
            return natural
        if stored is not None and stored > now:
            return min(stored, natural)
        return now

    # --- instance_state -------------------------------------------------------------------

    def _times_changed(self, event: JobEvent) -> None:
        # APScheduler dispatches these after it stored the job's new next run time (a
        # finished run's own event may come before that: reading then would see the old one).
        name = event.job_id.rpartition(":")[0]
        if name:
            self._mark(name)

    def _mark(self, name: str) -> None:
        with self._pending:
            self._dirty.add(name)
            self._pending.notify_all()

    def _aftercare_loop(self) -> None:
        """Reschedule follow-up runs, then copy changed next run times to the hub. Off the
        scheduler's thread: a write may wait for SQLite's lock, and triggering must not."""
        while True:
            with self._pending:
                while self._caring and not (self._dirty or self._follow_ups):
                    self._pending.wait()
                if not self._caring:
                    return
            time.sleep(AFTERCARE_DELAY)
            with self._pending:
                follow_ups, self._follow_ups = self._follow_ups, {}
                names, self._dirty = self._dirty, set()
            for jid, delay in follow_ups.items():
                self._run_soon(jid, delay)
            try:
                self.record_next_runs(sorted(names))
            except Exception as exc:  # a locked or lost database: the next change records
                log.warning(
                    "next_run_not_recorded",
                    instances=len(names),
                    error=f"{type(exc).__name__}: {exc}",
                )

    def record_next_runs(self, names: Iterable[str]) -> None:
        """Copy the next pull, push and deletion-scan times of ``names`` into
        ``instance_state``, so a restarted daemon keeps the schedule (a daily scan is not
        run again on every start, nor skipped by frequent restarts)."""
        times: dict[str, tuple[datetime | None, ...]] = {}
        for name in names:
            # An exporter's next export shows where an outgoing instance's next push does.
            times[name] = (
                self.next_run_of(name, CycleKind.PULL),
                self.next_run_of(name, CycleKind.PUSH) or self.next_run_of(name, CycleKind.EXPORT),
                self.next_run_of(name, CycleKind.DELETES),
            )
        self._write_next_runs(times)

    def next_run_of(self, name: str, direction: str) -> datetime | None:
        """When the ``direction`` job of instance ``name`` runs next (``None``: no job)."""
        job = self._scheduler.get_job(job_id(name, direction))
        return job.next_run_time if job is not None else None

    def _write_next_runs(self, times: dict[str, tuple[datetime | None, ...]]) -> None:
        if not times:
            return
        with self.engine.begin() as conn:
            conn.execute(
                insert_ignore(_STATE, conn.dialect.name),
                [{"instance": name, "connector_state": {}} for name in times],
            )
            conn.execute(
                update(_STATE)
                .where(_STATE.c.instance == bindparam("name"))
                .values(
                    next_pull_at=bindparam("pull"),
                    next_push_at=bindparam("push"),
                    next_deletes_at=bindparam("deletes"),
                ),
                [{"name": n, "pull": p, "push": q, "deletes": d} for n, (p, q, d) in times.items()],
            )

    def _stored_next_runs(self, name: str) -> dict[str, datetime | None]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(
                select(
                    _STATE.c.next_pull_at, _STATE.c.next_push_at, _STATE.c.next_deletes_at
                ).where(_STATE.c.instance == name)
            ).first()
        if row is None:
            return {}
        return {
            CycleKind.PULL: row[0],
            CycleKind.PUSH: row[1],
            CycleKind.EXPORT: row[1],
            CycleKind.DELETES: row[2],
        }
