"""The sftp plugin against a real OpenSSH server: incoming files through the engine (good and
bad rows, bad files, growing files, the ledger, a crash mid-file), outgoing files column by
column, and host keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import sync_engine
from hubkit import contact_count, define_custom_fields, log_rows
from sftpkit import csv_text, read_csv, transport_table, write_instance
from sqlalchemy import select

from daemon.foundation.clock import FakeClock
from daemon.hub.contacts import load_schema
from daemon.hub.csv_import import import_csv
from daemon.hub.store import Contact
from daemon.kit.connector import ConnectorContext
from daemon.kit.filetransport import LocalTransport, TransportSettings
from plugins.sftp.connector import SftpConfig, SftpConnector, csv_timestamp

BANNER_HEADER = (
    "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,GOREMAL_EMAIL_ADDRESS"
)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    return tmp_path / "etc"


def banner(
    etc: Path,
    sshd_server,
    root: Path,
    name: str = "banner",
    transport: dict | None = None,
    connectors: dict | None = None,
    **settings,
):
    """An incoming ``banner`` instance on the test server; ``transport`` overrides its
    transport table's entries."""
    table = transport_table(sshd_server, root, **(transport or {}))
    return write_instance(
        etc,
        name,
        table,
        settings={"preset": "banner", **settings},
        top='direction = "incoming"',
        connectors=connectors,
    )


def put(root: Path, name: str, data: bytes, folder: str = "incoming") -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    path = root / folder / name
    path.write_bytes(data)
    return path


def contacts(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(Contact.__table__)).mappings().all()
    return {r["crm_id"]: dict(r) for r in rows}


# --- incoming ---------------------------------------------------------------------------------


def test_good_rows_import_and_bad_rows_are_logged_with_file_and_row(
    sqlite_engine, sshd_server, sftp_root, etc
):
    instance = banner(etc, sshd_server, sftp_root)
    put(
        sftp_root,
        "banner_2026-01-05.csv",
        csv_text(
            BANNER_HEADER,
            "B001,Ada,Lovelace,(202) 555-0101,ada@example.edu",
            "B002,Alan,Turing,not a phone,alan@example.edu",  # row 3: invalid phone
            "B003,Grace,Hopper",  # row 4: ragged
            ",Nobody,Here,2025550104,nobody@example.edu",  # row 5: no Banner ID
            "",
            "B006,Edsger,Dijkstra,2025550106,edsger@example.edu",
        ),
    )
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report

    found = contacts(sqlite_engine)
    assert set(found) == {"B001", "B006"}  # B002: a new contact needs a valid phone
    assert found["B001"]["phone"] == "+12025550101"
    assert found["B001"]["email"] == "ada@example.edu"
    problems = sorted(
        (r["code"], r["details"].get("file"), r["details"].get("row"))
        for r in log_rows(sqlite_engine)
    )
    assert problems == [
        ("blank-required-data-in-record", "banner_2026-01-05.csv", 3),  # so B002 is skipped
        ("blank-required-data-in-record", "banner_2026-01-05.csv", 5),
        ("file-malformed", "banner_2026-01-05.csv", 4),
        ("invalid-phone", "banner_2026-01-05.csv", 3),
    ]
    assert not list((sftp_root / "incoming").glob("*.csv"))
    assert (sftp_root / "incoming/processed/banner_2026-01-05.csv").exists()


def test_a_file_that_cannot_be_read_goes_to_error_and_nothing_of_it_is_imported(
    sqlite_engine, sshd_server, sftp_root, etc
):
    instance = banner(etc, sshd_server, sftp_root)
    good_rows = [f"B{i:03},First{i},Last{i},202555{i:04},p{i}@example.edu" for i in range(50)]
    put(
        sftp_root, "a_bad_bytes.csv", csv_text(BANNER_HEADER, *good_rows) + b"B999,\xff\xfe,x,,\r\n"
    )
    put(sftp_root, "b_no_id_column.csv", csv_text("first_name,last_name", "Ada,Lovelace"))
    put(sftp_root, "c_broken_quote.csv", csv_text(BANNER_HEADER, 'B1,"Ada,Lovelace,1,a@b.c'))
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report
    assert contact_count(sqlite_engine) == 0
    rows = {r["details"]["file"]: r for r in log_rows(sqlite_engine)}
    assert set(rows) == {"a_bad_bytes.csv", "b_no_id_column.csv", "c_broken_quote.csv"}
    assert {r["code"] for r in rows.values()} == {"file-malformed"}
    assert "line 52" in rows["a_bad_bytes.csv"]["message"]
    assert "SPRIDEN_ID" in rows["b_no_id_column.csv"]["message"]
    assert sorted(p.name for p in (sftp_root / "incoming/error").iterdir()) == sorted(rows)


