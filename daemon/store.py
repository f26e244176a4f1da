"""The hub's tables (SQLModel).

Uniqueness that the rules rely on (a phone per contact, a CRM id per contact) is enforced by
the database itself, so two processes writing at once cannot break it. Every timestamp is UTC;
:class:`UTCDateTime` makes SQLite hand back aware datetimes like PostgreSQL does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, Text, TypeDecorator
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

    id: int | None = Field(default=None, primary_key=True)
    contact_id: str = Field(foreign_key="contact.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)  # web | twilio | facebook
    direction: str = Field(max_length=8)  # incoming | outgoing
    body: str = Field(sa_column=Column(Text, nullable=False))
    campaign_id: str | None = Field(default=None, max_length=64)
    campaign_name: str | None = Field(default=None, max_length=255)
    message_type: str | None = Field(default=None, max_length=32)
    sent_at: datetime = _ts(nullable=False, index=True)


class SyncLog(SQLModel, table=True):
    """One sync error that staff can act on: the seed's columns plus run context."""

    __tablename__ = "sync_log"
    __table_args__ = (Index("ix_sync_log_integration_ts", "integration", "timestamp"),)

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
