"""Who watches the platform requests: a process-wide seam that metrics hook into.

:func:`~daemon.kit.http.request_with_retries` reports each attempt here: ``"response"`` with
the status, ``"failure"`` when no answer came (a connection refused, a timeout), and
``"retry"`` before it waits to try again. The quota the request spends from, if any, comes
along, so an observer can show how much of the day is used. Observers run on the request's
own thread and must be quick; one that raises is ignored, never the request's failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.kit.ratelimit import DailyQuota

HttpObserver = Callable[[str, "int | None", "DailyQuota | None"], None]
"""``(event, status or None, quota or None)``; event is response, failure or retry."""

_observers: tuple[HttpObserver, ...] = ()
_lock = threading.Lock()


def observe_http(observer: HttpObserver) -> Callable[[], None]:
    """Call ``observer`` for every platform request of this process; returns its removal."""
    global _observers
    with _lock:
        _observers = (*_observers, observer)

    def remove() -> None:
        global _observers
        with _lock:
            _observers = tuple(o for o in _observers if o is not observer)

    return remove


def report(event: str, status: int | None, quota: DailyQuota | None) -> None:
    """Tell every observer (a tuple read without the lock: adding one never blocks a
    request)."""
    for observer in _observers:
        with contextlib.suppress(Exception):
            observer(event, status, quota)
