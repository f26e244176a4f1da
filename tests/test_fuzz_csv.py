"""Fuzzing CSV files (issue 16) through both ways a file enters the hub: ``contactsync
import``'s in-process path (:func:`import_csv`) and the sftp connector's pull from a local
folder transport, run by the engine.

Files are built from known-good rows mixed with rows carrying one hostile cell each (NUL,
BOM, CR and CR-only line ends, quotes, formulas, huge fields, bad UTF-8, ESC sequences,
ragged rows, an unbalanced quote). The outcome is predicted per row, and the invariants are:

- nothing raises out of the import or the cycle;
- a file-level fault (one that makes the file unreadable as CSV text) refuses the whole file
  with one ``file-malformed`` row whose message names the line, nothing of it is applied,
  and the sftp file moves to ``error/``;
- otherwise every good row is in the hub with its values, and every other row is either in
  the hub with its cell intact (a formula or a quote is data) or has a coded sync-log row
  carrying its row number.

Arbitrary bytes get the weaker check: no exception, and a refusal is coded.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import FUZZ, fuzz_settings
from hubkit import log_rows, truncate
from hypothesis import given
from hypothesis import strategies as st
from sftpkit import write_instance
from sqlalchemy import Engine, select

from daemon.engine.cycle import SyncEngine
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.hub.contacts import load_schema
from daemon.hub.csv_import import import_csv
from daemon.hub.database import make_engine
from daemon.hub.mirror import mirror_instances
from daemon.hub.store import Contact

HEADER = ["crm_id", "first_name", "last_name", "phone", "email"]
_files = itertools.count()
# Built once: reading the plugins' entry points costs more than a whole pull of a file.
TRANSFORMS = Registry.from_plugin_manager(get_plugin_manager()).transforms


@dataclass(frozen=True)
class Hostile:
    """One hostile cell: what it holds, and whether it refuses the whole file."""

    cell: str
    file_level: bool = False
    raw: bytes | None = None  # written as these bytes, bypassing the CSV writer
    ragged: bool = False  # the row gets an extra cell


HOSTILE = {
    "nul": Hostile("Ad\x00a", file_level=True),
    "bom": Hostile("\ufeffAda", file_level=True),
    "cr-in-cell": Hostile("Ada\rLovelace"),
    "lf-in-cell": Hostile("Ada\nLovelace"),
    "quotes": Hostile('Ada "the" Countess'),
    "formula": Hostile('=HYPERLINK("http://x","y")'),
    "formula-at": Hostile("@SUM(1+1)*cmd|' /C calc'!A0"),
    "esc": Hostile("\x1b[31mAda\x1b[0m"),
    "rtl": Hostile("Ada\u202egnp.exe"),
    "long": Hostile("A" * 300),  # value-too-long, a field-level refusal
    "huge": Hostile("H" * 200_000, file_level=True),  # past the csv module's field limit
    "bad-utf8": Hostile("", file_level=True, raw=b"\xff\xfeAda"),
    "open-quote": Hostile("", file_level=True, raw=b'"Ada'),
    "ragged": Hostile("Ada", ragged=True),
    "blank": Hostile(""),
}


@dataclass
class Built:
    data: bytes
    good: dict[str, dict[str, str]]  # crm_id -> the row's values
    hostile: dict[str, tuple[int, str, str, Hostile]]  # crm_id -> (row, kind, column, cell)
    file_level: bool


@st.composite
def mixed_files(draw: st.DrawFn) -> Built:
    """A CSV file of good rows with hostile rows among them, and what must become of each."""
    kinds = draw(st.lists(st.sampled_from(sorted(HOSTILE)), max_size=4))
    good_count = draw(st.integers(1, 6))
    order = draw(st.permutations(["g"] * good_count + kinds))
    ending = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    bom = draw(st.booleans())
    out = io.BytesIO()
    out.write(b"\xef\xbb\xbf" if bom else b"")
    out.write((",".join(HEADER) + ending).encode())
    good: dict[str, dict[str, str]] = {}
    hostile: dict[str, tuple[int, str, str, Hostile]] = {}
    for row_number, kind in enumerate(order, start=2):
        crm_id = f"R{row_number}"
        row = {
            "crm_id": crm_id,
            "first_name": f"First{row_number}",
            "last_name": f"Last{row_number}",
            "phone": f"+1202555{row_number:04d}",
            "email": f"r{row_number}@example.edu",
        }
        if kind == "g":
            good[crm_id] = row
            out.write(_line(list(row.values()), ending))
            continue
        spec = HOSTILE[kind]
        column = draw(st.sampled_from(["first_name", "last_name", "email"]))
        cells = [spec.cell if name == column else value for name, value in row.items()]
        hostile[crm_id] = (row_number, kind, column, spec)
        if spec.raw is not None:
            # The raw bytes replace the column's cell, unquoted, as a broken export writes.
            before = cells[: HEADER.index(column)]
            after = cells[HEADER.index(column) + 1 :]
            out.write(
                _line(before, "").rstrip(b"\r\n")
                + (b"," if before else b"")
                + spec.raw
                + (b"," if after else b"")
                + _line(after, ending)
            )
            continue
        if spec.ragged:
            cells.append("extra")
        out.write(_line(cells, ending))
    return Built(out.getvalue(), good, hostile, any(h[3].file_level for h in hostile.values()))


def _line(cells: list[str], ending: str) -> bytes:
    # Written with CRLF and then given the file's own ending: the writer quotes a cell holding
    # any character of its terminator, so with "\r" alone a bare LF would go out unquoted and
    # split the row, as it would in a spreadsheet too (found by the fuzz profile).
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    text = buffer.getvalue().removesuffix("\r\n") + ending
    return text.encode() if cells else ending.encode()


# --- checking an outcome ----------------------------------------------------------------------


def hub_contacts(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Contact.__table__)).mappings().all()
    return {r["crm_id"]: dict(r) for r in rows if r["crm_id"]}


def check_outcome(engine: Engine, built: Built, file_name: str) -> None:
    """The invariants of the module docstring, for one imported or pulled file."""
    found = hub_contacts(engine)
    rows = log_rows(engine)
    assert all(r["code"] for r in rows), "every sync-log row carries a code"
    refusals = [r for r in rows if r["code"] == "file-malformed" and "row" not in r["details"]]
    if built.file_level:
        assert found == {}, "nothing of a refused file is applied"
        assert len(refusals) == 1 and refusals[0]["details"].get("file") == file_name, rows
        assert "line " in refusals[0]["message"], refusals[0]["message"]
        return
    assert refusals == [], [r["message"] for r in refusals]
    for crm_id, row in built.good.items():
        assert crm_id in found, f"good row {crm_id} lost; log: {[r['message'] for r in rows]}"
        contact = found[crm_id]
        for name in ("first_name", "last_name", "phone", "email"):
            assert contact[name] == row[name], (crm_id, name)
    logged_rows = {r["details"].get("row") for r in rows}
    for crm_id, (row_number, kind, column, spec) in built.hostile.items():
        if crm_id in found and not spec.ragged:
            value = found[crm_id][column]
            if row_number not in logged_rows:  # accepted whole: the cell arrived intact
                assert value == spec.cell or (not spec.cell.strip() and value is None), (
                    kind,
                    value,
                )
        else:
            assert row_number in logged_rows, f"{kind} row {row_number} vanished without a code"


# --- import -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('hub') / 'hub.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@FUZZ
@given(built=mixed_files())
def test_import_applies_every_good_row_and_codes_every_bad_one(
    hub: Engine, folder: Path, built: Built
) -> None:
    truncate(hub)
    path = folder / f"import{next(_files)}.csv"
    path.write_bytes(built.data)
    result = import_csv(hub, path, load_schema(hub))
    assert result.ok is not built.file_level, result.file_error
    check_outcome(hub, built, path.name)


@FUZZ
@given(data=st.binary(max_size=300) | mixed_files().map(lambda b: b.data[: len(b.data) // 2]))
def test_import_of_arbitrary_bytes_never_raises_and_codes_a_refusal(
    hub: Engine, folder: Path, data: bytes
) -> None:
    truncate(hub)
    path = folder / f"bytes{next(_files)}.csv"
    path.write_bytes(b"crm_id,first_name,last_name,phone\r\n" + data)
    result = import_csv(hub, path, load_schema(hub))
    codes = [r["code"] for r in log_rows(hub)]
    if not result.ok:
        assert codes.count("file-malformed") == 1, codes


# --- the sftp pull from a local folder --------------------------------------------------------


@fuzz_settings(25)
@given(built=mixed_files())
def test_the_sftp_pull_applies_every_good_row_and_codes_every_bad_one(
    hub: Engine, tmp_path_factory: pytest.TempPathFactory, built: Built
) -> None:
    truncate(hub)
    root = tmp_path_factory.mktemp("drop")
    instance = write_instance(
        root / "etc",
        "drop",
        {"kind": "local", "path": str(root / "base"), "stable_seconds": 0},
        top='direction = "incoming"',
    )
    (root / "base" / "incoming").mkdir(parents=True)
    (root / "base" / "incoming" / "contacts.csv").write_bytes(built.data)
    mirror_instances(hub, {instance.name: instance})
    engine = SyncEngine(hub, TRANSFORMS)
    report = engine.run(instance, "pull")
    assert report.outcome == "ok", report
    check_outcome(hub, built, "contacts.csv")
    moved_to = "error" if built.file_level else "processed"
    assert (root / "base" / "incoming" / moved_to / "contacts.csv").exists()
    # The cursor moved past the file: a second cycle applies and reports nothing new.
    before = len(log_rows(hub))
    assert engine.run(instance, "pull").outcome == "ok"
    assert len(log_rows(hub)) == before


def test_a_quote_never_closed_is_refused_naming_the_line_it_opened_on(tmp_path: Path) -> None:
    """Found by this suite: the csv module's "unexpected end of data" named no line."""
    from daemon.foundation.csv_read import FileMalformed, read_header, stream_rows

    rows = [",".join(HEADER)] + [f"R{n},F,L,+1202555{n:04d},r{n}@example.edu" for n in range(2, 9)]
    rows[3] = 'R4,"Ada,L,+12025550004,r4@example.edu'
    data = ("\r\n".join(rows) + "\r\n").encode()
    path = tmp_path / "open.csv"
    path.write_bytes(data)
    with pytest.raises(FileMalformed, match="row starting on line 4"):
        read_header(path)
    with pytest.raises(FileMalformed, match="row starting on line 4"):
        list(stream_rows(io.BytesIO(data)))