def test_a_file_is_never_imported_twice(sqlite_engine, sshd_server, sftp_root, etc):
    instance = banner(etc, sshd_server, sftp_root)
    data = csv_text(BANNER_HEADER, "B001,Ada,Lovelace,2025550101,ada@example.edu")
    put(sftp_root, "daily.csv", data)
    engine = sync_engine(sqlite_engine, instance)
    assert engine.run(instance, "pull").counts["created"] == 1
    # Someone edits the contact in the hub; the same file is uploaded again.
    with sqlite_engine.begin() as conn:
        conn.execute(Contact.__table__.update().values(first_name="Augusta"))
    put(sftp_root, "daily.csv", data)
    report = engine.run(instance, "pull")
    assert report.outcome == "ok"
    assert report.counts.get("read", 0) == 0
    assert contacts(sqlite_engine)["B001"]["first_name"] == "Augusta"
    assert not (sftp_root / "incoming/daily.csv").exists()  # moved along, untouched
    # A new file of the same name with other content is a new file.
    put(sftp_root, "daily.csv", csv_text(BANNER_HEADER, "B001,Ada,Byron,2025550101,"))
    assert engine.run(instance, "pull").counts["updated"] == 1
    assert contacts(sqlite_engine)["B001"]["last_name"] == "Byron"


def test_a_growing_file_is_left_until_it_stands_still(sshd_server, sftp_root):
    """The clock's sleep is where the uploader gets time: it appends while we wait."""
    path = put(sftp_root, "upload.csv", csv_text(BANNER_HEADER, "B001,Ada,Lovelace,,"))

    class UploadingClock(FakeClock):
        growing = True

        def sleep(self, seconds, cancel=None):
            super().sleep(seconds, cancel)
            if self.growing:
                with path.open("ab") as fh:
                    fh.write(b"B002,Alan,Turing,,\r\n")

    clock = UploadingClock()
    config = SftpConfig.model_validate(
        {
            "preset": "banner",
            "transport": transport_table(
                sshd_server, sftp_root, private_key=sshd_server.private_key, stable_seconds=5
            ),
        }
    )
    connector = SftpConnector(config, ConnectorContext("banner"), clock=clock)
    try:
        pages = list(connector.pull(None))
        assert [r for p in pages for r in p.records] == []
        assert path.exists()
        assert clock.slept == 5
        clock.growing = False
        records = [
            r for p in connector.pull(pages[-1].cursor if pages else None) for r in p.records
        ]
        assert [r.remote_id for r in records] == ["B001", "B002"]
        assert records[1].source == {"file": "upload.csv", "row": 3}
    finally:
        connector.close()


class _Crash(RuntimeError):
    """Stands for the process dying between two pages."""


def test_an_import_stopped_mid_file_resumes_without_duplicates(
    sqlite_engine, sshd_server, sftp_root, etc
):
    rows = [f"B{i:03},First{i},Last{i},202555{i:04},p{i}@example.edu" for i in range(1, 24)]
    rows.insert(10, "B999,Broken")  # row 12: a bad row before the crash
    put(sftp_root, "big.csv", csv_text(BANNER_HEADER, *rows))

    class CrashingConnector(SftpConnector):
        crash_after = 3  # pages committed before the "kill"

        def pull(self, cursor: str | None) -> Iterator:
            for number, page in enumerate(super().pull(cursor), start=1):
                if number > type(self).crash_after:
                    raise _Crash("killed")
                yield page

    instance = banner(
        etc, sshd_server, sftp_root, connectors={"sftp": CrashingConnector}, page_size=4
    )
    engine = sync_engine(sqlite_engine, instance)
    first = engine.run(instance, "pull")
    assert first.outcome == "failed" and "killed" in (first.error or "")
    assert contact_count(sqlite_engine) == 12  # three pages of four
    assert (sftp_root / "incoming/big.csv").exists()

    CrashingConnector.crash_after = 10**6
    second = engine.run(instance, "pull")
    assert second.outcome == "ok", second
    assert second.counts["created"] == 11
    assert contact_count(sqlite_engine) == 23
    assert sorted(contacts(sqlite_engine)) == [f"B{i:03}" for i in range(1, 24)]
    bad = [r for r in log_rows(sqlite_engine) if r["code"] == "file-malformed"]
    assert [(r["details"]["file"], r["details"]["row"]) for r in bad] == [("big.csv", 12)]
    assert (sftp_root / "incoming/processed/big.csv").exists()
    # And the next cycle finds nothing to do.
    assert engine.run(instance, "pull").counts.get("created", 0) == 0


