"""The conversations export (plugins/export on daemon/engine/export_cycle.py), on a local folder.

Files are checked column by column; exactly-once is checked across runs, failed uploads and
in-process crashes at both sides of the upload (tests/test_export_crash.py kills a real
process; tests/test_export_sftp.py goes over a real sshd).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update

from daemon.config.instances import load_instance
from daemon.config.settings import ConfigError, DaemonSettings
from daemon.engine import export_cycle as exports
from daemon.hub import outbox
from daemon.hub.contacts import save_contact
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceRow, InstanceState, Message, SyncLease
from daemon.kit.connector import Unavailable
from daemon.kit.exporter import is_exporter
from daemon.kit.filetransport import LocalTransport
from daemon.runtime.scheduler import Scheduler
from plugins.export.exporter import parse_zone
from tests.exportkit import (
    CONNECTORS,
    NAME,
    T0,
    all_rows,
    batches,
    contact,
    engine_for,
    export_instance,
    exported_files,
    message,
    read_csv,
    sync_log,
    write_raw_instance,
)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_a_file_holds_one_row_per_message_column_by_column(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    bob = contact(sqlite_engine, 2, crm=False)
    message(sqlite_engine, ada, 'Hi, "is" this, the place?', channel="web")
    message(
        sqlite_engine,
        ada,
        "Welcome!\nReply STOP to stop",
        direction="outgoing",
        campaign=("camp-7", "Fall welcome"),
        message_type="campaign",
        minutes=1,
    )
    message(sqlite_engine, bob, "Où est le bureau ?", channel="facebook", minutes=2)
    instance = export_instance(tmp_path / "etc", out, file_prefix="mainstay_conversations")

    report = engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)

    assert report.outcome == "ok", report
    assert report.counts == {"batches": 1, "files": 1, "messages": 3}
    (path,) = exported_files(out)
    assert path.name.startswith("mainstay_conversations")
    # prefix + UTC timestamp YYYY-MM-DDTHHMMSSmmmZ, as Mainstay names its files
    stamp = path.name.removeprefix("mainstay_conversations").removesuffix(".csv")
    assert len(stamp) == len("2022-10-03T235350411Z") and stamp[10] == "T" and stamp[-1] == "Z"
    assert path.read_bytes().count(b"\r\n") >= 4  # CRLF rows
    rows = read_csv(path)
    assert rows == [
        {
            "crm_id": "CRM1",
            "mainstay_id": ada,
            "first_name": "First1",
            "last_name": "Last1",
            "channel": "web",
            "campaign_id": "",
            "campaign_name": "",
            "timestamp": "2026-03-01T14:30:05+00:00",
            "incoming": 'Hi, "is" this, the place?',
            "outgoing": "",
        },
        {
            "crm_id": "CRM1",
            "mainstay_id": ada,
            "first_name": "First1",
            "last_name": "Last1",
            "channel": "twilio",
            "campaign_id": "camp-7",
            "campaign_name": "Fall welcome",
            "timestamp": "2026-03-01T14:31:05+00:00",
            "incoming": "",
            "outgoing": "Welcome!\nReply STOP to stop",
        },
        {
            "crm_id": "",
            "mainstay_id": bob,
            "first_name": "First2",
            "last_name": "Last2",
            "channel": "facebook",
            "campaign_id": "",
            "campaign_name": "",
            "timestamp": "2026-03-01T14:32:05+00:00",
            "incoming": "Où est le bureau ?",
            "outgoing": "",
        },
    ]
    (batch,) = batches(sqlite_engine)
    assert (batch["state"], batch["after_message_id"], batch["rows"]) == ("uploaded", 0, 3)
    assert batch["file_name"] == path.name


def test_each_message_is_exported_once_across_runs(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(sqlite_engine, instance)
    first = [message(sqlite_engine, ada, f"m{n}", minutes=n) for n in range(3)]
    assert sync.run(instance, CycleKind.EXPORT).counts["messages"] == 3
    assert sync.run(instance, CycleKind.EXPORT).counts == {}  # nothing new: no empty file either
    assert len(exported_files(out)) == 1
    later = [message(sqlite_engine, ada, f"m{n}", minutes=n) for n in range(3, 5)]

    assert sync.run(instance, CycleKind.EXPORT).counts["messages"] == 2

    files = exported_files(out)
    assert len(files) == 2
    assert [r["incoming"] for r in read_csv(files[1])] == ["m3", "m4"]
    assert sorted(r["incoming"] for r in all_rows(out)) == [f"m{n}" for n in range(5)]
    ledger = batches(sqlite_engine)
    assert [(b["after_message_id"], b["last_message_id"]) for b in ledger] == [
        (0, first[-1]),
        (first[-1], later[-1]),
    ]


def test_max_rows_per_file_splits_a_backlog_into_files_in_id_order(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    for n in range(7):
        message(sqlite_engine, ada, f"m{n}")
    instance = export_instance(tmp_path / "etc", out, max_rows_per_file=3)

    report = engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)

    assert report.counts == {"batches": 3, "files": 3, "messages": 7}
    files = exported_files(out)
    assert len({f.name for f in files}) == 3  # cut within a millisecond, still distinct
    assert [[r["incoming"] for r in read_csv(f)] for f in files] == [
        ["m0", "m1", "m2"],
        ["m3", "m4", "m5"],
        ["m6"],
    ]


def test_rows_are_read_from_the_hub_in_chunks(tmp_path: Path, sqlite_engine: Engine) -> None:
    ada = contact(sqlite_engine, 1)
    ids = [message(sqlite_engine, ada, f"m{n}") for n in range(7)]
    batch = exports.BatchInfo(1, NAME, "f.csv", ids[0], ids[-1], 6, {})
    got = [row.body for row in exports.iter_rows(sqlite_engine, batch, chunk=2)]
    assert got == [f"m{n}" for n in range(1, 7)]  # after_id exclusive, last_id inclusive


def test_channel_direction_and_type_filters(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "sms in", channel="twilio")
    message(sqlite_engine, ada, "web in", channel="web")
    message(sqlite_engine, ada, "fb in", channel="facebook")
    message(sqlite_engine, ada, "sms campaign", direction="outgoing", message_type="campaign")
    message(sqlite_engine, ada, "sms ai", direction="outgoing", message_type="ai")
    message(
        sqlite_engine,
        ada,
        "web live",
        direction="outgoing",
        channel="web",
        message_type="live_chat",
    )
    message(sqlite_engine, ada, "sms untyped", direction="outgoing")
    instance = export_instance(
        tmp_path / "etc",
        out,
        channels=["twilio", "web"],
        message_types=["campaign", "live_chat"],
    )
    engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    got = [r["incoming"] or r["outgoing"] for r in all_rows(out)]
    # Types filter outgoing messages only; incoming ones pass on channel alone.
    assert got == ["sms in", "web in", "sms campaign", "web live"]


def test_direction_filter(tmp_path: Path, sqlite_engine: Engine, out: Path) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "in")
    message(sqlite_engine, ada, "out", direction="outgoing", message_type="ai")
    instance = export_instance(tmp_path / "etc", out, directions=["outgoing"])
    engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert [(r["incoming"], r["outgoing"]) for r in all_rows(out)] == [("", "out")]


def test_the_watermark_moves_past_messages_the_filter_drops(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "web", channel="web")
    instance = export_instance(tmp_path / "etc", out, channels=["twilio"])
    sync = engine_for(sqlite_engine, instance)
    assert sync.run(instance, CycleKind.EXPORT).counts == {}
    assert exported_files(out) == [] and batches(sqlite_engine) == []
    last = message(sqlite_engine, ada, "sms")
    assert sync.run(instance, CycleKind.EXPORT).counts["messages"] == 1
    assert batches(sqlite_engine)[0]["last_message_id"] == last


def test_test_users_messages_are_never_exported(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    tester = contact(sqlite_engine, 2, test_user=True)
    message(sqlite_engine, ada, "real")
    message(sqlite_engine, tester, "from a tester")
    message(sqlite_engine, tester, "to a tester", direction="outgoing")
    instance = export_instance(tmp_path / "etc", out)
    engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert [r["mainstay_id"] for r in all_rows(out)] == [ada]


def test_a_contact_flagged_test_user_before_a_retry_is_left_out_of_it(
    tmp_path: Path, sqlite_engine: Engine, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = contact(sqlite_engine, 1)
    bob = contact(sqlite_engine, 2)
    message(sqlite_engine, ada, "ada")
    message(sqlite_engine, bob, "bob")
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(sqlite_engine, instance)
    fail_uploads(monkeypatch, times=1)
    assert sync.run(instance, CycleKind.EXPORT).outcome == "failed"
    save_contact(sqlite_engine, {}, contact_id=bob, test_user=True)
    assert sync.run(instance, CycleKind.EXPORT, respect_backoff=False).outcome == "ok"
    assert [r["incoming"] for r in all_rows(out)] == ["ada"]


@pytest.mark.parametrize(
    ("zone", "fmt", "expected"),
    [
        ("UTC", None, "2026-03-01T14:30:05+00:00"),
        ("America/New_York", None, "2026-03-01T09:30:05-05:00"),
        ("-04:00", None, "2026-03-01T10:30:05-04:00"),
        ("+0530", "%Y-%m-%d %H:%M:%S", "2026-03-01 20:00:05"),
    ],
)
def test_timestamps_in_a_time_zone_or_offset(
    tmp_path: Path, sqlite_engine: Engine, out: Path, zone: str, fmt: str | None, expected: str
) -> None:
    message(sqlite_engine, contact(sqlite_engine, 1), "hi")
    settings = {"timezone": zone} | ({"timestamp_format": fmt} if fmt else {})
    instance = export_instance(tmp_path / "etc", out, **settings)
    engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert [r["timestamp"] for r in all_rows(out)] == [expected]


def test_start_date_bounds_the_backfill_in_the_export_time_zone(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    ada = contact(sqlite_engine, 1)
    # T0 is 2026-03-01 14:30 UTC, 09:30 in New York.
    message(sqlite_engine, ada, "old", minutes=-24 * 60)
    message(sqlite_engine, ada, "before 9:00 NY", minutes=-31)
    message(sqlite_engine, ada, "after 9:00 NY", minutes=-29)
    instance = export_instance(
        tmp_path / "etc",
        out,
        start_date="2026-03-01T09:00:00",
        timezone="America/New_York",
    )
    engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert [r["incoming"] for r in all_rows(out)] == ["after 9:00 NY"]


def fail_uploads(
    monkeypatch: pytest.MonkeyPatch, times: int, error: Exception | None = None
) -> list[str]:
    """Make the next ``times`` uploads fail; returns the paths tried."""
    tried: list[str] = []
    real = LocalTransport.write_atomic

    def flaky(self: LocalTransport, path: str, chunks: Iterable[bytes]) -> int:
        tried.append(path)
        if len(tried) <= times:
            for _ in chunks:  # half-way through the rows, as a dropped connection would
                break
            raise error or Unavailable("connection reset by peer")
        return real(self, path, chunks)

    monkeypatch.setattr(LocalTransport, "write_atomic", flaky)
    return tried


def test_a_failed_upload_keeps_the_batch_and_retries_it_under_the_same_name(
    tmp_path: Path, sqlite_engine: Engine, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "one")
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(sqlite_engine, instance)
    tried = fail_uploads(monkeypatch, times=1)

    failed = sync.run(instance, CycleKind.EXPORT)

    assert (failed.outcome, failed.code) == ("failed", "remote-unavailable")
    (batch,) = batches(sqlite_engine)
    assert (batch["state"], batch["attempts"]) == ("pending", 1)
    assert "connection reset" in batch["last_error"]
    (row,) = sync_log(sqlite_engine)
    assert (row["code"], row["direction"], row["instance"]) == (
        "remote-unavailable",
        "outgoing",
        NAME,
    )
    assert batch["file_name"] in row["message"]
    assert exported_files(out) == []
    assert sync.run(instance, CycleKind.EXPORT).outcome == "backoff"  # the daemon waits a little
    message(sqlite_engine, ada, "two")  # arrives meanwhile: the next batch, not this one

    retried = sync.run(instance, CycleKind.EXPORT, respect_backoff=False)

    assert retried.outcome == "ok" and retried.counts["retried"] == 1
    assert tried[0] == tried[1] == batch["file_name"]
    assert [read_csv(f)[0]["incoming"] for f in exported_files(out)] == ["one", "two"]
    assert [b["state"] for b in batches(sqlite_engine)] == ["uploaded", "uploaded"]


def test_a_refused_write_is_remote_rejected(
    tmp_path: Path, sqlite_engine: Engine, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message(sqlite_engine, contact(sqlite_engine, 1), "one")
    instance = export_instance(tmp_path / "etc", out)
    fail_uploads(monkeypatch, times=1, error=PermissionError(13, "Permission denied"))
    report = engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert (report.outcome, report.code) == ("failed", "remote-rejected")
    assert [r["code"] for r in sync_log(sqlite_engine)] == ["remote-rejected"]


class Crash(BaseException):
    """Stands for the process dying: nothing after the fault point runs."""


@pytest.mark.parametrize("point", ["recorded", "uploaded"])
def test_a_crash_either_side_of_the_upload_neither_duplicates_nor_loses(
    tmp_path: Path,
    sqlite_engine: Engine,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    ada = contact(sqlite_engine, 1)
    for n in range(5):
        message(sqlite_engine, ada, f"m{n}")
    instance = export_instance(tmp_path / "etc", out, max_rows_per_file=2)
    sync = engine_for(sqlite_engine, instance)

    def die(where: str, batch: exports.BatchInfo) -> None:
        if where == point and batch.id == 2:
            raise Crash(where)

    monkeypatch.setattr(exports, "FAULT_HOOK", die)
    with pytest.raises(Crash):
        sync.run(instance, CycleKind.EXPORT)
    crashed = batches(sqlite_engine)
    assert [b["state"] for b in crashed] == ["uploaded", "pending"]
    assert len(exported_files(out)) == (1 if point == "recorded" else 2)
    monkeypatch.setattr(exports, "FAULT_HOOK", None)

    report = sync.run(instance, CycleKind.EXPORT)

    assert report.outcome == "ok" and report.counts["retried"] == 1
    ledger = batches(sqlite_engine)
    assert ledger[1]["file_name"] == crashed[1]["file_name"]  # the same name again
    assert [f.name for f in exported_files(out)] == [b["file_name"] for b in ledger]
    assert [r["incoming"] for r in all_rows(out)] == [f"m{n}" for n in range(5)]


def test_a_batch_keeps_the_filter_it_was_cut_with(
    tmp_path: Path, sqlite_engine: Engine, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "sms")
    message(sqlite_engine, ada, "web", channel="web")
    instance = export_instance(tmp_path / "etc", out)
    fail_uploads(monkeypatch, times=1)
    assert engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT).outcome == "failed"
    narrowed = export_instance(tmp_path / "etc", out, channels=["web"], timezone="-01:00")
    report = engine_for(sqlite_engine, narrowed).run(
        narrowed, CycleKind.EXPORT, respect_backoff=False
    )
    assert report.outcome == "ok"
    rows = all_rows(out)
    assert [r["incoming"] for r in rows] == ["sms", "web"]
    assert rows[0]["timestamp"].endswith("+00:00")


def test_dry_run_uploads_nothing(tmp_path: Path, sqlite_engine: Engine, out: Path) -> None:
    message(sqlite_engine, contact(sqlite_engine, 1), "one")
    instance = export_instance(tmp_path / "etc", out)
    report = engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT, dry_run=True)
    assert report.outcome == "ok"
    assert report.counts == {"pending": 0, "would_export": 1}
    assert exported_files(out) == [] and batches(sqlite_engine) == []


def test_an_exporter_takes_no_outbox_rows_and_has_only_an_export_job(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    instance = export_instance(tmp_path / "etc", out)
    assert is_exporter(instance.connector_class)
    engine_for(sqlite_engine, instance)  # mirrors the instance
    with sqlite_engine.connect() as conn:
        table = InstanceRow.__table__
        direction = conn.execute(select(table.c.direction)).scalar()
        assert direction == "export"
        assert outbox.outgoing_connections(conn) == []
    ran: list[tuple[str, str]] = []
    done = threading.Event()

    def runner(name: str, direction: str) -> str:
        ran.append((name, direction))
        done.set()
        return "ok"

    scheduler = Scheduler(sqlite_engine, DaemonSettings(workers=1), runner)
    scheduler.start()
    try:
        scheduler.schedule(instance)
        assert done.wait(10)
        jobs = sorted(job.id for job in scheduler._scheduler.get_jobs())
        # The next export is recorded where status reads an instance's next push.
        state = InstanceState.__table__
        query = select(state.c.next_pull_at, state.c.next_push_at)
        for _ in range(1000):
            with sqlite_engine.connect() as conn:
                times = conn.execute(query.where(state.c.instance == NAME)).first()
            if times is not None and times[1] is not None:
                break
            threading.Event().wait(0.01)  # the aftercare thread writes it shortly
    finally:
        scheduler.shutdown()
    assert jobs == [f"{NAME}:export"]
    assert ran[0] == (NAME, CycleKind.EXPORT)
    assert times is not None and times[0] is None and times[1] is not None


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[settings]\ntimezone = "Mars/Olympus"\n[settings.transport]\nkind = "local"', "timezone"),
        ('[settings]\nchannels = ["sms"]\n[settings.transport]\nkind = "local"', "channels"),
        ('[settings]\nfile_prefix = "a/b"\n[settings.transport]\nkind = "local"', "file_prefix"),
        ('[settings]\nmax_rows_per_file = 0\n[settings.transport]\nkind = "local"', "max_rows"),
        ('[settings]\ntimestamp_format = "iso"\n[settings.transport]\nkind = "local"', "timestamp"),
        ('[settings]\n[settings.transport]\nkind = "sftp"\nhost = "h"', "transport"),
        ('[settings]\ncolumns = ["x"]\n[settings.transport]\nkind = "local"', "columns"),
        ('[schedule]\nexport = "sometimes"\n[settings.transport]\nkind = "local"', "export"),
    ],
)
def test_bad_settings_are_config_invalid_naming_the_key(
    tmp_path: Path, body: str, key: str
) -> None:
    path = write_raw_instance(tmp_path / "etc", 'type = "conversations_export"\n' + body)
    with pytest.raises(ConfigError) as caught:
        load_instance(path, CONNECTORS)
    assert key in caught.value.key


def test_parse_zone_accepts_names_and_offsets() -> None:
    offset = parse_zone("UTC-4").utcoffset(None)
    assert offset is not None and offset.total_seconds() == -4 * 3600
    with pytest.raises(ValueError):
        parse_zone("+25:00")


def test_exactly_once_on_postgresql_with_an_insert_in_flight(
    tmp_path: Path, pg_engine: Engine, out: Path
) -> None:
    """A message whose insert is still uncommitted when the export starts has a lower id
    than later ones: the cut waits for it (a SHARE lock on the table), so it is neither lost
    behind the watermark nor exported twice."""
    ada = contact(pg_engine, 1)
    message(pg_engine, ada, "committed")
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(pg_engine, instance)
    in_flight = pg_engine.connect()
    transaction = in_flight.begin()
    in_flight.execute(
        Message.__table__.insert().values(
            contact_id=ada, channel="web", direction="incoming", body="late", sent_at=T0
        )
    )
    message(pg_engine, ada, "overtaking")  # a higher id, committed first
    reports: list[Any] = []
    runner = threading.Thread(target=lambda: reports.append(sync.run(instance, CycleKind.EXPORT)))
    runner.start()
    try:
        # Commit only once the export waits for the lock (pg_locks says so): no sleeping.
        while runner.is_alive():
            with pg_engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                    break
            runner.join(0.005)
        transaction.commit()
    finally:
        in_flight.close()
        runner.join(30)
    assert reports and reports[0].outcome == "ok", reports
    message(pg_engine, ada, "after")
    assert sync.run(instance, CycleKind.EXPORT).outcome == "ok"
    got = sorted(r["incoming"] for r in all_rows(out))
    assert got == ["after", "committed", "late", "overtaking"]


def test_an_upload_whose_lease_passed_to_another_node_stops_and_is_retried(
    tmp_path: Path, sqlite_engine: Engine, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = contact(sqlite_engine, 1)
    for n in range(3):
        message(sqlite_engine, ada, f"m{n}")
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(sqlite_engine, instance)
    lease_table = SyncLease.__table__

    def take_over(where: str, batch: exports.BatchInfo) -> None:
        if where == "recorded":  # another node takes the lease (this one stalled past its TTL)
            with sqlite_engine.begin() as conn:
                conn.execute(update(lease_table).values(owner="other-node"))

    monkeypatch.setattr(exports, "RENEW_EVERY", 0.0)
    monkeypatch.setattr(exports, "FAULT_HOOK", take_over)
    report = sync.run(instance, CycleKind.EXPORT)
    assert report.outcome == "interrupted", report
    assert exported_files(out) == [] and list(out.iterdir()) == []  # temp file removed
    assert [b["state"] for b in batches(sqlite_engine)] == ["pending"]

    monkeypatch.setattr(exports, "FAULT_HOOK", None)
    with sqlite_engine.begin() as conn:
        conn.execute(update(lease_table).values(owner=None, expires_at=None))
    assert sync.run(instance, CycleKind.EXPORT).outcome == "ok"
    (path,) = exported_files(out)
    assert path.name == batches(sqlite_engine)[0]["file_name"]
    assert [r["incoming"] for r in read_csv(path)] == ["m0", "m1", "m2"]


def test_a_message_after_the_newest_was_deleted_is_still_exported(
    tmp_path: Path, sqlite_engine: Engine, out: Path
) -> None:
    """SQLite would hand the deleted highest id out again without AUTOINCREMENT, and the new
    message would sit at the watermark, never exported."""
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "kept")
    last = message(sqlite_engine, ada, "deleted later")
    instance = export_instance(tmp_path / "etc", out)
    sync = engine_for(sqlite_engine, instance)
    sync.run(instance, CycleKind.EXPORT)
    with sqlite_engine.begin() as conn:
        conn.execute(Message.__table__.delete().where(Message.__table__.c.id == last))
    assert message(sqlite_engine, ada, "new") > last
    sync.run(instance, CycleKind.EXPORT)
    assert [r["incoming"] for r in all_rows(out)] == ["kept", "deleted later", "new"]
