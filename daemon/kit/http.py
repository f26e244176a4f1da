"""HTTP for connectors: one client factory and one retry loop, so every platform behaves alike.

:func:`request_with_retries` retries what is safe to retry and turns what is left into the
connector errors the engine understands:

- connection failures (the request never left) and ``503``/``429`` answers are retried for
  any method; read timeouts, dropped connections and other 5xx only for idempotent requests,
  because a POST that timed out may have been applied, and sending it again could create a
  second record. Pass ``idempotent=True`` for a POST that is safe (a search);
- waits are exponential back-off with full jitter, or the server's ``Retry-After`` (seconds
  or an HTTP date) when it sends one; a ``Retry-After`` longer than the policy allows is not
  waited out in a worker thread: :class:`RateLimited` is raised with it, and the engine backs
  the instance off;
- final failures: 401/403 are :class:`AuthFailed`, 429 is :class:`RateLimited`, 5xx and
  network errors are :class:`Unavailable`. Other answers (2xx, 3xx, 400, 404, 409 …) are
  returned for the connector to read.

Every answer is bounded, so a broken or hostile platform cannot exhaust the daemon: a body
larger than ``max_body_bytes`` (counted as it streams in, so a chunked or endless body is caught
too) is :class:`MalformedResponse`, and an exchange that runs past ``deadline`` seconds in
total (a server dripping a byte at a time never trips a per-read timeout) is
:class:`Unavailable`, not retried in place: the next cycle tries again. The deadline holds in
every phase, the headers included: each socket read, write and connect of the exchange is
given only the time left (:class:`_DeadlineBackend`). The cap counts *decoded* bytes: a gzip
or deflate body is inflated here, a bounded piece at a time, so a small compressed "bomb"
that inflates to gigabytes is refused after ``max_body_bytes``, never held. A certificate the
platform's TLS does not verify is :class:`TlsRefused`, never retried: only a person can fix it.

Every wait goes through the injectable clock and stops early when ``cancel`` is set. Header
values that carry credentials are registered as secrets, so no log line can show them, and
messages name a URL without its query string.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import io
import logging
import math
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

from daemon import __version__
from daemon.foundation.clock import SYSTEM_CLOCK, Clock, check_cancel
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger, redact_text, register_secret
from daemon.kit import httpobserve
from daemon.kit.connector import (
    AuthFailed,
    ConnectorError,
    MalformedResponse,
    RateLimited,
    Unavailable,
)
from daemon.kit.ratelimit import DailyQuota, RateLimiter

log = get_logger("contactsync.http")

# httpx logs every request line with its full query string (an email in a search, say) and
# httpcore logs response headers (a Set-Cookie session); our own lines say what matters.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# The largest answer read: far above any real page (HubSpot's 100 contacts with every property
# are about 1 MB, a Salesforce bulk result chunk is read streamed), far below what would push
# the daemon towards its MemoryMax. A connector whose platform sends more passes its own.
DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024
# The longest one exchange may take, headers and body together: the per-read timeout alone
# lets a server that sends a byte every few seconds hold a worker for ever.
DEFAULT_DEADLINE_SECONDS = 60.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# The server refused the work outright, so repeating even a POST cannot apply it twice.
ALWAYS_RETRYABLE_STATUSES = frozenset({429, 503})
# The work may have been done before the failure: only idempotent requests are repeated.
IDEMPOTENT_RETRYABLE_STATUSES = frozenset({408, 500, 502, 504})
_SECRET_HEADER_MARKERS = ("auth", "token", "key", "secret", "cookie", "session", "password")
# Raised before a byte of the request reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The encodings inflated here, under the size cap: asked for, and no others (httpx would ask
# for br and zstd too once their packages are installed, and inflate them uncounted).
ACCEPT_ENCODING = "gzip, deflate"
# The most one inflate step may produce: the memory a compressed body can claim at once.
_INFLATE_PIECE = 64 * 1024

Classifier = Callable[[httpx.Response], ConnectorError | None]


class TlsRefused(ConnectorError):
    """The platform's TLS certificate did not verify (expired, self-signed, wrong host name,
    or an intercepting proxy): retrying cannot help, a person must fix the certificate or the
    trust store."""

    code = Code.TLS_REFUSED


class Unauthorized(AuthFailed):
    """HTTP 401: the token is missing, expired or revoked (a 403 is a plain
    :class:`AuthFailed`: the credentials work but lack a permission). Token-based clients
    replay the request once with a fresh token (:meth:`daemon.kit.tokens.TokenCache.send`)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: ``attempts`` counts the first try too.

    Back-off before retry *n* is uniform in ``[0, min(backoff_max, backoff_base * 2**(n-1))]``
    ("full jitter", so many workers do not retry in step); ``jitter=False`` uses the upper
    bound. ``retry_non_idempotent`` repeats POST/PATCH after a read timeout or a 5xx too.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    jitter: bool = True
    retry_non_idempotent: bool = False

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, retry_number - 1))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)


