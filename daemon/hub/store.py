"""The hub's tables (SQLModel).

Uniqueness that the rules rely on (a phone per contact, a CRM id per contact) is enforced by
the database itself, so two processes writing at once cannot break it. Every timestamp is UTC;
:class:`UTCDateTime` makes SQLite hand back aware datetimes like PostgreSQL does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Text, TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


def new_contact_id() -> str:
    """A random, stable hub id."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC there.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), **kwargs))


class Contact(SQLModel, table=True):
    """A contact in the hub, with the default fields of the design."""

    __tablename__ = "contact"

    id: str = Field(default_factory=new_contact_id, primary_key=True, max_length=32)
    crm_id: str | None = Field(default=None, max_length=255, unique=True)
    enrollment_id: str | None = Field(default=None, max_length=255)
    first_name: str | None = Field(default=None, max_length=64)
    last_name: str | None = Field(default=None, max_length=64)
    preferred_name: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32, unique=True)
    email: str | None = Field(default=None, max_length=320, index=True)
    archived: bool = False
    test_user: bool = False
    invalid_phone: bool = False
    previous_phone: str | None = Field(default=None, max_length=32)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False, index=True)
    # Per-field time of the last change in the hub (ISO strings), for the "newest" conflict
    # policy: a record-level updated_at would make every field look changed.
    changed_at: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))


class CustomField(SQLModel, table=True):
    """A custom field the institution defined: a display name and a type."""

    __tablename__ = "custom_field"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=255, unique=True)
    type: str = Field(max_length=16)
    created_at: datetime = _ts(nullable=False)


class CustomValue(SQLModel, table=True):
    """One contact's value of one custom field, in canonical text form."""

    __tablename__ = "custom_value"

    contact_id: str = Field(foreign_key="contact.id", primary_key=True, ondelete="CASCADE")
    field_id: int = Field(foreign_key="custom_field.id", primary_key=True, ondelete="CASCADE")
    value: str = Field(sa_column=Column(Text, nullable=False))


class Message(SQLModel, table=True):
    """A conversation message, for the conversations export."""

    __tablename__ = "message"
    # AUTOINCREMENT: SQLite would otherwise reuse the highest id after a delete, and an
    # export's id watermark would skip the new message that took it.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    contact_id: str = Field(foreign_key="contact.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)  # web | twilio | facebook
    direction: str = Field(max_length=8)  # incoming | outgoing
    body: str = Field(sa_column=Column(Text, nullable=False))
    campaign_id: str | None = Field(default=None, max_length=64)
    campaign_name: str | None = Field(default=None, max_length=255)
    message_type: str | None = Field(default=None, max_length=32)
    sent_at: datetime = _ts(nullable=False, index=True)
    # The source's own id of the message, when it has one: importing a file again (after a
    # crash mid-file, say) adds only the messages not yet in the hub.
    external_id: str | None = Field(default=None, max_length=255, unique=True)


