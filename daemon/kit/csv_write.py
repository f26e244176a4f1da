"""Writing CSV files for platforms that import files (Slate's upload dataset, SFTP drops, the
conversations export).

One writer, so every file contactsync produces has the same dialect: UTF-8, a header row,
``,`` separated, ``"`` quoted where needed, CRLF line ends (RFC 4180, and what Slate's
``<layout b="," h="1" t="&quot;" />`` source formats read). Rows are encoded a few hundred at
a time, so a large file streams to a transport's ``write_atomic`` in bounded memory.

Formula injection. A spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return as a formula (``=HYPERLINK(...)``, ``+cmd|' /C calc'!A0``), so a
learner's name can run code on the machine of the staff member who opens an export. With
``escape_formulas`` (the default) such a cell is written the OWASP way: a single quote
``'`` in front, which makes a spreadsheet show the text as text, and the cell quoted. A cell
that is only a signed number (``+12025550143``, an E.164 phone; ``-3``, ``+1.5``) is left as
it is: a spreadsheet reads it as a number, never as a formula, and a phone keeps its ``+``.
Files that only a machine reads (Banner, Recruit, Slate imports) may turn escaping off, where
the quote would become part of the data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

ROWS_PER_CHUNK = 500
# OWASP's list (CSV Injection): what a spreadsheet takes as the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?\Z")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
LINE_END = "\r\n"


def csv_cell(value: Any) -> str:
    """One value as CSV text: ``None`` is empty, booleans are ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_formula(text: str) -> bool:
    """Whether a spreadsheet would run ``text`` as a formula (a plain signed number is not
    one: ``+12025550143`` is read as a number, not evaluated)."""
    return text.startswith(FORMULA_STARTS) and not _SIGNED_NUMBER.match(text)


def encode_cell(text: str, *, escape_formulas: bool = True) -> str:
    """``text`` as one CSV field: quoted when it holds ``,``, ``"`` or a line end (as
    :class:`csv.writer` quotes, byte for byte), and escaped and quoted when it is a formula."""
    if escape_formulas and is_formula(text):
        text = "'" + text
        return '"' + text.replace('"', '""') + '"'
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def encode_row(cells: Sequence[str], *, escape_formulas: bool = True) -> str:
    """One CSV record with its CRLF. A row of one empty cell is written ``""``, as
    :class:`csv.writer` does, so it does not read back as a blank line."""
    if len(cells) == 1 and cells[0] == "":
        return '""' + LINE_END
    return ",".join(encode_cell(c, escape_formulas=escape_formulas) for c in cells) + LINE_END


def write_rows(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    escape_formulas: bool = True,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[bytes]:
    """The CSV file of ``header`` and text ``rows`` as UTF-8 byte chunks (``rows_per_chunk``
    rows each). The header is never escaped: it is ours, not data."""
    parts = [encode_row(header, escape_formulas=False)]
    for row in rows:
        parts.append(encode_row(row, escape_formulas=escape_formulas))
        if len(parts) >= rows_per_chunk:
            yield "".join(parts).encode("utf-8")
            parts = []
    if parts:
        yield "".join(parts).encode("utf-8")


def write_csv(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    escape_formulas: bool = True,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[bytes]:
    """The CSV file of ``rows`` (missing columns are empty cells) as UTF-8 byte chunks."""
    cells = ([csv_cell(row.get(column)) for column in columns] for row in rows)
    return write_rows(
        columns, cells, escape_formulas=escape_formulas, rows_per_chunk=rows_per_chunk
    )


def csv_bytes(
    columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, escape_formulas: bool = True
) -> bytes:
    """The whole CSV file of ``rows`` at once (for an HTTP body)."""
    return b"".join(write_csv(columns, rows, escape_formulas=escape_formulas))
