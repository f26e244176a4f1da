"""CSV import: header mapping, refusing bad files whole, per-row problems, dry runs, batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from hubkit import (
    ADA_E164,
    ALAN_E164,
    GRACE_E164,
    contact,
    contact_count,
    define_custom_fields,
    log_rows,
    seed,
    snapshot,
    truncate,
)

from daemon.hub.contacts import load_schema
from daemon.hub.csv_import import ImportResult, import_csv

HEADER = "crm_id,first_name,last_name,phone,email"


@pytest.fixture
def hub(sqlite_engine):
    define_custom_fields(sqlite_engine)
    return sqlite_engine


def write(tmp_path: Path, content: str | bytes, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def run_import(engine, path: Path, **kwargs) -> ImportResult:
    return import_csv(engine, path, load_schema(engine), **kwargs)


def lines(*rows: str) -> str:
    return "\r\n".join(rows) + "\r\n"


def problems(engine) -> list[tuple]:
    """(code, row, column) of each sync-log row."""
    return [
        (r["code"], r["details"].get("row"), r["details"].get("column")) for r in log_rows(engine)
    ]


# --- headers ---------------------------------------------------------------------------------


def test_header_aliases_spacing_and_case_are_understood(hub, tmp_path):
    ada = seed(hub, {"first_name": "Ada", "last_name": "Lovelace", "phone": "2025550143"})
    path = write(
        tmp_path,
        lines(
            "Mainstay_ID,CrmID,First Name,LASTNAME,Phone-Number,Email Address,"
            "Enrollment ID,preferredname,custom_class year,Active",
            f"{ada},S-1,,,,ADA@example.edu,E-1,Addie,2027,",
            ",S-2,Grace,Hopper,202.555.0181,,,,2026,false",
        ),
    )

    result = run_import(hub, path)

    assert result.ok
    assert result.report.summary["created"] == 1
    assert result.report.summary["updated"] == 1
    updated = contact(hub, ada)
    assert (updated["crm_id"], updated["email"], updated["enrollment_id"]) == (
        "S-1",
        "ada@example.edu",
        "E-1",
    )
    assert updated["preferred_name"] == "Addie"
    assert updated["custom"] == {"Class Year": "2027"}
    created = contact(hub, "S-2")
    assert (created["phone"], created["archived"]) == (GRACE_E164, True)
    assert log_rows(hub) == []


@pytest.mark.parametrize("alias", ["id", "mainstay_id", "admithub_id", "ID"])
def test_every_hub_id_alias_matches_by_hub_id(hub, tmp_path, alias):
    ada = seed(hub, {"first_name": "Ada", "last_name": "Lovelace", "phone": "2025550143"})
    path = write(tmp_path, lines(f"{alias},preferred_name", f"{ada},Addie", f"{'0' * 32},Nobody"))

    result = run_import(hub, path)

    assert contact(hub, ada)["preferred_name"] == "Addie"
    assert result.report.summary["updated"] == 1
    assert problems(hub) == [("unknown-contact-id", 3, None)]


def test_a_byte_order_mark_is_not_part_of_the_first_header(hub, tmp_path):
    path = write(tmp_path, lines(HEADER, "S-1,Ada,Lovelace,(202) 555-0143,").encode("utf-8-sig"))

    result = run_import(hub, path)

    assert result.ok, result.file_error
    assert contact(hub, "S-1")["phone"] == ADA_E164


def test_custom_columns_take_the_custom_prefix_in_any_case(hub, tmp_path):
    path = write(
        tmp_path,
        lines(
            HEADER + ",CUSTOM_Class Year,custom_application status,Custom_Deposit Date",
            "S-1,Ada,Lovelace,2025550143,,2027.50,Admitted,12/31/2024",
        ),
    )

    run_import(hub, path)

    assert contact(hub, "S-1")["custom"] == {
        "Class Year": "2027.5",
        "Application Status": "Admitted",
        "Deposit Date": "2024-12-31",
    }


def test_the_active_column_archives_and_unarchives(hub, tmp_path):
    seed(hub, {"crm_id": "S-1", "first_name": "A", "last_name": "L", "phone": "2025550143"})
    seed(
        hub,
        {"crm_id": "S-2", "first_name": "G", "last_name": "H", "phone": "2025550181"},
        archived=True,
    )
    seed(
        hub,
        {"crm_id": "S-3", "first_name": "K", "last_name": "J", "phone": "6175550112"},
        archived=True,
    )
    path = write(tmp_path, lines("crm_id,Active", "S-1,FALSE", "S-2,true", "S-3,"))

    run_import(hub, path)

    assert contact(hub, "S-1")["archived"] is True
    assert contact(hub, "S-2")["archived"] is False
    assert contact(hub, "S-3")["archived"] is False  # a record un-archives (rule 8)


def test_an_unknown_custom_column_is_logged_once_and_ignored(hub, tmp_path):
    path = write(
        tmp_path,
        lines(
            HEADER + ",CUSTOM_Shoe Size,CUSTOM_Class Year",
            "S-1,Ada,Lovelace,2025550143,,42,2027",
            "S-2,Grace,Hopper,2025550181,,43,2026",
            "S-3,Alan,Turing,4155550199,,44,2028",
        ),
    )

    result = run_import(hub, path)

    assert result.ok
    assert result.report.summary["created"] == 3
    assert problems(hub) == [("unknown-custom-field", None, "CUSTOM_Shoe Size")]
    assert log_rows(hub)[0]["details"]["file"] == "contacts.csv"
    assert contact(hub, "S-2")["custom"] == {"Class Year": "2026"}


# --- files refused whole ---------------------------------------------------------------------


def assert_refused(engine, result: ImportResult, *words: str) -> None:
    """Nothing imported, one file-level ``file-malformed`` row naming the file."""
    assert not result.ok
    assert contact_count(engine) == 0
    rows = log_rows(engine)
    assert [r["code"] for r in rows] == ["file-malformed"]
    assert rows[0]["details"] == {"file": result.path.name}
    assert sum(result.report.counts.values()) == 0
    for word in words:
        assert word in result.file_error
        assert word in rows[0]["message"]


@pytest.mark.parametrize("header", ["Nickname", "CUSTOMER_no", "crm id x"])
def test_strict_refuses_a_file_with_any_other_unknown_header(hub, tmp_path, header):
    path = write(
        tmp_path,
        lines(f"{HEADER},{header}", "S-1,Ada,Lovelace,2025550143,,x", "S-2,G,H,2025550181,,y"),
    )

    result = run_import(hub, path, strict=True)

    # The refusal names the column and what would have been accepted instead.
    assert_refused(hub, result, header, "column 6", "crm_id", "mobile_phone", "CUSTOM_Class Year")


@pytest.mark.parametrize(
    "header",
    [
        "crm_id,first_name,last_name,phone,crm_id",
        "crm_id,first_name,last_name,phone,Phone Number",
        "crm_id,first_name,last_name,phone,custom_class year,CUSTOM_Class Year",
        "id,mainstay_id,first_name",
    ],
)
def test_two_columns_for_one_field_refuse_the_file(hub, tmp_path, header):
    path = write(tmp_path, lines(header, ",".join(["1"] * len(header.split(",")))))

    result = run_import(hub, path)

    assert_refused(hub, result)


def test_a_header_cell_without_a_name_refuses_the_file(hub, tmp_path):
    path = write(tmp_path, lines("crm_id,,phone", "S-1,x,2025550143"))

    assert_refused(hub, run_import(hub, path), "column 2")


def test_a_bad_byte_late_in_the_file_refuses_it_before_any_batch_is_applied(hub, tmp_path):
    good = [f"S-{i},First{i},Last{i},202555{i:04d}," for i in range(10)]
    content = lines(HEADER, *good).encode() + "S-99,Zoë,Müller,2025559999,\r\n".encode("latin-1")
    path = write(tmp_path, content)

    result = run_import(hub, path, batch_size=3)

    assert_refused(hub, result, "UTF-8", "line 12")


def test_a_bad_byte_is_located_by_its_line_however_far_into_the_file(hub, tmp_path):
    good = [f"S-{i},First{i},Last{i},202555{i:04d}," for i in range(2000)]
    assert len("".join(good)) > 4 * 8192  # well past the first chunk a reader decodes
    content = (
        lines(HEADER, *good).encode("utf-8-sig")
        + "S-x,Zoë,M,2025559999,\r\n".encode("latin-1")
        + lines("S-y,Ok,Fine,2025559998,").encode()
    )
    path = write(tmp_path, content)

    result = run_import(hub, path, batch_size=100)

    assert_refused(hub, result, "line 2002")


@pytest.mark.parametrize("content", ["", "\r\n", ",,,\r\n", "   \n"])
def test_a_file_without_a_header_is_refused(hub, tmp_path, content):
    result = run_import(hub, write(tmp_path, content))

    assert_refused(hub, result, "header")


def test_a_broken_quote_refuses_the_file(hub, tmp_path):
    good = [f"S-{i},First{i},Last{i},202555{i:04d}," for i in range(5)]
    path = write(tmp_path, lines(HEADER, *good, 'S-9,"Zoe,Last,2025559999,'))

    result = run_import(hub, path, batch_size=2)

    assert_refused(hub, result)


def test_a_stray_quote_after_a_quoted_cell_refuses_the_file(hub, tmp_path):
    path = write(tmp_path, lines(HEADER, 'S-1,"Ada"x,Lovelace,2025550143,'))

    assert_refused(hub, run_import(hub, path))


def test_a_missing_file_is_file_malformed(hub, tmp_path):
    result = run_import(hub, tmp_path / "nope.csv")

    assert not result.ok
    assert [r["code"] for r in log_rows(hub)] == ["file-malformed"]


# --- row-level problems ----------------------------------------------------------------------


def test_a_ragged_row_is_skipped_with_its_row_number_and_the_others_import(hub, tmp_path):
    path = write(
        tmp_path,
        lines(
            HEADER,
            "S-1,Ada,Lovelace,2025550143,",
            "S-2,Grace,Hopper,2025550181,,extra",
            "S-3,Alan,Turing,4155550199",
            "S-4,Kate,Johnson,6175550112,kate@example.edu",
        ),
    )

    result = run_import(hub, path)

    assert result.ok
    assert contact_count(hub) == 2
    assert {contact(hub, c)["first_name"] for c in ("S-1", "S-4")} == {"Ada", "Kate"}
    assert problems(hub) == [("file-malformed", 3, None), ("file-malformed", 4, None)]
    assert result.report.summary["created"] == 2
    assert result.report.summary["skipped"] == 2


def test_sync_log_rows_carry_the_file_and_spreadsheet_row_numbers(hub, tmp_path):
    path = write(
        tmp_path,
        lines(
            HEADER + ",CUSTOM_Application Status",
            "S-1,Ada,Lovelace,2025550143,,",
            "",  # a blank line is not a record, but it is a row
            'S-2,Grace,Hopper,2025550181,,"Applied\nwith a note"',  # one row, two lines
            "S-3,Alan,Turing,4155550199,not-an-email,",
            "S-4,Kate,Johnson,,,",
        ),
        name="fall intake.csv",
    )

    result = run_import(hub, path)

    assert problems(hub) == [
        ("invalid-email", 5, None),
        ("blank-required-data-in-record", 6, None),
    ]
    rows = log_rows(hub)
    assert {r["details"]["file"] for r in rows} == {"fall intake.csv"}
    assert [r["details"]["field"] for r in rows] == ["email", "phone"]
    assert rows[0]["contact_id"] == contact(hub, "S-3")["id"]
    assert rows[1]["contact_id"] is None
    assert [(p.code, p.source["row"]) for p in result.report.problems] == [
        ("invalid-email", 5),
        ("blank-required-data-in-record", 6),
    ]
    assert contact(hub, "S-2")["custom"] == {"Application Status": "Applied\nwith a note"}


def test_blank_lines_are_not_records(hub, tmp_path):
    path = write(tmp_path, lines(HEADER, "", "S-1,Ada,Lovelace,2025550143,", "", ""))

    result = run_import(hub, path)

    assert result.report.summary["created"] == 1
    assert sum(result.report.counts.values()) == 1
    assert log_rows(hub) == []


def test_rows_of_empty_cells_are_not_records(hub, tmp_path):
    # Spreadsheets export trailing rows of empty cells, of the header's width or not.
    path = write(tmp_path, lines(HEADER, "S-1,Ada,Lovelace,2025550143,", ",,,,", " , ,,, ", ",,"))

    result = run_import(hub, path)

    assert result.report.summary["created"] == 1
    assert sum(result.report.counts.values()) == 1
    assert log_rows(hub) == []


# --- summaries, dry runs, batches ------------------------------------------------------------

MIXED = lines(
    HEADER + ",CUSTOM_Class Year",
    "S-1,Ada,Lovelace,2025550143,ada@example.edu,2027",  # unchanged
    "S-2,Grace,Hopper,2025550181,grace@example.edu,2026",  # updated (email, class year)
    "S-3,Alan,Turing,4155550199,,2028",  # created
    "S-4,Kate,Johnson,2025550143,,",  # duplicate phone: skipped
    "S-5,Mary,Jackson,,,",  # no phone: skipped
    "S-3,Alan,Again,4155550199,,",  # duplicate CRM id in the file: skipped
    "S-6,Dorothy,Vaughan,6175550112,dv@,2029x",  # created, two bad fields
    "S-7,too,many,cells,here,x,y",  # ragged: skipped
)


def seed_mixed(engine) -> None:
    define_custom_fields(engine)
    seed(
        engine,
        {
            "crm_id": "S-1",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "2025550143",
            "email": "ada@example.edu",
            "custom:Class Year": "2027",
        },
    )
    seed(
        engine,
        {"crm_id": "S-2", "first_name": "Grace", "last_name": "Hopper", "phone": "2025550181"},
    )


EXPECTED_SUMMARY = {
    "created": 2,
    "updated": 1,
    "unchanged": 1,
    "skipped": 4,
    "ignored": 0,
    "errors": 6,
}


def test_the_summary_counts_each_outcome(engine, tmp_path):
    seed_mixed(engine)

    result = run_import(engine, write(tmp_path, MIXED))

    assert result.report.summary == EXPECTED_SUMMARY
    assert sorted(problems(engine)) == [
        ("blank-required-data-in-record", 6, None),
        ("duplicate-contact", 5, None),
        ("duplicate-unique-id-crmId", 7, None),
        ("file-malformed", 9, None),
        ("invalid-custom-field-value", 8, None),
        ("invalid-email", 8, None),
    ]
    assert contact(engine, "S-2")["email"] == "grace@example.edu"
    assert contact(engine, "S-3")["phone"] == ALAN_E164
    assert contact(engine, "S-6")["custom"] == {}


def test_a_dry_run_writes_nothing_and_reports_what_the_import_does(engine, tmp_path):
    seed_mixed(engine)
    before = snapshot(engine)
    # The same rows plus an unknown custom column, whose file-level problem is reported too.
    rows = MIXED.rstrip("\r\n").split("\r\n")
    path = write(tmp_path, lines(rows[0] + ",CUSTOM_Nope", *(row + ",n" for row in rows[1:])))

    dry = run_import(engine, path, dry_run=True, batch_size=2)

    assert snapshot(engine) == before
    assert log_rows(engine) == []
    real = run_import(engine, path, batch_size=2)
    assert dry.report.summary == real.report.summary
    assert dry.report.summary["errors"] == EXPECTED_SUMMARY["errors"] + 1
    assert [(p.code, p.source.get("row")) for p in dry.report.problems] == [
        (p.code, p.source.get("row")) for p in real.report.problems
    ]
    assert len(log_rows(engine)) == real.report.problem_count


def test_a_dry_run_of_a_malformed_file_logs_nothing(hub, tmp_path):
    path = write(tmp_path, lines("crm_id,phone", 'S-1,"2025550143'))  # a broken quote

    result = run_import(hub, path, dry_run=True)

    assert not result.ok
    assert result.report.problem_count == 1
    assert log_rows(hub) == []


def test_many_small_batches_give_the_same_result_as_one(engine, tmp_path):
    path = write(tmp_path, MIXED)
    seed_mixed(engine)
    one = run_import(engine, path)
    state_one = _state(engine)
    problems_one = sorted(problems(engine))

    truncate(engine)
    seed_mixed(engine)
    many = run_import(engine, path, batch_size=2)

    assert many.report.summary == one.report.summary == EXPECTED_SUMMARY
    assert _state(engine) == state_one
    assert sorted(problems(engine)) == problems_one


def _state(engine) -> list[tuple]:
    snap = snapshot(engine)
    return sorted(
        (c["crm_id"], c["first_name"], c["last_name"], c["phone"], c["email"], c["archived"])
        for c in snap["contacts"].values()
    )


def test_a_tab_separated_file(hub, tmp_path):
    path = write(
        tmp_path, "crm_id\tfirst_name\tlast_name\tphone\r\nS-1\tAda\tLovelace\t2025550143\r\n"
    )

    result = run_import(hub, path, delimiter="\t")

    assert result.ok
    assert contact(hub, "S-1")["first_name"] == "Ada"


def test_importing_the_same_file_twice_changes_nothing_the_second_time(hub, tmp_path):
    path = write(tmp_path, MIXED)
    run_import(hub, path)
    after_first = snapshot(hub)

    second = run_import(hub, path)

    assert snapshot(hub) == after_first
    assert second.report.summary["created"] == second.report.summary["updated"] == 0


# --- columns that fit real files: unknown ones, --map, the delimiter hint, hostile headers ---


def test_an_unknown_column_is_logged_once_with_the_accepted_names_and_ignored(hub, tmp_path):
    path = write(
        tmp_path,
        lines(
            "crm_id,first_name,E-mail,last_name,phone,Counselor",
            "S-1,Ada,ada@example.edu,Lovelace,2025550143,Ms. Vaughan",
            "S-2,Grace,grace@example.edu,Hopper,2025550181,Mr. Turing",
            "S-3,Alan,alan@example.edu,Turing,4155550199,Ms. Vaughan",
        ),
        name="fall.csv",
    )

    result = run_import(hub, path)

    assert result.ok, result.file_error
    assert result.report.summary["created"] == 3
    assert contact_count(hub) == 3
    assert contact(hub, "S-2")["email"] is None  # the column was not guessed at
    rows = log_rows(hub)
    assert [(r["code"], r["details"]) for r in rows] == [
        ("unknown-column", {"file": "fall.csv", "column": "E-mail", "position": 3}),
        ("unknown-column", {"file": "fall.csv", "column": "Counselor", "position": 6}),
    ]
    message = rows[0]["message"]
    for name in ("'E-mail'", "fall.csv", "email_address", "first_name", "CUSTOM_Deposit Date"):
        assert name in message
    assert "did you mean 'email'" in message
    assert "did you mean" not in rows[1]["message"]  # "Counselor" is close to nothing
    assert "Ada" not in message and "Vaughan" not in rows[1]["message"]  # no cell values
    assert [p.code for p in result.report.problems] == ["unknown-column"] * 2


def test_a_dry_run_reports_an_unknown_column_without_writing_a_row(hub, tmp_path):
    path = write(tmp_path, lines(HEADER + ",Nickname", "S-1,Ada,Lovelace,2025550143,,Addie"))

    result = run_import(hub, path, dry_run=True)

    assert [(p.code, p.source["column"]) for p in result.report.problems] == [
        ("unknown-column", "Nickname")
    ]
    assert result.report.summary["created"] == 1
    assert log_rows(hub) == [] and contact_count(hub) == 0


def test_a_header_that_names_no_field_is_refused_without_echoing_its_cells(hub, tmp_path):
    # A file without its header row: the first record stands where the header should.
    path = write(tmp_path, lines("S-1,Ada,Lovelace,2025550143", "S-2,Grace,Hopper,2025550181"))

    result = run_import(hub, path)

    assert_refused(hub, result, "names a hub field", "crm_id")
    assert "Lovelace" not in result.file_error


@pytest.mark.parametrize(
    ("given", "target", "expected"),
    [
        ("crm_id", "crm_id", "S-1"),
        ("First Name", "first_name", "Ada"),
        ("custom:Application Status", "custom:Application Status", "Admitted"),
        ("CUSTOM_application status", "custom:Application Status", "Admitted"),
        ("custom:class year", "custom:Class Year", "2027"),
    ],
)
def test_a_map_target_is_a_hub_field_or_a_custom_field(hub, given, target, expected):
    from daemon.hub.csv_import import parse_maps

    assert parse_maps([f"Student ID={given}"], load_schema(hub)) == {"Student ID": target}


@pytest.mark.parametrize("item", ["Student ID=crmid", "Student ID=custom:Shoe Size", "x=phone2"])
def test_an_unknown_map_target_lists_the_valid_ones(hub, item):
    from daemon.hub.csv_import import MapError, parse_maps

    with pytest.raises(MapError) as raised:
        parse_maps([item], load_schema(hub))

    for valid in ("crm_id", "first_name", "active", "custom:Class Year", "custom:First Gen"):
        assert valid in str(raised.value)


@pytest.mark.parametrize("item", ["no-equals-sign", "=crm_id"])
def test_a_map_without_a_column_is_refused(hub, item):
    from daemon.hub.csv_import import MapError, parse_maps

    with pytest.raises(MapError, match="COLUMN=FIELD"):
        parse_maps([item], load_schema(hub))


def test_mapped_columns_are_imported_and_an_empty_target_ignores_a_column(hub, tmp_path):
    from daemon.hub.csv_import import parse_maps

    path = write(
        tmp_path,
        lines(
            "Student ID,First,Last,Mobile,Year,Notes",
            "S-1,Ada,Lovelace,2025550143,2027,likes math",
            "S-2,Grace,Hopper,2025550181,2026,",
        ),
    )
    maps = parse_maps(
        [
            "Student ID=crm_id",
            "First=first_name",
            "Last=last_name",
            "Mobile=phone",
            "Year=custom:Class Year",
            "Notes=",
        ],
        load_schema(hub),
    )

    result = run_import(hub, path, column_overrides=maps, strict=True)

    assert result.ok, result.file_error
    assert result.report.summary["created"] == 2
    ada = contact(hub, "S-1")
    assert (ada["first_name"], ada["phone"], ada["custom"]) == (
        "Ada",
        ADA_E164,
        {"Class Year": "2027"},
    )
    assert log_rows(hub) == []  # "Notes=" ignores a column on purpose: nothing to report
    assert result.unused_overrides == []


def test_a_map_onto_a_field_the_file_also_names_refuses_the_file(hub, tmp_path):
    path = write(tmp_path, lines("crm_id,Student ID,phone", "S-1,S-9,2025550143"))

    result = run_import(hub, path, column_overrides={"Student ID": "crm_id"})

    assert_refused(hub, result, "columns 1 and 2", "crm_id")


@pytest.mark.parametrize(
    ("separator", "given", "flag"),
    [(";", ",", "';'"), ("\t", ",", "tab"), ("|", ",", "'|'"), (",", ";", "','")],
)
def test_a_header_separated_by_another_delimiter_says_which_to_use(
    hub, tmp_path, separator, given, flag
):
    header = separator.join(["crm_id", "first_name", "last_name", "phone"])
    record = separator.join(["S-1", "Ada", "Lovelace", "2025550143"])
    path = write(tmp_path, lines(header, record))

    result = run_import(hub, path, delimiter=given)

    assert_refused(hub, result, f"--delimiter {flag}")
    assert contact_count(hub) == 0
    fixed = run_import(hub, path, delimiter=separator)
    assert fixed.ok and contact(hub, "S-1")["first_name"] == "Ada"


def test_a_header_with_a_nul_byte_is_refused_clearly_and_nothing_is_lost(engine, tmp_path):
    define_custom_fields(engine)
    path = write(tmp_path, lines("crm_id,first\x00name,last_name,phone", "S-1,Ada,L,2025550143"))

    result = run_import(engine, path)

    assert_refused(engine, result, "NUL", "line 1", "CSV UTF-8")


def test_a_nul_byte_in_a_late_row_refuses_the_file_before_any_batch(engine, tmp_path):
    # A UTF-16 export without a BOM decodes as UTF-8 with a NUL after every letter.
    good = [f"S-{i},First{i},Last{i},202555{i:04d}," for i in range(6)]
    path = write(tmp_path, lines(HEADER, *good, "S-9,Zo\x00e,M,2025559999,"))

    result = run_import(engine, path, batch_size=2)

    assert_refused(engine, result, "NUL", "line 8")


def test_a_formula_header_is_an_unknown_column_quoted_in_the_log_and_the_rows_import(
    engine, tmp_path
):
    hostile = "=cmd|' /C calc'!A0"
    path = write(
        tmp_path, lines(f'{HEADER},"{hostile}"', "S-1,Ada,Lovelace,2025550143,,=1+1"), "x.csv"
    )

    result = run_import(engine, path)

    # A "|" inside a header cell is no hint that the file is "|"-separated.
    assert result.ok, result.file_error
    assert contact(engine, "S-1")["first_name"] == "Ada"
    (row,) = log_rows(engine)
    assert (row["code"], row["details"]["column"]) == ("unknown-column", hostile)
    assert f"column {hostile!r}" in row["message"]  # quoted, never a cell of its own


def test_strict_with_a_formula_header_refuses_and_names_it(hub, tmp_path):
    hostile = '=HYPERLINK("http://x")'
    path = write(tmp_path, lines(f'{HEADER},"{hostile.replace(chr(34), chr(34) * 2)}"'))

    result = run_import(hub, path, strict=True)

    assert_refused(hub, result, repr(hostile))


def test_an_import_template_imports_back_cleanly(hub, tmp_path):
    from daemon.hub.csv_import import template_header

    header = template_header(load_schema(hub))
    cells = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "2025550143",
        "crm_id": "S-1",
        "CUSTOM_Class Year": "2027",
    }
    row = ",".join(cells.get(name, "") for name in header)
    path = write(tmp_path, lines(",".join(header), row))

    result = run_import(hub, path, strict=True)

    assert result.ok, result.file_error
    assert log_rows(hub) == []
    assert contact(hub, "S-1")["custom"] == {"Class Year": "2027"}
