"""The conversations export: the hub's messages as Mainstay's conversations CSV, one way.

One row per message, with the columns of Mainstay's "Conversations Export"
(``../shared/research/mainstay.md`` §2.6)::

    crm_id, mainstay_id, first_name, last_name, channel, campaign_id, campaign_name,
    timestamp, incoming, outgoing

``mainstay_id`` is the hub's contact id; the body sits in ``incoming`` when the learner wrote
it and in ``outgoing`` when a campaign, the AI or a live-chat agent did, the other cell
empty. Files are named prefix plus UTC timestamp (``conversations2026-01-05T061500123Z.csv``)
and written atomically through :mod:`daemon.kit.filetransport` (SFTP or a local folder). The
exactly-once bookkeeping is the engine's (:mod:`daemon.engine.export_cycle`); this module only
filters and renders.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from daemon.sdk import (
    BatchInfo,
    ConnectorConfig,
    ConnectorContext,
    Exporter,
    ExportRow,
    FileTransport,
    MessageFilter,
    RelativePath,
    TransportSettings,
    UploadRejected,
    open_transport,
    write_rows,
)

COLUMNS = (
    *("crm_id", "mainstay_id", "first_name", "last_name", "channel", "campaign_id"),
    *("campaign_name", "timestamp", "incoming", "outgoing"),
)
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2}):?(\d{2})?$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]*$")


def parse_zone(text: str) -> tzinfo:
    """A time zone name (``America/New_York``) or a fixed offset (``-05:00``, ``+0530``,
    ``UTC-4``). Raises :class:`ValueError`."""
    text = text.strip()
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            raise ValueError(f"offset {text!r} is not below 24 hours")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {text!r}; use a name such as America/New_York or an offset "
            "such as -05:00"
        ) from None


class ExportConfig(ConnectorConfig):
    """``[settings]`` of a ``conversations_export`` instance."""

    transport: TransportSettings
    folder: RelativePath = ""  # within the transport's base folder; "" is the base itself
    file_prefix: str = Field(default="conversations", max_length=100)
    channels: list[Literal["web", "twilio", "facebook"]] = Field(default_factory=list)
    directions: list[Literal["incoming", "outgoing"]] = Field(default_factory=list)
    message_types: list[Literal["campaign", "ai", "live_chat"]] = Field(default_factory=list)
    start_date: datetime | date | None = None  # a date is midnight in ``timezone``
    timezone: str = "UTC"
    timestamp_format: str | None = None  # strftime; default ISO 8601 with the offset
    max_rows_per_file: int = Field(default=50_000, ge=1, le=5_000_000)
    # Staff open this file in a spreadsheet: a message body "=HYPERLINK(...)" must not run.
    escape_formulas: bool = True

    @field_validator("file_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' only")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        parse_zone(value)
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError("a strftime format such as '%Y-%m-%d %H:%M:%S'")
        return value

    def since(self) -> datetime | None:
        """The backfill start as an aware time: a bare date or time is read in ``timezone``."""
        start = self.start_date
        if start is None:
            return None
        if not isinstance(start, datetime):
            start = datetime.combine(start, time())
        return start if start.tzinfo else start.replace(tzinfo=parse_zone(self.timezone))


class ConversationsExporter(Exporter):
    """Mainstay's conversations export over SFTP or to a local folder."""

    type: ClassVar[str] = "conversations_export"
    Config: ClassVar[type[ConnectorConfig]] = ExportConfig

    def __init__(self, config: ConnectorConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        if not isinstance(config, ExportConfig):
            raise TypeError("ConversationsExporter needs an ExportConfig")
        self.settings = config
        self._transport: FileTransport | None = None
        self._folder_ready = False

    @property
    def transport(self) -> FileTransport:
        """One connection for the cycle, opened on first use."""
        if self._transport is None:
            self._transport = open_transport(self.settings.transport)
        return self._transport

    @property
    def max_rows(self) -> int:
        return self.settings.max_rows_per_file

    def check(self) -> None:
        """Connect and make sure the destination folder exists (or can be made)."""
        self._ensure_folder()

    def message_filter(self) -> MessageFilter:
        s = self.settings
        return MessageFilter(
            tuple(s.channels), tuple(s.directions), tuple(s.message_types), s.since()
        )

    def render_spec(self) -> dict[str, Any]:
        return {
            "timezone": self.settings.timezone,
            "timestamp_format": self.settings.timestamp_format,
            "escape_formulas": self.settings.escape_formulas,
        }

    def file_name(self, created: datetime) -> str:
        stamp = created.strftime("%Y-%m-%dT%H%M%S") + f"{created.microsecond // 1000:03d}Z"
        return f"{self.settings.file_prefix}{stamp}.csv"

    def write_batch(self, batch: BatchInfo, rows: Iterator[ExportRow]) -> int:
        self._ensure_folder()
        render = batch.spec.get("render", {})
        chunks = csv_chunks(
            rows,
            parse_zone(render.get("timezone") or "UTC"),
            render.get("timestamp_format"),
            # A batch cut before the setting existed is rendered as it was cut: unescaped.
            escape_formulas=bool(render.get("escape_formulas", False)),
        )
        path = posixpath.join(self.settings.folder, batch.file_name)
        return self.transport.write_atomic(path, chunks)

    def _ensure_folder(self) -> None:
        if self._folder_ready:
            return
        try:
            if self.settings.folder:
                self.transport.makedirs(self.settings.folder)
            else:
                self.transport.list("", "")  # proves the connection and the base folder
        except OSError as exc:
            raise UploadRejected(
                f"destination folder {self.settings.folder or '/'!r} unusable: {exc}"
            ) from exc
        self._folder_ready = True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def render_row(row: ExportRow, zone: tzinfo, timestamp_format: str | None) -> list[str]:
    """One message as the cells of :data:`COLUMNS`."""
    local = row.sent_at.astimezone(zone)
    stamp = (
        local.strftime(timestamp_format) if timestamp_format else local.isoformat("T", "seconds")
    )
    incoming = row.body if row.direction == "incoming" else ""
    outgoing = row.body if row.direction == "outgoing" else ""
    return [
        row.crm_id or "",
        row.contact_id,
        row.first_name or "",
        row.last_name or "",
        row.channel,
        row.campaign_id or "",
        row.campaign_name or "",
        stamp,
        incoming,
        outgoing,
    ]


def csv_chunks(
    rows: Iterator[ExportRow],
    zone: tzinfo,
    timestamp_format: str | None,
    *,
    escape_formulas: bool = True,
) -> Iterator[bytes]:
    """The CSV file (header first, UTF-8, CRLF as Slate and most importers expect) in
    chunks, written by the kit's one CSV writer (formula cells escaped unless turned off)."""
    cells = (render_row(row, zone, timestamp_format) for row in rows)
    return write_rows(COLUMNS, cells, escape_formulas=escape_formulas)
