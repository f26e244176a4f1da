"""The hub's schema: created on first use, upgraded additively on every start.

contactsync's tables only ever grow: a release adds tables, nullable columns and indexes, and
never drops or retypes one. That makes the upgrade of an existing hub mechanical, and safe to
run on every start, on SQLite and PostgreSQL alike:

- tables that do not exist are created (``create_all``);
- a column the code has and the table lacks is added with ``ALTER TABLE … ADD COLUMN``; it
  must be nullable or carry a server default, or the upgrade stops with :class:`SchemaError`
  (a release that needs more ships a migration of its own);
- a unique column added that way gets a unique index (SQLite cannot add a constraint to an
  existing table), and every index the code declares is created if missing.

A hub written by a newer release has columns this one does not know; they are left alone.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Engine, Table, inspect
from sqlmodel import SQLModel

from daemon.foundation.log import get_logger
from daemon.hub import (  # noqa: F401  (registers the tables on SQLModel.metadata)
    apitokens,
    store,
)

log = get_logger(__name__)


class SchemaError(RuntimeError):
    """The hub's tables cannot be brought up to this release's without losing data."""


def ensure_schema(engine: Engine) -> list[str]:
    """Create missing tables, add missing columns and indexes; return what was changed."""
    SQLModel.metadata.create_all(engine)
    changes: list[str] = []
    with engine.begin() as conn:
        inspector = inspect(conn)
        for table in SQLModel.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    changes += _add_column(conn, table, column)
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn)
                    changes.append(f"index {index.name}")
    if changes:
        log.info("schema_upgraded", changes=changes)
    return changes


def _add_column(conn: Connection, table: Table, column: Column) -> list[str]:
    if not column.nullable and column.server_default is None:
        raise SchemaError(
            f"the hub's table {table.name} lacks column {column.name}, which cannot be added "
            "to existing rows (NOT NULL without a default)"
        )
    dialect = conn.dialect
    preparer = dialect.identifier_preparer
    ddl = (
        f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
        f"{preparer.format_column(column)} {column.type.compile(dialect=dialect)}"
    )
    if column.server_default is not None:
        default = column.server_default.arg  # type: ignore[attr-defined]
        ddl += f" DEFAULT {default if isinstance(default, str) else default.text}"
    conn.exec_driver_sql(ddl)
    done = [f"column {table.name}.{column.name}"]
    if column.unique:
        # Plain DDL: an Index object on the column would attach itself to the shared
        # metadata's table, and every later create_all would try to make it again.
        name = f"uq_{table.name}_{column.name}"
        conn.exec_driver_sql(
            f"CREATE UNIQUE INDEX {preparer.quote(name)} ON {preparer.format_table(table)} "
            f"({preparer.format_column(column)})"
        )
        done.append(f"unique index {name}")
    return done
