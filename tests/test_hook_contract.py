"""Every hook call the daemon makes keeps the promise of :mod:`daemon.hookspecs`.

Real engine cycles (pull, push, deletes, export, a conflict, dry runs, failures, an
interruption) and a real daemon start, reload and stop run with a recording plugin. Each call
is caught where the daemon makes it (``notify`` for the observers, pluggy's call monitoring for
the decision hooks), before any plugin sees it, and held to the spec:

- its argument names are exactly the hookspec function's parameters, no more, no fewer;
- each value is what the spec's docs say (``direction`` a :class:`CycleKind`, ``error`` a
  ``str``, ``counts`` a mapping of ``str`` to ``int``, ``outcome`` one of three …);
- a cycle calls ``sync_started``, then ``sync_error`` only if it failed (and is not a dry
  run), then always ``sync_finished``, all with the cycle's report's values.

A plugin naming every argument receives every call, so no call failed on a missing name.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from threading import Event
from typing import Any

import pytest

from daemon import hookspecs
from daemon.config.settings import Settings, load_settings
from daemon.engine import registry
from daemon.engine.cycle import CycleReport, SyncEngine
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.foundation.dictionary import Code
from daemon.hookspecs import CycleKind, hookimpl
from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.mirror import mirror_instances
from daemon.kit.connector import RemoteRecord
from daemon.runtime.service import Service
from tests import memplugin
from tests.daemonkit import wait_until
from tests.enginekit import fresh_remote, write_instance
from tests.exportkit import contact, export_instance, message
from tests.memremote import MemoryConnector

HOOKS = {
    name: tuple(inspect.signature(function).parameters)
    for name, function in vars(hookspecs).items()
    if callable(function) and hasattr(function, f"{hookspecs.PROJECT}_spec")
}
OBSERVERS = (
    "startup",
    "shutdown",
    "instance_configured",
    "instance_removed",
    "sync_started",
    "sync_finished",
    "sync_error",
)
DECISIONS = ("match_record", "resolve_conflict")
OUTCOMES = {"ok", "failed", "interrupted"}  # what sync_finished's doc lists
CODES = {str(code) for code in Code}


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _when(value: Any) -> bool:
    return value is None or (isinstance(value, datetime) and value.utcoffset() is not None)


def _counts(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and type(n) is int for k, n in value.items()
    )


def _candidates(value: Any) -> bool:
    return isinstance(value, Sequence) and all(
        isinstance(c, Mapping) and _text(c.get("id")) for c in value
    )


# What each argument's documentation promises, by name (a name means the same in every hook).
VALUES: dict[str, Callable[[Any], bool]] = {
    "settings": lambda v: isinstance(v, Settings),
    "reason": lambda v: v in {"signal", "error"},
    "instance": _text,
    "connector_type": lambda v: isinstance(v, str),
    "new": lambda v: isinstance(v, bool),
    "run_id": _text,
    "direction": lambda v: isinstance(v, CycleKind),
    "counts": _counts,
    "duration_seconds": lambda v: isinstance(v, float) and v >= 0,
    "outcome": lambda v: v in OUTCOMES,
    "error": _text,
    "code": lambda v: v in CODES,
    "record": lambda v: isinstance(v, RemoteRecord),
    "hub_fields": lambda v: isinstance(v, Mapping),
    "candidates": _candidates,
    "contact_id": _text,
    "field": _text,
    "hub_value": lambda v: True,
    "hub_changed_at": _when,
    "remote_value": lambda v: True,
    "remote_modified_at": _when,
    "policy": _text,
}


def test_every_documented_argument_has_a_value_check():
    """The table above covers the spec: a new hook argument needs its promise written here."""
    wanted = {arg for name in OBSERVERS + DECISIONS for arg in HOOKS[name]}
    assert wanted <= set(VALUES), sorted(wanted - set(VALUES))


def check_call(hook: str, kwargs: Mapping[str, Any]) -> None:
    """One call held to its hookspec: the names, then each value."""
    assert tuple(sorted(kwargs)) == tuple(sorted(HOOKS[hook])), (hook, sorted(kwargs))
    for name, value in kwargs.items():
        assert VALUES[name](value), f"{hook}({name}={value!r}) is not what the spec documents"


# --- catching the calls -----------------------------------------------------------------------


class Calls:
    """The hook calls the daemon made, in order, as ``(hook, kwargs)``."""

    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.made if name == hook]

    def by_run(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        runs: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for name, kwargs in self.made:
            if "run_id" in kwargs:
                runs[kwargs["run_id"]].append((name, kwargs))
        return runs


@pytest.fixture
def calls(monkeypatch) -> Calls:
    """Observer calls caught in ``notify`` as each module that calls it holds it, so a new
    call site is caught too."""
    caught = Calls()
    real = registry.notify

    def recording(pm: Any, hook_name: str, **kwargs: Any) -> None:
        caught.made.append((hook_name, dict(kwargs)))
        real(pm, hook_name, **kwargs)

    holders = [
        module
        for name, module in list(sys.modules.items())
        if (name == "daemon" or name.startswith("daemon."))
        and getattr(module, "notify", None) is real
    ]
    assert any(m.__name__ == "daemon.engine.cycle" for m in holders)
    for module in holders:
        monkeypatch.setattr(module, "notify", recording)
    return caught


def monitor_decisions(pm: Any, caught: Calls) -> None:
    """The decision hooks go through ``pm.hook``: pluggy's monitoring sees their kwargs."""

    def before(hook_name: str, _impls: Any, kwargs: Mapping[str, Any]) -> None:
        if hook_name in DECISIONS:
            caught.made.append((hook_name, dict(kwargs)))

    pm.add_hookcall_monitoring(before, lambda *args: None)


