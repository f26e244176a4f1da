"""Running ``contactsync run`` as a child process, for the daemon tests and benchmark.

- :class:`NotifySocket`: a fake systemd ``NOTIFY_SOCKET`` that records every message.
- :class:`DaemonProcess`: the daemon with its output captured in files (a pipe left unread
  would block it), its JSON log lines parsed, and bounded waits on what it logs.
- :func:`instance_toml`: an instance file for the memory connector, its remote kept in a
  JSON file (``persist``) so that the test can read what the daemon pushed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tests.instancekit import memory_fields

REPO = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")


def wait_until(
    predicate: Callable[[], _T], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> _T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail with
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class NotifySocket:
    """A Unix datagram socket standing in for systemd's notify socket.

    Messages are kept in arrival order as dicts (``{"READY": "1", "STATUS": "..."}``). The
    socket lives in a short temporary folder: a Unix socket path is limited to 108 bytes.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="csn-"))
        self.path = self.folder / "notify.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.path))
        self._socket.settimeout(0.05)
        self._lock = threading.Lock()
        self._messages: list[dict[str, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self._messages.append(fields)

    @property
    def messages(self) -> list[dict[str, str]]:
        """Every message so far, oldest first."""
        with self._lock:
            return list(self._messages)

    def find(self, key: str, value: str = "1", after: int = 0) -> int | None:
        """The index of the first message at or after ``after`` with ``key=value``."""
        for index, message in enumerate(self.messages[after:], after):
            if message.get(key) == value:
                return index
        return None

    def wait_for(self, key: str, value: str = "1", after: int = 0, timeout: float = 15) -> int:
        """Wait for a ``key=value`` message at or after index ``after``; its index."""
        found = wait_until(
            lambda: (i := self.find(key, value, after)) is not None and i + 1,
            timeout,
            what=f"{key}={value} on the notify socket",
        )
        return found - 1

    def count(self, key: str, value: str = "1") -> int:
        """How many messages carried ``key=value``."""
        return sum(1 for m in self.messages if m.get(key) == value)

    def close(self) -> None:
        """Stop listening and remove the socket."""
        self._closed.set()
        self._socket.close()
        self._thread.join(timeout=1)
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.folder.rmdir()


class DaemonProcess:
    """``python -m daemon run --etc ETC`` in a child process, output captured to files."""

    def __init__(
        self,
        etc: Path,
        folder: Path,
        *,
        database_url: str,
        env: Mapping[str, str] | None = None,
        plugins: str = "tests.memplugin",
    ) -> None:
        self.etc = etc
        self.stdout_path = folder / "daemon.stdout"
        self.stderr_path = folder / "daemon.stderr"
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
            and not k.startswith("CONTACTSYNC_")
        }
        self.env = {
            **base,
            "PYTHONPATH": str(REPO),
            "CONTACTSYNC_PLUGINS": plugins,
            "CONTACTSYNC_DATABASE_URL": database_url,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        """Start the daemon."""
        command = [sys.executable, "-m", "daemon", "run", "--etc", str(self.etc)]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        """Everything written so far, stdout then stderr."""
        text = ""
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return text

    def lines(self) -> list[str]:
        """Every complete, non-empty output line."""
        text = self.output()
        complete = text if text.endswith("\n") else text.rpartition("\n")[0]
        return [line for line in complete.splitlines() if line.strip()]

    def records(self) -> list[dict[str, Any]]:
        """The output lines that parse as JSON objects."""
        out = []
        for line in self.lines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def logged(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """Log records with ``event`` whose keys equal ``match``."""
        return [
            r
            for r in self.records()
            if r.get("event") == event and all(r.get(k) == v for k, v in match.items())
        ]

    def wait_log(
        self, event: str, count: int = 1, timeout: float = 15, **match: Any
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` records match; fail early if the daemon exited."""

        def found() -> list[dict[str, Any]] | None:
            hits = self.logged(event, **match)
            if len(hits) >= count:
                return hits
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.process.returncode}) before logging {event} "
                    f"{match}:\n{self.output()[-4000:]}"
                )
            return None

        return wait_until(found, timeout, what=f"{count}x {event} {match}")

    def send(self, signum: int) -> None:
        """Send a signal to the daemon."""
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the daemon to exit; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """End the daemon if still running: SIGTERM, then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


MAPPING = memory_fields(crm_id=False)


def instance_toml(
    remote_file: Path,
    *,
    pull: str = "every 1s",
    push: str = "every 1s",
    enabled: bool = True,
    connector: str = "memory",
    extra: str = "",
    settings: str = 'api_key = { env = "MEM_KEY" }',
) -> str:
    """An instance file for the memory connector whose remote lives in ``remote_file``."""
    return f"""
type = "{connector}"
enabled = {"true" if enabled else "false"}
{extra}
[schedule]
pull = "{pull}"
push = "{push}"

[settings]
remote = "{remote_file.stem}"
persist = "{remote_file}"
{settings}
{MAPPING}
"""


def daemon_settings(**values: Any) -> str:
    """An ``etc/contactsync.toml`` with these ``[daemon]`` values."""
    lines = ["[daemon]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def remote_rows(path: Path) -> list[dict[str, Any]]:
    """The records of a persisted memory remote (written atomically, so always whole)."""
    if not path.exists():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["rows"]
