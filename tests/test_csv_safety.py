"""Hostile CSV, both ways (issue 16): formula cells escaped in every file we write (the
conversations export, sftp drops, Slate uploads) unless an instance turns it off; hostile file
names and folders linked out of the base refused by the sftp plugin; CR-only line ends and a
byte-order mark in the middle of a file read the same way by ``import`` and the SFTP pull."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from enginekit import sync_engine
from exportkit import contact, engine_for, export_instance, exported_files, message, read_csv
from hubkit import log_rows
from hypothesis import given
from hypothesis import strategies as st
from sftpkit import csv_text, transport_table, write_instance

from daemon.foundation.clock import FakeClock
from daemon.foundation.csv_read import FileMalformed, read_header, read_rows, stream_rows
from daemon.hub.contacts import load_schema
from daemon.hub.csv_import import import_csv
from daemon.hub.runs import CycleKind
from daemon.kit.connector import ConnectorContext, PushItem
from daemon.kit.csv_write import encode_row, is_formula, write_csv
from plugins.sftp.connector import SftpConfig, SftpConnector
from plugins.slate.simulator import SlateSimulator
from tests.test_slate_connector import Recording, connector

# The reported values, and what a spreadsheet shows once escaped: text, not a formula.
HOSTILE = ['=HYPERLINK("http://x")', "+cmd", "@SUM(1)", "-1+1", "\t=1", "\r=1"]
SAFE = ["+12025550143", "-1", "+1.5", "Ada", "", "a=b", "O'Brien"]


def cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


# --- the writer ---------------------------------------------------------------------------


def test_formula_cells_are_escaped_and_quoted_and_numbers_are_not():
    row = HOSTILE + SAFE
    escaped = encode_row(row)
    assert escaped.startswith('"\'=HYPERLINK(""http://x"")","\'+cmd","\'@SUM(1)","\'-1+1",')
    (read,) = cells(escaped.encode())
    assert read == ["'" + v for v in HOSTILE] + SAFE  # an E.164 phone keeps its "+"
    (verbatim,) = cells(encode_row(row, escape_formulas=False).encode())
    assert verbatim == row
    assert [is_formula(v) for v in HOSTILE] == [True] * 6
    assert not any(is_formula(v) for v in SAFE)


@given(st.lists(st.text(alphabet=st.sampled_from(list('ab=+-@\t\r\n,"1. '))), min_size=1))
def test_unescaped_rows_are_byte_for_byte_what_csv_writer_writes(row: list[str]):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(row)
    assert encode_row(row, escape_formulas=False) == buffer.getvalue()
    # Escaped, every cell still reads back: the same text, or the text behind a quote.
    (read,) = cells(encode_row(row).encode())
    assert [
        r.removeprefix("'") if is_formula(v) else r for r, v in zip(read, row, strict=True)
    ] == row


def test_the_header_is_never_escaped():
    data = b"".join(write_csv(["-id", "name"], [{"-id": "=1", "name": "x"}]))
    assert cells(data) == [["-id", "name"], ["'=1", "x"]]


# --- the conversations export -------------------------------------------------------------


@pytest.mark.parametrize("escape", [True, False])
def test_the_export_escapes_formula_bodies_by_default(tmp_path: Path, sqlite_engine, escape):
    ada = contact(sqlite_engine, 1)
    for minute, body in enumerate([*HOSTILE, "+12025550143"]):
        message(sqlite_engine, ada, body, minutes=minute)
    out = tmp_path / "out"
    out.mkdir()
    settings = {} if escape else {"escape_formulas": False}
    instance = export_instance(tmp_path / "etc", out, **settings)
    report = engine_for(sqlite_engine, instance).run(instance, CycleKind.EXPORT)
    assert report.outcome == "ok", report
    (path,) = exported_files(out)
    bodies = [row["incoming"] for row in read_csv(path)]
    expected = ["'" + v for v in HOSTILE] if escape else HOSTILE
    assert bodies == [*expected, "+12025550143"]


# --- sftp drops ---------------------------------------------------------------------------


def push_file(tmp_path: Path, **settings) -> list[list[str]]:
    config = SftpConfig.model_validate(
        {"transport": {"kind": "local", "path": str(tmp_path)}, **settings}
    )
    connector = SftpConnector(config, ConnectorContext("x"), clock=FakeClock())
    fields = dict(
        zip(["first_name", "last_name", "preferred_name", "email"], HOSTILE, strict=False)
    )
    fields["phone"] = "+12025550143"
    connector.push([PushItem("h1", "-1+1" if settings else None, fields)])
    (path,) = (tmp_path / "outgoing").iterdir()
    return cells(path.read_bytes())


@pytest.mark.parametrize(
    ("settings", "escaped"),
    [
        ({}, True),  # mainstay: a generic drop people open
        ({"preset": "banner"}, False),  # an importer reads it: the quote would be data
        ({"preset": "recruit"}, False),
        ({"preset": "banner", "escape_formulas": True}, True),
        ({"preset": "mainstay", "escape_formulas": False}, False),
    ],
)
def test_sftp_outgoing_files_follow_the_preset_and_the_setting(tmp_path, settings, escaped):
    header, row = push_file(tmp_path, **settings)
    values = dict(zip(header, row, strict=True))
    hostile = [v for v in values.values() if v.lstrip("'") in HOSTILE]
    assert len(hostile) >= 4
    assert all(v.startswith("'") == escaped for v in hostile), values
    assert "+12025550143" in values.values()  # never "'+1…": a phone stays a phone


def test_sftp_push_to_a_real_sshd_escapes(sqlite_engine, sshd_server, sftp_root, tmp_path):
    instance = write_instance(
        tmp_path / "etc",
        "drop",
        transport_table(sshd_server, sftp_root),
        top='direction = "outgoing"',
    )
    source = tmp_path / "in.csv"
    source.write_text(
        'crm_id,first_name,last_name,phone\nC1,"=HYPERLINK(""http://x"")",@SUM(1),2025550101\n'
    )
    assert import_csv(sqlite_engine, source, load_schema(sqlite_engine)).ok
    assert sync_engine(sqlite_engine, instance).run(instance, "push").outcome == "ok"
    (path,) = (sftp_root / "outgoing").iterdir()
    header, row = cells(path.read_bytes())
    values = dict(zip(header, row, strict=True))
    assert values["first_name"] == '\'=HYPERLINK("http://x")'
    assert values["last_name"] == "'@SUM(1)"


# --- Slate uploads share the writer -------------------------------------------------------


@pytest.mark.parametrize("escape", [False, True])
def test_slate_uploads_share_the_writer(tmp_path: Path, clock: FakeClock, escape: bool):
    item = PushItem("hub0", None, {"first_name": "=1+1", "last_name": "+cmd"})
    expected = {"first_name": "'=1+1", "last_name": "'+cmd"} if escape else item.fields
    with SlateSimulator(clock=clock, sftp_root=tmp_path / "sftp") as sim:
        over_sftp = connector(sim, clock, escape_formulas=escape)
        over_sftp.push([item])
        (path,) = sim.incoming.iterdir()
        header, row = cells(path.read_bytes())
        assert {k: v for k, v in zip(header, row, strict=True) if k in expected} == expected
        over_sftp.close()
        wire = Recording()
        web = connector(
            sim,
            clock,
            wire,
            token=None,
            username=sim.username,
            password=sim.password,
            upload="web",
            format_id=sim.format_id,
            transport=None,
            escape_formulas=escape,
        )
        web.push([item])
        (post,) = [r for r in wire.requests if r.method == "POST"]
        header, row = cells(post.content)
        assert {k: v for k, v in zip(header, row, strict=True) if k in expected} == expected
        web.close()


# --- names and folders the sftp plugin refuses ---------------------------------------------


BANNER = "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER"


def banner(etc: Path, transport: dict, **settings):
    return write_instance(
        etc,
        "banner",
        transport,
        settings={"preset": "banner", **settings},
        top='direction = "incoming"',
    )


@pytest.mark.parametrize("remote", ["local", "sftp"])
def test_a_path_like_name_is_file_malformed_and_the_others_go_on(
    request, sqlite_engine, tmp_path, remote
):
    if remote == "local":
        root = tmp_path / "drop"
        table = {"kind": "local", "path": str(root), "stable_seconds": 0}
    else:
        root = request.getfixturevalue("sftp_root")
        table = transport_table(request.getfixturevalue("sshd_server"), root)
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    # The reported attack: read as a path, this name was b.csv, whose rows were imported.
    (root / "incoming" / "b.csv").write_bytes(csv_text(BANNER, "B2,Bea,Other,2025550101"))
    (root / "incoming" / "a\\..\\b.csv").write_bytes(csv_text(BANNER, "B1,Ada,Lovelace,2025550101"))
    (root / "incoming" / "c\x1b[2J.csv").write_bytes(csv_text(BANNER, "B3,Cy,Esc,2025550101"))
    instance = banner(tmp_path / "etc", table)
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report
    assert report.counts["created"] == 1  # b.csv, once: the odd names are not it
    refused = sorted(
        (r["code"], r["details"]["file"]) for r in log_rows(sqlite_engine) if r["code"]
    )
    assert refused == [("file-malformed", "a\\..\\b.csv"), ("file-malformed", "c\x1b[2J.csv")]
    left = sorted(p.name for p in (root / "incoming").iterdir() if p.is_file())
    assert left == ["a\\..\\b.csv", "c\x1b[2J.csv"]  # untouched, for the operator to rename


@pytest.mark.parametrize("linked", ["incoming/processed", "outgoing"])
def test_a_folder_linked_out_of_the_base_is_config_invalid(sqlite_engine, tmp_path, linked):
    root, outside = tmp_path / "drop", tmp_path / "outside"
    (root / "incoming").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, root / linked)
    (root / "incoming" / "a.csv").write_bytes(csv_text(BANNER, "B1,Ada,Lovelace,2025550101"))
    table = {"kind": "local", "path": str(root), "stable_seconds": 0}
    kind = "pull" if linked == "incoming/processed" else "push"
    direction = "incoming" if kind == "pull" else "outgoing"
    instance = write_instance(
        tmp_path / "etc",
        "drop",
        table,
        settings={"preset": "banner"},
        top=f"direction = {direction!r}",
    )
    if kind == "push":
        source = tmp_path / "in.csv"
        source.write_text("crm_id,first_name,last_name,phone\nC1,Ada,L,2025550101\n")
        assert import_csv(sqlite_engine, source, load_schema(sqlite_engine)).ok
    report = sync_engine(sqlite_engine, instance).run(instance, kind)
    assert report.outcome != "ok"
    codes = {r["code"] for r in log_rows(sqlite_engine)}
    assert "config-invalid" in codes, log_rows(sqlite_engine)
    assert list(outside.iterdir()) == []  # nothing landed outside the base


# --- line ends and byte-order marks, the same on both read paths -------------------------


def both_paths(tmp_path: Path, data: bytes) -> tuple[list[list[str]], list[list[str]]]:
    """The rows ``import`` reads (whole-file check, then rows) and the rows the SFTP pull
    streams; either raises :class:`FileMalformed`."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    read_header(path)
    from_disk = list(read_rows(path))
    streamed = list(stream_rows(io.BytesIO(data)))
    return from_disk, streamed


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_every_line_end_reads_the_same_on_both_paths(tmp_path, end):
    data = end.join([b"crm_id,first_name", b'S1,"Ada' + end + b'Lovelace"', b"S2,Bob"]) + end
    from_disk, streamed = both_paths(tmp_path, data)
    assert from_disk == streamed
    assert [row[0] for row in streamed] == ["crm_id", "S1", "S2"]
    assert streamed[1][1] == "Ada" + end.decode() + "Lovelace"  # a line end inside quotes


