"""Printing for the CLI: rich tables for people, ``--json`` for scripts.

Results go to stdout and nothing else does: logs go to stderr, so ``--json`` output can be piped
straight into ``jq``.

Everything printed for people passes :func:`safe_text` (tables, lines, errors): contact data
and a platform's words are other people's text, and a raw ESC sequence in a name would drive
the operator's terminal (retitle it, hide a line, fake a prompt), a bidi override would show a
value reversed. Such characters are shown as ``\u001b``-style escapes instead, and secrets and
URL user-info are redacted. ``--json`` output is exact JSON: ``json.dumps`` escapes every
control and non-ASCII character, so the data reaches a script unchanged and a terminal harmless.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from daemon.foundation.log import redact, redact_text

# Off a terminal rich would wrap at 80 columns; a pipe or a log file reads better wide.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
# Errors are never wrapped: a path or code split across lines defeats grep and the journal.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# C0 controls (a CR returns to the line's start and overwrites it), DEL, the C1 controls
# (U+009B is a one-byte CSI on some terminals), and the invisible bidi controls (LRM/RLM, ALM,
# the embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same less the line feed: inside a table's cell it only makes the cell taller, between
# borders, so it cannot fake a row; a multi-line cell (a link's values) keeps its lines.
_UNSAFE_IN_CELL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def visible_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control and bidi character shown as a ``\\uXXXX`` escape
    (line feeds kept with ``keep_newlines``)."""
    pattern = _UNSAFE_IN_CELL if keep_newlines else _UNSAFE
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def safe_text(value: Any, *, keep_newlines: bool = False) -> str:
    """``value`` as text fit for the operator's terminal: secrets and URL user-info redacted,
    control and bidi characters made visible. Every human-readable line goes through it."""
    text = redact_text(value if isinstance(value, str) else str(value))
    return visible_controls(text, keep_newlines=keep_newlines)


def say(text: str) -> None:
    """One line for people on stdout, made safe (:func:`safe_text`), never read as markup,
    never wrapped by us (a path or URL split in two is not found by grep)."""
    console.print(safe_text(text), markup=False, soft_wrap=True)


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
        table.add_row(*(Text(safe_text(cell(v), keep_newlines=True)) for v in row))
    console.print(table)


def fail(message: str, code: str | None = None, exit_code: int = 1) -> NoReturn:
    """Print an error on stderr and exit."""
    prefix = f"contactsync: {code}: " if code else "contactsync: "
    err_console.print(safe_text(prefix + message, keep_newlines=True), markup=False)
    raise SystemExit(exit_code)