class Recorder:
    """A plugin implementing every lifecycle, observer and decision hook with every argument
    named, as the spec writes them; it decides nothing."""

    def __init__(self) -> None:
        self.got: dict[str, int] = defaultdict(int)

    def _got(self, hook: str) -> None:
        self.got[hook] += 1

    @hookimpl
    def startup(self, settings):
        self._got("startup")

    @hookimpl
    def shutdown(self, reason):
        self._got("shutdown")

    @hookimpl
    def instance_configured(self, instance, connector_type, new):
        self._got("instance_configured")

    @hookimpl
    def instance_removed(self, instance, connector_type):
        self._got("instance_removed")

    @hookimpl
    def sync_started(self, instance, run_id, direction):
        self._got("sync_started")

    @hookimpl
    def sync_finished(self, instance, run_id, direction, counts, duration_seconds, outcome):
        self._got("sync_finished")

    @hookimpl
    def sync_error(self, instance, run_id, direction, error, code):
        self._got("sync_error")

    @hookimpl
    def match_record(self, instance, record, hub_fields, candidates):
        self._got("match_record")

    @hookimpl
    def resolve_conflict(
        self,
        instance,
        contact_id,
        field,
        hub_value,
        hub_changed_at,
        remote_value,
        remote_modified_at,
        policy,
    ):
        self._got("resolve_conflict")