def test_u2028_inside_a_cell_is_not_a_line_end(tmp_path):
    data = "crm_id,note\r\nS1,a\u2028b\x0cc\r\n".encode()
    from_disk, streamed = both_paths(tmp_path, data)
    assert from_disk == streamed == [["crm_id", "note"], ["S1", "a\u2028b\x0cc"]]


def test_a_byte_order_mark_mid_file_is_refused_on_both_paths(tmp_path):
    first = b"\xef\xbb\xbfcrm_id,first_name\r\nS1,Ada\r\n"
    joined = first + first.replace(b"S1", b"S2")  # two exports joined with cat
    path = tmp_path / "joined.csv"
    path.write_bytes(joined)
    with pytest.raises(FileMalformed, match="line 3 holds a byte-order mark"):
        read_header(path)
    with pytest.raises(FileMalformed, match="line 3 holds a byte-order mark"):
        list(stream_rows(io.BytesIO(joined)))
    # One at the very start is the usual Excel BOM: read, and not part of the header.
    assert both_paths(tmp_path, first)[1][0] == ["crm_id", "first_name"]


def test_cr_only_and_a_joined_file_through_import_and_the_sftp_pull(sqlite_engine, tmp_path):
    mac = (
        b"\r".join([BANNER.encode(), b"B1,Ada,Lovelace,2025550101", b"B2,Bob,Mac,2025550102"])
        + b"\r"
    )
    joined = (
        b"\xef\xbb\xbf"
        + csv_text(BANNER, "B3,Cy,One,2025550101")
        + b"\xef\xbb\xbf"
        + csv_text(BANNER, "B4,Di,Two,2025550101")
    )
    root = tmp_path / "drop"
    (root / "incoming").mkdir(parents=True)
    (root / "incoming" / "mac.csv").write_bytes(mac)
    (root / "incoming" / "joined.csv").write_bytes(joined)
    instance = banner(tmp_path / "etc", {"kind": "local", "path": str(root), "stable_seconds": 0})
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report
    assert report.counts["created"] == 2  # B1 and B2; nothing of the joined file
    rows = log_rows(sqlite_engine)
    assert [(r["code"], r["details"]["file"]) for r in rows] == [("file-malformed", "joined.csv")]
    assert "byte-order mark" in rows[0]["message"]
    assert (root / "incoming/error/joined.csv").exists()
    # import reads the same files the same way.
    schema = load_schema(sqlite_engine)
    header = "crm_id,first_name,last_name,phone"
    (tmp_path / "mac.csv").write_bytes(mac.replace(BANNER.encode(), header.encode()))
    (tmp_path / "joined.csv").write_bytes(joined.replace(BANNER.encode(), header.encode()))
    assert import_csv(sqlite_engine, tmp_path / "mac.csv", schema).ok
    assert not import_csv(sqlite_engine, tmp_path / "joined.csv", schema).ok


