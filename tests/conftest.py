"""Shared fixtures: a hub on SQLite, and the same hub on a real PostgreSQL server.

PostgreSQL tests need ``CONTACTSYNC_TEST_PG_URL`` (``.ci/run`` starts a server and sets it).
Without it they skip with a loud reason; ``CONTACTSYNC_REQUIRE_SERVICES=1`` turns that skip
into a failure, so CI can never go green by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from daemon.foundation import log
from daemon.foundation.clock import FakeClock
from daemon.hub.database import make_engine, normalise_url

PG_ENV = "CONTACTSYNC_TEST_PG_URL"

# The real OpenSSH server fixture (sshd_server, sftp_root) for every SFTP test.
pytest_plugins = ["tests.sshd"]


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only() -> Iterator[None]:
    """Forget the secrets a test registered when it ends. Registration is process-wide (the
    daemon never unregisters), so without this a test's password, say "plain", would be
    redacted from a later test's output and fail it depending on the order. Secrets that
    module- and session-scoped fixtures registered are set up before this and are kept."""
    before = set(log._secrets)
    yield
    with log._secrets_lock:
        log._secrets.intersection_update(before)


@pytest.fixture
def clock(cs_clock: FakeClock) -> FakeClock:
    """The public kit's fake clock (``cs_clock``) under the name the platform tests use."""
    return cs_clock


def require_service(name: str, reason: str) -> None:
    """Skip, or fail when CI requires every service."""
    message = f"{name} not available: {reason}"
    if os.environ.get("CONTACTSYNC_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (CONTACTSYNC_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A throw-away database on the PostgreSQL server named by ``CONTACTSYNC_TEST_PG_URL``."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        require_service("PostgreSQL", f"set {PG_ENV} (bash .ci/run starts a server)")
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"contactsync_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down, bad credentials
        require_service("PostgreSQL", f"cannot create a database: {type(exc).__name__}: {exc}")
    url = (
        make_url(normalise_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    )
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    """A fresh hub in an SQLite file."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _pg_engine(pg_server_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_server_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(request) -> Iterator[Engine]:
    """A hub on the real PostgreSQL server, emptied before each test."""
    engine = request.getfixturevalue("_pg_engine")
    _truncate(engine)
    yield engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> Iterator[Engine]:
    """The hub, once on SQLite and once on PostgreSQL."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    yield request.getfixturevalue(name)


# tests/fixtures/ holds separate distributions (the third-party plugin example); their own
# tests run from test_third_party.py once the distribution is installed, never from here.
collect_ignore_glob = ["fixtures/*"]
