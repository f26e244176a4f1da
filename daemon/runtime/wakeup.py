"""Waking the pusher: hub writes by any process reach the platform within seconds.

Every hub write queues outbox rows in its own transaction (:mod:`daemon.hub.outbox`), whichever
process made it: the daemon's own pulls, ``contactsync contacts edit``, an import. The waker
notices and tells the scheduler which connections have work, so their pushes run now rather
than on their schedule.

- On PostgreSQL, ``fan_out`` sends ``pg_notify('contactsync_outbox', connection)`` at commit,
  and a dedicated connection here LISTENs for it. After a lost connection it reconnects, and
  wakes every connection with pending rows, since a notification sent meanwhile is gone.
- On SQLite there is no such thing, so the outbox is polled: ``PRAGMA data_version`` (free)
  says whether another connection committed anything, and only then the newest
  ``updated_at`` of rows freshly queued (``attempts = 0``) is read per connection. A push
  deleting rows, or a failed attempt, lowers or leaves those untouched, so the daemon's own
  pushes never wake it again.

Notifications are debounced: a burst of writes (an import of thousands of rows) becomes one
batch, once the writes have been quiet for ``wake_debounce_ms``, or at most
:data:`LONGEST_BURST` seconds into a burst that does not stop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine

from daemon.foundation.log import get_logger
from daemon.hub.outbox import NOTIFY_CHANNEL, PENDING

log = get_logger("contactsync.wakeup")

LONGEST_BURST = 2.0
"""A continuous burst of writes still wakes the pusher this many seconds after it began."""
PG_IDLE_CHECK = 30.0
"""Seconds of silence after which the LISTEN connection is checked (a silently dead TCP
connection would otherwise deliver nothing, forever)."""
RECONNECT_MAX = 30.0

_FRESH_SQL = (
    "SELECT connection, max(updated_at) FROM outbox "
    f"WHERE state = '{PENDING}' AND attempts = 0 GROUP BY connection"
)
_PENDING_SQL = f"SELECT DISTINCT connection FROM outbox WHERE state = '{PENDING}'"


class Debouncer:
    """Collects connection names and says when to hand them over as one batch."""

    def __init__(self, quiet: float, longest: float = LONGEST_BURST) -> None:
        self.quiet = quiet
        self.longest = max(longest, quiet)
        self._names: set[str] = set()
        self._first: float | None = None
        self._last: float | None = None

    def add(self, names: Iterable[str], now: float) -> None:
        """Record that ``names`` got work at ``now`` (a monotonic reading)."""
        names = set(names)
        if not names:
            return
        self._names |= names
        if self._first is None:
            self._first = now
        self._last = now

    def wait(self, now: float, default: float) -> float:
        """Seconds until the batch is due, at most ``default``."""
        if self._first is None or self._last is None:
            return default
        due = min(self._last + self.quiet, self._first + self.longest)
        return max(0.0, min(default, due - now))

    def take(self, now: float) -> set[str] | None:
        """The batch if it is due (and forget it), else ``None``."""
        if self._first is None or self._last is None:
            return None
        if now - self._last < self.quiet and now - self._first < self.longest:
            return None
        names, self._names = self._names, set()
        self._first = self._last = None
        return names


class OutboxWaker(threading.Thread):
    """A daemon thread that calls ``on_wake(connections)`` when other writers (or this
    process) queued outbox rows for those connections. Stops when ``stop`` is set."""

    def __init__(
        self,
        engine: Engine,
        on_wake: Callable[[set[str]], None],
        *,
        debounce_ms: int,
        poll_interval_ms: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="outbox-waker", daemon=True)
        self.engine = engine
        self.on_wake = on_wake
        self.poll_interval = poll_interval_ms / 1000
        self.stop = stop
        self.debouncer = Debouncer(debounce_ms / 1000)

    def run(self) -> None:
        """Listen (PostgreSQL) or poll (SQLite) until stopped."""
        try:
            if self.engine.dialect.name == "postgresql":
                self._listen()
            else:
                self._poll()
        except Exception:  # never silently: a dead waker means pushes only on schedule
            log.exception("outbox_waker_crashed")

    def _fire(self) -> None:
        names = self.debouncer.take(time.monotonic())
        if names:
            try:
                self.on_wake(names)
            except Exception:
                log.exception("outbox_wake_failed")

    # --- SQLite -------------------------------------------------------------------------------

    def _poll(self) -> None:
        raw: Any = None
        version: Any = None
        seen: dict[str, Any] | None = None
        delay = self.poll_interval
        while not self.stop.is_set():
            try:
                if raw is None:
                    # A connection of our own, kept: data_version compares commits made by
                    # every *other* connection since this one last asked.
                    raw = self.engine.raw_connection()
                    version = None
                cursor = raw.cursor()
                try:
                    current = cursor.execute("PRAGMA data_version").fetchone()[0]
                    if current != version:
                        version = current
                        fresh = dict(cursor.execute(_FRESH_SQL).fetchall())
                        if seen is not None:
                            self.debouncer.add(_newer(fresh, seen), time.monotonic())
                        seen = fresh
                finally:
                    cursor.close()
                delay = self.poll_interval
            except Exception as exc:  # a locked or vanished file: try again, more slowly
                log.warning("outbox_poll_failed", error=f"{type(exc).__name__}: {exc}")
                raw = _close(raw)
                delay = min(RECONNECT_MAX, delay * 2)
            self._fire()
            self.stop.wait(self.debouncer.wait(time.monotonic(), delay))
        _close(raw)

    # --- PostgreSQL ---------------------------------------------------------------------------

    def _listen(self) -> None:
        import psycopg

        delay = 1.0
        lost = False
        while not self.stop.is_set():
            conn: Any = None
            try:
                args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
                kwargs.setdefault("connect_timeout", 10)
                conn = psycopg.connect(*args, autocommit=True, **kwargs)
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                if lost:
                    # Notifications sent while we were away are gone: wake whatever waits.
                    pending = {row[0] for row in conn.execute(_PENDING_SQL)}
                    self.debouncer.add(pending, time.monotonic())
                    log.info("outbox_listen_restored", connections=len(pending))
                delay, lost = 1.0, False
                self._receive(conn)
            except psycopg.Error as exc:
                lost = True
                log.warning(
                    "outbox_listen_lost",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_seconds=delay,
                )
                self.stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                if conn is not None:
                    _close(conn)

    def _receive(self, conn: Any) -> None:
        """Hand notifications to the debouncer until stopped; raises on a lost connection."""
        quiet_since = time.monotonic()
        while not self.stop.is_set():
            # Short waits, so that a stop is noticed within half a second.
            timeout = self.debouncer.wait(time.monotonic(), min(0.5, self.poll_interval))
            for notify in conn.notifies(timeout=timeout):
                self.debouncer.add([notify.payload], time.monotonic())
                quiet_since = time.monotonic()
            self._fire()
            if time.monotonic() - quiet_since > PG_IDLE_CHECK:
                conn.execute("SELECT 1")
                quiet_since = time.monotonic()


def _newer(fresh: dict[str, Any], seen: dict[str, Any]) -> set[str]:
    """Connections whose newest freshly queued row is newer than last time."""
    return {
        name
        for name, stamp in fresh.items()
        if stamp is not None and (seen.get(name) is None or stamp > seen[name])
    }


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
    return None
