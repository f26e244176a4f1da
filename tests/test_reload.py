"""Hot reload: the diff of ``etc/instances`` between reloads, broken files, the watcher."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine, select

from daemon.foundation.dictionary import Code
from daemon.foundation.log import configure
from daemon.hub.store import InstanceRow
from daemon.hub.synclog_query import query_log
from daemon.runtime.reload import ConfigState, ReloadResult
from daemon.runtime.watcher import ConfigWatcher, is_config_change
from tests.enginekit import CONNECTORS, write_instance

DEADLINE = 10.0  # seconds; generous for a loaded CI machine, never reached when it works


@pytest.fixture
def log_stream() -> Iterator[StringIO]:
    """Every log line of the test, as JSON; the process's logging put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = StringIO()
    configure(level="debug", stream=stream, json=True)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def etc(tmp_path) -> Path:
    folder = tmp_path / "etc"
    (folder / "instances").mkdir(parents=True)
    return folder


@pytest.fixture
def state(etc, sqlite_engine) -> ConfigState:
    return ConfigState(etc, sqlite_engine, CONNECTORS)


def lines(stream: StringIO, event: str | None = None) -> list[dict]:
    out = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [o for o in out if event is None or o["event"] == event]


def config_errors(engine: Engine) -> list[dict]:
    return query_log(engine, code=str(Code.CONFIG_INVALID))


def mirrored(engine: Engine) -> dict[str, bool]:
    table = InstanceRow.__table__
    with engine.connect() as conn:
        return {r.name: r.enabled for r in conn.execute(select(table.c.name, table.c.enabled))}


def lists(result: ReloadResult) -> tuple[list[str], list[str], list[str], list[str]]:
    return result.added, result.changed, result.removed, result.unchanged


def break_file(etc: Path, name: str) -> Path:
    """An edit that makes the file invalid: ``max_attempts`` out of range."""
    path = etc / "instances" / f"{name}.toml"
    path.write_text(
        path.read_text().replace('type = "memory"', 'type = "memory"\nmax_attempts = 0')
    )
    return path


# --- the diff -------------------------------------------------------------------------------


def test_the_first_reload_adds_every_valid_instance(etc, state, sqlite_engine):
    write_instance(etc, "alpha", remote="a")
    write_instance(etc, "beta", remote="b")
    result = state.reload()
    assert lists(result) == (["alpha", "beta"], [], [], [])
    assert result.invalid == {}
    assert sorted(state.instances) == ["alpha", "beta"]
    assert mirrored(sqlite_engine) == {"alpha": True, "beta": True}


def test_nothing_changed_is_unchanged_and_keeps_the_objects(etc, state):
    write_instance(etc, "alpha")
    state.reload()
    before = state.instances["alpha"]
    result = state.reload()
    assert lists(result) == ([], [], [], ["alpha"])
    assert state.instances["alpha"] is before


def test_added_changed_removed_unchanged_in_one_reload(etc, state, sqlite_engine):
    write_instance(etc, "alpha", remote="a")
    write_instance(etc, "beta", remote="b")
    write_instance(etc, "gamma", remote="c")
    state.reload()
    write_instance(etc, "beta", remote="b", extra='conflict = "hub"')  # config changed
    write_instance(etc, "gamma", remote="c2")  # the connector's settings changed
    (etc / "instances" / "alpha.toml").unlink()
    write_instance(etc, "delta", remote="d")
    write_instance(etc, "epsilon", remote="e")
    (etc / "instances" / "epsilon.toml").touch()  # touched, not changed
    result = state.reload()
    assert lists(result) == (["delta", "epsilon"], ["beta", "gamma"], ["alpha"], [])
    assert state.instances["beta"].config.conflict == "hub"
    assert state.instances["gamma"].settings.remote == "c2"
    assert "alpha" not in state.instances
    # A removed instance is disabled in the hub, not deleted (its links stay).
    assert mirrored(sqlite_engine)["alpha"] is False
    assert lists(state.reload()) == ([], [], [], ["beta", "delta", "epsilon", "gamma"])


