"""Poison records and control characters (issue 16 §2), on SQLite and PostgreSQL.

A record the database refuses, or one that raises while it is applied, is set aside with a
``record-not-applied`` row; the rest of its page or file is applied and the cursor moves on.
A control character in a value is refused for that field alone, the same on both backends.
The database failures here are real: a trigger refuses a marker value on each backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import OperationalError

from daemon.hub import runs
from daemon.hub.contacts import load_schema, save_contact
from daemon.hub.csv_import import import_csv
from daemon.hub.incoming import IncomingRecord
from daemon.hub.ingest import Ingestor
from daemon.hub.lease import LeaseLost
from daemon.hub.store import Contact
from daemon.hub.synclog import SyncContext, new_run_id
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.hubkit import contact_count, log_rows
from tests.instancekit import contact_fields, load_written
from tests.sftpkit import csv_text
from tests.sftpkit import write_instance as write_sftp_instance

MARKER = "Poison"
CONTACT_TABLE = Contact.__table__.name


@pytest.fixture
def poison_trigger(engine: Engine) -> Iterator[Engine]:
    """A trigger that makes the database refuse any contact whose first name is MARKER."""
    if engine.dialect.name == "sqlite":
        create = [
            f"CREATE TRIGGER poison_marker BEFORE INSERT ON {CONTACT_TABLE} "
            f"WHEN NEW.first_name = '{MARKER}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS poison_marker"]
    else:
        create = [
            "CREATE OR REPLACE FUNCTION poison_marker() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.first_name = '{MARKER}' THEN "
            "RAISE EXCEPTION 'poison' USING ERRCODE = '22000'; END IF; RETURN NEW; END "
            "$$ LANGUAGE plpgsql",
            f"CREATE TRIGGER poison_marker BEFORE INSERT ON {CONTACT_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION poison_marker()",
        ]
        drop = [
            f"DROP TRIGGER IF EXISTS poison_marker ON {CONTACT_TABLE}",
            "DROP FUNCTION IF EXISTS poison_marker()",
        ]
    with engine.begin() as conn:
        for statement in create:
            conn.execute(text(statement))
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            for statement in drop:
                conn.execute(text(statement))


def codes(engine: Engine) -> list[str]:
    return [r["code"] for r in log_rows(engine)]


def names(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(Contact.__table__)).mappings().all()
    return {r["crm_id"]: dict(r) for r in rows}


def phone(i: int) -> str:
    return f"+1617{2000000 + i:07d}"


def record(i: int, first: str = "Ada", **extra: str) -> IncomingRecord:
    values = {"first_name": first, "last_name": f"L{i}", "phone": phone(i), "crm_id": f"S{i}"}
    return IncomingRecord({**values, **extra}, source={"row": i + 2})


def ingestor(engine: Engine, **kwargs) -> Ingestor:
    context = SyncContext("test", "incoming", new_run_id())
    return Ingestor(engine, load_schema(engine), context, **kwargs)


# --- a record the database refuses, through a real pull ---------------------------------------


def test_one_record_refused_by_the_database_is_set_aside_and_the_cursor_moves_on(
    poison_trigger, tmp_path
):
    engine = poison_trigger
    remote = fresh_remote()
    for i in range(7):  # three pages of three, two and one...
        first = MARKER if i == 4 else f"Ada{i}"
        remote.add(FirstName=first, LastName="Lovelace", Phone=phone(i), StudentId=f"S{i}")
    poison_id = sorted(remote.rows)[4]
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)

    report = sync.run(instance, "pull")
    assert report.outcome == "ok", report.error
    assert set(names(engine)) == {f"S{i}" for i in range(7) if i != 4}
    rows = [r for r in log_rows(engine) if r["code"] == "record-not-applied"]
    assert len(rows) == 1 and rows[0]["remote_id"] == poison_id
    assert rows[0]["message"].startswith("record not applied: the database refused it (")
    assert MARKER not in rows[0]["message"]  # the reason, never the value
    assert report.counts["errors"] == 1
    # The cursor passed the poison record's page: the next pull reads nothing again.
    with engine.connect() as conn:
        assert runs.get_cursor(conn, "mem") is not None
    again = sync.run(instance, "pull")
    assert again.outcome == "ok" and again.counts.get("read", 0) == 0


def test_a_csv_row_refused_by_the_database_costs_only_that_row(poison_trigger, tmp_path):
    engine = poison_trigger
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        csv_text(
            "crm_id,first_name,last_name,phone",
            *(f"S{i},{MARKER if i == 1 else 'Ada'},L{i},{phone(i)}" for i in range(4)),
        )
    )
    result = import_csv(engine, path, load_schema(engine), batch_size=2)
    assert set(names(engine)) == {"S0", "S2", "S3"}
    (row,) = log_rows(engine)
    assert (row["code"], row["details"]) == (
        "record-not-applied",
        {"file": "contacts.csv", "row": 3},
    )
    assert result.report.summary["errors"] == 1 and result.report.summary["skipped"] == 1


def test_a_dry_run_sets_the_poison_record_aside_too_and_keeps_nothing(poison_trigger):
    engine = poison_trigger
    with ingestor(engine, dry_run=True) as run:
        plans = run.batch([record(0), record(1, MARKER), record(2)])
    assert [p.record.fields["crm_id"] for p in plans] == ["S0", "S2"]
    assert run.report.problems[0].code == "record-not-applied"
    assert contact_count(engine) == 0 and log_rows(engine) == []


def test_one_poison_record_in_a_thousand_costs_a_few_transactions(poison_trigger):
    engine = poison_trigger
    batch = [record(i, MARKER if i == 617 else "Ada") for i in range(1000)]
    transactions = 0

    def counted(*_: object) -> None:
        nonlocal transactions
        transactions += 1

    with ingestor(engine) as run:
        event.listen(engine, "begin", counted)
        try:
            run.batch(batch)
        finally:
            event.remove(engine, "begin", counted)
    assert contact_count(engine) == 999
    assert [p.source["row"] for p in run.report.problems] == [619]
    assert transactions <= 2 * math.log2(1000) + 3, transactions


def test_a_record_that_raises_while_planned_is_set_aside(engine):
    def match(raw, fields, candidates):
        if raw == "bad":
            raise RecursionError("maximum recursion depth exceeded")
        return None

    records = [record(i) for i in range(4)]
    for i, item in enumerate(records):
        item.remote_id, item.raw = f"R{i}", "bad" if i == 2 else "good"
    with ingestor(engine, match_record=match) as run:
        run.batch(records)
    assert set(names(engine)) == {"S0", "S1", "S3"}
    (row,) = log_rows(engine)
    assert row["code"] == "record-not-applied" and row["remote_id"] == "R2"
    assert "RecursionError" in row["message"]


@pytest.mark.parametrize(
    ("error", "every_time"),
    [
        # Once, on the first try: set aside as poison, the record would vanish for good.
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), False),
        (LeaseLost("mem: the lease passed to another run"), False),
        (ValueError("the hook itself is broken"), True),  # fails with no record at all
    ],
    ids=["connection-lost", "lease-lost", "hook-fails"],
)
def test_a_failure_that_is_not_about_a_record_is_raised_and_marks_nothing(
    engine, error, every_time
):
    calls = 0

    def before(conn, records):
        nonlocal calls
        calls += 1
        if every_time or calls == 1:
            raise error

    with ingestor(engine) as run, pytest.raises(type(error)):
        run.batch([record(0), record(1)], before=before)
    assert run.report.problem_count == 0
    assert contact_count(engine) == 0 and log_rows(engine) == []


def test_a_failure_that_does_not_come_back_sets_no_record_aside(engine):
    """A hook that fails once (a hiccup, not a record) costs one more try, never a record."""
    calls = 0

    def after(conn, plans):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a passing hiccup")

    with ingestor(engine) as run:
        run.batch([record(0), record(1), record(2)], after=after)
    assert set(names(engine)) == {"S0", "S1", "S2"}
    assert run.report.problem_count == 0 and log_rows(engine) == []
    assert calls == 2


# --- control characters -----------------------------------------------------------------------


def test_a_control_character_in_a_csv_import_refuses_that_field_only(engine, tmp_path):
    """A raw NUL byte makes the CSV reader refuse the whole file (``file-malformed``);
    every other control character reaches the rules and costs only its field."""
    known = save_contact(
        engine, {"first_name": "Grace", "last_name": "Hopper", "phone": phone(1), "crm_id": "S1"}
    )
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        csv_text(
            "crm_id,first_name,last_name,phone,email",
            f"S0,Ada,Love\x1blace,{phone(0)},",  # a new contact: the last name is required
            f"S1,Gr\x07ace,Hopper,{phone(1)},grace@example.edu",  # known: the rest applies
            f"S2,Alan,Turing,{phone(2)},",
        )
    )
    result = import_csv(engine, path, load_schema(engine))
    found = names(engine)
    assert set(found) == {"S1", "S2"}
    assert found["S1"]["id"] == known
    assert found["S1"]["first_name"] == "Grace" and found["S1"]["email"] == "grace@example.edu"
    rows = log_rows(engine)
    refused = [(r["code"], r["details"].get("field"), r["details"]["row"]) for r in rows]
    assert ("control-character-in-value", "last_name", 2) in refused
    assert ("control-character-in-value", "first_name", 3) in refused
    assert result.report.summary["errors"] == len(refused)
    assert all("\x07" not in r["message"] for r in log_rows(engine))


def test_control_characters_in_folder_files_never_block_the_files_after_them(engine, tmp_path):
    drop = tmp_path / "drop"
    incoming = drop / "incoming"
    incoming.mkdir(parents=True)
    instance = write_sftp_instance(
        tmp_path / "etc",
        "banner",
        {"kind": "local", "path": str(drop), "stable_seconds": 0},
        settings={"preset": "banner"},
        top='direction = "incoming"',
    )
    (incoming / "banner_1.csv").write_bytes(
        csv_text(
            "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,"
            "GOREMAL_EMAIL_ADDRESS",
            f"B1,Ada\x1b[2J,Lovelace,{phone(1)},ada@example.edu",
            f"B2,Alan,Turing,{phone(2)},alan@example.edu",
        )
    )
    (incoming / "banner_2.csv").write_bytes(  # a NUL byte: the file is refused, whole
        csv_text(
            "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,"
            "GOREMAL_EMAIL_ADDRESS",
            f"B4,Kate,Jo\x00hnson,{phone(4)},kate@example.edu",
        )
    )
    (incoming / "banner_3.csv").write_bytes(
        csv_text(
            "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,"
            "GOREMAL_EMAIL_ADDRESS",
            f"B3,Grace,Hopper,{phone(3)},grace@example.edu",
        )
    )
    report = sync_engine(engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report.error
    assert set(names(engine)) == {"B2", "B3"}
    assert sorted(codes(engine)) == [
        "blank-required-data-in-record",
        "control-character-in-value",
        "file-malformed",
    ]
    assert not list(incoming.glob("*.csv"))  # every file moved on
    assert (incoming / "error/banner_2.csv").exists()
    assert (incoming / "processed/banner_1.csv").exists()


HUBSPOT = """
type = "hubspot"
owns_crm_id = true

