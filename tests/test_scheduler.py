"""The daemon's parts in process: triggers, the scheduler's jobs and wakes, the debouncer,
and sd_notify. The daemon as a whole is tested in tests/test_daemon.py."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select

from daemon.config.instances import Instance, load_instance
from daemon.config.settings import DaemonSettings
from daemon.hub.store import InstanceState, utcnow
from daemon.runtime.scheduler import Scheduler, make_trigger
from daemon.runtime.systemd import Notifier, watchdog_interval
from daemon.runtime.wakeup import Debouncer
from tests.daemonkit import instance_toml, wait_until
from tests.memremote import MemoryConnector

# --- triggers -----------------------------------------------------------------------------


def test_interval_schedule_is_an_interval_trigger() -> None:
    trigger = make_trigger("every 3 hours", "UTC")
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == timedelta(hours=3)


def test_crontab_runs_in_the_schedule_time_zone() -> None:
    trigger = make_trigger("0 9 * * *", "America/New_York")
    assert isinstance(trigger, CronTrigger)
    # 9:00 in New York, in winter (UTC-5) and in summer (UTC-4).
    winter = trigger.get_next_fire_time(None, datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    summer = trigger.get_next_fire_time(None, datetime(2026, 7, 10, 12, 0, tzinfo=UTC))
    assert winter.astimezone(UTC) == datetime(2026, 1, 10, 14, 0, tzinfo=UTC)
    assert summer.astimezone(UTC) == datetime(2026, 7, 10, 13, 0, tzinfo=UTC)
    assert winter.tzinfo == ZoneInfo("America/New_York")


# --- the scheduler ------------------------------------------------------------------------


def load(tmp_path: Path, name: str, **options: object) -> Instance:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        instance_toml(tmp_path / f"{name}.json", settings="", **options),  # type: ignore[arg-type]
        encoding="utf-8",
    )
    return load_instance(path, {"memory": MemoryConnector})


class Recorder:
    """A cycle runner that records its calls and answers a given outcome."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.outcome = "ok"
        self.lock = threading.Lock()

    def __call__(self, name: str, direction: str) -> str:
        with self.lock:
            self.calls.append((name, direction))
            return self.outcome

    def count(self, name: str, direction: str) -> int:
        with self.lock:
            return self.calls.count((name, direction))


@pytest.fixture
def scheduler(sqlite_engine: Engine) -> Iterator[tuple[Scheduler, Recorder]]:
    runner = Recorder()
    scheduler = Scheduler(sqlite_engine, DaemonSettings(workers=2), runner)
    scheduler.start()
    yield scheduler, runner
    scheduler.shutdown()


def next_runs(engine: Engine, name: str) -> tuple[datetime | None, datetime | None] | None:
    table = InstanceState.__table__
    with engine.connect() as conn:
        row = conn.execute(
            select(table.c.next_pull_at, table.c.next_push_at).where(table.c.instance == name)
        ).first()
    return (row[0], row[1]) if row else None


def test_new_instance_runs_now_then_on_schedule_and_records_next_runs(
    tmp_path: Path, sqlite_engine: Engine, scheduler: tuple[Scheduler, Recorder]
) -> None:
    sched, runner = scheduler
    sched.schedule(load(tmp_path, "one", pull="every 1h", push="every 2h"))
    wait_until(lambda: runner.count("one", "pull") and runner.count("one", "push"))
    soon = utcnow() + timedelta(minutes=30)
    recorded = wait_until(
        lambda: (r := next_runs(sqlite_engine, "one")) and all(t and t > soon for t in r) and r
    )
    pull_at, push_at = recorded
    assert push_at - pull_at > timedelta(minutes=50)  # every 2h vs every 1h


def test_direction_and_enabled_decide_which_jobs_exist(
    tmp_path: Path, sqlite_engine: Engine, scheduler: tuple[Scheduler, Recorder]
) -> None:
    sched, _ = scheduler
    sched.schedule(load(tmp_path, "inbound", extra='direction = "incoming"'))
    assert sched.scheduled() == ["inbound"]
    wait_until(lambda: (r := next_runs(sqlite_engine, "inbound")) and r[0] and r[1] is None)
    sched.schedule(load(tmp_path, "inbound", enabled=False))
    assert sched.scheduled() == []
    wait_until(lambda: next_runs(sqlite_engine, "inbound") == (None, None))


