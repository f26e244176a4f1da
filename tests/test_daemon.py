"""The daemon as systemd runs it: ``contactsync run`` in a child process.

What is shown, each with bounded polling and no timing assertion but the grace time:

1. READY arrives on a fake ``NOTIFY_SOCKET``.
2. A new instance file is scheduled and runs (it pulls, and pushes a hub contact).
3. A broken edit of it logs ``config-invalid`` while its last good config keeps running;
   disabling and removing it takes its jobs away; another instance is never touched.
4. SIGHUP reloads, with RELOADING (and MONOTONIC_USEC) then READY.
5. The watchdog is pinged.
6. SIGTERM stops within the grace time with STOPPING, exit code 0; a pull in progress is
   cancelled between pages, ends ``interrupted``, and its checkpoint matches its links.

Also: every output line is JSON and carries neither the configured secret nor a contact's
phone or email; a hub write made by another process reaches the platform without waiting
for the push schedule (SQLite polling, PostgreSQL LISTEN/NOTIFY); a bad
``etc/contactsync.toml`` exits 2.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from daemon.hub.contacts import save_contact
from daemon.hub.database import READ_ONLY, make_engine
from daemon.hub.store import InstanceRow, InstanceState, Link, SyncCursor, SyncRun, utcnow
from tests.daemonkit import (
    DaemonProcess,
    NotifySocket,
    daemon_settings,
    instance_toml,
    remote_rows,
    wait_until,
)
from tests.memremote import MemoryRemote

SECRET = "mem-key-5ecr3t-9f1b27"
GRACE = 5.0
FAST = {
    "reload_debounce_ms": 100,
    "wake_debounce_ms": 100,
    "poll_interval_ms": 100,
    "shutdown_grace_seconds": GRACE,
}
HUB_PEOPLE = [
    {"first_name": "Hana", "last_name": "Hub", "phone": "2025550141", "email": "hana@hub.example"},
    {"first_name": "Ivo", "last_name": "Hub", "phone": "2025550142", "email": "ivo@hub.example"},
]
REMOTE_PEOPLE = [
    {"FirstName": "Rita", "LastName": "Remote", "Phone": "2025550151", "Email": "rita@r.example"},
    {"FirstName": "Sam", "LastName": "Remote", "Phone": "2025550152", "Email": "sam@r.example"},
]
LATE = {"first_name": "Lena", "last_name": "Late", "phone": "2025550161", "email": "lena@x.example"}
MISSED = {"first_name": "Max", "last_name": "Gap", "phone": "2025550162", "email": "max@x.example"}


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    (folder / "instances").mkdir(parents=True)
    (folder / "contactsync.toml").write_text(daemon_settings(**FAST), encoding="utf-8")
    return folder


def seed_remote(path: Path, people: list[dict[str, str]]) -> None:
    remote = MemoryRemote()
    for fields in people:
        remote.add(**fields)
    remote.save(path)


def state_of(engine: Engine, name: str) -> dict[str, Any] | None:
    table = InstanceState.__table__
    with engine.connect().execution_options(**READ_ONLY) as conn:
        row = conn.execute(select(table).where(table.c.instance == name)).mappings().first()
    return dict(row) if row else None


def pushed_for(remote_file: Path, contact_id: str) -> bool:
    return any(r["created_for"] == contact_id for r in remote_rows(remote_file))


def assert_clean_output(daemon: DaemonProcess, secrets: list[str]) -> None:
    """Every line is a JSON object, and no secret, phone or email appears anywhere."""
    lines = daemon.lines()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    output = daemon.output()
    for needle in secrets:
        assert needle not in output, f"{needle!r} leaked into the daemon's output"


def personal_data(*groups: list[dict[str, str]]) -> list[str]:
    """Phones (as typed and as digits after the country code) and emails of everyone."""
    out = []
    for people in groups:
        for person in people:
            for key, value in person.items():
                if key.lower() in ("phone", "email"):
                    out.append(value.lower() if "@" in value else value[-10:])
    return out


# --- 1-6 and the log hygiene, in one daemon's life ---------------------------------------


def test_daemon_lifecycle(tmp_path: Path, etc: Path, notify_socket: NotifySocket) -> None:
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(hub_url)
    hub_ids = [save_contact(engine, person) for person in HUB_PEOPLE]
    beta_remote = tmp_path / "beta.json"
    seed_remote(beta_remote, REMOTE_PEOPLE)
    alpha_remote = tmp_path / "alpha.json"
    # An instance that must stay untouched by everything done to the other one.
    (etc / "instances" / "alpha.toml").write_text(
        instance_toml(alpha_remote, pull="every 1h", push="every 1h"), encoding="utf-8"
    )
    daemon = DaemonProcess(
        etc,
        tmp_path,
        database_url=hub_url,
        env={
            "NOTIFY_SOCKET": str(notify_socket.path),
            "WATCHDOG_USEC": "300000",
            "MEM_KEY": SECRET,
        },
    ).start()
    try:
        # 1. READY on the notify socket, with a status line for `systemctl status`.
        ready = notify_socket.wait_for("READY")
        assert notify_socket.messages[ready]["STATUS"].startswith("1 instance, ")
        daemon.wait_log("daemon_started")
        soon = utcnow() + timedelta(minutes=30)
        alpha_before = wait_until(
            lambda: (s := state_of(engine, "alpha")) and (s["next_pull_at"] or soon) > soon and s,
            what="alpha's first pull done, the next an hour away",
        )

        # 2. A new instance file is scheduled and runs: it pulls, and pushes hub contacts.
        beta_file = etc / "instances" / "beta.toml"
        beta_file.write_text(instance_toml(beta_remote), encoding="utf-8")
        daemon.wait_log("sync_cycle", instance="beta", direction="pull", outcome="ok")
        wait_until(
            lambda: all(pushed_for(beta_remote, cid) for cid in hub_ids),
            what="the hub's contacts pushed by beta",
        )
        wait_until(
            lambda: (s := state_of(engine, "beta")) and s["next_pull_at"] and s["next_push_at"],
            what="beta's next run times in instance_state",
        )

        # 3. A broken edit logs config-invalid; the last good config keeps running.
        beta_file.write_text(
            instance_toml(beta_remote, extra='direction = "sideways"'), encoding="utf-8"
        )
        invalid = daemon.wait_log("sync_error", code="config-invalid", instance="beta")
        assert "direction" in invalid[0]["key"]
        pulls = len(daemon.logged("sync_cycle", instance="beta", direction="pull"))
        daemon.wait_log("sync_cycle", count=pulls + 2, instance="beta", direction="pull")
        late_id = save_contact(engine, LATE)
        wait_until(lambda: pushed_for(beta_remote, late_id), what="a push by the last good config")

        # 4. SIGHUP: RELOADING (with the monotonic time), then READY.
        mark = len(notify_socket.messages)
        daemon.send(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING", after=mark)
        assert notify_socket.messages[reloading]["MONOTONIC_USEC"].isdigit()
        notify_socket.wait_for("READY", after=reloading + 1)

        # 5. The watchdog is pinged, again and again.
        wait_until(lambda: notify_socket.count("WATCHDOG") >= 3, what="watchdog pings")

        # Disabling takes beta's jobs away; removing the file unschedules it for good.
        beta_file.write_text(instance_toml(beta_remote, enabled=False), encoding="utf-8")
        wait_until(
            lambda: (s := state_of(engine, "beta")) and s["next_pull_at"] is None,
            what="beta's jobs removed when disabled",
        )
        assert state_of(engine, "beta")["next_push_at"] is None  # type: ignore[index]
        beta_file.unlink()
        daemon.wait_log("config_reloaded", removed=["beta"])
        rows = InstanceRow.__table__
        with engine.connect() as conn:
            enabled = conn.execute(select(rows.c.enabled).where(rows.c.name == "beta")).scalar()
        assert enabled is False
        alpha_after = state_of(engine, "alpha")
        assert alpha_after is not None
        # (Its push time moves: the hub write above woke every connection it fans out to.)
        assert alpha_after["next_pull_at"] == alpha_before["next_pull_at"]
        reloads = daemon.logged("config_reloaded")
        assert all("alpha" not in r["changed"] + r["removed"] for r in reloads)
        assert sum("alpha" in r["added"] for r in reloads) == 1

        # 6. SIGTERM: STOPPING, and exit 0 within the grace time.
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=GRACE + 5) == 0
        assert notify_socket.find("STOPPING") is not None
        daemon.wait_log("daemon_stopped")
    finally:
        daemon.stop()
        engine.dispose()

    people = [*HUB_PEOPLE, LATE]
    assert_clean_output(daemon, [SECRET, *personal_data(people, REMOTE_PEOPLE)])


def test_sigterm_interrupts_a_pull_between_pages(
    tmp_path: Path, etc: Path, notify_socket: NotifySocket
) -> None:
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(hub_url)
    remote_file = tmp_path / "slow.json"
    people = [
        {"FirstName": f"P{n}", "LastName": "Slow", "Phone": f"2025550{n:03d}"} for n in range(40)
    ]
    seed_remote(remote_file, people)
    (etc / "instances" / "slow.toml").write_text(
        instance_toml(
            remote_file,
            connector="slowmemory",
            pull="every 1h",
            push="every 1h",
            settings="page_size = 1\npage_delay = 0.1",
        ),
        encoding="utf-8",
    )
    daemon = DaemonProcess(
        etc,
        tmp_path,
        database_url=hub_url,
        env={"NOTIFY_SOCKET": str(notify_socket.path)},
        plugins="tests.memplugin,tests.daemonplugin",
    ).start()
    cursors = SyncCursor.__table__
    try:
        notify_socket.wait_for("READY")
        query = select(cursors.c.value).where(cursors.c.instance == "slow")

        def committed() -> str | None:
            with engine.connect().execution_options(**READ_ONLY) as conn:
                return conn.execute(query).scalar()

        wait_until(committed, what="a first committed page")
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=GRACE + 5) == 0
        assert notify_socket.find("STOPPING") is not None
    finally:
        daemon.stop()
    runs = SyncRun.__table__
    links = Link.__table__
    with engine.connect() as conn:
        pulls = conn.execute(
            select(runs.c.outcome).where(runs.c.instance == "slow", runs.c.direction == "pull")
        ).all()
        cursor = conn.execute(select(cursors.c.value).where(cursors.c.instance == "slow")).scalar()
        linked = conn.execute(select(links.c.remote_id).where(links.c.connection == "slow")).all()
    engine.dispose()
    assert [p.outcome for p in pulls] == ["interrupted"]
    # The checkpoint and the links moved together: every page is wholly in or wholly out.
    tick, _last_id = json.loads(cursor)
    assert len(linked) == tick < len(people)
    assert daemon.logged("cycles_cancelled", jobs=["slow:pull"])
    assert_clean_output(daemon, personal_data(people))


# --- waking the pusher --------------------------------------------------------------------


def _hub_write_reaches_platform(
    tmp_path: Path, etc: Path, notify_socket: NotifySocket, hub_url: str
) -> None:
    """A contact saved by this process (another process than the daemon) is pushed long
    before the hourly push schedule. On PostgreSQL, also after the daemon's LISTEN
    connection was killed: a write made while it was gone is pushed once it is back."""
    remote_file = tmp_path / "wake.json"
    (etc / "instances" / "wake.toml").write_text(
        instance_toml(remote_file, pull="every 1h", push="every 1h"), encoding="utf-8"
    )
    engine = make_engine(hub_url)
    daemon = DaemonProcess(
        etc,
        tmp_path,
        database_url=hub_url,
        env={"NOTIFY_SOCKET": str(notify_socket.path), "MEM_KEY": SECRET},
    ).start()
    try:
        notify_socket.wait_for("READY")
        # The first cycles run at start; after them, the next push is an hour away.
        daemon.wait_log("sync_cycle", instance="wake", direction="push", outcome="ok")
        later = utcnow() + timedelta(minutes=30)
        wait_until(
            lambda: (s := state_of(engine, "wake")) and (s["next_push_at"] or later) > later,
            what="the next scheduled push an hour away",
        )
        contact_id = save_contact(engine, LATE)
        wait_until(lambda: pushed_for(remote_file, contact_id), what="the woken push")
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                    )
                ).all()
            assert killed == [(True,)]
            missed_id = save_contact(engine, MISSED)
            wait_until(lambda: pushed_for(remote_file, missed_id), what="a push after reconnect")
            assert daemon.logged("outbox_listen_restored")
        assert state_of(engine, "wake")["next_push_at"] > later  # type: ignore[index]
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=GRACE + 5) == 0
    finally:
        daemon.stop()
        engine.dispose()
    assert_clean_output(daemon, [SECRET, *personal_data([LATE, MISSED])])


def test_hub_write_by_another_process_wakes_push_sqlite(
    tmp_path: Path, etc: Path, notify_socket: NotifySocket
) -> None:
    _hub_write_reaches_platform(tmp_path, etc, notify_socket, f"sqlite:///{tmp_path / 'hub.db'}")


@pytest.mark.postgres
def test_hub_write_by_another_process_wakes_push_postgres(
    tmp_path: Path, etc: Path, notify_socket: NotifySocket, pg_engine: Engine, pg_server_url: str
) -> None:
    _hub_write_reaches_platform(tmp_path, etc, notify_socket, pg_server_url)


# --- refusing to start --------------------------------------------------------------------


def test_bad_settings_file_exits_2(tmp_path: Path, etc: Path) -> None:
    (etc / "contactsync.toml").write_text("[daemon]\nworkers = 0\n", encoding="utf-8")
    daemon = DaemonProcess(etc, tmp_path, database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    daemon.start()
    try:
        assert daemon.wait(timeout=30) == 2
    finally:
        daemon.stop()
    refused = daemon.logged("daemon_not_started", code="config-invalid")
    assert refused and refused[0]["key"] == "daemon.workers"
    assert all(isinstance(json.loads(line), dict) for line in daemon.lines())
