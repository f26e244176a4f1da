"""An existing hub is upgraded in place: missing tables, columns and indexes are added."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from daemon.hub.database import make_engine, normalise_url
from daemon.hub.schema import SchemaError, ensure_schema

# A hub as an earlier release left it: no next_deletes_at, no message.external_id, and no
# export_batch table at all.
OLD_TABLES = [
    """CREATE TABLE instance_state (
        instance VARCHAR(64) PRIMARY KEY,
        backoff_until TIMESTAMP,
        next_pull_at TIMESTAMP,
        next_push_at TIMESTAMP
    )""",
    "INSERT INTO instance_state (instance) VALUES ('hubspot')",
    """CREATE TABLE message (
        id INTEGER PRIMARY KEY,
        contact_id VARCHAR(32) NOT NULL,
        channel VARCHAR(16) NOT NULL,
        direction VARCHAR(8) NOT NULL,
        body TEXT NOT NULL,
        campaign_id VARCHAR(64),
        campaign_name VARCHAR(255),
        message_type VARCHAR(32),
        sent_at TIMESTAMP NOT NULL
    )""",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def bare(request, tmp_path) -> Iterator[str]:
    """The URL of an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    admin_url = os.environ.get("CONTACTSYNC_TEST_PG_URL")
    if not admin_url:
        request.getfixturevalue("pg_server_url")  # skips, or fails under .ci/run
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    schema = f"old_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield normalise_url(admin_url) + f"?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_an_old_hub_gains_what_this_release_adds_and_keeps_its_rows(bare: str) -> None:
    old = create_engine(bare)
    with old.begin() as conn:
        for statement in OLD_TABLES:
            conn.execute(text(statement))
    old.dispose()

    engine = make_engine(bare)
    try:
        assert "next_deletes_at" in _columns(engine, "instance_state")
        assert "external_id" in _columns(engine, "message")
        assert "export_batch" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT instance FROM instance_state")).scalars().all() == [
                "hubspot"
            ]
        # The added column is unique, as the code declares it.
        row = (
            "INSERT INTO message (id, contact_id, channel, direction, body, sent_at, "
            "external_id) VALUES ({}, 'c', 'web', 'incoming', 'hi', '2026-01-01', 'x-1')"
        )
        with engine.begin() as conn:
            conn.execute(text(row.format(1)))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(row.format(2)))
        # Starting again changes nothing.
        assert ensure_schema(engine) == []
    finally:
        engine.dispose()


def test_a_column_that_cannot_be_added_stops_the_upgrade(tmp_path) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(url)
    extra = Table(
        "sync_log",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("must_have", Integer, nullable=False),
    )
    from daemon.hub.schema import _add_column

    with engine.begin() as conn, pytest.raises(SchemaError, match="must_have"):
        _add_column(conn, extra, extra.c.must_have)
    engine.dispose()
