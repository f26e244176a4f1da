"""CSV import: ``contactsync import FILE.csv``, and the file path SFTP sync reuses.

A file is checked whole before anything is written (encoding, CSV structure, header), so a bad
file is refused with ``file-malformed`` and never half-imported. Then it is streamed through
the incoming rules in committed batches; memory holds one batch, whatever the file's size.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first record row 2.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from daemon.dictionary import Code
from daemon.fields import CUSTOM_PREFIX, HUB_ID, Schema
from daemon.incoming import IncomingRecord, RecordPlan
from daemon.ingest import MAX_REPORTED, Ingestor, IngestReport, ProblemReport
from daemon.synclog import SyncContext, new_run_id, record

ENCODING = "utf-8-sig"  # a BOM, as Excel writes it, is not part of the first header
CUSTOM_COLUMN_PREFIX = "custom_"

# The fixed, documented header aliases (compared lower-cased, spaces and dashes as "_").
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    HUB_ID: ("id", "mainstay_id", "admithub_id"),
    "crm_id": ("crm_id", "crmid"),
    "enrollment_id": ("enrollment_id", "enrollmentid"),
    "first_name": ("first_name", "firstname"),
    "last_name": ("last_name", "lastname"),
    "preferred_name": ("preferred_name", "preferredname"),
    "phone": ("phone", "phone_number", "mobile_phone"),
    "email": ("email", "email_address"),
    "active": ("active",),
}
_ALIAS_TO_FIELD = {alias: name for name, aliases in HEADER_ALIASES.items() for alias in aliases}
_SEPARATORS = re.compile(r"[\s\-]+")


class FileMalformed(Exception):
    """The file cannot be imported at all; the message says why and where."""


@dataclass(slots=True)
class Columns:
    """How a file's columns map onto hub fields."""

    fields: list[str | None]  # per column: the hub field, or None when ignored
    unknown_custom: list[str] = field(default_factory=list)


def header_key(header: str) -> str:
    """The form a header is compared in."""
    return _SEPARATORS.sub("_", header.strip().lower())


def map_header(
    header: list[str], schema: Schema, overrides: Mapping[str, str] | None = None
) -> Columns:
    """Map each header cell to a hub field, or raise :class:`FileMalformed`.

    ``overrides`` (header → hub field) take precedence over the aliases; SFTP presets use it.
    """
    overrides = {header_key(k): v for k, v in (overrides or {}).items()}
    columns = Columns([])
    seen: dict[str, int] = {}
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        if not name:
            raise FileMalformed(f"column {position} of the header has no name")
        key = header_key(name)
        target = overrides.get(key) or _ALIAS_TO_FIELD.get(key)
        if target is None and key.startswith(CUSTOM_COLUMN_PREFIX):
            custom_name = name[len(CUSTOM_COLUMN_PREFIX) :].strip()
            definition = schema.custom_field(custom_name)
            if definition is None:
                columns.unknown_custom.append(name)
                columns.fields.append(None)
                continue
            target = CUSTOM_PREFIX + definition.name
        if target is None:
            raise FileMalformed(f"unknown column {name!r} (column {position})")
        if target in seen:
            raise FileMalformed(f"columns {seen[target]} and {position} both map to {target!r}")
        seen[target] = position
        columns.fields.append(target)
    return columns


def _reader(path: Path, delimiter: str) -> Iterator[list[str]]:
    with path.open("r", encoding=ENCODING, newline="") as fh:
        yield from csv.reader(fh, delimiter=delimiter, strict=True)


def read_header(path: Path, delimiter: str = ",") -> list[str]:
    """The header row, after checking the whole file decodes and parses.

    Checking first costs one extra streaming pass, and buys the promise that a file with a bad
    byte or a broken quote near its end is refused before any row of it is applied.
    """
    rows = _reader(path, delimiter)
    try:
        header = check_header(next(rows, None))
        for _ in rows:
            pass
    except UnicodeDecodeError:
        # The error's own offset is within the chunk being decoded, not the file: find the line.
        line = _first_undecodable_line(path)
        raise FileMalformed(f"the file is not UTF-8 (line {line} cannot be decoded)") from None
    except csv.Error as exc:
        raise FileMalformed(f"the file is not valid CSV: {exc}") from None
    finally:
        rows.close()
    return header


