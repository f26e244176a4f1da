"""Writing CSV files for platforms that import files (Slate's upload dataset, SFTP drops).

One writer, so every file contactsync produces has the same dialect: UTF-8, a header row,
``,`` separated, ``"`` quoted where needed, CRLF line ends (RFC 4180, and what Slate's
``<layout b="," h="1" t="&quot;" />`` source formats read). Rows are encoded a few hundred at
a time, so a large file streams to a transport's ``write_atomic`` in bounded memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

ROWS_PER_CHUNK = 500


def csv_cell(value: Any) -> str:
    """One value as CSV text: ``None`` is empty, booleans are ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[bytes]:
    """The CSV file of ``rows`` (missing columns are empty cells) as UTF-8 byte chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    pending = 1
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue().encode("utf-8")


def csv_bytes(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The whole CSV file of ``rows`` at once (for an HTTP body)."""
    return b"".join(write_csv(columns, rows))
