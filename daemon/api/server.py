"""Serving the API with uvicorn: on a thread inside the daemon, or alone in the foreground.

Stopping drains: uvicorn stops accepting connections, closes the idle ones, lets every
request in flight finish its response, and gives up (cancelling what is left) after the
daemon's ``shutdown_grace_seconds``. uvicorn's own log lines go through the daemon's JSON
log; its access log is off, as :class:`~daemon.api.app.AccessLog` writes one without query
strings or path parameters.
"""

from __future__ import annotations

import signal
import threading
import time

import uvicorn
from fastapi import FastAPI

from daemon.foundation.log import get_logger

log = get_logger("contactsync.api")
START_TIMEOUT = 15.0
MAX_CONNECTIONS = 100
"""Connections and requests served at once; past it uvicorn answers 503 at once, so a flood
of connections (or of slow ones) cannot take every file descriptor and worker thread."""
KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this."""
MAX_HEADER_BYTES = 64 * 1024
"""The request line and headers together; a longer head is refused (400) unparsed."""


class ApiServerError(RuntimeError):
    """The server could not start (the port is taken, the address is not this host's)."""


class ApiServer:
    """One uvicorn server for ``app`` on ``bind``:``port`` (0: a free port)."""

    def __init__(self, app: FastAPI, *, bind: str, port: int, grace_seconds: float) -> None:
        self.bind = bind
        config = uvicorn.Config(
            app,
            host=bind,
            port=port,
            log_config=None,  # keep the daemon's logging as configured
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
            # Bounds against hostile clients (the body's are daemon.api.limits'); h11 is
            # named, as httptools has no header bound of its own to set.
            http="h11",
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked); kept after the stop."""
        if self._port is None:
            self._port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Serve on a thread; return once listening. Raises :class:`ApiServerError`."""
        # A daemon thread: a server stuck past the grace time never keeps the process alive.
        self._thread = threading.Thread(target=self.server.run, name="contactsync-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise ApiServerError(
                    f"the HTTP API could not listen on {self.bind}:{self.server.config.port} "
                    "(the port in use, or an address not on this host); see the log line before"
                )
            time.sleep(0.01)
        log.info("api_serving", url=self.url, bind=self.bind, port=self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_stop(self) -> None:
        """Begin the drain: no new connection is accepted from now on."""
        self.server.should_exit = True

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the drain; return whether it finished. Past
        it, the server is told to quit at once."""
        if self._thread is None:
            return True
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(1.0)
            log.warning("api_shutdown_hurried", grace_seconds=timeout)
            return False
        log.info("api_stopped")
        return True

    def stop(self, grace_seconds: float) -> bool:
        """:meth:`request_stop` then :meth:`join`."""
        self.request_stop()
        return self.join(grace_seconds)

    def serve_foreground(self) -> None:
        """Serve from the main thread until SIGTERM or SIGINT, then drain and return.

        uvicorn handles the signals while it runs, then raises them again for the handlers
        that were there before; ours are no-ops, so the drained server returns normally
        (exit 0) instead of being killed by the default action.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        thread = threading.Thread(target=self._announce, name="contactsync-api-start", daemon=True)
        thread.start()
        self.server.run()
        log.info("api_stopped")

    def _announce(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started and time.monotonic() < deadline:
            if self.server.should_exit:
                return
            time.sleep(0.01)
        if self.server.started:
            log.info("api_serving", url=self.url, bind=self.bind, port=self.port)