# --- outgoing ---------------------------------------------------------------------------------


def test_outgoing_file_column_by_column(sqlite_engine, sshd_server, sftp_root, etc, tmp_path):
    define_custom_fields(sqlite_engine)
    instance = write_instance(
        etc,
        "mainstay-out",
        transport_table(sshd_server, sftp_root),
        settings={"custom_fields": ["Class Year", "Application Status"]},
        top='direction = "outgoing"',
    )
    engine = sync_engine(sqlite_engine, instance)
    source = tmp_path / "in.csv"
    source.write_text(
        "crm_id,first_name,last_name,phone,email,custom_Class Year,custom_Application Status\n"
        "C1,Ada,Lovelace,+1 202 555 0101,ada@example.edu,2027,Admitted\n"
        'C2,"Alan, Jr.",Turing,(202) 555-0102,,,\n'
    )
    assert import_csv(sqlite_engine, source, load_schema(sqlite_engine)).ok
    report = engine.run(instance, "push")
    assert report.outcome == "ok", report
    assert report.counts.get("created") == 2, report

    [written] = list((sftp_root / "outgoing").iterdir())
    assert written.name.startswith("mainstay_contact") and written.name.endswith("Z.csv")
    assert not [p for p in (sftp_root / "outgoing").iterdir() if p.name.startswith(".")]
    data = written.read_bytes()
    header = data.split(b"\r\n", 1)[0].decode()
    assert header == (
        "mainstay_id,crm_id,enrollment_id,first_name,last_name,preferred_name,phone,email,"
        "CUSTOM_Class Year,CUSTOM_Application Status"
    )
    rows = {r["crm_id"]: r for r in read_csv(data)}
    ids = {c: row["id"] for c, row in contacts(sqlite_engine).items()}
    assert rows["C1"] == {
        "mainstay_id": ids["C1"],
        "crm_id": "C1",
        "enrollment_id": "",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "preferred_name": "",
        "phone": "2025550101",
        "email": "ada@example.edu",
        "CUSTOM_Class Year": "2027",
        "CUSTOM_Application Status": "Admitted",
    }
    assert rows["C2"] == {
        "mainstay_id": ids["C2"],
        "crm_id": "C2",
        "enrollment_id": "",
        "first_name": "Alan, Jr.",
        "last_name": "Turing",
        "preferred_name": "",
        "phone": "2025550102",
        "email": "",
        "CUSTOM_Class Year": "",
        "CUSTOM_Application Status": "",
    }
    # Nothing changed: the next push writes no file.
    assert engine.run(instance, "push").counts.get("created", 0) == 0
    assert len(list((sftp_root / "outgoing").iterdir())) == 1


def test_file_names_are_prefix_and_utc_milliseconds(tmp_path):
    clock = FakeClock()
    assert csv_timestamp(clock.now()) == "2025-01-06T120000000Z"
    config = SftpConfig.model_validate(
        {"transport": {"kind": "local", "path": str(tmp_path)}, "file_prefix": "out_"}
    )
    connector = SftpConnector(config, ConnectorContext("x"), clock=clock)
    from daemon.kit.connector import PushItem

    connector.push([PushItem("h1", None, {"first_name": "A"})])
    connector.push([PushItem("h2", None, {"first_name": "B"})])  # same millisecond
    names = sorted(p.name for p in (tmp_path / "outgoing").iterdir())
    assert names == ["out_2025-01-06T120000000Z.csv", "out_2025-01-06T120000001Z.csv"]
    assert isinstance(connector.transport(), LocalTransport)


# --- host keys and credentials ---------------------------------------------------------------