def test_a_changed_secret_is_a_change_and_is_never_logged(etc, state, tmp_path, log_stream):
    secret_file = tmp_path / "key"
    secret_file.write_text("first-secret-value\n")
    settings = f'api_key = {{ file = "{secret_file}" }}'
    write_instance(etc, "alpha", settings=settings)
    state.reload()
    assert lists(state.reload())[3] == ["alpha"]
    secret_file.write_text("second-secret-value\n")  # rotated; the instance file is the same
    result = state.reload()
    assert result.changed == ["alpha"]
    assert state.instances["alpha"].settings.api_key.get_secret_value() == "second-secret-value"
    text = log_stream.getvalue()
    assert "first-secret-value" not in text and "second-secret-value" not in text


def test_a_disabled_instance_stays_and_counts_as_changed(etc, state, sqlite_engine):
    write_instance(etc, "alpha")
    state.reload()
    write_instance(etc, "alpha", extra="enabled = false")
    result = state.reload()
    assert result.changed == ["alpha"]
    assert result.removed == []
    assert state.instances["alpha"].config.enabled is False
    assert mirrored(sqlite_engine) == {"alpha": False}
    write_instance(etc, "alpha", extra="enabled = true")
    assert state.reload().changed == ["alpha"]
    assert mirrored(sqlite_engine) == {"alpha": True}


def test_a_disabled_file_on_the_first_reload_is_added(etc, state):
    write_instance(etc, "alpha", extra="enabled = false")
    assert state.reload().added == ["alpha"]


def test_a_missing_instances_folder_is_no_instances(tmp_path, sqlite_engine):
    state = ConfigState(tmp_path / "nowhere", sqlite_engine, CONNECTORS)
    assert lists(state.reload()) == ([], [], [], [])


# --- broken files -----------------------------------------------------------------------------


def test_a_broken_edit_keeps_the_last_good_config_and_logs_once(
    etc, state, sqlite_engine, log_stream
):
    write_instance(etc, "alpha", remote="a", extra='conflict = "hub"')
    write_instance(etc, "beta", remote="b")
    state.reload()
    good = state.instances["alpha"]
    path = break_file(etc, "alpha")

    result = state.reload()
    assert set(result.invalid) == {"alpha"}
    error = result.invalid["alpha"]
    assert (error.path, error.key) == (str(path), "max_attempts")
    assert lists(result) == ([], [], [], ["beta"])  # beta untouched; alpha in none of them
    assert state.instances["alpha"] is good  # the last good config runs on
    assert mirrored(sqlite_engine) == {"alpha": True, "beta": True}

    rows = config_errors(sqlite_engine)
    assert len(rows) == 1
    row = rows[0]
    assert row["instance"] == "alpha"
    assert row["integration"] == "memory"
    assert row["details"]["file"] == str(path)
    assert row["details"]["key"] == "max_attempts"
    assert row["details"]["reason"] == error.reason
    assert "last good" in row["message"]

    logged = [o for o in lines(log_stream) if o.get("code") == "config-invalid"]
    assert len(logged) == 1
    assert logged[0]["file"] == str(path)
    assert logged[0]["key"] == "max_attempts"
    assert logged[0]["reason"] == error.reason
    assert logged[0]["instance"] == "alpha"

    # The same broken file again: still invalid, still the last good config, logged once.
    again = state.reload()
    assert set(again.invalid) == {"alpha"}
    assert state.instances["alpha"] is good
    assert len(config_errors(sqlite_engine)) == 1
    assert len([o for o in lines(log_stream) if o.get("code") == "config-invalid"]) == 1


def test_a_different_error_in_the_same_file_is_logged_again(etc, state, sqlite_engine):
    write_instance(etc, "alpha")
    state.reload()
    break_file(etc, "alpha")
    state.reload()
    path = etc / "instances" / "alpha.toml"
    path.write_text(path.read_text() + "\nnot toml at all [[[")
    state.reload()
    rows = config_errors(sqlite_engine)
    assert len(rows) == 2
    assert "not valid TOML" in rows[0]["details"]["reason"]


def test_fixing_the_file_reports_unchanged_or_changed(etc, state, sqlite_engine):
    write_instance(etc, "alpha", remote="a")
    state.reload()
    good = state.instances["alpha"]
    break_file(etc, "alpha")
    state.reload()

    write_instance(etc, "alpha", remote="a")  # fixed back to what was running
    result = state.reload()
    assert result.invalid == {}
    assert lists(result) == ([], [], [], ["alpha"])
    assert state.instances["alpha"] is good

    break_file(etc, "alpha")
    assert set(state.reload().invalid) == {"alpha"}
    # Broken again after a fix: a new occurrence, logged again.
    assert len(config_errors(sqlite_engine)) == 2

    write_instance(etc, "alpha", remote="a-new")  # fixed to something new
    result = state.reload()
    assert lists(result) == ([], ["alpha"], [], [])
    assert state.instances["alpha"].settings.remote == "a-new"


