"""Watching ``etc/`` for config edits: a thread that calls back once an edit has settled.

An editor saves in bursts (a swap file, a backup, a rename), and configuration management
rewrites many files at once: the callback runs once the ``*.toml`` files under ``etc/`` have
been quiet for the debounce time. Swap, backup and lock files are ignored. The folder may be
replaced whole (a deploy that swaps a symlink or renames a new folder into place): the watcher
notices that the folder it watches is no longer ``etc/`` and starts over on the new one; while
``etc/`` is missing nothing is reloaded, so the instances run on as configured. No error ends
the thread; it logs, waits a little, and watches again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from daemon.config.instances import INSTANCE_DIR
from daemon.foundation.log import get_logger

log = get_logger("contactsync.watcher")

_STEP_MS = 50
RETRY_SECONDS = 2.0
"""How long to wait before watching again after an error or while ``etc/`` is missing."""

# Names editors and tools write beside the real file: vim's .x.toml.swp and 4913, emacs's
# .#x.toml lock and #x.toml# autosave, x.toml~ backups, sed -i and JetBrains temp files.
_IGNORED_PREFIXES = (".", "#")
_IGNORED_SUFFIXES = ("~", "#", ".swp", ".swx", ".tmp", ".bak", "___")

_Identity = tuple[tuple[int, int] | None, tuple[int, int] | None]


def is_config_change(_change: watchfiles.Change, path: str) -> bool:
    """Whether a change to ``path`` may change the config: a ``*.toml`` file that is not an
    editor's temporary, the instances folder itself (renamed or replaced), or Kubernetes'
    ``..data`` symlink swap."""
    name = os.path.basename(path)
    if name == INSTANCE_DIR or name == "..data":
        return True
    if name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES):
        return False
    return name.endswith(".toml")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()  # follows a symlink: a swapped link is a new folder
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


class ConfigWatcher(threading.Thread):
    """A daemon thread that calls ``on_change()`` after files under ``etc`` changed and
    stayed quiet for ``debounce_ms``; it ends when ``stop`` is set.

    ``ready`` is set once the first watch is in place (tests wait for it).
    """

    def __init__(
        self,
        etc: Path,
        on_change: Callable[[], None],
        *,
        debounce_ms: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="contactsync-config-watcher", daemon=True)
        self.etc = Path(etc)
        self.on_change = on_change
        self.debounce_ms = max(0, int(debounce_ms))
        self.stop = stop
        self.ready = threading.Event()
        # How often the watch returns while nothing happens: the settle check and the
        # folder-replaced check run at this pace.
        self._tick_ms = min(max(self.debounce_ms // 4, _STEP_MS), 1000)
        self._force_polling: bool | None = None
        self._pending = False  # a change seen, not yet settled and called back
        self._last_change = 0.0
        # watchfiles logs every batch at INFO; the callback's own logs say what matters.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._watch()
            except Exception as exc:  # never die: log, wait, watch again
                log.warning(
                    "config_watch_failed",
                    folder=str(self.etc),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                    # Out of inotify watches, or a file system without them: poll instead.
                    self._force_polling = True
                self.ready.set()
                self.stop.wait(RETRY_SECONDS)

    def _folders(self) -> _Identity:
        return (_identity(self.etc), _identity(self.etc / INSTANCE_DIR))

    def _watch(self) -> None:
        """Watch until ``stop`` is set, or until the folder was replaced (then return, so
        :meth:`run` watches the new one). While the folder is missing nothing is reloaded:
        the instances keep running as configured until it is back."""
        if not self.etc.is_dir():
            self.ready.set()
            log.warning("config_folder_missing", folder=str(self.etc))
            while not self.etc.is_dir():
                if self.stop.wait(RETRY_SECONDS):
                    return
            self._changed(time.monotonic())  # back, maybe different: reload once it settles
        folders = self._folders()
        for changes in watchfiles.watch(
            self.etc,
            watch_filter=is_config_change,
            # watchfiles groups a burst for at most ``debounce`` ms; it checks for changes and
            # for ``stop`` every ``step`` ms, idle too, so the step is never tiny.
            debounce=max(self.debounce_ms, _STEP_MS),
            step=_STEP_MS,
            stop_event=self.stop,
            rust_timeout=self._tick_ms,
            yield_on_timeout=True,
            raise_interrupt=False,
            force_polling=self._force_polling,
            ignore_permission_denied=True,
        ):
            self.ready.set()
            now = time.monotonic()
            if changes:
                self._changed(now)
            if self._folders() != folders:
                # Replaced (or its instances folder was): this watch follows the old one.
                log.info("config_folder_replaced", folder=str(self.etc))
                self._changed(now)
                return
            if self._pending and (now - self._last_change) * 1000 >= self.debounce_ms:
                self._pending = False
                self._fire()
            if self.stop.is_set():
                return

    def _changed(self, now: float) -> None:
        self._pending, self._last_change = True, now

    def _fire(self) -> None:
        if self.stop.is_set():
            return
        try:
            self.on_change()
        except Exception:  # the callback's failure is logged, the watch goes on
            log.exception("config_reload_failed", folder=str(self.etc))