class ExportBatch(SQLModel, table=True):
    """One file of an export instance: the message-id range it holds and its name.

    Recorded before the upload (design §4): a batch still ``pending`` after a crash or a
    failed upload is uploaded again under the same name with the same messages, so the far
    side overwrites rather than duplicates. ``spec`` freezes the filters the batch was cut
    with, so a config change cannot alter a batch already cut.
    """

    __tablename__ = "export_batch"
    __table_args__ = (
        Index("ux_export_batch_file", "instance", "file_name", unique=True),
        Index("ix_export_batch_state", "instance", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    instance: str = Field(max_length=64)
    file_name: str = Field(max_length=255)
    after_message_id: int  # exclusive lower bound: the previous batch's last id
    last_message_id: int  # inclusive upper bound
    rows: int = 0  # messages the batch held when it was cut
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: str = Field(default="pending", max_length=16)  # pending | uploaded
    attempts: int = 0
    bytes: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _ts(nullable=False)
    uploaded_at: datetime | None = _ts(nullable=True)


class SyncLog(SQLModel, table=True):
    """One sync error that staff can act on: the seed's columns plus run context."""

    __tablename__ = "sync_log"
    __table_args__ = (
        Index("ix_sync_log_integration_ts", "integration", "timestamp"),
        # The staff's Sync Log page filters by code or by instance and reads newest first: with
        # these, a page of a filtered million rows reads its rows in index order (no sort),
        # and its counts by code are read from the index alone (code is in both).
        Index("ix_sync_log_code_ts", "code", "timestamp", "id"),
        Index("ix_sync_log_instance_ts", "instance", "timestamp", "id", "code"),
    )

    id: int | None = Field(default=None, primary_key=True)
    timestamp: datetime = _ts(nullable=False, index=True)
    integration: str = Field(max_length=64)
    direction: str = Field(max_length=8)  # incoming | outgoing
    contact_id: str | None = Field(default=None, max_length=32, index=True)
    code: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    instance: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=32, index=True)
    remote_id: str | None = Field(default=None, max_length=255)
    message: str = Field(sa_column=Column(Text, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class RunKey(SQLModel, table=True):
    """Keys a run has already seen (e.g. CRM ids), so "first record wins" holds across
    batch commits without holding every key of a large file in memory."""

    __tablename__ = "run_key"

    run_id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=255)


# --- sync state ---------------------------------------------------------------------------


class InstanceRow(SQLModel, table=True):
    """An instance known to the daemon, mirrored from ``etc/instances`` by its stable name."""

    __tablename__ = "instance"

    name: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=64)
    connection: str = Field(max_length=64, index=True)
    direction: str = Field(max_length=8)
    enabled: bool = True
    updated_at: datetime = _ts(nullable=False)


class InstanceState(SQLModel, table=True):
    """What the daemon knows of an instance between runs: back-off, next runs, status."""

    __tablename__ = "instance_state"

    instance: str = Field(primary_key=True, max_length=64)
    backoff_until: datetime | None = _ts(nullable=True)
    # Cycles failed in a row (a platform down, a refused login): each doubles the back-off;
    # the next cycle that ends well sets it back to 0.
    failures: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_pull_at: datetime | None = _ts(nullable=True)
    next_push_at: datetime | None = _ts(nullable=True)
    next_deletes_at: datetime | None = _ts(nullable=True)  # the deletion scan's next run
    last_run_id: str | None = Field(default=None, max_length=32)
    # Set once the first sync queued every unlinked contact for the push.
    seeded_at: datetime | None = _ts(nullable=True)
    status: str | None = Field(default=None, sa_column=Column(Text))
    # Rotated credentials (refresh tokens) a connector must keep; never written to config.
    connector_state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SyncCursor(SQLModel, table=True):
    """The checkpoint of one pull stream of one instance, committed with each page."""

    __tablename__ = "sync_cursor"

    instance: str = Field(primary_key=True, max_length=64)
    stream: str = Field(primary_key=True, max_length=32)
    value: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = _ts(nullable=False)


class Link(SQLModel, table=True):
    """A contact's record on one connection, and the last values exchanged with it.

    ``values`` holds canonical hub-form values per hub field: echo suppression and "apply
    only what changed" both compare against it.
    """

    __tablename__ = "link"
    __table_args__ = (
        Index("ux_link_remote", "connection", "remote_id", unique=True),
        Index("ux_link_contact", "connection", "contact_id", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    connection: str = Field(max_length=64)
    remote_id: str = Field(max_length=255)
    contact_id: str = Field(foreign_key="contact.id", max_length=32, ondelete="CASCADE")
    state: str = Field(default="active", max_length=16)  # active | pending | deleted
    values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    remote_modified_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts(nullable=False)


class Outbox(SQLModel, table=True):
    """One coalesced row per (connection, contact) waiting to be pushed.

    Values are read at push time, so the row holds only which fields changed. ``version``
    grows with every coalesced write; a push deletes the row only if it is unchanged.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ux_outbox_connection_contact", "connection", "contact_id", unique=True),
        # The push claims a connection's pending rows in id order.
        Index("ix_outbox_claim", "connection", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    connection: str = Field(max_length=64)
    contact_id: str = Field(foreign_key="contact.id", max_length=32, ondelete="CASCADE")
    fields: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    origin: str = Field(max_length=64)
    version: int = 1
    attempts: int = 0
    state: str = Field(default="pending", max_length=16)  # pending | parked
    next_attempt_at: datetime = _ts(nullable=False, index=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class SyncRun(SQLModel, table=True):
    """One cycle of one instance: its counts and how it ended."""

    __tablename__ = "sync_run"

    id: str = Field(primary_key=True, max_length=32)
    instance: str = Field(max_length=64, index=True)
    direction: str = Field(max_length=8)
    started_at: datetime = _ts(nullable=False, index=True)
    finished_at: datetime | None = _ts(nullable=True)
    outcome: str = Field(default="running", max_length=16)  # running|ok|failed|interrupted
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))


class SyncLease(SQLModel, table=True):
    """Who may run cycles of a connection now. Keyed by connection, not instance: an incoming
    and an outgoing instance on one account must not interleave, or a record the push just
    created could be pulled back as a new contact before its link is written."""

    __tablename__ = "sync_lease"

    name: str = Field(primary_key=True, max_length=64)
    owner: str | None = Field(default=None, max_length=128)
    expires_at: datetime | None = _ts(nullable=True)
