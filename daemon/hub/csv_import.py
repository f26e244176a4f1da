"""CSV import: ``contactsync import FILE.csv``, and the file path SFTP sync reuses.

A file is checked whole before anything is written (encoding, CSV structure, header), so a bad
file is refused with ``file-malformed`` and never half-imported. Then it is streamed through
the incoming rules in committed batches; memory holds one batch, whatever the file's size.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first record row 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from daemon.foundation.csv_read import FileMalformed, header_key, read_header, read_rows
from daemon.foundation.dictionary import Code
from daemon.hub.fields import CUSTOM_PREFIX, HUB_ID, Schema
from daemon.hub.incoming import IncomingRecord, RecordPlan
from daemon.hub.ingest import MAX_REPORTED, Ingestor, IngestReport, ProblemReport
from daemon.hub.synclog import SyncContext, new_run_id, record

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


@dataclass(slots=True)
class Columns:
    """How a file's columns map onto hub fields."""

    fields: list[str | None]  # per column: the hub field, or None when ignored
    unknown_custom: list[str] = field(default_factory=list)


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


def iter_records(
    path: Path,
    columns: Columns,
    delimiter: str = ",",
    on_bad_row: Callable[[int, str], None] | None = None,
) -> Iterator[IncomingRecord]:
    """Stream the file's rows as incoming records; ragged rows go to ``on_bad_row``."""
    width = len(columns.fields)
    name = path.name
    rows = read_rows(path, delimiter)
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
