"""The hint intake on its own: the bounded coalescing queue, the replay guard, batches that
could not run put back (never lost), and a change stream's position checkpointed only once
the pull serving it committed, so a restart resumes without a gap.

Small unit cases: the cycle runner is a recording fake; the end-to-end path over HTTP is in
tests/test_webhooks.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from daemon.config.instances import load_instance
from daemon.config.settings import DaemonSettings
from daemon.engine.status import CHANGES_STREAM, instance_status
from daemon.hub import runs
from daemon.hub.store import utcnow
from daemon.kit.changes import (
    ChangeHint,
    HintQueue,
    ReplayGuard,
    WebhookDelivery,
    WebhookRefused,
)
from daemon.kit.connector import Capabilities, Connector, ConnectorConfig, Unavailable
from daemon.runtime.intake import Intake
from daemon.runtime.scheduler import HINTED_PULL, Scheduler, job_id
from tests.daemonkit import instance_toml
from tests.memremote import MemoryConnector


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    gate = threading.Event()
    while not check():
        assert time.monotonic() < deadline, "timed out"
        gate.wait(0.01)


def test_the_queue_coalesces_ids_and_hands_them_over_once_quiet():
    queue = HintQueue(quiet=0.2, longest=1.0)
    for n in range(1000):
        queue.offer("hs", [ChangeHint((str(n % 10),))], now=100.0 + n * 0.0001)
    assert queue.pending("hs") == 10
    assert queue.take(100.1, limit=100) == []  # still a burst
    (batch,) = queue.take(100.4, limit=100)
    assert sorted(batch.remote_ids) == [str(n) for n in range(10)]
    assert queue.empty()


def test_a_burst_that_never_stops_is_served_within_longest():
    queue = HintQueue(quiet=0.2, longest=1.0)
    now = 0.0
    taken = []
    while now < 1.25:
        queue.offer("hs", [ChangeHint((str(int(now * 100)),))], now)
        taken += queue.take(now, limit=1000)
        now += 0.1
    assert taken, "a burst of hints every 0.1 s is still served after a second"


def test_a_full_queue_degrades_to_pull_now_in_bounded_memory():
    queue = HintQueue(max_ids=100, quiet=0)
    queue.offer("hs", [ChangeHint(tuple(str(n) for n in range(101)))], now=0)
    assert queue.pending("hs") == 0 and queue.overflows == 1
    queue.offer("hs", [ChangeHint(("more",))], now=0)  # no ids kept past the overflow
    (batch,) = queue.take(1, limit=10)
    assert batch.everything and batch.remote_ids == []


def test_limit_splits_a_batch_and_the_position_waits_for_the_last_part():
    queue = HintQueue(quiet=0)
    queue.offer("sf", [ChangeHint(tuple(str(n) for n in range(25)), position="p25")], now=0)
    first = queue.take(1, limit=10)[0]
    assert len(first.remote_ids) == 10 and first.position is None
    second = queue.take(1, limit=10)[0]
    third = queue.take(1, limit=10)[0]
    assert len(third.remote_ids) == 5 and third.position == "p25"
    assert {*first.remote_ids, *second.remote_ids, *third.remote_ids} == {str(n) for n in range(25)}


def test_replays_and_stale_deliveries_are_refused():
    guard = ReplayGuard(window=timedelta(minutes=5))
    now = utcnow()
    fresh = WebhookDelivery((), signed_at=now - timedelta(seconds=10), key="sig-1")
    guard.check(fresh, now, timedelta(minutes=5))
    with pytest.raises(WebhookRefused) as replay:
        guard.check(fresh, now, timedelta(minutes=5))
    assert replay.value.reason == "replay"
    stale = WebhookDelivery((), signed_at=now - timedelta(minutes=6), key="sig-2")
    with pytest.raises(WebhookRefused) as old:
        guard.check(stale, now, timedelta(minutes=5))
    assert old.value.reason == "stale"
    future = WebhookDelivery((), signed_at=now + timedelta(minutes=6), key="sig-3")
    with pytest.raises(WebhookRefused):
        guard.check(future, now, timedelta(minutes=5))
    # Memory is bounded: past its capacity the oldest keys go (they are stale by then).
    small = ReplayGuard(capacity=3)
    for n in range(10):
        small.check(WebhookDelivery((), key=f"k{n}"), now, timedelta(minutes=5))
    assert len(small._seen) <= 3


class _Instance:
    """What the intake reads of an instance."""

    def __init__(self, name: str, connector_class: type[Any] = Connector) -> None:
        self.name = name
        self.connector_class = connector_class
        self.settings = ConnectorConfig()

        class _Config:
            enabled = True

        class _Direction:
            pulls = True

        self.config = _Config()
        self.direction = _Direction()


def test_a_batch_that_could_not_run_is_put_back_and_served_later(engine):
    outcomes = iter(["busy", "failed", "ok"])
    calls: list[tuple[str, list[str] | None]] = []

    def run_cycle(instance: Any, direction: str, ids: list[str] | None) -> str:
        calls.append((direction, ids))
        return next(outcomes)

    instance = _Instance("hs")
    intake = Intake(engine, lambda: {"hs": instance}, run_cycle, queue=HintQueue(quiet=0))
    intake.start()
    try:
        intake.deliver("hs", [ChangeHint(("1", "2"))], source="webhook")
        wait_for(lambda: intake.served == 1)
    finally:
        intake.shutdown()
    assert [sorted(ids or []) for _, ids in calls] == [["1", "2"]] * 3


def test_deletes_wake_the_deletion_scan_and_everything_the_pull(engine):
    calls: list[tuple[str, list[str] | None]] = []

    def run_cycle(instance: Any, direction: str, ids: list[str] | None) -> str:
        calls.append((direction, ids))
        return "ok"

    instance = _Instance("hs")
    intake = Intake(
        engine,
        lambda: {"hs": instance},
        run_cycle,
        queue=HintQueue(quiet=0),
        has_deletion_scan=lambda _i: True,
    )
    intake.start()
    try:
        intake.deliver("hs", [ChangeHint(("9",), deletes=True)], source="webhook")
        wait_for(lambda: intake.served == 1)
        intake.deliver("hs", [ChangeHint(everything=True)], source="webhook")
        wait_for(lambda: intake.served == 2)
    finally:
        intake.shutdown()
    assert calls == [("pull", ["9"]), ("deletes", None), ("pull", None)]


class StreamingConnector(Connector):
    """A change stream of events numbered 1, 2, 3 …: each hint names record ``r<n>`` and
    carries position ``n``; it starts after the position it is given."""

    type = "streaming"
    capabilities = Capabilities(streams=True)
    opened: list[str | None] = []
    fail_after: int | None = None
    last = 6

    def stream(self, position, emit, stop):  # type: ignore[no-untyped-def]
        type(self).opened.append(position)
        start = int(position or 0) + 1
        for n in range(start, self.last + 1):
            if stop.is_set():
                return
            if self.fail_after is not None and n > self.fail_after:
                type(self).fail_after = None
                raise Unavailable("stream broke")
            emit(ChangeHint((f"r{n}",), position=str(n)))
        stop.wait(10)


def test_a_stream_resumes_from_the_position_whose_pull_committed(engine, monkeypatch):
    monkeypatch.setattr("daemon.runtime.intake.STREAM_BACKOFF", (0.01,))
    StreamingConnector.opened = []
    StreamingConnector.fail_after = 3
    served: list[str] = []
    gate = threading.Event()

    def run_cycle(instance: Any, direction: str, ids: list[str] | None) -> str:
        # The pull of r5 and r6 fails until the gate opens: their position must not be saved.
        if any(i in ("r5", "r6") for i in ids or []) and not gate.is_set():
            return "failed"
        served.extend(ids or [])
        return "ok"

    instance = _Instance("sf", StreamingConnector)
    intake = Intake(engine, lambda: {"sf": instance}, run_cycle, queue=HintQueue(quiet=0))
    intake.start()
    intake.follow([instance])  # type: ignore[list-item]
    try:
        wait_for(lambda: {"r1", "r2", "r3"} <= set(served))
        wait_for(lambda: len(StreamingConnector.opened) >= 2)  # broke after 3, reopened
        assert StreamingConnector.opened[1] in ("1", "2", "3")  # from a committed position
        with engine.connect() as conn:
            saved = runs.get_cursor(conn, "sf", CHANGES_STREAM)
        assert saved is not None and int(saved) <= 4  # not past the failing r5
        assert instance_status(engine, {"sf": "sf"})["sf"]["events"]["stream_connected"]
        gate.set()
        wait_for(lambda: {"r5", "r6"} <= set(served))
        wait_for(lambda: intake.idle)
    finally:
        intake.shutdown()
    with engine.connect() as conn:
        assert runs.get_cursor(conn, "sf", CHANGES_STREAM) == "6"
    assert {f"r{n}" for n in range(1, 7)} <= set(served)  # nothing lost
    assert instance_status(engine, {"sf": "sf"})["sf"]["events"]["stream_connected"] is False


def _memory_instance(tmp_path, name: str, *, pull: str | None):  # type: ignore[no-untyped-def]
    text = instance_toml(tmp_path / f"{name}.json", settings="", push="every 1h")
    lines = [line for line in text.splitlines() if not line.startswith("pull =")]
    if pull is not None:
        lines.insert(lines.index("[schedule]") + 1, f'pull = "{pull}"')
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_instance(path, {"memory": MemoryConnector})


def test_hints_slow_the_default_pull_but_not_one_the_file_sets(tmp_path, sqlite_engine):
    default = _memory_instance(tmp_path, "quiet", pull=None)
    explicit = _memory_instance(tmp_path, "busy", pull="every 15m")
    sched = Scheduler(sqlite_engine, DaemonSettings(workers=1), lambda name, direction: "ok")
    sched.start()
    try:
        for instance in (default, explicit):
            sched.schedule(instance)
        assert sched._specs[job_id("quiet", "pull")][0] == "every 15m"
        for name in ("quiet", "busy"):
            sched.hints_flow(name)
        assert sched._specs[job_id("quiet", "pull")][0] == HINTED_PULL
        assert sched._specs[job_id("busy", "pull")][0] == "every 15m"
        later = sched.next_run_of("quiet", "pull")
        assert later is not None and later > utcnow() + timedelta(minutes=50)
        sched.schedule(default)  # a reload keeps it slowed
        assert sched._specs[job_id("quiet", "pull")][0] == HINTED_PULL
    finally:
        sched.shutdown()