def stream_rows(
    lines: Iterable[bytes],
    delimiter: str = ",",
    *,
    on_bytes: Callable[[bytes], None] | None = None,
) -> Iterator[list[str]]:
    """The CSV rows of a binary stream (a file object iterates its lines), for files read
    over a transport: decoded line by line, so a bad byte names its line exactly and nothing
    needs a second look at the file. ``on_bytes`` sees every raw line (a hash, a byte count).

    Raises :class:`FileMalformed` as :func:`read_header` would, when the bad spot is reached.
    """

    def decoded() -> Iterator[str]:
        for number, raw in enumerate(lines, start=1):
            if on_bytes is not None:
                on_bytes(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FileMalformed(
                    f"the file is not UTF-8 (line {number} cannot be decoded)"
                ) from None
            yield text.removeprefix("\ufeff") if number == 1 else text

    try:
        yield from csv.reader(decoded(), delimiter=delimiter, strict=True)
    except csv.Error as exc:
        raise FileMalformed(f"the file is not valid CSV: {exc}") from None


def check_header(header: list[str] | None) -> list[str]:
    """``header`` if it is a header row at all; :class:`FileMalformed` otherwise."""
    if header is None or not any(cell.strip() for cell in header):
        raise FileMalformed("the file has no header row")
    return header


def _first_undecodable_line(path: Path) -> int | None:
    """The number of the first line that is not UTF-8. Splitting at b"\\n" is safe: no
    multi-byte UTF-8 sequence contains that byte."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def iter_records(
    path: Path,
    columns: Columns,
    delimiter: str = ",",
    on_bad_row: Callable[[int, str], None] | None = None,
) -> Iterator[IncomingRecord]:
    """Stream the file's rows as incoming records; ragged rows go to ``on_bad_row``."""
    width = len(columns.fields)
    name = path.name
    rows = _reader(path, delimiter)
    next(rows)  # the header, already mapped
    for row_number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line, or a row of empty cells as spreadsheets export, is no record
        if len(row) != width:
            if on_bad_row is not None:
                on_bad_row(row_number, f"row has {len(row)} cells; the header has {width}")
            continue
        yield IncomingRecord(
            {target: value for target, value in zip(columns.fields, row, strict=True) if target},
            source={"file": name, "row": row_number},
        )


@dataclass(slots=True)
class ImportResult:
    """The outcome of importing one file."""

    path: Path
    report: IngestReport
    file_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.file_error is None


def import_csv(
    engine: Engine,
    path: Path,
    schema: Schema,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    delimiter: str = ",",
    integration: str = "csv",
    instance: str | None = None,
    column_overrides: Mapping[str, str] | None = None,
    on_plan: Callable[[RecordPlan], None] | None = None,
) -> ImportResult:
    """Import one CSV file through the incoming rules."""
    context = SyncContext(integration, "incoming", new_run_id(), instance)
    report = IngestReport(context.run_id, dry_run)

    def problem(code: Code, message: str, **source: Any) -> None:
        report.problem_count += 1
        if len(report.problems) < MAX_REPORTED:
            report.problems.append(ProblemReport(str(code), message, None, None, source))
        if not dry_run:
            record(engine, context, code, message, **source)

    try:
        columns = map_header(read_header(path, delimiter), schema, column_overrides)
    except FileMalformed as exc:
        problem(Code.FILE_MALFORMED, f"file not imported: {exc}", file=path.name)
        return ImportResult(path, report, str(exc))
    except OSError as exc:
        problem(Code.FILE_MALFORMED, f"file cannot be read: {exc.strerror}", file=path.name)
        return ImportResult(path, report, exc.strerror)
    for name in columns.unknown_custom:
        problem(
            Code.UNKNOWN_CUSTOM_FIELD,
            f"column {name!r} names no custom field; column ignored",
            file=path.name,
            column=name,
        )

    bad_rows = 0

    def bad_row(row_number: int, message: str) -> None:
        nonlocal bad_rows
        bad_rows += 1
        problem(Code.FILE_MALFORMED, message + "; row skipped", file=path.name, row=row_number)

    ingestor = Ingestor(
        engine,
        schema,
        context,
        batch_size=batch_size,
        dry_run=dry_run,
        on_plan=on_plan,
        report=report,
    )
    ingestor.run(iter_records(path, columns, delimiter, bad_row))
    report.counts["skipped"] += bad_rows
    return ImportResult(path, report)
