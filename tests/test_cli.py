"""The ``contactsync`` command line, driven through click's test runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.foundation.dictionary import ENTRIES, Code
from daemon.hub.synclog import SyncContext, new_run_id, record
from tests import clikit
from tests.clikit import isolated


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


class Cli(clikit.Cli):
    """Runs commands against one hub file and one (empty) config folder."""

    def add(self, *args: str) -> str:
        return self.json("contacts", "add", *args)["id"]

    def show(self, contact: str) -> dict[str, Any]:
        return self.json("contacts", "show", contact)


@pytest.fixture
def run(tmp_path) -> Cli:
    return Cli(tmp_path)


ADA = ("--first-name", "Ada", "--last-name", "Lovelace", "--phone", "(202) 555-0143")
GRACE = ("--first-name", "Grace", "--last-name", "Hopper", "--phone", "202 555 0181")


# --- errors ----------------------------------------------------------------------------------


def test_errors_lists_every_code_of_the_dictionary(run):
    listed = run.json("errors")

    assert [entry["code"] for entry in listed] == list(ENTRIES)
    assert {entry["code"] for entry in listed} == {str(code) for code in Code}
    for entry in listed:
        assert entry["meaning"] == ENTRIES[entry["code"]].meaning
        assert entry["next_step"] == ENTRIES[entry["code"]].next_step


def test_errors_prints_a_table_with_every_code(run):
    out = run("errors").stdout

    for code in Code:
        assert str(code) in out


@pytest.mark.parametrize("code", [str(c) for c in Code])
def test_errors_code_explains_the_code(run, code):
    data = run.json("errors", code)

    entry = ENTRIES[code]
    assert data == {
        "code": code,
        "meaning": entry.meaning,
        "effect": entry.effect,
        "next_step": entry.next_step,
    }


def test_errors_code_prints_the_meaning_and_next_step(run):
    out = " ".join(run("errors", "contact-out-of-sync").stdout.split())

    entry = ENTRIES["contact-out-of-sync"]
    assert " ".join(entry.meaning.split()) in out
    assert " ".join(entry.next_step.split()) in out


def test_an_unknown_error_code_is_a_usage_error(run):
    result = run("errors", "no-such-code", expect=2)

    assert "no-such-code" in result.stderr
    assert result.stdout == ""


# --- import ----------------------------------------------------------------------------------

CSV = (
    "crm_id,first_name,last_name,phone,email,CUSTOM_Class Year\r\n"
    "S-1,Ada,Lovelace,(202) 555-0143,ada@example.edu,2027\r\n"
    "S-2,Grace,Hopper,202-555-0181,not-an-email,2026\r\n"
    "S-3,Alan,Turing,,,2028\r\n"
    "S-4,Kate,Johnson,202 555 0143,,\r\n"
)


def write_csv(run: Cli, content: str = CSV, name: str = "students.csv") -> Path:
    path = run.tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


def test_import_json_prints_the_summary_on_stdout(run):
    run("fields", "add", "Class Year", "--type", "number")
    path = write_csv(run)

    result = run("import", str(path), "--json")

    data = json.loads(result.stdout)  # stdout is JSON and nothing else
    assert data["summary"] == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "skipped": 2,
        "ignored": 0,
        "errors": 3,
    }
    assert data["dry_run"] is False
    assert data["file_error"] is None
    assert sorted((p["code"], p["row"]) for p in data["problems"]) == [
        ("blank-required-data-in-record", 4),
        ("duplicate-contact", 5),
        ("invalid-email", 3),
    ]
    # The problems were logged as JSON lines on stderr.
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert sorted(e["code"] for e in events if e["event"] == "sync_error") == sorted(
        p["code"] for p in data["problems"]
    )
    assert run.show("S-1")["custom"] == {"Class Year": "2027"}


def test_import_dry_run_writes_nothing_and_reports_the_same_summary(run):
    path = write_csv(
        run,
        CSV.replace(",CUSTOM_Class Year", "")
        .replace(",2027", "")
        .replace(",2026", "")
        .replace(",2028", "")
        .replace(",\r\n", "\r\n"),
    )
    # (the same rows without the custom column, so no field needs defining)

    dry = json.loads(run("import", str(path), "--dry-run", "--json").stdout)

    assert dry["dry_run"] is True
    assert run.json("contacts", "list") == []
    assert run.json("log") == []
    real = json.loads(run("import", str(path), "--json").stdout)
    assert dry["summary"] == real["summary"]
    assert real["summary"]["created"] == 2


def test_import_plan_shows_each_field_plan(run):
    path = write_csv(run, "crm_id,first_name,last_name,phone,email\r\nS-1,Ada,L,2025550143,x\r\n")

    data = json.loads(run("import", str(path), "--dry-run", "--plan", "--json").stdout)

    (plan,) = data["plans"]
    assert (plan["row"], plan["outcome"]) == (2, "created")
    actions = {f["field"]: (f["action"], f.get("code")) for f in plan["fields"]}
    assert actions["phone"] == ("set", None)
    assert actions["email"] == ("reject", "invalid-email")


def test_import_of_a_malformed_file_exits_1_and_says_why(run):
    path = write_csv(run, "crm_id,shoe_size\r\nS-1,42\r\n")

    result = run("import", str(path), "--strict", "--json", expect=1)

    data = json.loads(result.stdout)
    assert "shoe_size" in data["file_error"]
    assert [p["code"] for p in data["problems"]] == ["file-malformed"]
    assert run.json("contacts", "list") == []


def test_import_prints_a_readable_summary(run):
    path = write_csv(run, CSV.replace(",CUSTOM_Class Year", ",CUSTOM_Unknown"))

    out = run("import", str(path)).stdout

    assert "created" in out
    assert "unknown-custom-field" in out
    assert "invalid-email" in out


def test_import_batch_size_and_tab_delimiter(run):
    path = write_csv(
        run,
        "crm_id\tfirst_name\tlast_name\tphone\r\n"
        "S-1\tAda\tL\t2025550143\r\nS-2\tGrace\tH\t2025550181\r\nS-3\tAlan\tT\t4155550199\r\n",
    )

    data = json.loads(
        run("import", str(path), "--delimiter", "tab", "--batch-size", "1", "--json").stdout
    )

    assert data["summary"]["created"] == 3


# --- contacts --------------------------------------------------------------------------------


def test_contacts_add_show_and_list(run):
    ada = run.add(*ADA, "--email", "Ada@Example.EDU", "--crm-id", "S-1")

    shown = run.show(ada)
    assert shown["phone"] == "+12025550143"
    assert shown["email"] == "ada@example.edu"
    assert shown["test_user"] is False
    assert run.show("S-1")["id"] == ada  # by CRM id
    assert run.show("+12025550143")["id"] == ada  # by phone
    listed = run.json("contacts", "list")
    assert [c["id"] for c in listed] == [ada]
    assert "Lovelace" in run("contacts", "list").stdout
    assert "Lovelace" in run("contacts", "show", ada).stdout


def test_contacts_add_needs_the_required_fields(run):
    result = run("contacts", "add", "--first-name", "Ada", "--last-name", "L", expect=1)

    assert "blank-required-data-in-record" in result.stderr
    assert run.json("contacts", "list") == []


def test_contacts_add_refuses_a_duplicate_phone(run):
    run.add(*ADA)

    result = run("contacts", "add", *GRACE[:4], "--phone", "+1 202 555 0143", expect=1)

    assert "duplicate-contact" in result.stderr


def test_contacts_add_test_user_and_filter_on_it(run):
    ada = run.add(*ADA)
    tester = run.add(*GRACE, "--test-user")

    assert run.show(tester)["test_user"] is True
    assert [c["id"] for c in run.json("contacts", "list", "--test-users")] == [tester]
    assert [c["id"] for c in run.json("contacts", "list", "--no-test-users")] == [ada]


def test_contacts_edit_of_the_phone_keeps_the_old_one_as_previous(run):
    ada = run.add(*ADA)

    run("contacts", "edit", ada, "--phone", "617-555-0112")

    shown = run.show(ada)
    assert shown["phone"] == "+16175550112"
    assert shown["previous_phone"] == "+12025550143"


def test_contacts_edit_without_a_phone_change_leaves_previous_phone_alone(run):
    ada = run.add(*ADA)

    run("contacts", "edit", ada, "--preferred-name", "Addie", "--phone", "202.555.0143")

    shown = run.show(ada)
    assert shown["preferred_name"] == "Addie"
    assert shown["previous_phone"] is None


def test_contacts_edit_custom_values_and_unset(run):
    run("fields", "add", "Class Year", "--type", "number")
    ada = run.add(*ADA, "--custom", "Class Year=2027.0")
    assert run.show(ada)["custom"] == {"Class Year": "2027"}

    run("contacts", "edit", ada, "--custom", "Class Year=UNSET", "--preferred-name", "UNSET")

    shown = run.show(ada)
    assert shown["custom"] == {}
    assert shown["preferred_name"] is None


def test_contacts_edit_rejects_bad_values_with_their_code(run):
    ada = run.add(*ADA)

    assert "invalid-email" in run("contacts", "edit", ada, "--email", "nope", expect=1).stderr
    assert (
        "value-too-long" in run("contacts", "edit", ada, "--first-name", "x" * 65, expect=1).stderr
    )
    assert "unset-not-allowed" in run("contacts", "edit", ada, "--email", "UNSET", expect=1).stderr
    assert run("contacts", "edit", ada, "--custom", "novalue", expect=2).exit_code == 2
    assert run.show(ada)["first_name"] == "Ada"


def test_contacts_edit_of_an_unknown_contact_fails(run):
    result = run("contacts", "edit", "0" * 32, "--first-name", "X", expect=1)

    assert "unknown-contact-id" in result.stderr


def test_contacts_show_of_an_unknown_contact_fails(run):
    assert "unknown-contact-id" in run("contacts", "show", "nobody", expect=1).stderr


def test_contacts_edit_sets_and_clears_the_test_user_flag(run):
    ada = run.add(*ADA)

    run("contacts", "edit", ada, "--test-user")
    assert run.show(ada)["test_user"] is True
    run("contacts", "edit", ada, "--no-test-user")
    assert run.show(ada)["test_user"] is False


def test_contacts_archive_and_undo(run):
    ada = run.add(*ADA)

    run("contacts", "archive", ada)
    assert run.show(ada)["archived"] is True
    assert run.json("contacts", "list") == []
    assert [c["id"] for c in run.json("contacts", "list", "--archived")] == [ada]

    run("contacts", "archive", ada, "--undo")
    assert run.show(ada)["archived"] is False
    assert [c["id"] for c in run.json("contacts", "list")] == [ada]


def test_contacts_list_search_limit_and_offset(run):
    ada = run.add(*ADA, "--email", "ada@example.edu")
    grace = run.add(*GRACE)

    assert [c["id"] for c in run.json("contacts", "list", "--search", "lovelace")] == [ada]
    assert [c["id"] for c in run.json("contacts", "list", "--search", "ADA@")] == [ada]
    assert [c["id"] for c in run.json("contacts", "list", "--search", "5550181")] == [grace]
    assert len(run.json("contacts", "list", "--limit", "1")) == 1
    page = run.json("contacts", "list", "--limit", "1", "--offset", "1")
    assert len(page) == 1
    assert page[0]["id"] != run.json("contacts", "list", "--limit", "1")[0]["id"]


# --- fields ----------------------------------------------------------------------------------


def test_fields_add_and_list(run):
    run("fields", "add", "Class Year", "--type", "number")
    run("fields", "add", "Application Status")

    assert run.json("fields", "list") == [
        {"name": "Application Status", "type": "text"},
        {"name": "Class Year", "type": "number"},
    ]
    assert "Class Year" in run("fields", "list").stdout


def test_fields_add_twice_fails_unless_exist_ok(run):
    run("fields", "add", "Class Year", "--type", "number")

    assert (
        "already exists" in run("fields", "add", "class year", "--type", "number", expect=1).stderr
    )
    run("fields", "add", "Class Year", "--type", "number", "--exist-ok")
    # --exist-ok does not hide a field of another type.
    run("fields", "add", "Class Year", "--type", "date", "--exist-ok", expect=1)
    assert run.json("fields", "list") == [{"name": "Class Year", "type": "number"}]


def test_fields_add_refuses_an_unknown_type(run):
    run("fields", "add", "Shoe Size", "--type", "shoe", expect=2)

    assert run.json("fields", "list") == []


# --- log -------------------------------------------------------------------------------------


def test_log_json_and_its_filters(run):
    ada = run.add(*ADA, "--crm-id", "S-1")
    path = write_csv(
        run,
        "crm_id,phone,email\r\nS-1,,not-an-email\r\nS-2,2025550181,\r\n",
        name="fall.csv",
    )
    run("import", str(path), expect=0)
    engine_url = run.db_url
    from daemon.hub.database import make_engine

    engine = make_engine(engine_url)
    try:
        record(
            engine,
            SyncContext("hubspot", "outgoing", new_run_id(), "hubspot-main"),
            Code.REMOTE_REJECTED,
            "the platform said no",
            contact_id=ada,
        )
    finally:
        engine.dispose()

    everything = run.json("log")
    assert sorted(r["code"] for r in everything) == [
        "blank-required-data-in-record",
        "invalid-email",
        "remote-rejected",
    ]
    assert everything[0]["code"] == "remote-rejected"  # newest first

    csv_rows = run.json("log", "--integration", "csv")
    assert {r["code"] for r in csv_rows} == {"invalid-email", "blank-required-data-in-record"}
    assert {r["details"]["file"] for r in csv_rows} == {"fall.csv"}
    assert {r["details"]["row"] for r in csv_rows} == {2, 3}

    outgoing = run.json("log", "--direction", "outgoing")
    assert [(r["integration"], r["instance"]) for r in outgoing] == [("hubspot", "hubspot-main")]
    assert {r["code"] for r in run.json("log", "--direction", "incoming")} == {
        "invalid-email",
        "blank-required-data-in-record",
    }

    assert {r["code"] for r in run.json("log", "--contact", ada)} == {
        "invalid-email",
        "remote-rejected",
    }
    assert [r["code"] for r in run.json("log", "--code", "invalid-email")] == ["invalid-email"]
    run_id = csv_rows[0]["run_id"]
    assert len(run.json("log", "--run", run_id)) == 2
    assert len(run.json("log", "--limit", "1")) == 1

    assert len(run.json("log", "--since", "1h")) == 3
    assert len(run.json("log", "--since", "2999-01-01T00:00:00")) == 0
    assert len(run.json("log", "--until", "2000-01-01")) == 0
    assert len(run.json("log", "--since", "2000-01-01T00:00:00+00:00")) == 3


def test_log_rejects_an_unreadable_time(run):
    result = run("log", "--since", "yesterday-ish", expect=2)

    assert "yesterday-ish" in result.stderr


def test_log_prints_a_table(run):
    path = write_csv(run, "crm_id,phone\r\nS-9,\r\n", name="one.csv")
    run("import", str(path))

    out = run("log").stdout

    assert "blank-required-data-in-record" in out
    assert "row 2" in out


# --- configuration ---------------------------------------------------------------------------


def write_settings(run: Cli, text: str) -> Path:
    path = run.etc / "contactsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(run: Cli) -> str:
    result = run("contacts", "list", expect=2)
    assert result.stdout == ""
    # One line, not wrapped at 80 columns: a path split in two is not found by grep.
    (line,) = result.stderr.splitlines()
    return line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[hub]\nbatch_sise = 10\n", "hub.batch_sise"),
        ("colour = 'blue'\n", "colour"),
        ("[databse]\nurl = 'sqlite://'\n", "databse"),
    ],
)
def test_an_unknown_settings_key_names_the_file_and_the_key(run, text, key):
    path = write_settings(run, text)

    message = config_error(run)

    assert str(path) in message
    assert key in message
    assert "unknown key" in message
    assert "config-invalid" in message


def test_invalid_toml_names_the_file(run):
    path = write_settings(run, "[hub\nbatch_size = 10\n")

    message = config_error(run)

    assert str(path) in message
    assert "TOML" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[hub]\ndefault_region = 'XX'\n", "hub.default_region"),
        ("[hub]\nbatch_size = 0\n", "hub.batch_size"),
        ("[hub]\nbatch_size = 'many'\n", "hub.batch_size"),
    ],
)
def test_a_bad_settings_value_names_the_key(run, text, key):
    path = write_settings(run, text)

    message = config_error(run)

    assert str(path) in message
    assert key in message


def test_good_settings_are_used(run):
    write_settings(run, "[hub]\ndefault_region = 'GB'\n")

    ada = run.add("--first-name", "A", "--last-name", "B", "--phone", "020 7946 0958")

    assert run.show(ada)["phone"] == "+442079460958"


def test_help_needs_no_database(tmp_path):
    result = CliRunner().invoke(
        cli, ["--database-url", "postgresql://nobody@127.0.0.1:1/none", "contacts", "--help"]
    )

    assert result.exit_code == 0
    assert "archive" in result.stdout
