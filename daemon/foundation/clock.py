"""The one clock that drives waits: retries, rate limiters, token expiry and simulators.

Everything that sleeps or reads the time takes a :class:`Clock`, so tests hand it a
:class:`FakeClock` whose ``sleep`` moves time forward instantly: a 60-second ``Retry-After`` or a
10-second rate-limit window costs a test nothing, and no test asserts on wall time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


class Cancelled(Exception):
    """A wait or a request loop was cut short because the daemon is stopping."""


@runtime_checkable
class Clock(Protocol):
    """What a clock offers: wall time, a monotonic reading, and a (cancellable) sleep."""

    def now(self) -> datetime:
        """The current time, aware and in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        """Wait ``seconds``, returning early once ``cancel`` is set (the caller checks it)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, aware and in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        """Sleep; an ``Event.wait`` when cancellable, so SIGTERM need not wait the delay out."""
        if seconds <= 0:
            return
        if cancel is None:
            time.sleep(seconds)
        else:
            cancel.wait(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` advances time at once and is recorded in ``sleeps``.

    It is shared safely between threads; one thread's sleep moves time for all of them, which
    is what a rate limiter shared by several workers sees in real life too.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
        if self._start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._offset = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        """The start time plus every second slept or advanced so far."""
        with self._lock:
            return self._start + timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        """Seconds slept or advanced since the clock was made."""
        with self._lock:
            return self._offset

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        """Advance time by ``seconds`` without waiting; nothing moves once ``cancel`` is set."""
        if cancel is not None and cancel.is_set():
            return
        with self._lock:
            self.sleeps.append(seconds)
            self._offset += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward, as if something else had taken ``seconds``."""
        with self._lock:
            self._offset += max(0.0, seconds)

    @property
    def slept(self) -> float:
        """The total of every ``sleep``."""
        with self._lock:
            return sum(max(0.0, s) for s in self.sleeps)


SYSTEM_CLOCK: Clock = SystemClock()
"""The default clock of every component that takes one."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled: the daemon is stopping")
