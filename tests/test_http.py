"""The shared HTTP client against a real HTTP server on loopback whose answers each test scripts.

The server runs in a thread; the retry loop sleeps on a FakeClock, so a ``Retry-After: 2``
costs nothing and every wait can be asserted exactly.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import structlog

from daemon.foundation import log as logging_setup
from daemon.foundation.clock import Cancelled
from daemon.kit.connector import AuthFailed, RateLimited, Unavailable
from daemon.kit.http import (
    HttpSession,
    RetryPolicy,
    make_client,
    parse_retry_after,
    request_with_retries,
)
from daemon.kit.ratelimit import RateLimiter

FAST = RetryPolicy(attempts=3, backoff_base=0.5, backoff_max=4.0, jitter=False)
TOKEN = "s3cr3t-bearer-token-0123456789"


@dataclass
class Reply:
    """One scripted answer: a status, headers, a body, and optionally a hang before it."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'
    hang: bool = False  # wait for the test's release event: the client's read times out


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class ScriptedServer:
    """A ThreadingHTTPServer that answers with the queued replies, then with 200s."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with server._lock:
                    server.seen.append(Seen(self.command, self.path, dict(self.headers)))
                    reply = server.replies.pop(0) if server.replies else Reply()
                    release = server.release
                if reply.hang:
                    release.wait(5)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a hung reply

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)


@pytest.fixture(scope="module")
def _running_server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    srv.thread.start()
    yield srv
    srv.release.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def server(_running_server: ScriptedServer) -> Iterator[ScriptedServer]:
    """The module's server with an empty script and a fresh request log."""
    srv = _running_server
    srv.replies.clear()
    srv.seen.clear()
    srv.release = threading.Event()
    yield srv
    srv.release.set()  # let a hung handler finish


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[httpx.Client]:
    with make_client(server.url, timeout=5.0) as c:
        yield c


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line (structlog's and the standard library's, httpx at DEBUG) as JSON."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    logging_setup.configure(level="debug", stream=stream, json=True)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()


def test_503_then_200_is_retried(server, client, clock):
    server.script(Reply(503))
    response = request_with_retries(client, "GET", "/contacts", retry=FAST, clock=clock)
    assert response.status_code == 200
    assert [s.method for s in server.seen] == ["GET", "GET"]
    assert clock.sleeps == [0.5]  # the first back-off step, no jitter


def test_503_is_retried_even_for_a_post(server, client, clock):
    # A 503 means the work was refused, so repeating a POST cannot apply it twice.
    server.script(Reply(503))
    response = request_with_retries(client, "POST", "/contacts", json={}, retry=FAST, clock=clock)
    assert response.status_code == 200
    assert len(server.seen) == 2


def test_500_is_not_retried_for_a_post(server, client, clock):
    server.script(Reply(500))
    with pytest.raises(Unavailable):
        request_with_retries(client, "POST", "/contacts", json={}, retry=FAST, clock=clock)
    assert len(server.seen) == 1


def test_429_with_retry_after_sleeps_that_long(server, client, clock):
    server.script(Reply(429, {"Retry-After": "2"}))
    response = request_with_retries(client, "GET", "/contacts", retry=FAST, clock=clock)
    assert response.status_code == 200
    assert clock.sleeps == [2.0]
    assert len(server.seen) == 2


def test_retry_after_as_an_http_date(server, client, clock):
    when = format_datetime(clock.now() + timedelta(seconds=7), usegmt=True)
    server.script(Reply(503, {"Retry-After": when}))
    request_with_retries(client, "GET", "/x", retry=FAST, clock=clock)
    assert clock.sleeps == [7.0]