[settings]
base_url = "{url}"
access_token = {{ env = "TEST_HUBSPOT_TOKEN" }}

""" + contact_fields("firstname", "lastname", "email", "phone")


def test_nul_in_a_hubspot_name_refuses_that_field_and_applies_the_rest(
    engine, tmp_path, monkeypatch
):
    with HubSpotSimulator(seed=0) as sim:
        monkeypatch.setenv("TEST_HUBSPOT_TOKEN", sim.private_app_token)
        instance = load_written(
            tmp_path / "instances",
            "hs",
            HUBSPOT.format(url=sim.url),
            {"hubspot": HubSpotConnector},
        )
        known = sim.add_contact(
            firstname="Ada", lastname="Lovelace", phone=phone(1), email="ada@example.edu"
        )
        sim.add_contact(firstname="Alan", lastname="Tur\u0000ing", phone=phone(2))
        sync = sync_engine(engine, instance)
        assert sync.run(instance, "pull").outcome == "ok"
        sim.edit_contact(known, firstname="A\u0000da", lastname="King")
        report = sync.run(instance, "pull")
    assert report.outcome == "ok", report.error
    found = names(engine)
    assert set(found) == {known}  # Alan, a new contact, needs a last name
    assert (found[known]["first_name"], found[known]["last_name"]) == ("Ada", "King")
    refused = {(r["code"], r["details"].get("field")) for r in log_rows(engine)}
    assert ("control-character-in-value", "first_name") in refused
    assert ("control-character-in-value", "last_name") in refused


def test_a_database_error_logged_never_quotes_the_values_it_refused(engine):
    """Neither the values bound to the statement (hide_parameters) nor PostgreSQL's DETAIL
    line ("Failing row contains …", "Key (phone)=(…)") reach a log line."""
    import io
    import logging

    from sqlalchemy.exc import IntegrityError

    from daemon.foundation import log as logs

    save_contact(engine, {"first_name": "Ada", "last_name": "L", "phone": phone(1)})
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure(level="info", stream=out, json=True)
    try:
        try:
            with engine.begin() as conn:
                conn.execute(
                    Contact.__table__.insert().values(
                        id="x1", first_name="Eve", last_name="Secret-Surname", phone=phone(1)
                    )
                )
        except IntegrityError:
            logs.get_logger("contactsync.test").exception("write_failed")
    finally:
        root.handlers[:], root.level = handlers, level
    text = out.getvalue()
    assert "write_failed" in text and "IntegrityError" in text
    assert "Secret-Surname" not in text and phone(1) not in text