def test_a_fixed_file_logs_that_its_instance_is_healthy_again(etc, state, log_stream):
    write_instance(etc, "alpha", remote="a")
    write_instance(etc, "beta", remote="b")
    state.reload()
    path = break_file(etc, "alpha")
    state.reload()
    state.reload()  # still broken: nothing healthy to say
    assert lines(log_stream, "instance_file_healthy") == []

    write_instance(etc, "alpha", remote="a2")
    state.reload()
    (healthy,) = lines(log_stream, "instance_file_healthy")
    assert (healthy["instance"], healthy["file"]) == ("alpha", str(path))
    assert healthy["changed"] is True

    state.reload()  # once: a healthy file that stays healthy says nothing more
    assert len(lines(log_stream, "instance_file_healthy")) == 1


def test_a_broken_file_that_is_deleted_is_not_called_healthy(etc, state, log_stream):
    write_instance(etc, "alpha")
    state.reload()
    path = break_file(etc, "alpha")
    state.reload()
    path.unlink()
    assert state.reload().removed == ["alpha"]
    assert lines(log_stream, "instance_file_healthy") == []


def test_a_file_that_never_loaded_is_invalid_and_not_an_instance(
    etc, state, sqlite_engine, log_stream
):
    write_instance(etc, "beta")
    path = etc / "instances" / "alpha.toml"
    path.write_text('type = "memory"\ndirection = "sideways"\n')
    result = state.reload()
    assert set(result.invalid) == {"alpha"}
    assert result.added == ["beta"]
    assert "alpha" not in state.instances
    assert mirrored(sqlite_engine) == {"beta": True}
    rows = config_errors(sqlite_engine)
    assert [(r["instance"], r["details"]["key"]) for r in rows] == [("alpha", "direction")]
    assert rows[0]["integration"] == "memory"  # the type the file declares
    assert "not running" in rows[0]["message"]

    state.reload()
    assert len(config_errors(sqlite_engine)) == 1
    # Fixed: now it is added.
    write_instance(etc, "alpha")
    result = state.reload()
    assert result.added == ["alpha"]
    assert result.invalid == {}


def test_a_broken_file_that_is_deleted_is_removed(etc, state):
    write_instance(etc, "alpha")
    state.reload()
    break_file(etc, "alpha").unlink()
    result = state.reload()
    assert result.removed == ["alpha"]
    assert state.instances == {}


def test_a_broken_file_keeps_its_row_as_last_mirrored(etc, state, sqlite_engine):
    # Never loaded in this process, but mirrored by an earlier one (or the CLI): kept.
    write_instance(etc, "alpha")
    ConfigState(etc, sqlite_engine, CONNECTORS).reload()
    break_file(etc, "alpha")
    result = state.reload()
    assert set(result.invalid) == {"alpha"}
    assert mirrored(sqlite_engine) == {"alpha": True}


