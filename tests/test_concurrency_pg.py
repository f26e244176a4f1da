"""Concurrency against a real PostgreSQL server (and the lease tests on SQLite too).

- Many hub writers and a pusher at once lose no outbox entry: every contact's final value
  reaches the platform.
- One run per connection: a second thread, a second daemon, or a manual ``sync`` gets
  ``busy``; an expired lease can be taken over, and the old owner is fenced off.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import ClassVar

import pytest
from sqlalchemy import Engine, select, update

from daemon.config.instances import Instance
from daemon.engine.cycle import CycleReport, SyncEngine
from daemon.hub import lease
from daemon.hub.contacts import save_contact
from daemon.hub.runs import get_cursor
from daemon.hub.store import Contact, InstanceState, Link, Outbox, SyncLease, SyncRun, utcnow
from daemon.kit.connector import Page
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.memremote import MemoryConnector, MemoryRemote

WAIT = 20.0
"""Seconds a test waits for an event before it calls the run hung (a guard, not a delay)."""

WRITERS = 8
EDITS_PER_WRITER = 40
CONTACTS = 6


def contacts_by_id(engine: Engine) -> dict[str, dict]:
    """Every contact, keyed by hub id."""
    with engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(select(Contact.__table__)).mappings()}


def outbox_rows(engine: Engine) -> list[dict]:
    """Every outbox row, whatever its state."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(Outbox.__table__)).mappings()]


def links_by_contact(engine: Engine, connection: str) -> dict[str, dict]:
    """The links of one connection, keyed by contact id."""
    table = Link.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.connection == connection)).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def connector_state(engine: Engine, name: str) -> dict:
    """What the engine saved for the instance's connector between runs."""
    table = InstanceState.__table__
    with engine.connect() as conn:
        return conn.execute(
            select(table.c.connector_state).where(table.c.instance == name)
        ).scalar_one()


# --- (a) concurrent hub writers ------------------------------------------------------------


