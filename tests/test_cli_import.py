"""``contactsync import`` for files as they come: unknown columns, ``--map``, ``--strict``,
``--template`` and the delimiter hint, driven through click's test runner."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.hub.fields import DEFAULT_FIELDS
from tests import clikit
from tests.clikit import isolated


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


@pytest.fixture
def run(tmp_path) -> clikit.Cli:
    return clikit.Cli(tmp_path)


def write_csv(run: clikit.Cli, content: str, name: str = "students.csv") -> Path:
    path = run.tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


EXPORT = (  # as a student system exports it: its own names, one the hub has no field for
    "Student ID,First Name,Last Name,Mobile,E-mail,Advisor\r\n"
    "S-1,Ada,Lovelace,(202) 555-0143,ada@example.edu,Vaughan\r\n"
    "S-2,Grace,Hopper,202-555-0181,grace@example.edu,Jackson\r\n"
)


def test_an_unknown_column_is_reported_and_the_rest_imported(run):
    path = write_csv(run, EXPORT.replace("Student ID", "crm_id").replace("Mobile", "phone"))

    data = run.json("import", str(path))

    assert data["file_error"] is None
    assert data["summary"]["created"] == 2
    assert [(p["code"], p["column"]) for p in data["problems"]] == [
        ("unknown-column", "E-mail"),
        ("unknown-column", "Advisor"),
    ]
    logged = run.json("log")
    assert sorted(r["code"] for r in logged) == ["unknown-column", "unknown-column"]
    assert len(run.json("contacts", "list")) == 2


def test_a_dry_run_reports_the_unknown_column_and_writes_no_row(run):
    path = write_csv(run, EXPORT.replace("Student ID", "crm_id").replace("Mobile", "phone"))

    result = run("import", str(path), "--dry-run")

    assert "unknown-column" in result.stdout and "Advisor" in result.stdout
    assert run.json("log") == []
    assert run.json("contacts", "list") == []


def test_strict_refuses_the_file_and_exits_1(run):
    path = write_csv(run, EXPORT.replace("Student ID", "crm_id").replace("Mobile", "phone"))

    data = run.json("import", str(path), "--strict", expect=1)

    assert "'E-mail'" in data["file_error"] and "email_address" in data["file_error"]
    assert [p["code"] for p in data["problems"]] == ["file-malformed"]
    assert run.json("contacts", "list") == []


def test_map_names_each_column_by_hand(run):
    run("fields", "add", "Advisor")
    path = write_csv(run, EXPORT)

    data = run.json(
        "import",
        str(path),
        "--strict",
        "--map",
        "Student ID=crm_id",
        "--map",
        "Mobile=phone",
        "--map",
        "E-mail=email",
        "--map",
        "Advisor=custom:Advisor",
    )

    assert data["summary"]["created"] == 2 and data["problems"] == []
    ada = run.json("contacts", "show", "S-1")
    assert (ada["email"], ada["custom"]) == ("ada@example.edu", {"Advisor": "Vaughan"})


def test_an_unknown_map_target_is_a_usage_error_listing_the_valid_ones(run):
    run("fields", "add", "Advisor")
    path = write_csv(run, EXPORT)

    result = run("import", str(path), "--map", "Student ID=custom:advisr", expect=2)

    assert "'custom:advisr'" in result.stderr
    assert "did you mean 'custom:Advisor'" in result.stderr
    for valid in ("crm_id", "phone", "custom:Advisor"):
        assert valid in result.stderr
    assert result.stdout == ""
    assert run.json("log") == []


def test_a_map_naming_no_column_of_the_file_is_said_on_stderr(run):
    path = write_csv(run, "crm_id,first_name,last_name,phone\r\nS-1,Ada,L,2025550143\r\n")

    result = run("import", str(path), "--map", "Student Id=crm_id")

    assert "no column 'Student Id'" in result.stderr


def test_a_semicolon_file_gets_the_delimiter_hint(run):
    path = write_csv(run, "crm_id;first_name;last_name;phone\r\nS-1;Ada;L;2025550143\r\n")

    data = run.json("import", str(path), expect=1)

    assert "--delimiter ';'" in data["file_error"]
    assert run.json("contacts", "list") == []
    run("import", str(path), "--delimiter", ";")
    assert run.json("contacts", "show", "S-1")["first_name"] == "Ada"


def test_template_prints_every_default_and_custom_field_and_writes_nothing(run):
    run("fields", "add", "Class Year", "--type", "number")
    run("fields", "add", "Application Status")
    before = run.json("log")

    result = run("import", "--template")

    (header,) = list(csv.reader(io.StringIO(result.stdout)))
    # Mainstay's template starts with these four; every other default field follows (active
    # is the CSV spelling of the archived flag), then each custom field with its prefix.
    assert header[:4] == ["first_name", "last_name", "phone", "email"]
    assert sorted(header[: len(header) - 2]) == sorted(set(DEFAULT_FIELDS) - {"archived"})
    assert header[-2:] == ["CUSTOM_Application Status", "CUSTOM_Class Year"]
    assert run.json("log") == before
    assert run.json("contacts", "list") == []


def test_template_json_and_delimiter(run):
    run("fields", "add", "Class Year")

    data = run.json("import", "--template")
    tabbed = run("import", "--template", "--delimiter", "tab").stdout

    assert data["header"][-1] == "CUSTOM_Class Year"
    assert tabbed.rstrip("\r\n").split("\t") == data["header"]


def test_a_filled_in_template_imports(run):
    run("fields", "add", "Class Year", "--type", "number")
    header = run.json("import", "--template")["header"]
    values = {"first_name": "Ada", "last_name": "L", "phone": "2025550143", "crm_id": "S-1"}
    values["CUSTOM_Class Year"] = "2027"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([header, [values.get(name, "") for name in header]])
    path = write_csv(run, out.getvalue())

    data = run.json("import", str(path), "--strict")

    assert data["summary"]["created"] == 1 and data["problems"] == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ("FILE", "--template")),
        (("--template", "x.csv"), ("--template", "FILE")),
        (("x.csv", "--map", "no-equals"), ("COLUMN=FIELD",)),
    ],
)
def test_usage_errors_exit_2(run, args, words):
    result = run("import", *args, expect=2)

    for word in words:
        assert word in result.stderr


def test_a_hostile_header_is_refused_clearly_and_json_stays_json(run):
    path = run.tmp_path / "nul.csv"
    path.write_bytes(b"crm_id,first_name,last\x00name,phone\r\nS-1,Ada,L,2025550143\r\n")

    result = run("import", str(path), "--json", expect=1)

    data = json.loads(result.stdout)
    assert "NUL" in data["file_error"] and "line 1" in data["file_error"]
    assert run.json("contacts", "list") == []