# --- the watcher ------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Calls:
    """Counts on_change calls and signals each one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
def watching(etc) -> Iterator[Callable[..., tuple[ConfigWatcher, Calls, threading.Event]]]:
    started: list[tuple[ConfigWatcher, threading.Event]] = []

    def start(on_change: Callable[[], None] | None = None, debounce_ms: int = 50):
        calls = Calls()
        stop = threading.Event()
        watcher = ConfigWatcher(etc, on_change or calls, debounce_ms=debounce_ms, stop=stop)
        watcher.start()
        started.append((watcher, stop))
        assert watcher.ready.wait(DEADLINE), "the watcher never started"
        return watcher, calls, stop

    yield start
    for watcher, stop in started:
        stop.set()
        watcher.join(DEADLINE)


def edit_until_seen(path: Path, calls: Calls, text: str) -> None:
    """Write ``path`` and wait for the callback; rewrite now and then, in case the first
    write raced the watch being set up."""
    end = time.monotonic() + DEADLINE
    while not calls.event.is_set():
        path.write_text(text)
        calls.event.wait(1.0)
        if time.monotonic() > end:
            pytest.fail(f"no callback after editing {path}")


def test_the_watcher_calls_back_after_an_edit_and_stops(etc, watching):
    watcher, calls, stop = watching()
    assert watcher.daemon
    edit_until_seen(etc / "instances" / "alpha.toml", calls, 'type = "memory"\n')
    assert calls.count >= 1
    stop.set()
    watcher.join(DEADLINE)
    assert not watcher.is_alive()


def test_a_zero_debounce_calls_back_at_once(etc, watching):
    watcher, calls, _ = watching(debounce_ms=0)
    edit_until_seen(etc / "instances" / "alpha.toml", calls, 'type = "memory"\n')
    assert watcher.is_alive()


def test_a_burst_of_edits_is_one_callback_after_it_settles(etc, watching):
    watcher, calls, _ = watching(debounce_ms=300)
    path = etc / "instances" / "alpha.toml"
    edit_until_seen(path, calls, "# warm up\n")
    wait_for(lambda: not watcher._pending, "the warm-up to settle")
    calls.event.clear()
    before = calls.count
    for index in range(10):  # a burst well inside the debounce time
        path.write_text(f"# edit {index}\n")
    assert calls.event.wait(DEADLINE)
    wait_for(lambda: not watcher._pending, "the burst to settle")
    assert calls.count == before + 1


def test_editor_temporaries_do_not_count(etc):
    from watchfiles import Change

    instances = etc / "instances"
    assert is_config_change(Change.modified, str(instances / "alpha.toml"))
    assert is_config_change(Change.added, str(etc / "contactsync.toml"))
    assert is_config_change(Change.deleted, str(instances))
    for name in (
        ".alpha.toml.swp",
        ".#alpha.toml",
        "#alpha.toml#",
        "alpha.toml~",
        "4913",
        "alpha.toml.tmp",
        "notes.txt",
        "alpha.toml___jb_tmp___",
    ):
        assert not is_config_change(Change.modified, str(instances / name)), name


def test_the_watcher_survives_a_failing_callback(etc, watching):
    calls = Calls()
    failures = []

    def on_change() -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("reload blew up")
        calls()

    watcher, _, _ = watching(on_change=on_change)
    path = etc / "instances" / "alpha.toml"
    end = time.monotonic() + DEADLINE
    while not calls.event.is_set():
        path.write_text(f"# {time.monotonic()}\n")
        calls.event.wait(0.5)
        assert time.monotonic() < end, "the watcher died with its callback"
    assert failures and watcher.is_alive()


def test_the_watcher_follows_a_replaced_folder(etc, tmp_path, watching):
    watcher, calls, _ = watching()
    new = tmp_path / "etc.new"
    (new / "instances").mkdir(parents=True)
    (new / "instances" / "alpha.toml").write_text('type = "memory"\n')
    os.rename(etc, tmp_path / "etc.old")
    os.rename(new, etc)
    assert calls.event.wait(DEADLINE), "no callback after the folder was replaced"
    # And the new folder is watched.
    calls.event.clear()
    edit_until_seen(etc / "instances" / "beta.toml", calls, 'type = "memory"\n')
    assert watcher.is_alive()


def test_the_watcher_waits_for_a_missing_folder(tmp_path, watching, etc):
    etc.rename(tmp_path / "gone")
    watcher, calls, stop = watching()
    assert not calls.event.is_set()  # a missing folder reloads nothing
    (tmp_path / "gone").rename(etc)
    assert calls.event.wait(DEADLINE), "no callback when the folder came back"
    assert watcher.is_alive()
    stop.set()
    watcher.join(DEADLINE)
    assert not watcher.is_alive()


def test_reload_from_the_watcher_end_to_end(etc, state, watching):
    write_instance(etc, "alpha", remote="a")
    state.reload()
    results: list[ReloadResult] = []
    done = threading.Event()

    def on_change() -> None:
        results.append(state.reload())
        if results[-1].changed:
            done.set()

    watching(on_change=on_change)
    path = etc / "instances" / "alpha.toml"
    text = path.read_text().replace('remote = "a"', 'remote = "b"')
    end = time.monotonic() + DEADLINE
    while not done.is_set():
        path.write_text(text)
        done.wait(1.0)
        assert time.monotonic() < end, f"no reload saw the change: {results}"
    assert state.instances["alpha"].settings.remote == "b"