def test_concurrent_hub_writers_lose_no_outbox_entry(pg_engine, tmp_path):
    engine = pg_engine
    remote = fresh_remote("busy-remote")
    instance = write_instance(
        tmp_path,
        "out",
        remote="busy-remote",
        extra='direction = "outgoing"\npush_batch_size = 4',
    )
    sync = sync_engine(engine, instance)  # mirrors the instance: hub writes fan out to it
    ids = [
        save_contact(
            engine, {"first_name": f"C{n}", "last_name": "Start", "phone": f"20255501{n:02d}"}
        )
        for n in range(CONTACTS)
    ]
    assert sync.run(instance, "push").counts["created"] == CONTACTS

    start = threading.Barrier(WRITERS + 1)
    writers_done = threading.Event()
    errors: list[BaseException] = []
    reports: list[CycleReport] = []

    def writer(number: int) -> None:
        """One staff member editing random contacts, as fast as the hub lets them."""
        rng = random.Random(number)
        try:
            start.wait(WAIT)
            for edit in range(EDITS_PER_WRITER):
                # Overlapping contacts, and each edit touches one or two mapped fields.
                contact_id = ids[rng.randrange(CONTACTS)]
                values = {"last_name": f"W{number}E{edit}"}
                if rng.random() < 0.5:
                    values["email"] = f"w{number}e{edit}@example.edu"
                save_contact(engine, values, contact_id=contact_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def pusher() -> None:
        """The daemon's push job, back to back, while the writers write."""
        try:
            start.wait(WAIT)
            while not writers_done.is_set():
                reports.append(sync.run(instance, "push"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    push_thread = threading.Thread(target=pusher)
    for thread in [*threads, push_thread]:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    writers_done.set()
    push_thread.join(WAIT * 3)
    assert not any(t.is_alive() for t in [*threads, push_thread]), "a thread hung"
    assert errors == []
    assert reports and all(r.outcome == "ok" for r in reports), [
        (r.outcome, r.error) for r in reports if r.outcome != "ok"
    ]

    final = sync.run(instance, "push")
    assert final.outcome == "ok", final.error
    # Nothing is left behind: no row pending, none parked, none backed off.
    assert outbox_rows(engine) == []
    hub = contacts_by_id(engine)
    links = links_by_contact(engine, "out")
    rows = {r.id: r for r in remote.live()}
    assert len(rows) == CONTACTS  # one record per contact, never a second
    for contact_id in ids:
        contact = hub[contact_id]
        record = rows[links[contact_id]["remote_id"]]
        assert record.created_for == contact_id
        assert record.fields["LastName"] == contact["last_name"]
        assert record.fields.get("Email") == contact["email"]
        assert contact["last_name"].startswith("W")  # the edits did land in the hub
    # And a further push has nothing to send: the link agrees with both sides.
    calls = remote.push_calls
    assert sync.run(instance, "push").outcome == "ok"
    assert remote.push_calls == calls


# --- (b) one run per connection -----------------------------------------------------------


class BlockingConnector(MemoryConnector):
    """The memory connector, with a pull that stops at a chosen page until released.

    ``block_before`` is the 0-based index of the page it waits before yielding (0: before
    the first page, so nothing is committed yet). Class attributes, because the engine
    builds the connector itself.
    """

    entered: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()
    block_before: ClassVar[int] = 0
    pulls: ClassVar[int] = 0

    @classmethod
    def reset(cls, block_before: int = 0) -> None:
        """Fresh events and counters for a test."""
        cls.entered = threading.Event()
        cls.release = threading.Event()
        cls.block_before = block_before
        cls.pulls = 0

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """The memory connector's pages, waiting for :attr:`release` before one of them."""
        type(self).pulls += 1
        # As a connector that rotated its refresh token during the run would.
        self.context.state["token"] = f"rotated-by-{self.context.instance}-{type(self).pulls}"
        for index, page in enumerate(super().pull(cursor)):
            if index == self.block_before:
                self.entered.set()
                if not self.release.wait(WAIT):
                    raise TimeoutError("the test never released the pull")
            yield page


def blocking(instance: Instance) -> Instance:
    """The same instance, run through :class:`BlockingConnector`."""
    return dataclasses.replace(instance, connector_class=BlockingConnector)


@pytest.fixture
def seeded(tmp_path) -> tuple[MemoryRemote, Instance]:
    """A remote with 9 records (3 pages) and a two-way instance on it."""
    remote = fresh_remote("leased")
    for n in range(9):
        remote.add(FirstName=f"R{n}", LastName="Remote", Phone=f"20255501{n:02d}")
    instance = write_instance(tmp_path, "leased", remote="leased")
    return remote, instance


def run_in_thread(
    sync: SyncEngine, instance: Instance, direction: str, out: queue.Queue
) -> threading.Thread:
    """Start one cycle in a thread; its report goes to ``out`` when it ends."""
    thread = threading.Thread(target=lambda: out.put(sync.run(instance, direction)))
    thread.start()
    return thread


def test_two_concurrent_runs_of_one_instance_never_both_run(engine, seeded):
    _remote, instance = seeded
    BlockingConnector.reset()
    slow = blocking(instance)
    sync = sync_engine(engine, slow)
    results: queue.Queue[CycleReport] = queue.Queue()

    threads = [run_in_thread(sync, slow, "pull", results) for _ in range(2)]
    assert BlockingConnector.entered.wait(WAIT)
    # The winner is stuck in its pull, so the first answer must be the loser's.
    first = results.get(timeout=WAIT)
    assert first.outcome == "busy"

    # While it runs: a push of the same connection from this engine, and any cycle from a
    # second daemon (another owner), are busy too.
    assert sync.run(slow, "push").outcome == "busy"
    other = SyncEngine(engine, sync.transforms, owner="daemon-b")
    assert other.run(instance, "pull").outcome == "busy"
    assert other.run(instance, "push").outcome == "busy"

    BlockingConnector.release.set()
    second = results.get(timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert second.outcome == "ok", second.error
    assert second.counts["created"] == 9
    assert BlockingConnector.pulls == 1  # the loser never reached the platform
    assert connector_state(engine, instance.name) == {"token": "rotated-by-leased-1"}
    assert len(contacts_by_id(engine)) == 9

    # The lease was given back: the next cycle, from either engine, runs.
    assert other.run(instance, "pull").outcome == "ok"
    with engine.connect() as conn:
        assert conn.execute(select(SyncLease.__table__.c.owner)).scalars().all() == [None]


def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(engine, seeded):
    _remote, instance = seeded
    BlockingConnector.reset(block_before=1)  # page 0 commits, then the pull stalls
    slow = blocking(instance)
    sync = sync_engine(engine, slow)
    results: queue.Queue[CycleReport] = queue.Queue()
    thread = run_in_thread(sync, slow, "pull", results)
    assert BlockingConnector.entered.wait(WAIT)
    with engine.connect() as conn:
        checkpoint = get_cursor(conn, instance.name)
    assert checkpoint is not None
    assert len(contacts_by_id(engine)) == 3

    # Not expired yet: a second daemon cannot take it.
    assert not lease.acquire(engine, instance.connection, "daemon-b", utcnow())
    # The stalled node's lease runs out (as if it hung for longer than the TTL) …
    table = SyncLease.__table__
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.name == instance.connection)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    # … and the second daemon takes it over, and saves its own connector state.
    assert lease.acquire(engine, instance.connection, "daemon-b", utcnow())
    with engine.begin() as conn:
        conn.execute(
            update(InstanceState.__table__)
            .where(InstanceState.__table__.c.instance == instance.name)
            .values(connector_state={"token": "rotated-by-daemon-b"})
        )

    BlockingConnector.release.set()
    report = results.get(timeout=WAIT)
    thread.join(WAIT)
    # The old owner's next page renews the lease first, finds it gone, and rolls back.
    assert report.outcome == "interrupted"
    assert "lease" in (report.error or "")
    with engine.connect() as conn:
        assert get_cursor(conn, instance.name) == checkpoint
        run = conn.execute(
            select(SyncRun.__table__).where(SyncRun.__table__.c.id == report.run_id)
        ).one()
        owner = conn.execute(select(table.c.owner).where(table.c.name == instance.connection))
        assert owner.scalar() == "daemon-b"  # the fenced run did not release it either
    assert run.outcome == "interrupted"
    assert len(contacts_by_id(engine)) == 3  # page 1 was not committed
    # Nor did it overwrite the connector state of the run that took over.
    assert connector_state(engine, instance.name) == {"token": "rotated-by-daemon-b"}

    # Once the lease is free, a cycle carries on from the checkpoint; nothing is duplicated.
    lease.release(engine, instance.connection, "daemon-b")
    other = SyncEngine(engine, sync.transforms, owner="daemon-b")
    resumed = other.run(instance, "pull")
    assert resumed.outcome == "ok", resumed.error
    assert resumed.counts["read"] == 6 and resumed.counts["created"] == 6
    assert len(contacts_by_id(engine)) == 9
    assert len(links_by_contact(engine, instance.connection)) == 9


def test_a_lease_left_by_a_dead_process_of_this_host_is_taken_at_once(engine, tmp_path):
    # A restart after a crash (SIGKILL, OOM) need not wait for the lease to expire.
    dead = f"{socket.gethostname()}:{_pid_of_finished_process()}:0badc0de/abc"
    alive = f"{socket.gethostname()}:{os.getpid()}:0badc0de/abc"
    elsewhere = "other-host.example:1:0badc0de/abc"
    for holder, taken in ((alive, False), (elsewhere, False), (dead, True)):
        table = SyncLease.__table__
        with engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(
                table.insert().values(
                    name="conn", owner=holder, expires_at=utcnow() + timedelta(minutes=5)
                )
            )
        assert lease.acquire(engine, "conn", "restarted", utcnow()) is taken, holder


def _pid_of_finished_process() -> int:
    """The id of a process that ran and was reaped: nothing has that id now (pids are not
    reused that quickly)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
