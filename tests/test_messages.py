"""Messages into the hub (``contactsync messages``), and an export run from the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from daemon.hub.database import make_engine
from daemon.hub.messages import MAX_BODY
from tests import clikit
from tests.clikit import isolated
from tests.exportkit import NAME, exported_files, read_csv, sync_log


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


class Cli(clikit.Cli):
    """Commands against one hub file and one config folder."""

    def contact(self, n: int, *extra: str) -> str:
        return self.json(
            "contacts",
            "add",
            *("--first-name", f"First{n}", "--last-name", f"Last{n}"),
            *("--phone", f"202555{n:04d}", "--crm-id", f"CRM{n}", *extra),
        )["id"]

    def log_rows(self) -> list[dict[str, Any]]:
        engine = make_engine(self.db_url)
        try:
            return sync_log(engine)
        finally:
            engine.dispose()


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_messages_add_and_list(run: Cli) -> None:
    ada = run.contact(1)
    added = run.json(
        "messages",
        "add",
        *("--contact", ada, "--channel", "twilio", "--direction", "outgoing"),
        *("--body", "Hello!", "--campaign-id", "c1", "--campaign-name", "Welcome"),
        *("--type", "campaign", "--sent-at", "2026-03-01T09:30:00-05:00"),
    )
    assert (added["added"], added["skipped"], len(added["ids"])) == (1, 0, 1)
    run("messages", "add", "--crm-id", "CRM1", "--channel", "web", "--direction", "incoming",
        "--body", "Hi")  # fmt: skip

    listed = run.json("messages", "list")

    assert [(m["direction"], m["body"], m["contact_id"]) for m in listed] == [
        ("outgoing", "Hello!", ada),
        ("incoming", "Hi", ada),
    ]
    first = listed[0]
    assert (first["campaign_id"], first["campaign_name"], first["message_type"]) == (
        "c1",
        "Welcome",
        "campaign",
    )
    assert first["sent_at"].startswith("2026-03-01T14:30:00")  # stored in UTC
    assert [m["body"] for m in run.json("messages", "list", "--after", str(first["id"]))] == ["Hi"]
    assert "Hello!" in run("messages", "list").stdout


def test_messages_add_refuses_an_unknown_contact_with_its_code(run: Cli) -> None:
    refused = run.json(
        "messages",
        "add",
        *("--contact", "nobody", "--channel", "web", "--direction", "incoming", "--body", "x"),
        expect=1,
    )
    assert refused["added"] == 0
    assert [p["code"] for p in refused["problems"]] == ["unknown-contact-id"]
    assert [r["code"] for r in run.log_rows()] == ["unknown-contact-id"]
    run("messages", "add", "--channel", "web", "--direction", "incoming", "--body", "x",
        expect=2)  # fmt: skip
    run("messages", "add", "--contact", "x", "--channel", "sms", "--direction", "incoming",
        "--body", "x", expect=2)  # fmt: skip


GOOD_AND_BAD = """\
Mainstay ID,CRM ID,Channel,Direction,Body,Campaign ID,Campaign Name,Type,Sent At
{ada},,twilio,incoming,hello,,,,2026-03-01T14:30:00Z
,CRM1,web,outgoing,"Welcome, Ada",c1,Fall,campaign,2026-03-01 14:31:00
,CRM404,web,incoming,nobody has this crm id,,,,
{ada},,sms,incoming,bad channel,,,,
{ada},,web,sideways,bad direction,,,,
{ada},,web,incoming,,,,,
{ada},,web,incoming,bad time,,,,yesterday-ish
{ada},,web,outgoing,bad type kept,,,robot,
{ada},,web,outgoing,long campaign kept,,{long},,
{ada},,web,incoming,ragged row
{ada},,web,incoming,{huge},,,,
"""


def test_messages_import_adds_good_rows_and_codes_bad_ones_with_file_and_row(
    run: Cli, tmp_path: Path
) -> None:
    ada = run.contact(1)
    path = tmp_path / "messages.csv"
    text = GOOD_AND_BAD.format(ada=ada, long="L" * 300, huge="h" * (MAX_BODY + 1))
    path.write_text(text, encoding="utf-8")

    report = run.json("messages", "import", str(path))

    assert (report["added"], report["skipped"]) == (4, 7)
    by_row = {(p["row"], p["code"], p["field"]) for p in report["problems"]}
    assert by_row == {
        (4, "unknown-contact-id", "crm_id"),
        (5, "invalid-value", "channel"),
        (6, "invalid-value", "direction"),
        (7, "invalid-value", "body"),
        (8, "invalid-value", "sent_at"),
        (9, "invalid-value", "message_type"),
        (10, "value-too-long", "campaign_name"),
        (11, "file-malformed", None),
        (12, "value-too-long", "body"),
    }
    rows = run.log_rows()
    assert len(rows) == 9
    assert all(r["details"]["file"] == "messages.csv" and r["details"]["row"] for r in rows)
    assert {r["integration"] for r in rows} == {"messages"}
    listed = run.json("messages", "list")
    assert [m["body"] for m in listed] == [
        "hello",
        "Welcome, Ada",
        "bad type kept",
        "long campaign kept",
    ]
    assert listed[2]["message_type"] is None and listed[3]["campaign_name"] is None
    assert listed[1]["sent_at"].startswith("2026-03-01T14:31:00")  # no zone: UTC


@pytest.mark.parametrize(
    "content",
    [
        "contact_id,channel,direction\nx,web,incoming\n",  # no body column
        "contact_id,channel,direction,body,colour\nx,web,incoming,hi,red\n",  # unknown column
        "channel,direction,body\nweb,incoming,hi\n",  # no contact column
        b"contact_id,channel,direction,body\nx,web,incoming,caf\xe9\n",  # not UTF-8
    ],
)
def test_a_malformed_messages_file_imports_nothing(
    run: Cli, tmp_path: Path, content: str | bytes
) -> None:
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    report = run.json("messages", "import", str(path), expect=1)
    assert report["file_error"] and report["added"] == 0
    assert [r["code"] for r in run.log_rows()] == ["file-malformed"]
    assert run.json("messages", "list") == []


def test_import_commits_in_batches(run: Cli, tmp_path: Path) -> None:
    ada = run.contact(1)
    path = tmp_path / "many.csv"
    lines = ["contact_id,channel,direction,body"]
    lines += [f"{ada},twilio,incoming,m{n}" for n in range(25)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = run.json("messages", "import", str(path), "--batch-size", "7")
    assert report["added"] == 25
    assert len(run.json("messages", "list", "--limit", "100")) == 25
    assert "added" in run("messages", "import", str(path)).stdout


def test_an_export_instance_runs_from_sync_and_shows_its_batches(run: Cli, tmp_path: Path) -> None:
    ada = run.contact(1)
    tester = run.contact(2, "--test-user")
    for contact_id, body in ((ada, "hi"), (tester, "test")):
        run("messages", "add", "--contact", contact_id, "--channel", "web",
            "--direction", "incoming", "--body", body)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (run.etc / "instances").mkdir(exist_ok=True)
    (run.etc / "instances" / f"{NAME}.toml").write_text(
        f"""
