"""Opening the hub: engines for SQLite and PostgreSQL, schema creation, dialect helpers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

from daemon.hub.schema import ensure_schema

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_STATEMENT_CACHE = 16


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (or doesn't)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the CLI read while the daemon writes; the busy timeout makes writers queue
    # instead of failing with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for the hub at ``url``; with ``create``, the tables exist afterwards."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                # Batch lookups use IN lists of a different length each time, so each batch
                # is new SQL text; sqlite3's default cache of 128 such statements made peak
                # memory climb with the first few hundred batches of a large import.
                "cached_statements": SQLITE_STATEMENT_CACHE,
            },
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN until the first write, which lets
        # two writers read stale rows; emit BEGIN IMMEDIATE ourselves instead.
        event.listen(engine, "connect", _disable_pysqlite_begin)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    # hide_parameters: a database error's text names its statement, never the values bound to
    # it (a phone, an email, a token's hash), wherever that text is logged or shown.
    if create:
        ensure_schema(engine)
    return engine


def _disable_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    # Writers take the lock up front; readers opt out with READ_ONLY so that a long import
    # never blocks `contactsync log`.
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


READ_ONLY = {"sqlite_begin": "DEFERRED"}
"""Execution options for a connection that only reads."""


def insert_ignore(table: Table, dialect_name: str) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the engine's dialect."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def upsert(table: Table, dialect_name: str, keys: Sequence[str], update: Sequence[str]) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update = excluded.update``."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={col: stmt.excluded[col] for col in update}
    )
