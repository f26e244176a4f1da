"""Sync-log retention: ``prune_sync_log`` and ``contactsync log prune``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, func, insert, select

from daemon.cli import cli
from daemon.hub.database import make_engine
from daemon.hub.store import SyncLog
from daemon.hub.synclog import prune_sync_log
from tests.clikit import isolated

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLE = SyncLog.__table__


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


def add_rows(engine: Engine, *ages: timedelta, now: datetime = NOW) -> None:
    """One sync-log row per age, stamped ``now - age``."""
    rows = [
        {
            "timestamp": now - age,
            "integration": "csv",
            "direction": "incoming",
            "code": "invalid-email",
            "message": f"row aged {age}",
            "details": {},
        }
        for age in ages
    ]
    with engine.begin() as conn:
        conn.execute(insert(TABLE), rows)


def ages_left(engine: Engine, now: datetime = NOW) -> list[timedelta]:
    with engine.connect() as conn:
        stamps = conn.execute(select(TABLE.c.timestamp).order_by(TABLE.c.timestamp)).scalars()
        return [now - stamp for stamp in stamps]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(TABLE)).scalar_one()


DAY = timedelta(days=1)


def test_prune_deletes_only_rows_older_than_the_age(engine):
    add_rows(engine, 0 * DAY, 29 * DAY, 30 * DAY, 30 * DAY + timedelta(seconds=1), 400 * DAY)
    assert prune_sync_log(engine, 30 * DAY, now=NOW) == 2
    # Exactly at the cutoff is not older than it: kept.
    assert ages_left(engine) == [30 * DAY, 29 * DAY, 0 * DAY]
    assert prune_sync_log(engine, 30 * DAY, now=NOW) == 0


def test_a_dry_run_counts_and_deletes_nothing(engine):
    add_rows(engine, 1 * DAY, 10 * DAY, 20 * DAY)
    assert prune_sync_log(engine, 5 * DAY, now=NOW, dry_run=True) == 2
    assert count(engine) == 3


def test_prune_defaults_to_the_current_time(engine):
    now = datetime.now(UTC)
    add_rows(engine, timedelta(hours=1), 3 * DAY, now=now)
    assert prune_sync_log(engine, DAY) == 1
    assert count(engine) == 1


def test_prune_of_an_empty_table_is_zero(engine):
    assert prune_sync_log(engine, DAY, now=NOW) == 0


def test_a_big_prune_goes_in_chunks_each_in_its_own_transaction(sqlite_engine):
    add_rows(sqlite_engine, *(100 * DAY + timedelta(minutes=i) for i in range(25)), DAY)
    begins = []
    event.listen(sqlite_engine, "begin", lambda conn: begins.append(1))
    assert prune_sync_log(sqlite_engine, 30 * DAY, now=NOW, chunk_size=10) == 25
    # 10 + 10 + 5: three short transactions, not one long one.
    assert len(begins) == 3
    assert ages_left(sqlite_engine) == [DAY]


def test_an_exact_multiple_of_the_chunk_stops_after_an_empty_chunk(sqlite_engine):
    add_rows(sqlite_engine, *(100 * DAY for _ in range(20)))
    assert prune_sync_log(sqlite_engine, 30 * DAY, now=NOW, chunk_size=10) == 20
    assert count(sqlite_engine) == 0


def test_an_age_before_the_year_one_prunes_nothing(sqlite_engine):
    add_rows(sqlite_engine, 100 * DAY)
    assert prune_sync_log(sqlite_engine, timedelta(days=999_999_999), now=NOW) == 0
    assert count(sqlite_engine) == 1


def test_a_negative_age_is_refused(sqlite_engine):
    with pytest.raises(ValueError):
        prune_sync_log(sqlite_engine, -DAY, now=NOW)


# --- the command --------------------------------------------------------------------------


class Run:
    def __init__(self, tmp_path) -> None:
        self.etc = tmp_path / "etc"
        (self.etc / "instances").mkdir(parents=True)  # a config folder, if empty
        self.url = f"sqlite:///{tmp_path / 'hub.db'}"
        self.engine = make_engine(self.url)

    def __call__(self, *args: str, expect: int = 0):
        result = CliRunner().invoke(
            cli, ["--etc", str(self.etc), "--database-url", self.url, *args]
        )
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
        return result


@pytest.fixture
def run(tmp_path):
    runner = Run(tmp_path)
    yield runner
    runner.engine.dispose()


def test_log_prune_with_an_age(run):
    now = datetime.now(UTC)
    add_rows(run.engine, timedelta(hours=1), 10 * DAY, 45 * DAY, now=now)
    preview = json.loads(run("log", "prune", "--older-than", "7d", "--dry-run", "--json").stdout)
    assert preview["rows"] == 2
    assert preview["dry_run"] is True
    assert count(run.engine) == 3
    done = json.loads(run("log", "prune", "--older-than", "30d", "--json").stdout)
    assert (done["rows"], done["dry_run"]) == (1, False)
    assert count(run.engine) == 2
    assert "deleted 1 sync-log row" in run("log", "prune", "--older-than", "2h").stdout


def test_log_prune_defaults_to_the_retention_setting(run):
    now = datetime.now(UTC)
    add_rows(run.engine, DAY, 5 * DAY, 100 * DAY, now=now)
    # The setting's default, 90 days.
    assert json.loads(run("log", "prune", "--json").stdout)["rows"] == 1
    (run.etc / "contactsync.toml").write_text("[log]\nretention_days = 3\n")
    assert "would delete 1 sync-log row" in run("log", "prune", "--dry-run").stdout
    assert json.loads(run("log", "prune", "--json").stdout)["rows"] == 1
    assert count(run.engine) == 1


def test_log_prune_refuses_a_bad_age(run):
    result = run("log", "prune", "--older-than", "a month", expect=2)
    assert "not an age" in result.stderr
    for age in ("99999999999d", "999999999d"):  # too big for a timedelta; before year 1
        result = run("log", "prune", "--older-than", age, expect=2)
        assert "too long ago" in result.stderr


def test_log_without_a_subcommand_still_lists_rows(run):
    add_rows(run.engine, DAY, now=datetime.now(UTC))
    rows = json.loads(run("log", "--integration", "csv", "--json").stdout)
    assert [r["code"] for r in rows] == ["invalid-email"]
    assert json.loads(run("log", "--json", "--since", "1h").stdout) == []
    assert "prune" in run("log", "--help").stdout
