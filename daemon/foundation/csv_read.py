"""Reading CSV files safely: whole-file checks, streamed rows, header keys.

The hub's CSV import and the kit's file connectors (SFTP, Slate's uploads) read CSV the same
way, so the rules live here, below both: UTF-8 (a BOM allowed), no NUL byte, strict quoting, a
header row that is one, and a :class:`FileMalformed` that names the line when any of it fails.

Lines are bounded too: a line longer than :data:`MAX_LINE_CHARS` is refused before it is held
whole (a 150 MB file without a line break would otherwise be read into memory at once), and a
quoted cell longer than the ``csv`` module's field limit (128 KiB, left at its default: the
limit is process-wide) is refused by the parser, naming the line either way.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, AnyStr

ENCODING = "utf-8-sig"  # a BOM, as Excel writes it, is not part of the first header
_SEPARATORS = re.compile(r"[\s\-]+")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
# The separators files come with, in the order a hint prefers them; "tab" is how a command
# line spells "\t" (``--delimiter tab``).
DELIMITERS = (",", ";", "\t", "|")
# The longest line read: a contact row is a few hundred characters; a megabyte is no CSV of
# contacts, and refusing it keeps memory bounded whatever a file holds.
MAX_LINE_CHARS = 1024 * 1024


class FileMalformed(Exception):
    """The file cannot be imported at all; the message says why and where."""


def header_key(header: str) -> str:
    """The form a header is compared in."""
    return _SEPARATORS.sub("_", header.strip().lower())


def read_rows(path: Path, delimiter: str = ",") -> Iterator[list[str]]:
    """The rows of the file at ``path``, unchecked (:func:`read_header` checks first)."""
    with path.open("r", encoding=ENCODING, newline="") as fh:
        yield from parsed(csv.reader(bounded_lines(fh), delimiter=delimiter, strict=True))


def bounded_lines(fh: IO[AnyStr], limit: int = MAX_LINE_CHARS) -> Iterator[AnyStr]:
    """The lines of ``fh`` (text or binary), each read with at most ``limit`` characters (or
    bytes) plus its line end: a longer one is :class:`FileMalformed` naming it, and is never
    held whole in memory.

    A binary file's ``readline`` ends lines at ``\\n`` only, so a file with CR-only line ends
    arrives in pieces of ``limit`` bytes; each is cut after its last CR (the rest carried to
    the next), and only a run of more than ``limit`` bytes without any line end is refused.
    """
    number = 1  # the line the next piece starts on
    carry = fh.read(0)  # "" or b"", as the file reads
    while True:
        piece = fh.readline(limit + 2)
        if not piece:
            if carry:
                yield carry
            return
        piece, carry = carry + piece, carry[:0]
        if len(piece) > limit and len(_strip_line_end(piece)) > limit:
            cr = "\r" if isinstance(piece, str) else b"\r"
            cut = piece.rfind(cr)  # type: ignore[arg-type]
            if cut < 0 or max(len(part) for part in piece.split(cr)) > limit:  # type: ignore[arg-type]
                longest = number + piece.count(cr, 0, max(cut, 0))  # type: ignore[arg-type]
                raise FileMalformed(
                    f"line {longest} is longer than {limit:,} characters; no CSV of contacts "
                    "has such a line (a file without line breaks, or not a CSV file at all?)"
                )
            piece, carry = piece[: cut + 1], piece[cut + 1 :]
        number += piece.count("\r" if isinstance(piece, str) else b"\r") or piece.count(  # type: ignore[arg-type]
            "\n" if isinstance(piece, str) else b"\n"  # type: ignore[arg-type]
        )
        yield piece


def _strip_line_end(line: AnyStr) -> AnyStr:
    return line.rstrip(b"\r\n" if isinstance(line, bytes) else "\r\n")  # type: ignore[arg-type]


def read_header(path: Path, delimiter: str = ",") -> list[str]:
    """The header row, after checking the whole file decodes and parses.

    Checking first costs one extra streaming pass, and buys the promise that a file with a bad
    byte, a NUL or a broken quote near its end is refused before any row of it is applied.
    """
    with path.open("r", encoding=ENCODING, newline="") as fh:
        lines = _without_stray_bom(_without_nul(bounded_lines(fh)))
        rows = parsed(csv.reader(lines, delimiter=delimiter, strict=True))
        try:
            header = check_header(next(rows, None))
            for _ in rows:
                pass
        except UnicodeDecodeError:
            # The error's offset is within the chunk being decoded, not the file: find the line.
            line = _first_undecodable_line(path)
            raise FileMalformed(f"the file is not UTF-8 (line {line} cannot be decoded)") from None
    return header


def parsed(reader: Any) -> Iterator[list[str]]:
    """The rows of a ``csv.reader``, a :class:`csv.Error` turned into :class:`FileMalformed`
    naming the line its row starts on. The module's own message never says where: "unexpected
    end of data" from a quote opened on line 3 of a 50,000-line file left the operator to
    search the whole file."""
    while True:
        start = reader.line_num + 1  # a row may span lines (a quoted line break)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileMalformed(
                f"the file is not valid CSV: {exc} in the row starting on line {start}"
            ) from None
        yield row


def _without_nul(lines: Iterable[str]) -> Iterator[str]:
    """``lines``, refusing the first that holds a NUL.

    Python's reader takes NUL as an ordinary character, but PostgreSQL cannot store one in
    text, and a NUL in "CSV" nearly always means a UTF-16 export or a spreadsheet's binary file:
    saying so beats importing garbage, or failing on the first write of it.
    """
    for number, line in enumerate(lines, start=1):
        if "\x00" in line:
            raise FileMalformed(
                f"line {number} contains a NUL byte, which no CSV text holds (a UTF-16 "
                "export, or a spreadsheet saved in its own format?); save it as CSV UTF-8"
            )
        yield line


def _without_stray_bom(lines: Iterable[str]) -> Iterator[str]:
    """``lines``, refusing the first that holds a byte-order mark (U+FEFF) after the start of
    the file.

    A BOM belongs only before the first byte, where the decoder drops it. One further in means
    two files were joined (``cat a.csv b.csv``): the second file's header would import as a
    contact, with the BOM inside its ``crm_id``. Stripping it would hide that, so the file is
    refused, naming the line, and the operator splits it.
    """
    for number, line in enumerate(lines, start=1):
        if "\ufeff" in line:
            raise FileMalformed(
                f"line {number} holds a byte-order mark (U+FEFF), which belongs only at the "
                "start of a file: two files joined into one? Split them"
            )
        yield line


def split_lines(text: str) -> list[str]:
    """``text`` cut after each ``\\r\\n``, ``\\r`` or ``\\n``, the ends kept: the lines a file
    opened with ``newline=""`` yields, so a file read over a transport splits exactly as one
    read from disk (``import``) does, old Mac CR-only ends included. Not
    :meth:`str.splitlines`, which also cuts at U+2028 and form feeds inside a cell."""
    return _LINE.findall(text)


def delimiter_hint(header: list[str], delimiter: str, known: Callable[[str], bool]) -> str | None:
    """The delimiter the file seems to use instead of ``delimiter``, or None.

    A header read with the wrong delimiter has cells that hold the real one: a semicolon file
    read as commas is one cell ``crm_id;first_name;…``. The hint is given only when splitting a
    cell at the other delimiter yields a name ``known`` accepts (or the header is that one
    cell), so a header cell that merely contains a ``|`` (a formula, a label) earns none.
    """
    for candidate in DELIMITERS:
        if candidate == delimiter:
            continue
        for cell in header:
            parts = [part.strip() for part in cell.split(candidate)]
            if len(parts) < 2:
                continue
            if any(known(part) for part in parts if part):
                return candidate
    return None


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

    if hasattr(lines, "readline"):  # a file: never read a line longer than the limit whole
        lines = bounded_lines(lines)  # type: ignore[arg-type]

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
            yield from split_lines(text.removeprefix("\ufeff") if number == 1 else text)

    lines_read = _without_stray_bom(_without_nul(decoded()))
    yield from parsed(csv.reader(lines_read, delimiter=delimiter, strict=True))


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
