"""The exporter base: connectors that send the hub's conversation messages one way, as files.

An exporter subclasses :class:`Exporter` and says three things: which messages it wants
(:meth:`Exporter.message_filter`), what a file is called (:meth:`Exporter.file_name`) and how a
batch of rows is written (:meth:`Exporter.write_batch`). The engine's export cycle
(:mod:`daemon.engine.export_cycle`) does the rest, exactly once: it cuts :class:`BatchInfo`
batches, records each before its upload, and re-uploads a pending batch under the same name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from daemon.foundation.dictionary import Code
from daemon.kit.connector import Capabilities, Connector, ConnectorError


class UploadRejected(ConnectorError):
    """The destination refused the file (permissions, a full disk, a missing folder)."""

    code: ClassVar[Code] = Code.REMOTE_REJECTED


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages an exporter sends. Empty tuples mean "all".

    ``message_types`` applies to outgoing messages only (incoming ones, written by the
    learner, have no type); ``since`` drops messages sent before it, and is how a historical
    backfill is bounded. Test users' messages are never exported, whatever the filter.
    """

    channels: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    message_types: tuple[str, ...] = ()
    since: datetime | None = None

    def as_spec(self) -> dict[str, Any]:
        """JSON form, frozen into each batch."""
        return {
            "channels": list(self.channels),
            "directions": list(self.directions),
            "message_types": list(self.message_types),
            "since": self.since.isoformat() if self.since else None,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> MessageFilter:
        since = spec.get("since")
        return cls(
            tuple(spec.get("channels") or ()),
            tuple(spec.get("directions") or ()),
            tuple(spec.get("message_types") or ()),
            datetime.fromisoformat(since) if since else None,
        )


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One message with its contact's identity, as an exporter renders it."""

    message_id: int
    contact_id: str
    crm_id: str | None
    first_name: str | None
    last_name: str | None
    channel: str
    direction: str
    body: str
    campaign_id: str | None
    campaign_name: str | None
    message_type: str | None
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A recorded batch: the messages after ``after_id`` up to ``last_id`` that match the
    frozen ``spec``, to be written as ``file_name``."""

    id: int
    instance: str
    file_name: str
    after_id: int
    last_id: int
    rows: int
    spec: Mapping[str, Any]
    attempts: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BatchInfo:
        return cls(
            row["id"],
            row["instance"],
            row["file_name"],
            row["after_message_id"],
            row["last_message_id"],
            row["rows"],
            dict(row["spec"] or {}),
            row["attempts"],
        )

    @property
    def message_filter(self) -> MessageFilter:
        return MessageFilter.from_spec(self.spec.get("filter", {}))


class Exporter(Connector):
    """Base of connectors that export messages one way instead of syncing contacts.

    The engine never pulls or pushes through an exporter: its instance has one job, the
    export cycle, on ``schedule.export``, and its connection takes no outbox rows.
    Subclasses implement :meth:`message_filter`, :meth:`file_name` and :meth:`write_batch`,
    and may override :attr:`max_rows` and :meth:`render_spec`.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=False, push=False, create=False, modified_at=False
    )

    @property
    def max_rows(self) -> int:
        """Messages per file at most."""
        return 50_000

    def message_filter(self) -> MessageFilter:
        """Which messages to export (test users' never are)."""
        return MessageFilter()

    def render_spec(self) -> dict[str, Any]:
        """Settings that shape a file's content (a time zone, say), frozen into each batch
        so a re-upload writes what the first attempt wrote."""
        return {}

    def file_name(self, created: datetime) -> str:
        """The name of a batch cut at ``created`` (UTC); must change with ``created``."""
        raise NotImplementedError

    def write_batch(self, batch: BatchInfo, rows: Iterator[ExportRow]) -> int:
        """Write ``rows`` as ``batch.file_name``, atomically (a reader never sees half a file);
        return the bytes written. Raise :class:`~daemon.kit.connector.ConnectorError` when the
        destination fails: the batch stays pending and is written again next cycle."""
        raise NotImplementedError


def is_exporter(connector_class: type[Connector]) -> bool:
    """Whether instances of ``connector_class`` run export cycles instead of pull and push."""
    return isinstance(connector_class, type) and issubclass(connector_class, Exporter)
