"""CSV import: ``contactsync import FILE.csv``, and the file path SFTP sync reuses.

A file is checked whole before anything is written (encoding, CSV structure, header), so a bad
file is refused with ``file-malformed`` and never half-imported. Then it is streamed through
the incoming rules in committed batches; memory holds one batch, whatever the file's size.

A column whose header names no hub field is reported once (``unknown-column``, with the names
that are accepted) and ignored, as the SFTP path ignores unmapped columns; ``strict`` refuses
the file instead. A header that names no field at all, or that looks separated by another
delimiter, is refused either way: importing it would turn every row into an empty record.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first record row 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from daemon.foundation.csv_read import (
    FileMalformed,
    delimiter_hint,
    header_key,
    read_header,
    read_rows,
)
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


# The order of ``contactsync import --template``: Mainstay's "Download CSV Template" starts with
# first_name, last_name, phone, email; the other default fields follow, then the custom fields.
TEMPLATE_FIELDS = (
    "first_name",
    "last_name",
    "phone",
    "email",
    "preferred_name",
    "crm_id",
    "enrollment_id",
    "active",
)
_LISTED_CUSTOM = 20  # custom fields named in an error before "… and N more"


@dataclass(slots=True)
class Columns:
    """How a file's columns map onto hub fields."""

    fields: list[str | None]  # per column: the hub field, or None when ignored
    unknown_custom: list[str] = field(default_factory=list)
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (position, header), ignored
    unused_overrides: list[str] = field(default_factory=list)  # overrides naming no column


class MapError(ValueError):
    """A ``--map`` that cannot be applied; the message lists the valid targets."""


def map_targets(schema: Schema) -> list[str]:
    """The hub fields a column can be mapped to: the default ones, then ``custom:<name>``."""
    return [*HEADER_ALIASES, *(CUSTOM_PREFIX + name for name in schema.custom)]


def resolve_target(target: str, schema: Schema) -> str:
    """The hub field ``target`` names (``""``: the column is ignored), or :class:`MapError`.

    A default field is named as the hub names it (``crm_id``, ``First Name`` too); a custom
    field as ``custom:<name>`` (the mapping format's spelling) or ``CUSTOM_<name>`` (the file's).
    """
    text = target.strip()
    if not text:
        return ""
    key = header_key(text)
    if key in HEADER_ALIASES:
        return key
    custom_name: str | None = None
    if text.casefold().startswith(CUSTOM_PREFIX):
        custom_name = text[len(CUSTOM_PREFIX) :].strip()
    elif key.startswith(CUSTOM_COLUMN_PREFIX):
        custom_name = text[len(CUSTOM_COLUMN_PREFIX) :].strip()
    definition = schema.custom_field(custom_name) if custom_name else None
    if definition is not None:
        return CUSTOM_PREFIX + definition.name
    valid = ", ".join(map_targets(schema))
    raise MapError(
        f"{target!r} is no hub field{did_you_mean(text, schema)}; map a column to one of: {valid}"
    )


def parse_maps(items: Iterable[str], schema: Schema) -> dict[str, str]:
    """``COLUMN=FIELD`` items (``--map``) as header → hub field; ``COLUMN=`` ignores a column."""
    maps: dict[str, str] = {}
    keys: set[str] = set()
    for item in items:
        column, sep, target = item.rpartition("=")  # a field name never holds "=", a header may
        if not sep or not column.strip():
            raise MapError(f"--map takes COLUMN=FIELD, not {item!r}")
        if header_key(column) in keys:
            raise MapError(f"--map names the column {column.strip()!r} twice")
        keys.add(header_key(column))
        maps[column.strip()] = resolve_target(target, schema)
    return maps


def template_header(schema: Schema) -> list[str]:
    """The header of an import template: every default field, then every custom field."""
    return [*TEMPLATE_FIELDS, *(CUSTOM_COLUMN_PREFIX.upper() + name for name in schema.custom)]


def accepted_names(schema: Schema) -> str:
    """The header names an import accepts, for an error message."""
    defaults = [
        name if aliases == (name,) else f"{name} ({', '.join(a for a in aliases if a != name)})"
        for name, aliases in HEADER_ALIASES.items()
    ]
    custom = [CUSTOM_COLUMN_PREFIX.upper() + name for name in schema.custom]
    if not custom:
        defaults.append("CUSTOM_<name> of a defined custom field (none is defined)")
    elif len(custom) > _LISTED_CUSTOM:
        more = len(custom) - _LISTED_CUSTOM
        custom = [*custom[:_LISTED_CUSTOM], f"… and {more} more (contactsync fields list)"]
    return ", ".join([*defaults, *custom])


def did_you_mean(name: str, schema: Schema) -> str:
    """`` (did you mean 'email'?)`` when ``name`` is close to an accepted name, else ``""``."""
    candidates = {alias: field for field, aliases in HEADER_ALIASES.items() for alias in aliases}
    for custom in schema.custom:
        candidates[header_key(CUSTOM_COLUMN_PREFIX + custom)] = CUSTOM_PREFIX + custom
    close = difflib.get_close_matches(header_key(name), candidates, n=1, cutoff=0.75)
    return f" (did you mean {candidates[close[0]]!r}?)" if close else ""