type = "conversations_export"
[schedule]
export = "0 1 * * *"
timezone = "America/New_York"
[settings]
file_prefix = "mainstay_conversations"
[settings.transport]
kind = "local"
path = "{out}"
""",
        encoding="utf-8",
    )
    run("check", NAME)
    report = run.json("sync", NAME)
    assert [(r["direction"], r["outcome"]) for r in report["reports"]] == [("export", "ok")]
    (path,) = exported_files(out)
    assert [r["mainstay_id"] for r in read_csv(path)] == [ada]
    assert run.json("sync", NAME, "--direction", "export")["reports"][0]["counts"] == {}
    run("sync", NAME, "--direction", "pull", expect=2)
    (batch,) = run.json("messages", "exports", NAME)
    assert (batch["file_name"], batch["state"], batch["rows"]) == (path.name, "uploaded", 1)
    assert path.name in run("messages", "exports").stdout
    (status,) = run.json("status")["instances"]
    assert status["name"] == NAME and status["last_runs"]["export"]["outcome"] == "ok"
    # A reset watermark exports everything again, as new files under new names.
    run("cursor", "reset", NAME, "--stream", "export")
    run("sync", NAME)
    files = exported_files(out)
    assert len(files) == 2 and read_csv(files[0]) == read_csv(files[1])


def test_a_file_with_external_ids_can_be_imported_again_without_duplicates(
    run: Cli, tmp_path: Path
) -> None:
    ada = run.contact(1)
    path = tmp_path / "with-ids.csv"
    rows = [f"{ada},web,incoming,m{n},src-{n % 4}" for n in range(6)]  # src-0, src-1 twice
    path.write_text("contact_id,channel,direction,body,message_id\n" + "\n".join(rows) + "\n")

    first = run.json("messages", "import", str(path), "--batch-size", "2")
    again = run.json("messages", "import", str(path))

    assert (first["added"], first["already_present"]) == (4, 2)
    assert (again["added"], again["already_present"], again["skipped"]) == (0, 6, 0)
    assert [m["body"] for m in run.json("messages", "list")] == ["m0", "m1", "m2", "m3"]
    added = ("messages", "add", "--contact", ada, "--channel", "web", "--direction")
    run(*added, "incoming", "--body", "x", "--external-id", "src-9")
    repeat = run.json(*added, "incoming", "--body", "x", "--external-id", "src-9")
    assert (repeat["added"], repeat["already_present"]) == (0, 1)
    assert run.log_rows() == []  # a message already present is no error


def test_external_ids_dedupe_within_a_batch_and_across_imports(
    engine: Engine, tmp_path: Path
) -> None:
    """On SQLite and PostgreSQL alike (``ON CONFLICT DO NOTHING ... RETURNING``)."""
    from daemon.hub.contacts import save_contact
    from daemon.hub.messages import import_messages

    ada = save_contact(engine, {"first_name": "A", "last_name": "B", "phone": "2025550100"})
    path = tmp_path / "m.csv"
    rows = [f"{ada},twilio,outgoing,m{n},id-{n % 3}" for n in range(5)]
    path.write_text("contact_id,channel,direction,body,external_id\n" + "\n".join(rows) + "\n")
    first = import_messages(engine, path)
    again = import_messages(engine, path)
    assert (first.added, first.already_present, again.added, again.already_present) == (3, 2, 0, 5)


def test_a_conversations_export_imports_into_another_hub_by_crm_id(tmp_path: Path) -> None:
    """A Mainstay-style export (incoming/outgoing columns, names, its own mainstay_id) is a
    messages file: another hub matches the contacts by CRM id and gets the same messages."""
    source_dir, target_dir, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder in (source_dir, target_dir, out):
        folder.mkdir()
    source, target = Cli(source_dir), Cli(target_dir)
    ada = source.contact(1)
    add = ("messages", "add", "--contact", ada, "--sent-at", "2026-03-01T14:30:00Z")
    source(*add, "--channel", "twilio", "--direction", "incoming", "--body", 'Hi, "you"')
    campaign = ("--campaign-id", "c1", "--campaign-name", "Fall, 2026", "--type", "campaign")
    source(
        *add, "--channel", "web", "--direction", "outgoing", "--body", "Line 1\nLine 2", *campaign
    )
    (source.etc / "instances").mkdir(exist_ok=True)
    (source.etc / "instances" / f"{NAME}.toml").write_text(
        f'type = "conversations_export"\n[settings.transport]\nkind = "local"\npath = "{out}"\n',
        encoding="utf-8",
    )
    source("sync", NAME)
    (exported,) = exported_files(out)
    target.contact(1)  # the same person (CRM1), another hub id

    report = target.json("messages", "import", str(exported))

    assert (report["added"], report["skipped"]) == (2, 0), report
    fields = ("channel", "direction", "body", "campaign_id", "campaign_name", "sent_at")
    before = [{k: m[k] for k in fields} for m in source.json("messages", "list")]
    after = [{k: m[k] for k in fields} for m in target.json("messages", "list")]
    assert after == before


def test_a_split_row_needs_exactly_one_of_incoming_and_outgoing(run: Cli, tmp_path: Path) -> None:
    ada = run.contact(1)
    path = tmp_path / "split.csv"
    path.write_text(
        "crm_id,mainstay_id,first_name,channel,incoming,outgoing\n"
        f"CRM1,{ada},First1,web,hello,\n"
        f",{ada},First1,web,,reply\n"
        f",{ada},First1,web,both,cells\n"
        f",{ada},First1,web,,\n",
        encoding="utf-8",
    )
    report = run.json("messages", "import", str(path))
    assert (report["added"], report["skipped"]) == (2, 2)
    assert [(p["row"], p["code"]) for p in report["problems"]] == [
        (4, "invalid-value"),
        (5, "invalid-value"),
    ]
    listed = run.json("messages", "list")
    assert [(m["direction"], m["body"]) for m in listed] == [
        ("incoming", "hello"),
        ("outgoing", "reply"),
    ]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("contact_id,channel,direction,body,incoming\n", encoding="utf-8")
    assert "not both" in run.json("messages", "import", str(mixed), expect=1)["file_error"]
