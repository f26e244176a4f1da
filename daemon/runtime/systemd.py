"""sd_notify from the standard library: tell systemd how the daemon is doing.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the Unix socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket). Writing it by hand keeps
libsystemd out of the dependencies, and without ``NOTIFY_SOCKET`` (a terminal, a container,
the tests that do not want it) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

from daemon.foundation.log import get_logger

log = get_logger("contactsync.systemd")


def _address(raw: str) -> str:
    # "@name" is systemd's spelling of an abstract socket, whose real name starts with NUL.
    return "\0" + raw[1:] if raw.startswith("@") else raw


class Notifier:
    """Sends sd_notify messages; every method is a no-op when ``NOTIFY_SOCKET`` is unset.

    A failed send is logged once and otherwise ignored: the service manager going away must
    never take the daemon down with it.
    """

    def __init__(self, address: str | None = None) -> None:
        raw = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        if self.address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._socket is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; whether it was sent."""
        if self._socket is None or self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with self._lock:  # the main loop and a reload may both speak
                self._socket.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is done."""
        extra = {"STATUS": status} if status else {}
        return self.send(READY=1, **extra)

    def reloading(self) -> bool:
        """A reload begins; systemd wants the monotonic time with it (notify-reload)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        """The daemon is shutting down."""
        return self.send(STOPPING=1)

    def status(self, text: str) -> bool:
        """A one-line status, shown by ``systemctl status``."""
        return self.send(STATUS=text.replace("\n", " "))

    def watchdog(self) -> bool:
        """The keep-alive ping of ``WatchdogSec=``."""
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC`` (systemd's advice), or
    ``None`` when the watchdog is off or meant for another process (``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(raw) / 1_000_000 / 2