class Unbuildable(MemoryConnector):
    """A connector whose constructor fails, as one with a setting it cannot use might."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("cannot build")


# --- the engine -------------------------------------------------------------------------------


def engine_cycles(db: Any, tmp_path: Any, pm: Any) -> Iterator[tuple[CycleReport, bool]]:
    """Run one of each kind of cycle and of each way a cycle ends; yield each report with
    whether it was a dry run."""
    remote = fresh_remote()
    save_contact(db, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143"})
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="(202) 555-0143")
    rid = remote.add(FirstName="Grace", LastName="Hopper", Phone="2025550181", StudentId="S2")
    mem = write_instance(tmp_path / "etc", "mem", extra='conflict = "platform"')
    (tmp_path / "out").mkdir()
    convo = export_instance(tmp_path / "etc", tmp_path / "out")
    message(db, contact(db, 1), "Hello")
    mirror_instances(db, {mem.name: mem, convo.name: convo})
    sync = SyncEngine(db, Registry.from_plugin_manager(pm).transforms, pm=pm)

    yield sync.run(mem, CycleKind.PULL), False  # match_record: Ada's phone is in the hub
    yield sync.run(mem, CycleKind.PUSH), False
    # Both sides change Grace (created by the first pull) since the last exchange.
    save_contact(db, {"last_name": "HubSide"}, contact_id=get_contact(db, "S2").row["id"])
    remote.edit(rid, LastName="PlatformSide")
    yield sync.run(mem, "pull"), False  # resolve_conflict; a plain string is accepted
    yield sync.run(mem, CycleKind.PUSH, dry_run=True), True
    yield sync.run(mem, CycleKind.DELETES), False
    exported = sync.run(convo, CycleKind.EXPORT)
    assert exported.outcome == "ok" and exported.counts["messages"] == 1, exported
    yield exported, False
    remote.edit(rid, LastName="Again")
    cancel = Event()
    cancel.set()
    yield sync.run(mem, CycleKind.PULL, cancel=cancel), False  # interrupted
    remote.fail_pull = RuntimeError("platform exploded")
    yield sync.run(mem, CycleKind.PULL, dry_run=True), True  # failed, but records nothing
    yield sync.run(mem, CycleKind.PULL), False  # failed: a plugin's crash
    broken = dataclasses.replace(mem, connector_class=Unbuildable)
    yield sync.run(broken, CycleKind.PULL, respect_backoff=False), False  # failed: no connector
    remote.fail_pull = None
    remote.api_key = "s3cret"
    yield sync.run(mem, CycleKind.PULL, respect_backoff=False), False  # failed: a coded error


def test_engine_cycles_call_the_observers_as_the_spec_says(sqlite_engine, tmp_path, calls):
    recorder = Recorder()
    pm = get_plugin_manager(plugins=[recorder])
    monitor_decisions(pm, calls)

    reports = list(engine_cycles(sqlite_engine, tmp_path, pm))

    for hook, kwargs in calls.made:
        check_call(hook, kwargs)
    by_run = calls.by_run()
    assert len(by_run) == len(reports)
    for report, dry_run in reports:
        sequence = by_run[report.run_id]
        names = [name for name, _ in sequence if name not in DECISIONS]
        failed = report.outcome == "failed" and not dry_run
        expected = ["sync_started", "sync_error", "sync_finished"] if failed else None
        assert names == (expected or ["sync_started", "sync_finished"]), (report, names)
        for _name, kwargs in sequence:
            assert kwargs["instance"] == report.instance and kwargs["direction"] == report.direction
        finished = sequence[-1][1]
        assert finished["outcome"] == report.outcome
        assert dict(finished["counts"]) == report.counts
        if failed:
            error = dict(sequence)["sync_error"]
            assert (error["error"], error["code"]) == (report.error, report.code)
    # The scenario reached everything it claims to test, so the checks above were not vacuous.
    assert {report.direction for report, _ in reports} == set(CycleKind)
    assert {report.outcome for report, _ in reports} == OUTCOMES
    assert {report.code for report, _ in reports} >= {"internal-error", "remote-auth-failed"}
    assert {name for name, _ in calls.made} == {
        "sync_started",
        "sync_finished",
        "sync_error",
        *DECISIONS,
    }
    for hook in ("sync_started", "sync_finished", "sync_error"):
        assert recorder.got[hook] == len(calls.of(hook)), hook


def test_the_check_fails_on_a_wrong_name_or_value():
    """The check itself can fail: each kind of break the engine could make is refused."""
    good = {"instance": "mem", "run_id": "r1", "direction": CycleKind.PULL}
    check_call("sync_started", good)
    broken = [
        {"instance": "mem", "run_id": "r1", "kind": CycleKind.PULL},  # renamed
        {"instance": "mem", "run_id": "r1"},  # missing
        {**good, "extra": 1},  # not in the spec
        {**good, "direction": "incoming"},  # the old docs' value
        {**good, "direction": "pull"},  # a plain string, not a CycleKind
    ]
    for kwargs in broken:
        with pytest.raises(AssertionError):
            check_call("sync_started", kwargs)
    error = {"instance": "m", "run_id": "r", "direction": CycleKind.PUSH, "code": "internal-error"}
    with pytest.raises(AssertionError):
        check_call("sync_error", {**error, "error": RuntimeError("an exception, not a str")})
    finished = {"instance": "m", "run_id": "r", "direction": CycleKind.PUSH}
    finished |= {"duration_seconds": 0.1, "outcome": "ok", "counts": {"created": True}}
    with pytest.raises(AssertionError):
        check_call("sync_finished", finished)


# --- the daemon -------------------------------------------------------------------------------


def test_the_daemon_calls_the_lifecycle_hooks_as_the_spec_says(tmp_path, calls):
    """A real daemon (in this process, on its signals) starts with one instance, loses it on
    a SIGHUP reload, and stops on SIGTERM."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "contactsync.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n')
    fresh_remote()
    # Disabled: configured and mirrored, but no cycle runs to slow the test down.
    instance = write_instance(etc, "mem", extra="enabled = false")
    recorder = Recorder()
    pm = get_plugin_manager(entry_points=False, plugins=[memplugin, recorder])
    service = Service(etc, load_settings(etc), pm=pm)

    def drive() -> None:
        try:
            wait_until(lambda: calls.of("instance_configured"), what="instance_configured")
            instance.path.unlink()
            os.kill(os.getpid(), signal.SIGHUP)
            wait_until(lambda: calls.of("instance_removed"), what="instance_removed")
        finally:
            if not service.stopping.is_set():  # the daemon's handlers are still installed
                os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    assert service.run() == 0
    driver.join()

    names = [name for name, _ in calls.made]
    assert names == ["startup", "instance_configured", "instance_removed", "shutdown"]
    for hook, kwargs in calls.made:
        check_call(hook, kwargs)
    assert calls.of("instance_configured")[0] == {
        "instance": "mem",
        "connector_type": "memory",
        "new": True,
    }
    assert calls.of("shutdown")[0]["reason"] == "signal"
    assert dict(recorder.got) == {name: 1 for name in names}


def test_the_hookspecs_module_is_what_the_checks_read():
    """Guards the introspection above: the spec functions are found, with their parameters."""
    assert set(OBSERVERS + DECISIONS) <= set(HOOKS)
    assert HOOKS["sync_finished"][-1] == "outcome"