DEFAULT_RETRY = RetryPolicy()


def register_header_secrets(headers: Mapping[str, str] | httpx.Headers | None) -> None:
    """Register the values of credential-bearing headers (and their bare tokens) as secrets."""
    if not headers:
        return
    for key, value in headers.items():
        if not isinstance(value, str) or not any(m in key.lower() for m in _SECRET_HEADER_MARKERS):
            continue
        register_secret(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.isalpha():  # "Bearer abc…": the token alone must go too
            register_secret(credential.strip())


def make_client(
    base_url: str = "",
    *,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
    user_agent: str | None = None,
    verify: bool | str = True,
) -> httpx.Client:
    """An ``httpx.Client`` with contactsync's defaults: timeouts, a User-Agent, no redirects.

    Credentials in ``headers`` and a ``(user, password)`` ``auth`` are registered as secrets
    before the first request. Retries are not the transport's job: use
    :func:`request_with_retries` or :class:`HttpSession`.
    """
    all_headers = {
        "User-Agent": user_agent or f"contactsync/{__version__}",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    all_headers.update(headers or {})
    register_header_secrets(all_headers)
    if isinstance(auth, tuple):
        user, password = auth
        register_secret(password)
        register_secret(base64.b64encode(f"{user}:{password}".encode()).decode())
    # Following redirects silently could resend credentials to another host.
    client = httpx.Client(
        base_url=base_url,
        timeout=timeout,
        headers=all_headers,
        auth=auth,
        transport=transport,
        verify=_system_tls() if verify is True else verify,
        follow_redirects=False,
    )
    _hold_deadlines(client)
    return client


@functools.cache
def _system_tls() -> ssl.SSLContext:
    """The verifying TLS context every client shares: loading the CA bundle costs about
    0.1 s, once per process instead of once per connector built (every cycle builds one).
    An ``SSLContext`` is safe to share between threads."""
    return httpx.create_ssl_context()


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    ``None`` when absent or unreadable; a date in the past is ``0``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def safe_url(client: httpx.Client, url: str | httpx.URL) -> str:
    """``url`` resolved against the client's base, without its query (it may hold personal
    data or a key), and redacted."""
    try:
        full = client.build_request("GET", url).url
    except httpx.HTTPError:  # not a URL httpx can send to: the request itself will say so
        return redact_text(str(url).partition("?")[0])
    return redact_text(str(full.copy_with(query=None, fragment=None)))


# The monotonic time (``time.monotonic``: sockets wait in real time) by which the exchange in
# flight on this thread must be over; ``None``: no deadline. Per thread, as a pooled
# connection may serve one thread's request and then another's.
_exchange = threading.local()


@contextmanager
def _until(ends: float | None) -> Iterator[None]:
    """Hold this thread's socket operations to ``ends`` (see :class:`_DeadlineBackend`)."""
    before = getattr(_exchange, "ends", None)
    _exchange.ends = ends
    try:
        yield
    finally:
        _exchange.ends = before


def _time_left(timeout: float | None, late: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this thread's deadline; ``late`` once none is."""
    ends = getattr(_exchange, "ends", None)
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise late("the request deadline passed")
    return left if timeout is None else min(timeout, left)


def _deadline_passed() -> bool:
    ends = getattr(_exchange, "ends", None)
    return ends is not None and time.monotonic() >= ends


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits only for what is left of the deadline.

    httpx's timeouts are per phase and per read, and a phase reads its timeout once: a server
    sending its *headers* a byte every few seconds never trips one. Here each ``recv`` gets the
    time left, so the exchange ends at its deadline whichever phase it is in."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connection a :class:`_DeadlineStream`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        wait = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        wait = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, wait, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _hold_deadlines(client: httpx.Client) -> None:
    """Give every connection pool of ``client`` (its transport and any proxy mounts) the
    :class:`_DeadlineBackend`. httpx has no public hook for it; a transport passed in (a test's
    ``MockTransport``) has no pool and is left alone. tests/test_leaks.py proves it holds."""
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


class _Inflater:
    """One ``Content-Encoding`` undone a bounded piece at a time: ``gzip`` or ``deflate``
    (the zlib format, or raw deflate as some servers send it, as httpx accepts too)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        wbits = zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS
        self._inflater = zlib.decompressobj(wbits)
        self._first = True

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """What ``data`` inflates to, in pieces of at most ``_INFLATE_PIECE`` bytes."""
        if self._first and not self._gzip and data:
            self._first = False
            try:  # a raw deflate stream has no zlib header: the first bytes tell
                probe = zlib.decompressobj(zlib.MAX_WBITS)
                probe.decompress(data[:2])
            except zlib.error:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        while data:
            piece = self._inflater.decompress(data, _INFLATE_PIECE)
            data = self._inflater.unconsumed_tail
            if piece:
                yield piece
            if self._inflater.eof:
                return


def _take_encoding(response: httpx.Response) -> list[_Inflater]:
    """The inflaters for the response's ``Content-Encoding`` (outermost last), which is then
    removed so that httpx itself does not inflate the body a second time, uncounted. An
    encoding not undone here (br, zstd: never asked for) is left to httpx as it was."""
    values = [
        value.strip().lower()
        for value in response.headers.get_list("content-encoding", split_commas=True)
    ]
    values = [value for value in values if value and value != "identity"]
    if not values or any(v not in ("gzip", "x-gzip", "deflate") for v in values):
        return []
    del response.headers["content-encoding"]
    return [_Inflater(value) for value in reversed(values)]


class _BoundedStream(httpx.SyncByteStream):
    """A response's byte stream, inflated, that stops at a size cap and a deadline.

    Counted per piece as the bytes arrive and are inflated, so neither a lying
    ``Content-Length``, a chunked body without one, a server that never stops nor a small
    compressed body that inflates to gigabytes can make the daemon hold more than
    ``max_bytes`` (plus one piece) or wait past the deadline.
    """

    def __init__(
        self,
        inner: httpx.SyncByteStream,
        where: str,
        max_bytes: int | None,
        deadline: float | None,
        clock: Clock,
        inflaters: list[_Inflater] | None = None,
    ) -> None:
        self._inner = inner
        self._where = where
        self._max_bytes = max_bytes
        self._deadline = deadline
        self._clock = clock
        self._inflaters = inflaters or []
        self._started = clock.monotonic()
        self._ends = None if deadline is None else time.monotonic() + deadline

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        raw = iter(self._inner)
        while True:
            with _until(self._ends):  # a read of the body, too, waits only the time left
                try:
                    chunk = next(raw, None)
                except httpx.TimeoutException as exc:
                    if _deadline_passed():
                        raise self._late() from exc
                    raise
            if chunk is None:
                return
            for piece in self._inflated(chunk):
                read += len(piece)
                if self._max_bytes is not None and read > self._max_bytes:
                    raise MalformedResponse(body_too_large(self._where, self._max_bytes))
                check_deadline(self._where, self._started, self._deadline, self._clock)
                yield piece

    def _inflated(self, chunk: bytes) -> Iterator[bytes]:
        pieces: Iterator[bytes] = iter((chunk,))
        try:
            for inflater in self._inflaters:
                pieces = (out for piece in pieces for out in inflater.pieces(piece))
            yield from pieces
        except zlib.error as exc:
            raise MalformedResponse(f"{self._where}: undecodable response body") from exc

    def _late(self) -> Unavailable:
        return Unavailable(past_deadline(self._where, self._deadline))

    def close(self) -> None:
        self._inner.close()


def body_too_large(where: str, max_bytes: int) -> str:
    """The message for an answer over the size cap: it names the cap, never the body."""
    return (
        f"{where}: the answer is larger than {max_bytes:,} bytes (max_body_bytes); "
        "stopped reading it"
    )


def check_deadline(where: str, started: float, deadline: float | None, clock: Clock) -> None:
    """:class:`Unavailable` naming the deadline once ``deadline`` seconds have passed since
    ``started`` (on ``clock.monotonic()``)."""
    if deadline is not None and clock.monotonic() - started > deadline:
        raise Unavailable(past_deadline(where, deadline))


def past_deadline(where: str, deadline: float | None) -> str:
    """The message for an exchange that ran past its deadline."""
    return (
        f"{where}: no complete answer within {deadline:g} s (the request deadline); "
        "the platform is too slow or stalled"
    )


def _bounded_timeout(timeout: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """``timeout`` with no phase longer than the whole deadline (``None`` phases included),
    so a server that accepts and then says nothing is given up on in time."""
    if deadline is None:
        return timeout

    def cap(value: float | None) -> float:
        return deadline if value is None else min(value, deadline)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (httpx wraps httpcore's error, which
    wraps the ``ssl`` one), or ``None`` when the failure was something else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _ResponseBytes(io.RawIOBase):
    """The body of a response sent with ``stream=True``, as a raw byte file."""

    def __init__(self, response: httpx.Response, chunk_size: int) -> None:
        self._chunks = response.iter_bytes(chunk_size)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def text_stream(response: httpx.Response, chunk_size: int = 65536) -> io.TextIOWrapper:
    """A streamed response's body as a text file read as it arrives (UTF-8, newlines kept
    as sent, so ``csv`` sees line breaks inside quoted cells): a large result file is parsed
    with memory bounded by the chunk size, never held whole."""
    raw = io.BufferedReader(_ResponseBytes(response, chunk_size), chunk_size)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def json_body(response: httpx.Response) -> Any:
    """The response's JSON body; :class:`MalformedResponse` naming the request when the body
    is not JSON (a proxy's HTML page, a truncated answer), whatever the status."""
    try:
        return response.json()
    except ValueError:
        # A number of more than 4,300 digits is a ValueError too (Python's int limit).
        raise MalformedResponse(
            f"{response.request.method} {response.request.url.path}: body is not JSON "
            f"(HTTP {response.status_code})"
        ) from None
    except RecursionError:
        # A body nested thousands of levels deep: no platform sends one; refuse it, coded.
        raise MalformedResponse(
            f"{response.request.method} {response.request.url.path}: body is nested too "
            f"deep to read (HTTP {response.status_code})"
        ) from None


def json_answer(
    response: httpx.Response,
    error_text: Callable[[Any, int], str],
    where: str | None = None,
) -> Any:
    """The JSON body of an answer below 400; for a 4xx or 5xx, :class:`MalformedResponse`
    with ``where`` (default: the method and path) and the platform's own words, which
    ``error_text(body, status)`` reads from its error body."""
    body = json_body(response)
    if response.status_code >= 400:
        where = where or f"{response.request.method} {response.request.url.path}"
        raise MalformedResponse(
            f"{where}: HTTP {response.status_code}: {error_text(body, response.status_code)}"
        )
    return body


def json_or_none(response: httpx.Response) -> Any:
    """The JSON body, or ``None`` when there is none: for reading an error's words, where a
    body that is not JSON must not hide the status."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def int_header(headers: Mapping[str, str] | httpx.Headers, name: str) -> int | None:
    """A whole-number header (a rate-limit count, a total), or ``None`` if absent or not one."""
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def request_with_retries(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    limiter: RateLimiter | None = None,
    quota: DailyQuota | None = None,
    clock: Clock = SYSTEM_CLOCK,
    cancel: threading.Event | None = None,
    idempotent: bool | None = None,
    on_response: Callable[[httpx.Response], None] | None = None,
    classify: Classifier | None = None,
    rng: random.Random | None = None,
    stream: bool = False,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    deadline: float | None = DEFAULT_DEADLINE_SECONDS,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request, retrying as the module docstring describes; return the response.

    ``limiter`` is acquired and ``quota`` spent before every attempt. ``on_response`` sees every
    response, failed ones included, so a connector can feed its limiter the platform's headers.
    ``classify`` may turn a response into a :class:`ConnectorError` first (say, a platform's 403
    that really means its daily quota is spent); that error is raised without retrying. ``kwargs``
    go to ``client.request`` (``json=``, ``params=``, ``headers=`` …). Raises
    :class:`daemon.foundation.clock.Cancelled` once ``cancel`` is set. With ``stream=True`` the body
    of the returned response is not read yet (``iter_bytes``); the caller closes it, and the
    size cap and the deadline hold while it reads. ``max_body_bytes`` and ``deadline``
    (seconds for one exchange, headers and body) bound each attempt; ``None`` lifts them.
    """
    method = method.upper()
    repeatable = (
        idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
    ) or retry.retry_non_idempotent
    register_header_secrets(client.headers)
    register_header_secrets(kwargs.get("headers"))
    where = f"{method} {safe_url(client, url)}"
    attempts = max(1, retry.attempts)

    for attempt in range(1, attempts + 1):
        check_cancel(cancel)
        if quota is not None:
            quota.spend()
        if limiter is not None:
            limiter.acquire(cancel)
        last = attempt == attempts
        tries = f"after {attempt} attempt{'s' if attempt > 1 else ''}"

        try:
            response = _send_bounded(
                client, method, url, where, max_body_bytes, deadline, clock, stream, kwargs
            )
        except httpx.DecodingError as exc:
            raise MalformedResponse(f"{where}: undecodable response body") from exc
        except httpx.TransportError as exc:
            httpobserve.report("failure", None, quota)
            failure = _certificate_failure(exc)
            if failure is not None:
                raise TlsRefused(
                    f"{where}: the server's TLS certificate did not verify "
                    f"({redact_text(failure.verify_message or str(failure))}); fix the "
                    "certificate on the server, or the instance's base_url (host name), or "
                    "add the issuing CA to the system trust store; not retried"
                ) from exc
            retryable = isinstance(exc, _NOT_SENT) or repeatable
            if last or not retryable:
                why = "" if retryable else " (not retried: the request may have been applied)"
                raise Unavailable(f"{where}: {_describe(exc)} {tries}{why}") from exc
            delay = retry.backoff(attempt, rng)
            reason = type(exc).__name__
        else:
            httpobserve.report("response", response.status_code, quota)
            if on_response is not None:
                on_response(response)
            if classify is not None:
                error = classify(response)
                if error is not None:
                    response.close()
                    raise error
            status = response.status_code
            if status in (401, 403):
                response.close()
                failure = Unauthorized if status == 401 else AuthFailed
                raise failure(f"{where}: HTTP {status}: the platform refused the credentials")
            if status not in ALWAYS_RETRYABLE_STATUSES | IDEMPOTENT_RETRYABLE_STATUSES:
                return response
            response.close()
            retry_after = parse_retry_after(response.headers.get("Retry-After"), clock.now())
            error_class = RateLimited if status == 429 else Unavailable
            retryable = status in ALWAYS_RETRYABLE_STATUSES or repeatable
            too_long = retry_after is not None and retry_after > retry.max_retry_after
            if last or not retryable or too_long:
                why = "" if retryable else " (not retried: the request may have been applied)"
                raise error_class(f"{where}: HTTP {status} {tries}{why}", retry_after=retry_after)
            delay = retry_after if retry_after is not None else retry.backoff(attempt, rng)
            if status == 429 and limiter is not None:
                limiter.pause(delay)  # every thread sharing the limiter holds off, not just us
            reason = f"HTTP {status}"

        httpobserve.report("retry", None, quota)
        log.warning(
            "http_retry",
            method=method,
            url=where.partition(" ")[2],
            reason=reason,
            attempt=attempt,
            attempts=attempts,
            delay_seconds=round(delay, 3),
        )
        clock.sleep(delay, cancel)

    raise AssertionError("unreachable: the last attempt returns or raises")


def _send_bounded(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    where: str,
    max_body_bytes: int | None,
    deadline: float | None,
    clock: Clock,
    stream: bool,
    kwargs: dict[str, Any],
) -> httpx.Response:
    """One exchange, always streamed so the size cap and the deadline can be held while the
    body arrives; read whole unless ``stream`` (error answers always: they are small, and
    reading them lets the connection be reused)."""
    started = clock.monotonic()
    options = dict(kwargs)
    timeout = options.pop("timeout", None)
    base = client.timeout if timeout is None else httpx.Timeout(timeout)
    request = client.build_request(method, url, timeout=_bounded_timeout(base, deadline), **options)
    ends = None if deadline is None else time.monotonic() + deadline
    try:
        with _until(ends):  # connect, send and the headers: each wait is the time left
            response = client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        if ends is not None and time.monotonic() >= ends:
            raise Unavailable(past_deadline(where, deadline)) from exc
        raise
    try:
        length = int_header(response.headers, "Content-Length")
        if max_body_bytes is not None and length is not None and length > max_body_bytes:
            raise MalformedResponse(body_too_large(where, max_body_bytes))
        check_deadline(where, started, deadline, clock)
        response.stream = _BoundedStream(
            response.stream, where, max_body_bytes, deadline, clock, _take_encoding(response)
        )
        if not stream or response.status_code >= 300:
            response.read()
    except BaseException:
        response.close()
        raise
    return response


def _describe(exc: httpx.TransportError) -> str:
    detail = redact_text(str(exc))
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class HttpSession:
    """A client with its retry policy, limiter, quota, clock, cancel event and bounds
    (``max_body_bytes``, ``deadline``: see :func:`request_with_retries`) bundled, so a
    connector's wire code says only ``session.get("/contacts", params=…)``."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        quota: DailyQuota | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cancel: threading.Event | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        classify: Classifier | None = None,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        deadline: float | None = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self.client = client
        # Per connector: a platform whose pages are known to be larger (or slower) says so.
        self.max_body_bytes = max_body_bytes
        self.deadline = deadline
        # None: the default policy (a client passes on the retry its connector was given).
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self.limiter = limiter
        self.quota = quota
        self.clock = clock
        self.cancel = cancel
        self.on_response = on_response
        self.classify = classify

    def request(
        self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """:func:`request_with_retries` with this session's settings."""
        return request_with_retries(
            self.client,
            method,
            url,
            retry=self.retry,
            limiter=self.limiter,
            quota=self.quota,
            clock=self.clock,
            cancel=self.cancel,
            idempotent=idempotent,
            on_response=self.on_response,
            classify=self.classify,
            max_body_bytes=self.max_body_bytes,
            deadline=self.deadline,
            **kwargs,
        )

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A GET (retried on any transient failure)."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """A POST: not repeated after a read timeout or a 5xx unless ``idempotent=True``."""
        return self.request("POST", url, idempotent=idempotent, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        """A PUT (idempotent)."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """A PATCH: treated like a POST unless ``idempotent=True``."""
        return self.request("PATCH", url, idempotent=idempotent, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        """A DELETE (idempotent)."""
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        """Close the underlying client."""
        self.client.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
