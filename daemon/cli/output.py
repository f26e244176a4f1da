"""Printing for the CLI: rich tables for people, ``--json`` for scripts.

Results go to stdout and nothing else does: logs go to stderr, so ``--json`` output can be piped
straight into ``jq``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from daemon.foundation.log import redact

# Off a terminal rich would wrap at 80 columns; a pipe or a log file reads better wide.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
# Errors are never wrapped: a path or code split across lines defeats grep and the journal.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)


def print_json(data: Any) -> None:
    """One JSON document on stdout, secrets redacted."""
    sys.stdout.write(json.dumps(redact(data), default=_default, indent=2) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    """A value as a table cell."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    """A rich table on stdout."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a value such as "[b]" is data, not rich markup (nor a markup error).
        table.add_row(*(Text(cell(v)) for v in row))
    console.print(table)


def fail(message: str, code: str | None = None, exit_code: int = 1) -> NoReturn:
    """Print an error on stderr and exit."""
    prefix = f"contactsync: {code}: " if code else "contactsync: "
    err_console.print(prefix + redact(message), markup=False)
    raise SystemExit(exit_code)