def test_a_server_listing_names_with_separators_gets_file_malformed(
    sqlite_engine, sshd_server, sftp_root, tmp_path, monkeypatch
):
    """OpenSSH never lists a name holding ``/``; a hostile or broken server may. Such a name
    is refused by name, before any path is made of it, and the real files go on."""
    import stat

    import paramiko

    real_listdir = paramiko.SFTPClient.listdir_attr

    def hostile(self, path="."):
        entries = real_listdir(self, path)
        for name in ("x/../../etc/passwd.csv", "sub/../b.csv", "..", "../up.csv"):
            fake = paramiko.SFTPAttributes()
            fake.filename, fake.st_mode, fake.st_size, fake.st_mtime = (
                name,
                stat.S_IFREG | 0o644,
                10,
                0,
            )
            entries.append(fake)
        return entries

    monkeypatch.setattr(paramiko.SFTPClient, "listdir_attr", hostile)
    (sftp_root / "incoming").mkdir(parents=True)
    (sftp_root / "incoming" / "b.csv").write_bytes(csv_text(BANNER, "B2,Bea,Other,2025550101"))
    instance = banner(tmp_path / "etc", transport_table(sshd_server, sftp_root, stable_seconds=0))
    report = sync_engine(sqlite_engine, instance).run(instance, "pull")
    assert report.outcome == "ok", report
    assert report.counts["created"] == 1
    refused = sorted((r["code"], r["details"]["file"]) for r in log_rows(sqlite_engine))
    # ".." and "../up.csv" are hidden names (a leading dot): never listed at all.
    assert refused == [
        ("file-malformed", "sub/../b.csv"),
        ("file-malformed", "x/../../etc/passwd.csv"),
    ]