def test_unknown_and_changed_host_keys_are_refused(sqlite_engine, sshd_server, sftp_root, etc):
    empty = sftp_root / "empty_known_hosts"
    empty.write_text("")
    unknown = banner(etc, sshd_server, sftp_root, "unknown", {"known_hosts": str(empty)})
    other_key = (sshd_server.folder / "user_ed25519.pub").read_text().split()
    changed_file = sftp_root / "changed_known_hosts"
    changed_file.write_text(f"[127.0.0.1]:{sshd_server.port} {other_key[0]} {other_key[1]}\n")
    changed = banner(etc, sshd_server, sftp_root, "changed", {"known_hosts": str(changed_file)})
    wrong_fp = banner(
        etc,
        sshd_server,
        sftp_root,
        "fingerprint",
        {"known_hosts": None, "host_key_fingerprint": "SHA256:" + "A" * 43},
    )
    engine = sync_engine(sqlite_engine, unknown, changed, wrong_fp)
    for instance, words in ((unknown, "not in known_hosts"), (changed, "changed")):
        report = engine.run(instance, "pull")
        assert (report.outcome, report.code) == ("failed", "host-key-refused"), report
        assert words in (report.error or "")
    report = engine.run(wrong_fp, "pull")
    assert report.code == "host-key-refused"
    assert sshd_server.host_key_fingerprint in (report.error or "")
    codes = [r["code"] for r in log_rows(sqlite_engine)]
    assert codes == ["host-key-refused"] * 3


def test_the_right_fingerprint_alone_is_enough(sqlite_engine, sshd_server, sftp_root, etc):
    instance = banner(
        etc,
        sshd_server,
        sftp_root,
        "fp",
        {"known_hosts": None, "host_key_fingerprint": sshd_server.host_key_fingerprint},
    )
    put(sftp_root, "one.csv", csv_text(BANNER_HEADER, "B1,Ada,Lovelace,2025550101,"))
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok" and report.counts["created"] == 1


def test_a_plain_text_secret_in_the_transport_table_is_refused(sshd_server, sftp_root, etc):
    from daemon.config.settings import ConfigError

    table = transport_table(sshd_server, sftp_root, private_key=sshd_server.private_key)
    with pytest.raises(ConfigError, match=r"settings\.transport\.private_key"):
        write_instance(etc, "plain", table, settings={"preset": "banner"})


def test_settings_need_a_way_to_trust_the_host():
    with pytest.raises(ValueError, match="known_hosts"):
        TransportSettings.model_validate(
            {"host": "h", "username": "u", "password": "p", "path": "/"}
        )
    with pytest.raises(ValueError, match="password or a private_key"):
        TransportSettings.model_validate({"host": "h", "username": "u", "known_hosts": "/k"})


def test_a_dry_run_reads_but_moves_nothing(sqlite_engine, sshd_server, sftp_root, etc):
    instance = banner(etc, sshd_server, sftp_root)
    put(sftp_root, "good.csv", csv_text(BANNER_HEADER, "B1,Ada,Lovelace,2025550101,"))
    put(sftp_root, "bad.csv", b"\xff\xfe")
    engine = sync_engine(sqlite_engine, instance)
    report = engine.run(instance, "pull", dry_run=True)
    assert report.outcome == "ok" and report.counts["created"] == 1
    assert contact_count(sqlite_engine) == 0
    assert sorted(p.name for p in (sftp_root / "incoming").iterdir()) == ["bad.csv", "good.csv"]
    # The real run afterwards imports it.
    assert engine.run(instance, "pull").counts["created"] == 1


def test_presets_columns_and_instance_fields_combine(sqlite_engine, tmp_path, etc):
    """Recruit's preset, a `columns` override, an instance [[fields]] entry that wins, and
    header cells matched whatever their case (a local folder: the mapping is the point)."""
    instance = write_instance(
        etc,
        "recruit",
        {"kind": "local", "path": str(tmp_path / "drop"), "stable_seconds": 0},
        settings={"preset": "recruit", "columns": {"crm_id": "elcn_sisid", "phone": ""}},
        top='direction = "incoming"',
        fields="""
        [[fields]]
        hub = "email"
        remote = "emailaddress2"
        [[fields]]
        hub = "phone"
        remote = "telephone1"
        """,
    )
    mapped = {(f.hub, f.remote) for f in instance.config.fields}
    assert mapped == {
        ("email", "emailaddress2"),
        ("phone", "telephone1"),
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("crm_id", "elcn_sisid"),
    }
    put(
        tmp_path / "drop",
        "recruit.csv",
        csv_text(
            "ContactId,FirstName,LastName,ELCN_SISID,emailaddress1,emailaddress2,telephone1",
            "c-1,Ada,Lovelace,S1,old@example.edu,ada@example.edu,2025550101",
        ),
    )
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok" and report.counts["created"] == 1, report
    ada = contacts(sqlite_engine)["S1"]
    assert (ada["first_name"], ada["email"], ada["phone"]) == (
        "Ada",
        "ada@example.edu",
        "+12025550101",
    )
