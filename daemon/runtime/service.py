"""The daemon: ``contactsync run``. Its main loop, its signals, and how it stops.

It wires the parts together (config state, scheduler, outbox waker, config watcher) and then
does little itself. Signals are handled in the gunicorn style: a handler only writes a byte to
a self-pipe, and the main loop, woken by it, acts. The main loop is also where the systemd
watchdog is pinged, so a wedged loop stops the pings and systemd restarts the daemon.

- ``SIGHUP`` reloads ``etc/instances`` (``RELOADING=1``, then ``READY=1``); the file watcher
  reloads the same way, without telling systemd.
- With ``[http] enabled``, the HTTP API is served on a thread (:mod:`daemon.api.server`); it
  starts before the daemon says READY and drains with the cycles on a stop.
- ``SIGTERM`` / ``SIGINT`` stop: ``STOPPING=1``, no new cycle starts, every running cycle's
  cancel event is set (the engine checks it between pages and requests: the page in flight
  commits or rolls back, and the run ends ``interrupted``), and the daemon waits for them up
  to ``shutdown_grace_seconds``. A second signal stops the wait.

A cycle's exception, a plugin's bug or a database hiccup never ends the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pluggy
from sqlalchemy import Engine

from daemon import web
from daemon.api.app import app_for
from daemon.api.server import ApiServer, ApiServerError
from daemon.config.instances import Instance
from daemon.config.settings import Settings, load_settings
from daemon.engine.cycle import SyncEngine
from daemon.engine.metrics import Metrics
from daemon.engine.registry import (
    PluginError,
    Registry,
    get_plugin_manager,
    notify,
    register_plugin,
)
from daemon.foundation import log as logging_setup
from daemon.foundation.dictionary import Code
from daemon.hub.database import make_engine
from daemon.hub.store import utcnow
from daemon.hub.synclog import prune_sync_log
from daemon.runtime.intake import Intake
from daemon.runtime.reload import ConfigState, ReloadResult
from daemon.runtime.scheduler import Scheduler, has_deletion_scan, job_id
from daemon.runtime.systemd import Notifier, watchdog_interval
from daemon.runtime.wakeup import OutboxWaker
from daemon.runtime.watcher import ConfigWatcher

log = logging_setup.get_logger("contactsync.daemon")

STATUS_EVERY = 5.0
"""Seconds between STATUS updates to systemd (when the text changed)."""
PRUNE_EVERY = timedelta(days=1)
PRUNE_FIRST = timedelta(minutes=1)

_HUP, _TERM, _CONFIG = b"H", b"T", b"C"
_SIGNAL_BYTES = {signal.SIGHUP: _HUP, signal.SIGTERM: _TERM, signal.SIGINT: _TERM}


class Service:
    """One daemon process: call :meth:`run` from the main thread; it returns the exit code.

    ``pm`` is the plugin manager to use (tests inject one); by default the installed plugins
    are loaded, less those blocked.
    """

    def __init__(
        self,
        etc: Path,
        settings: Settings,
        *,
        pm: pluggy.PluginManager | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.etc = Path(etc)
        self.settings = settings
        self.pm = pm
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()  # ends the waker and the watcher
        self.stopping = threading.Event()  # no new cycle starts once set
        self.engine: Engine | None = None
        self.config: ConfigState | None = None
        self.sync: SyncEngine | None = None
        self.scheduler: Scheduler | None = None
        self.waker: OutboxWaker | None = None
        self.watcher: ConfigWatcher | None = None
        self.api: ApiServer | None = None
        self.metrics: Metrics | None = None
        self.intake: Intake | None = None
        self._cycles: dict[str, threading.Event] = {}  # job id -> its cancel event
        self._cycles_changed = threading.Condition()
        self._pipe_r, self._pipe_w = os.pipe()
        for fd in (self._pipe_r, self._pipe_w):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self._last_status = ""
        self._file_settings: dict[str, Any] | None = None  # as read at start, for SIGHUP

    # --- the whole life -------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until a stop signal, drain, and return the exit code."""
        previous = self._install_signals()
        reason, code = "signal", 0
        try:
            try:
                self._start()
            except PluginError as exc:
                log.error("daemon_not_started", code=str(PluginError.code), reason=str(exc))
                return 2
            except ApiServerError as exc:
                log.error("daemon_not_started", code=str(Code.CONFIG_INVALID), reason=str(exc))
                return 2
            self._loop()
        except Exception:
            log.exception("daemon_crashed", code=str(Code.INTERNAL_ERROR))
            reason, code = "error", 1
        finally:
            self._stop(reason)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._pipe_r)
            os.close(self._pipe_w)
        return code

    def _start(self) -> None:
        settings = self.settings
        # The file as it is now; self.settings may carry a --database-url override.
        with contextlib.suppress(Exception):
            self._file_settings = load_settings(self.etc).model_dump()
        self.engine = make_engine(settings.database_url)
        pm = self.pm or get_plugin_manager()
        self.pm = pm
        registry = Registry.from_plugin_manager(pm)
        self.sync = SyncEngine(
            self.engine, registry.transforms, region=settings.hub.default_region, pm=pm
        )
        self.config = ConfigState(self.etc, self.engine, registry.connectors)
        # Counting starts before the first cycle can run; the API serves the counts.
        self.metrics = Metrics(self.engine, self.config.loaded)
        register_plugin(pm, self.metrics.hooks)
        self.metrics.start()
        notify(pm, "startup", settings=settings)
        self.scheduler = Scheduler(self.engine, settings.daemon, self._run_cycle)
        self.scheduler.start()
        # Webhooks and change streams: their hints become targeted pulls (runtime.intake).
        self.intake = Intake(
            self.engine,
            lambda: self.config.instances if self.config is not None else {},
            self._run_hinted,
            has_deletion_scan=has_deletion_scan,
            on_hints=self.scheduler.hints_flow,
        )
        self.intake.start()
        self._apply(self.config.reload(), previous={})
        self.scheduler.add_periodic("prune-sync-log", self._prune, PRUNE_EVERY, PRUNE_FIRST)
        self.waker = OutboxWaker(
            self.engine,
            self._wake,
            debounce_ms=settings.daemon.wake_debounce_ms,
            poll_interval_ms=settings.daemon.poll_interval_ms,
            stop=self.stop_event,
        )
        self.waker.start()
        self.watcher = ConfigWatcher(
            self.etc,
            lambda: self._poke(_CONFIG),
            debounce_ms=settings.daemon.reload_debounce_ms,
            stop=self.stop_event,
        )
        self.watcher.start()
        if settings.http.enabled:
            # Last, so a port in use stops the start before READY (systemd then says so).
            self.api = ApiServer(
                app_for(
                    self.engine,
                    settings,
                    instances=self.config.loaded,
                    cycles=self.scheduler,
                    metrics=self.metrics,
                    sites=(web.mount,),  # the staff's pages
                    intake=self.intake,
                ),
                bind=settings.http.bind,
                port=settings.http.port,
                grace_seconds=settings.daemon.shutdown_grace_seconds,
            )
            self.api.start()
        status = self._status_text()
        self.notifier.ready(status)
        self._last_status = status
        log.info(
            "daemon_started",
            pid=os.getpid(),
            etc=str(self.etc),
            database=self.engine.dialect.name,
            instances=len(self.scheduler.scheduled()),
            workers=settings.daemon.workers,
            watchdog_seconds=watchdog_interval(),
        )

    def _loop(self) -> None:
        """Wait for signals and config changes; ping the watchdog; report status."""
        ping_every = watchdog_interval()
        next_ping = time.monotonic()
        next_status = time.monotonic() + STATUS_EVERY
        while True:
            now = time.monotonic()
            if ping_every is not None and now >= next_ping:
                if self._healthy():
                    self.notifier.watchdog()
                next_ping = now + ping_every
            if now >= next_status:
                self._send_status()
                next_status = now + STATUS_EVERY
            deadline = min(next_status, next_ping) if ping_every is not None else next_status
            events = self._wait(max(0.0, deadline - time.monotonic()))
            if _TERM in events:
                log.info("daemon_stopping", reason="signal")
                return
            if _HUP in events or _CONFIG in events:
                self._reload(signalled=_HUP in events)

    def _stop(self, reason: str) -> None:
        """Stop triggering, cancel and await running cycles within the grace time."""
        self.stopping.set()
        self.notifier.stopping()
        self.stop_event.set()
        if self.api is not None:
            # Stop accepting now; the requests in flight finish while the cycles drain.
            self.api.request_stop()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self.intake is not None:
            # Queued hints are not kept: the next daemon's scheduled pull reads those changes.
            self.intake.shutdown(timeout=0)
        with self._cycles_changed:
            running = sorted(self._cycles)
            for cancel in self._cycles.values():
                cancel.set()
        if running:
            log.info("cycles_cancelled", jobs=running)
        grace = self.settings.daemon.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        while True:
            with self._cycles_changed:
                left = sorted(self._cycles)
                if not left:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cycles_changed.wait(min(remaining, 0.1))
            if _TERM in self._wait(0):
                log.warning("shutdown_hurried", jobs=left)
                break
        if self.api is not None:
            self.api.join(deadline - time.monotonic())
        if self.pm is not None:
            notify(self.pm, "shutdown", reason=reason)
        if self.metrics is not None:
            self.metrics.stop()
            if self.pm is not None and self.pm.is_registered(self.metrics.hooks):
                self.pm.unregister(self.metrics.hooks)
        if left:
            # A cycle stuck in a call that ignores cancellation: its transaction is rolled
            # back by the database when the process goes, its lease is taken over by the
            # next daemon on this host at once (the owner's pid is dead).
            log.warning("shutdown_grace_expired", jobs=left, grace_seconds=grace)
        log.info("daemon_stopped", reason=reason, interrupted=running)
        self.notifier.close()
        if left:
            _flush()
            os._exit(0)  # worker threads are not daemonic; exit without joining them
        for thread in (self.waker, self.watcher):
            if thread is not None and thread.is_alive():
                thread.join(timeout=2)
        if self.engine is not None:
            self.engine.dispose()

    # --- cycles ---------------------------------------------------------------------------

    def _run_cycle(self, name: str, direction: str) -> str | None:
        """One scheduled cycle, on a worker thread; returns its outcome."""
        if self.stopping.is_set() or self.config is None or self.sync is None:
            return None
        instance = self.config.instances.get(name)
        if instance is None or not instance.config.enabled:
            return None
        key = job_id(name, direction)
        cancel = threading.Event()
        with self._cycles_changed:
            self._cycles[key] = cancel
        if self.stopping.is_set():  # the stop began between the check and the register
            cancel.set()
        try:
            return self.sync.run(instance, direction, cancel=cancel).outcome
        except Exception:  # the engine's own bookkeeping failed (the database is down…)
            log.exception(
                "cycle_crashed", instance=name, direction=direction, code=str(Code.INTERNAL_ERROR)
            )
            return "failed"
        finally:
            with self._cycles_changed:
                self._cycles.pop(key, None)
                self._cycles_changed.notify_all()

    def _run_hinted(self, instance: Instance, direction: str, remote_ids: list[str] | None) -> str:
        """A cycle the intake asks for (a targeted pull, or the pull or deletion scan a hint
        calls for), on the intake's thread; cancelled with the others on a stop."""
        if self.stopping.is_set() or self.sync is None:
            return "interrupted"
        key = f"{instance.name}:hinted-{direction}"
        cancel = threading.Event()
        with self._cycles_changed:
            self._cycles[key] = cancel
        try:
            return self.sync.run(instance, direction, cancel=cancel, remote_ids=remote_ids).outcome
        except Exception:
            log.exception("cycle_crashed", instance=instance.name, code=str(Code.INTERNAL_ERROR))
            return "failed"
        finally:
            with self._cycles_changed:
                self._cycles.pop(key, None)
                self._cycles_changed.notify_all()

    def _cancel(self, name: str) -> None:
        """Cancel the running cycles of instance ``name`` (disabled or removed)."""
        with self._cycles_changed:
            for key, cancel in self._cycles.items():
                if key.rpartition(":")[0] == name:
                    cancel.set()

    def _wake(self, connections: set[str]) -> None:
        if self.scheduler is not None and not self.stopping.is_set():
            woken = self.scheduler.wake(connections)
            if woken:
                log.debug("push_woken", jobs=woken)

    def _prune(self) -> None:
        if self.engine is None:
            return
        days = self.settings.log.retention_days
        try:
            prune_sync_log(self.engine, timedelta(days=days))
        except Exception:
            log.exception("sync_log_prune_failed", code=str(Code.INTERNAL_ERROR))

    # --- configuration --------------------------------------------------------------------

    def _reload(self, *, signalled: bool) -> None:
        """Re-read the instance files and apply the differences; the other instances are
        untouched. ``signalled``: a SIGHUP, which systemd waits on."""
        if signalled:
            self.notifier.reloading()
            self._check_settings()
        assert self.config is not None
        previous = dict(self.config.instances)
        try:
            result = self.config.reload()
        except Exception:  # the hub is unreachable: keep running as configured
            log.exception("config_reload_failed", code=str(Code.INTERNAL_ERROR))
        else:
            self._apply(result, previous)
        status = self._status_text()
        if signalled:
            self.notifier.ready(status)
        else:
            self.notifier.status(status)
        self._last_status = status

    def _apply(self, result: ReloadResult, previous: dict[str, Instance]) -> None:
        assert self.config is not None and self.scheduler is not None and self.pm is not None
        current = self.config.instances
        for name in (*result.added, *result.changed):
            instance = current[name]
            try:
                self.scheduler.schedule(instance)
            except Exception:  # one instance's trouble leaves the others scheduled
                log.exception("schedule_failed", instance=name, code=str(Code.INTERNAL_ERROR))
                continue
            if not instance.config.enabled:
                self._cancel(name)
            notify(
                self.pm,
                "instance_configured",
                instance=name,
                connector_type=instance.config.type,
                new=name in result.added,
            )
        if self.intake is not None:
            self.intake.follow(current.values())
        for name in result.removed:
            self.scheduler.unschedule(name)
            self._cancel(name)
            old = previous.get(name)
            notify(
                self.pm,
                "instance_removed",
                instance=name,
                connector_type=old.config.type if old is not None else "",
            )

    def _check_settings(self) -> None:
        """Daemon settings are read at start; say so when the file changed since."""
        try:
            fresh = load_settings(self.etc)
        except Exception as exc:
            log.warning("settings_invalid", code=str(Code.CONFIG_INVALID), reason=str(exc))
            return
        if self._file_settings is not None and fresh.model_dump() != self._file_settings:
            log.warning("settings_changed", hint="restart the daemon to apply contactsync.toml")

    # --- signals, status, health ----------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for signum in _SIGNAL_BYTES:
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only a byte: logging, locks or I/O in a signal handler can deadlock the thread
        # it interrupted.
        self._poke(_SIGNAL_BYTES.get(signum, _TERM))

    def _poke(self, byte: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._pipe_w, byte)

    def _wait(self, timeout: float) -> bytes:
        """The bytes poked within ``timeout`` seconds (all of them, not just the first)."""
        try:
            ready, _, _ = select.select([self._pipe_r], [], [], timeout)
        except InterruptedError:
            ready = [self._pipe_r]
        if not ready:
            return b""
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._pipe_r, 64):
                data += chunk
        return data

    def _healthy(self) -> bool:
        """Whether the parts the main loop relies on still run; otherwise the watchdog
        pings stop and systemd restarts the daemon."""
        threads = [t for t in (self.waker, self.watcher) if t is not None]
        return (
            self.scheduler is not None
            and self.scheduler.running
            and (self.intake is None or self.intake.running)
            and all(t.is_alive() for t in threads)
            and (self.api is None or self.api.running)
        )

    def _status_text(self) -> str:
        if self.scheduler is None:
            return "starting"
        with self._cycles_changed:
            running = len(self._cycles)
        count = len(self.scheduler.scheduled())
        parts = [f"{count} instance{'' if count == 1 else 's'}", f"{running} running"]
        upcoming = self.scheduler.next_run()
        if upcoming is not None:
            seconds = max(0, round((upcoming - utcnow()).total_seconds()))
            parts.append(f"next in {seconds}s")
        return ", ".join(parts)

    def _send_status(self) -> None:
        status = self._status_text()
        if status != self._last_status:
            self.notifier.status(status)
            self._last_status = status


def quiet_libraries(level: str) -> None:
    """APScheduler logs every job start at INFO; the engine's own line says more."""
    if level.lower() != "debug":
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