def test_wake_runs_the_push_of_that_connection_only(
    tmp_path: Path, scheduler: tuple[Scheduler, Recorder]
) -> None:
    sched, runner = scheduler
    sched.schedule(load(tmp_path, "a", pull="every 1h", push="every 1h"))
    sched.schedule(load(tmp_path, "b", pull="every 1h", push="every 1h"))
    wait_until(lambda: runner.count("a", "push") == 1 and runner.count("b", "push") == 1)
    assert sched.wake({"a"}) == ["a:push"]
    wait_until(lambda: runner.count("a", "push") == 2)
    assert runner.count("b", "push") == 1
    assert runner.count("a", "pull") == 1


def test_a_woken_push_that_finds_the_connection_busy_tries_again(
    tmp_path: Path, scheduler: tuple[Scheduler, Recorder]
) -> None:
    sched, runner = scheduler
    sched.schedule(load(tmp_path, "c", pull="every 1h", push="every 1h"))
    wait_until(lambda: runner.count("c", "push") == 1)
    runner.outcome = "busy"
    sched.wake({"c"})
    wait_until(lambda: runner.count("c", "push") == 2)
    runner.outcome = "ok"
    wait_until(lambda: runner.count("c", "push") == 3, what="the retry a second later")


def test_unchanged_schedule_keeps_its_time_on_reschedule(
    tmp_path: Path, sqlite_engine: Engine, scheduler: tuple[Scheduler, Recorder]
) -> None:
    sched, _ = scheduler
    sched.schedule(load(tmp_path, "d", pull="every 1h", push="every 1h"))
    soon = utcnow() + timedelta(minutes=30)
    first = wait_until(
        lambda: (r := next_runs(sqlite_engine, "d")) and all(t and t > soon for t in r) and r
    )
    sched.schedule(load(tmp_path, "d", pull="every 1h", push="every 1h", extra="max_attempts = 3"))
    assert next_runs(sqlite_engine, "d") == first
    sched.schedule(load(tmp_path, "d", pull="every 2h", push="every 1h"))
    wait_until(
        lambda: (r := next_runs(sqlite_engine, "d")) and r[0] > first[0] + timedelta(minutes=30)
    )


# --- the debouncer ------------------------------------------------------------------------


def test_debouncer_waits_for_quiet_but_not_forever() -> None:
    debouncer = Debouncer(quiet=0.5, longest=2.0)
    debouncer.add(["a"], 0.0)
    assert debouncer.take(0.4) is None
    debouncer.add(["b"], 0.4)
    assert debouncer.take(0.8) is None
    assert debouncer.take(0.9) == {"a", "b"}
    assert debouncer.take(5.0) is None
    # A burst that never pauses is still handed over after `longest`.
    for step in range(25):
        debouncer.add(["c"], 10 + step * 0.1)
        if debouncer.take(10 + step * 0.1) is not None:
            assert step * 0.1 >= 2.0
            break
    else:
        pytest.fail("a continuous burst was never handed over")
    assert Debouncer(0.5).wait(0.0, default=0.3) == 0.3


# --- sd_notify ----------------------------------------------------------------------------


def test_watchdog_interval_is_half_the_period_and_ours_only() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None


def test_notifier_speaks_to_an_abstract_socket_and_is_silent_without_one() -> None:
    name = f"contactsync-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    try:
        notifier = Notifier(f"@{name}")
        assert notifier.reloading()
        message = dict(line.split("=", 1) for line in listener.recv(4096).decode().splitlines())
        assert message["RELOADING"] == "1" and message["MONOTONIC_USEC"].isdigit()
        assert notifier.status("2 instances\nline two")
        assert listener.recv(4096) == b"STATUS=2 instances line two"
        notifier.close()
    finally:
        listener.close()
    silent = Notifier("")
    assert not silent.enabled and not silent.ready() and not silent.watchdog()


def test_only_connectors_with_a_deletion_scan_get_a_deletes_job(tmp_path):
    from daemon.runtime.scheduler import has_deletion_scan
    from plugins.hubspot.connector import HubSpotConnector
    from tests.enginekit import write_instance

    memory = write_instance(tmp_path, "mem")
    assert not has_deletion_scan(memory)
    hubspot = type(memory)(
        memory.name, memory.path, memory.config, memory.settings, HubSpotConnector
    )
    assert has_deletion_scan(hubspot)


