"""Concurrent push batches: several in flight for a connector that allows it, every row
recorded once, and a failing batch stopping the cycle without losing the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import ClassVar

import pytest

from daemon.config.instances import load_instance
from daemon.kit.connector import Capabilities, PushItem, PushResult, RateLimited
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.memremote import MemoryConnector
from tests.test_engine import add_contact, links_of, outbox_rows


class ConcurrentConnector(MemoryConnector):
    """The memory connector, declaring a thread-safe push that takes a while per batch."""

    capabilities = Capabilities(deletes=True, concurrent_push=True)
    active = 0
    most = 0
    calls = 0
    fail_call: ClassVar[int | None] = None
    guard = threading.Lock()

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        cls = type(self)
        with cls.guard:
            cls.active += 1
            cls.calls += 1
            call = cls.calls
            cls.most = max(cls.most, cls.active)
        try:
            time.sleep(0.05)  # the platform's latency, which concurrency overlaps
            if call == cls.fail_call:
                raise RateLimited("daily limit reached", retry_after=3600)
            return super().push(batch)
        finally:
            with cls.guard:
                cls.active -= 1


@pytest.fixture
def concurrent(tmp_path):
    ConcurrentConnector.active = ConcurrentConnector.most = ConcurrentConnector.calls = 0
    ConcurrentConnector.fail_call = None
    remote = fresh_remote()
    written = write_instance(tmp_path, "mem", extra="push_batch_size = 2\npush_concurrency = 3")
    instance = load_instance(written.path, {"memory": ConcurrentConnector})
    return remote, instance


def _hub(engine, count: int) -> list[str]:
    return [
        add_contact(engine, f"C{i}", f"20255501{i:02d}", email=f"c{i}@x.edu") for i in range(count)
    ]


def test_batches_overlap_within_the_limit_and_every_contact_is_created_once(engine, concurrent):
    remote, instance = concurrent
    ids = _hub(engine, 20)
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")  # the first sync queues every unlinked contact
    result = sync.run(instance, "push")
    assert result.outcome == "ok", result.error
    assert 1 < ConcurrentConnector.most <= 3
    assert ConcurrentConnector.calls == 10
    assert sorted(r.created_for for r in remote.live()) == sorted(ids)
    assert set(links_of(engine, "mem")) == set(ids)
    assert outbox_rows(engine) == []


def test_a_failing_batch_stops_the_cycle_and_the_others_are_kept(engine, concurrent):
    remote, instance = concurrent
    ids = _hub(engine, 20)
    ConcurrentConnector.fail_call = 2
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    result = sync.run(instance, "push")
    assert result.outcome != "ok"
    linked = set(links_of(engine, "mem"))
    waiting = {r["contact_id"] for r in outbox_rows(engine)}
    # Every contact is either linked (its batch got through and was recorded) or still
    # queued (its batch failed or was never sent): none lost, none pushed twice.
    assert linked | waiting == set(ids) and not linked & waiting
    assert len(remote.live()) == len(linked)
    assert len(waiting) >= 2  # at least the failed batch

    ConcurrentConnector.fail_call = None
    with engine.begin() as conn:  # the back-off is over
        conn.exec_driver_sql("UPDATE outbox SET next_attempt_at = '2000-01-01'")
        conn.exec_driver_sql("UPDATE instance_state SET backoff_until = NULL")
    assert sync.run(instance, "push").outcome == "ok"
    assert set(links_of(engine, "mem")) == set(ids)
    assert sorted(r.created_for for r in remote.live()) == sorted(ids)


def test_a_connector_that_does_not_declare_it_gets_one_batch_at_a_time(engine, tmp_path):
    fresh_remote()
    instance = write_instance(tmp_path, "mem", extra="push_batch_size = 2\npush_concurrency = 8")
    seen = []
    original = MemoryConnector.push

    def push(self, batch):
        seen.append(threading.current_thread() is threading.main_thread())
        return original(self, batch)

    MemoryConnector.push = push
    try:
        _hub(engine, 6)
        sync = sync_engine(engine, instance)
        sync.run(instance, "pull")
        assert sync.run(instance, "push").outcome == "ok"
    finally:
        MemoryConnector.push = original
    assert seen == [True, True, True]


def test_a_contact_without_a_unique_field_is_pushed_without_it(engine, tmp_path):
    """A field the platform keys on (unique) but does not require: a contact that has none
    is created without it, and two contacts that share one are duplicate-remote-key."""
    from daemon.kit.connector import RemoteField
    from tests.memremote import CATALOGUE

    class UniqueEmail(MemoryConnector):
        def describe(self):
            return [
                RemoteField(f.name, unique=f.name == "Email") if f.name == "Email" else f
                for f in CATALOGUE
            ]

    remote = fresh_remote()
    written = write_instance(tmp_path, "mem")
    instance = load_instance(written.path, {"memory": UniqueEmail})
    lone = add_contact(engine, "NoEmail", "2025550170")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    result = sync.run(instance, "push")
    assert result.outcome == "ok", result.error
    assert [r.created_for for r in remote.live()] == [lone]
    assert "Email" not in remote.live()[0].fields