def test_a_retry_after_too_long_to_wait_raises_rate_limited_at_once(server, client, clock):
    server.script(Reply(429, {"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as info:
        request_with_retries(client, "GET", "/x", retry=FAST, clock=clock)
    assert info.value.retry_after == 3600
    assert clock.sleeps == []
    assert len(server.seen) == 1


def test_429_pauses_the_shared_limiter(server, client, clock):
    limiter = RateLimiter(100, 10, clock)
    server.script(Reply(429, {"Retry-After": "3"}))
    request_with_retries(client, "GET", "/x", retry=FAST, clock=clock, limiter=limiter)
    assert clock.monotonic() >= 3.0
    assert len(server.seen) == 2


def test_401_is_auth_failed_without_retrying(server, client, clock):
    server.script(Reply(401))
    with pytest.raises(AuthFailed) as info:
        request_with_retries(client, "GET", "/me", retry=FAST, clock=clock)
    assert info.value.code == "remote-auth-failed"
    assert len(server.seen) == 1


def test_403_is_auth_failed(server, client, clock):
    server.script(Reply(403))
    with pytest.raises(AuthFailed):
        request_with_retries(client, "GET", "/me", retry=FAST, clock=clock)


def test_exhausted_retries_raise_unavailable(server, client, clock):
    server.script(Reply(503), Reply(502), Reply(503, {"Retry-After": "9"}))
    with pytest.raises(Unavailable) as info:
        request_with_retries(client, "GET", "/contacts", retry=FAST, clock=clock)
    assert len(server.seen) == 3
    assert clock.sleeps == [0.5, 1.0]  # no sleep after the last attempt
    assert info.value.retry_after == 9
    assert "3 attempts" in info.value.message


def test_exhausted_429s_raise_rate_limited(server, client, clock):
    server.script(*(Reply(429) for _ in range(3)))
    with pytest.raises(RateLimited) as info:
        request_with_retries(client, "GET", "/x", retry=FAST, clock=clock)
    assert info.value.code == "remote-rate-limited"
    assert len(server.seen) == 3


def test_other_client_errors_are_returned_to_the_connector(server, client, clock):
    server.script(Reply(400, body=b'{"error": "bad email"}'))
    response = request_with_retries(client, "POST", "/contacts", json={}, retry=FAST, clock=clock)
    assert response.status_code == 400
    assert response.json() == {"error": "bad email"}


def test_connection_refused_is_retried_then_unavailable(clock):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed now: every attempt is refused before anything is sent.
    with (
        make_client(f"http://127.0.0.1:{port}", timeout=1.0) as c,
        pytest.raises(Unavailable) as info,
    ):
        request_with_retries(c, "POST", "/contacts", json={}, retry=FAST, clock=clock)
    assert "ConnectError" in info.value.message
    assert len(clock.sleeps) == 2  # retried even for a POST: nothing reached the server


def test_a_post_is_not_retried_after_a_read_timeout(server, clock):
    server.script(Reply(hang=True))
    with (
        make_client(server.url, timeout=httpx.Timeout(5.0, read=0.3)) as c,
        pytest.raises(Unavailable) as info,
    ):
        request_with_retries(c, "POST", "/contacts", json={"a": 1}, retry=FAST, clock=clock)
    assert "ReadTimeout" in info.value.message
    assert "not retried" in info.value.message
    assert len(server.seen) == 1
    assert clock.sleeps == []


def test_a_get_is_retried_after_a_read_timeout(server, clock):
    server.script(Reply(hang=True))
    with make_client(server.url, timeout=httpx.Timeout(5.0, read=0.3)) as c:
        response = request_with_retries(c, "GET", "/contacts", retry=FAST, clock=clock)
    assert response.status_code == 200
    assert len(server.seen) == 2


def test_a_post_marked_idempotent_is_retried_after_a_read_timeout(server, clock):
    server.script(Reply(hang=True))
    with make_client(server.url, timeout=httpx.Timeout(5.0, read=0.3)) as c:
        response = request_with_retries(
            c, "POST", "/search", json={}, idempotent=True, retry=FAST, clock=clock
        )
    assert response.status_code == 200
    assert len(server.seen) == 2


def test_cancel_stops_between_attempts(server, client, clock):
    cancel = threading.Event()
    server.script(Reply(503), Reply(503))

    def on_response(response: httpx.Response) -> None:
        cancel.set()  # SIGTERM arrives while the first answer is read

    with pytest.raises(Cancelled):
        request_with_retries(
            client, "GET", "/x", retry=FAST, clock=clock, cancel=cancel, on_response=on_response
        )
    assert len(server.seen) == 1


def test_on_response_sees_failed_answers_too(server, client, clock):
    server.script(Reply(429, {"X-Remaining": "0", "Retry-After": "1"}))
    statuses: list[int] = []

    def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    request_with_retries(client, "GET", "/x", retry=FAST, clock=clock, on_response=on_response)
    assert statuses == [429, 200]


def test_classify_can_turn_a_response_into_an_error(server, client, clock):
    server.script(Reply(403, body=b'[{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]'))

    def classify(response: httpx.Response) -> RateLimited | None:
        if response.status_code == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.content:
            return RateLimited("daily API limit reached", retry_after=3600)
        return None

    with pytest.raises(RateLimited):
        request_with_retries(client, "GET", "/x", retry=FAST, clock=clock, classify=classify)


def test_the_authorization_header_never_reaches_the_logs(server, clock, captured_logs):
    server.script(Reply(503), Reply(429, {"Retry-After": "1"}), Reply(401))
    with make_client(server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        session = HttpSession(c, retry=RetryPolicy(attempts=4, jitter=False), clock=clock)
        with pytest.raises(AuthFailed) as info:
            session.get("/contacts", params={"email": "pat@example.edu"})
        logging.getLogger("test").info("headers were %s", dict(c.headers))
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"  # it was sent
    text = captured_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line["event"] == "http_retry" for line in lines)
    assert TOKEN not in text
    assert TOKEN not in str(info.value)
    # The query string (personal data) is left out of messages and log lines alike.
    assert "pat@example.edu" not in str(info.value)
    assert "pat@example.edu" not in text


def test_basic_auth_password_is_registered_as_a_secret(server, clock, captured_logs):
    with make_client(server.url, auth=("api-user", "hunter2-password")) as c:
        request_with_retries(c, "GET", "/x", retry=FAST, clock=clock)
        logging.getLogger("test").warning("oops %s", c.auth and "hunter2-password")
    assert "hunter2-password" not in captured_logs.getvalue()


def test_backoff_with_full_jitter_stays_within_bounds():
    import random

    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(7)
    for retry_number in range(1, 8):
        ceiling = min(8.0, 2 ** (retry_number - 1))
        for _ in range(50):
            assert 0 <= policy.backoff(retry_number, rng) <= ceiling


def test_parse_retry_after(clock):
    now = clock.now()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0


def test_text_stream_reads_csv_across_chunks_and_quoted_newlines():
    import csv

    from daemon.kit.http import text_stream

    body = '\ufeffId,Note\r\n1,"two\r\nlines"\r\n2,café\r\n'.encode()
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    )
    with client.stream("GET", "http://platform/results") as response:
        # Chunks of 3 bytes split the BOM, the CRLFs and the two-byte é.
        rows = list(csv.DictReader(text_stream(response, chunk_size=3)))
    assert rows == [{"Id": "1", "Note": "two\r\nlines"}, {"Id": "2", "Note": "café"}]