def test_a_restarted_daemon_keeps_the_deletion_scans_schedule(tmp_path, sqlite_engine):
    """A daily scan runs once, and a restart neither runs it again nor forgets it."""

    class Scanning(MemoryConnector):
        def scan_deletes(self, cursor):
            return iter(())

    path = tmp_path / "scan.toml"
    path.write_text(instance_toml(tmp_path / "scan.json", settings=""), encoding="utf-8")
    instance = load_instance(path, {"memory": Scanning})
    table = InstanceState.__table__

    def stored_scan() -> datetime | None:
        with sqlite_engine.connect() as conn:
            query = select(table.c.next_deletes_at).where(table.c.instance == "scan")
            return conn.execute(query).scalar()

    first = Recorder()
    sched = Scheduler(sqlite_engine, DaemonSettings(workers=2), first)
    sched.start()
    try:
        sched.schedule(instance)
        wait_until(lambda: first.count("scan", "deletes") == 1)
        tomorrow = utcnow() + timedelta(hours=23)
        recorded = wait_until(lambda: (t := stored_scan()) and t > tomorrow and t)
    finally:
        sched.shutdown()

    second = Recorder()
    restarted = Scheduler(sqlite_engine, DaemonSettings(workers=2), second)
    restarted.start()
    try:
        restarted.schedule(instance)
        wait_until(lambda: second.count("scan", "pull"))  # the pull is owed: it runs now
        assert second.count("scan", "deletes") == 0
        assert restarted.next_run_of("scan", "deletes") == recorded
    finally:
        restarted.shutdown()


def test_a_restarted_daemon_pushes_at_once_and_keeps_the_pull_schedule(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    """Hub writes made while the daemon was down are pushed at start, not at the push's
    recorded time; the pull keeps its schedule."""
    instance = load(tmp_path, "back", pull="every 1h", push="every 1h")
    first = Recorder()
    sched = Scheduler(sqlite_engine, DaemonSettings(workers=2), first)
    sched.start()
    try:
        sched.schedule(instance)
        wait_until(lambda: first.count("back", "pull") and first.count("back", "push"))
        soon = utcnow() + timedelta(minutes=30)
        wait_until(
            lambda: (r := next_runs(sqlite_engine, "back")) and all(t and t > soon for t in r)
        )
    finally:
        sched.shutdown()

    second = Recorder()
    restarted = Scheduler(sqlite_engine, DaemonSettings(workers=2), second)
    restarted.start()
    try:
        restarted.schedule(instance)
        wait_until(lambda: second.count("back", "push") == 1)
        assert second.count("back", "pull") == 0
        pull_at = restarted.next_run_of("back", "pull")
        assert pull_at is not None and pull_at > utcnow() + timedelta(minutes=30)
    finally:
        restarted.shutdown()


class LeaseRunner:
    """A cycle runner with one connection lease: a push holds it for a while, a pull that
    finds it held is ``busy``, as the engine answers. Records what happened, in order."""

    def __init__(self, push_seconds: float) -> None:
        self.lease = threading.Lock()
        self.push_seconds = push_seconds
        self.events: list[str] = []
        self.record = threading.Lock()

    def __call__(self, name: str, direction: str) -> str:
        if not self.lease.acquire(blocking=False):
            self._note(f"{direction} busy")
            return "busy"
        try:
            self._note(f"{direction} start")
            if direction == "push":
                time.sleep(self.push_seconds)  # a push with work to do, holding the lease
            return "ok"
        finally:
            self.lease.release()

    def _note(self, event: str) -> None:
        with self.record:
            self.events.append(event)


def test_a_stream_of_woken_pushes_never_starves_the_pull(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    runner = LeaseRunner(push_seconds=0.3)
    sched = Scheduler(sqlite_engine, DaemonSettings(workers=2), runner)
    sched.start()
    stop = threading.Event()

    def edits() -> None:  # hub edits arriving all the time, each waking the push
        while not stop.wait(0.02):
            sched.wake({"busy"})

    waker = threading.Thread(target=edits, daemon=True)
    try:
        sched.schedule(load(tmp_path, "busy", pull="every 1h", push="every 1h"))
        wait_until(lambda: "pull start" in runner.events and "push start" in runner.events)
        waker.start()
        wait_until(lambda: runner.events.count("push start") >= 3)
        sched.run_now("busy")  # the pull is wanted while the pushes keep the lease busy
        wait_until(lambda: runner.events.count("pull start") >= 2, what="the pull's turn")
    finally:
        stop.set()
        waker.join()
        sched.shutdown()
    events = runner.events
    refused = events.index("pull busy")
    # Once refused, the pull runs as soon as the push holding the lease ends: no push
    # starts between its refusal and its run.
    assert "push start" not in events[refused : events.index("pull start", refused)], events