def _delimiter_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def map_header(
    header: list[str],
    schema: Schema,
    overrides: Mapping[str, str] | None = None,
    *,
    strict: bool = False,
    delimiter: str = ",",
) -> Columns:
    """Map each header cell to a hub field, or raise :class:`FileMalformed`.

    ``overrides`` (header → hub field, ``""`` to ignore the column) take precedence over the
    aliases; ``--map`` uses them. A column that names nothing is listed in ``unknown`` and
    ignored, or refused when ``strict``.
    """
    given = {header_key(k): k for k in overrides or {}}
    overrides = {header_key(k): v for k, v in (overrides or {}).items()}
    columns = Columns([])
    seen: dict[str, int] = {}
    used: set[str] = set()
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        if not name:
            raise FileMalformed(f"column {position} of the header has no name")
        key = header_key(name)
        if key in overrides:
            used.add(key)
            target: str | None = overrides[key] or None
            if target is None:
                columns.fields.append(None)  # ignored by hand: nothing to report
                continue
        else:
            target = _ALIAS_TO_FIELD.get(key)
        if target is None and key.startswith(CUSTOM_COLUMN_PREFIX):
            custom_name = name[len(CUSTOM_COLUMN_PREFIX) :].strip()
            definition = schema.custom_field(custom_name)
            if definition is None:
                columns.unknown_custom.append(name)
                columns.fields.append(None)
                continue
            target = CUSTOM_PREFIX + definition.name
        if target is None:
            columns.unknown.append((position, name))
            columns.fields.append(None)
            continue
        if target in seen:
            raise FileMalformed(f"columns {seen[target]} and {position} both map to {target!r}")
        seen[target] = position
        columns.fields.append(target)
    columns.unused_overrides = [given[k] for k in overrides if k not in used]
    if columns.unknown:
        _refuse_other_delimiter(columns, delimiter, overrides)
    if not any(columns.fields):
        # The cells are not echoed: a file without its header row has data in their place.
        raise FileMalformed(
            "no column of the header names a hub field (is the header row missing?); "
            f"accepted: {accepted_names(schema)}"
        )
    if strict and columns.unknown:
        names = ", ".join(f"{name!r} (column {position})" for position, name in columns.unknown)
        raise FileMalformed(f"unknown column {names}; accepted: {accepted_names(schema)}")
    return columns


def _refuse_other_delimiter(columns: Columns, delimiter: str, overrides: Mapping[str, str]) -> None:
    """Raise :class:`FileMalformed` with the right ``--delimiter`` when the unknown columns
    look like the header of a file separated by another delimiter."""

    def known(cell: str) -> bool:
        key = header_key(cell)
        return key in _ALIAS_TO_FIELD or key in overrides or key.startswith(CUSTOM_COLUMN_PREFIX)

    hint = delimiter_hint([name for _, name in columns.unknown], delimiter, known)
    if hint is not None:
        flag = "tab" if hint == "\t" else f"'{hint}'"
        raise FileMalformed(
            f"the header looks separated by {_delimiter_name(hint)}, not by "
            f"{_delimiter_name(delimiter)}: import it with --delimiter {flag}"
        )


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
    unused_overrides: list[str] = field(default_factory=list)  # mapped columns not in the file

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
    strict: bool = False,
    on_plan: Callable[[RecordPlan], None] | None = None,
) -> ImportResult:
    """Import one CSV file through the incoming rules.

    ``column_overrides`` maps headers to hub fields by hand (see :func:`parse_maps`);
    ``strict`` refuses a file with an unknown column instead of ignoring the column.
    """
    context = SyncContext(integration, "incoming", new_run_id(), instance)
    report = IngestReport(context.run_id, dry_run)

    def problem(code: Code, message: str, **source: Any) -> None:
        report.problem_count += 1
        if len(report.problems) < MAX_REPORTED:
            report.problems.append(ProblemReport(str(code), message, None, None, source))
        if not dry_run:
            record(engine, context, code, message, **source)

    try:
        header = read_header(path, delimiter)
        columns = map_header(header, schema, column_overrides, strict=strict, delimiter=delimiter)
    except FileMalformed as exc:
        problem(Code.FILE_MALFORMED, f"file not imported: {exc}", file=path.name)
        return ImportResult(path, report, str(exc))
    except OSError as exc:
        problem(Code.FILE_MALFORMED, f"file cannot be read: {exc.strerror}", file=path.name)
        return ImportResult(path, report, exc.strerror)
    accepted = accepted_names(schema)
    for position, name in columns.unknown:
        problem(
            Code.UNKNOWN_COLUMN,
            f"column {name!r} (column {position}) of {path.name!r} names no hub field"
            f"{did_you_mean(name, schema)}; column ignored. Accepted: {accepted}; or map it "
            "with --map",
            file=path.name,
            column=name,
            position=position,
        )
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
    return ImportResult(path, report, unused_overrides=columns.unused_overrides)
