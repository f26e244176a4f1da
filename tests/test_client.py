"""daemon.kit.client: every session a platform client opens runs on its seams; credentials
are secrets at once; close() closes each pool once."""

from __future__ import annotations

from typing import Unpack

import httpx

from daemon.foundation.clock import FakeClock, SystemClock
from daemon.foundation.log import redact_text
from daemon.kit.client import ClientSeams, PlatformClient
from daemon.kit.http import RetryPolicy
from daemon.kit.ratelimit import RateLimiter


class EchoClient(PlatformClient):
    """Two sessions over one pool and one over another, as the built-in clients build them."""

    def __init__(self, *, token: str | None, **seams: Unpack[ClientSeams]) -> None:
        super().__init__(secrets=(token, None, ""), **seams)
        pool = self.open_pool("https://api.example", headers={"X-Token": "plain"})
        self.session = self.open_session(pool)
        self.limiter = RateLimiter(100, 10.0, self.clock, name="echo")
        self.paced = self.open_session(pool, limiter=self.limiter)
        self.login = self.open_session(self.open_pool("https://login.example"))


def recording_transport(seen: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200 if len(seen) > 1 else 503, json={})

    return httpx.MockTransport(answer)


def test_every_session_uses_the_clients_clock_retry_and_transport():
    clock = FakeClock()
    retry = RetryPolicy(attempts=2, backoff_base=3.0, backoff_max=3.0, jitter=False)
    seen: list[str] = []
    client = EchoClient(token="t", clock=clock, retry=retry, transport=recording_transport(seen))
    for session in (client.session, client.paced, client.login):
        assert session.clock is clock
        assert session.retry is retry
    assert client.paced.limiter is client.limiter
    # The first answer is a 503: the retry policy's delay passes on the injected clock.
    before = clock.monotonic()
    assert client.session.get("/ping").status_code == 200
    assert clock.monotonic() - before >= 3.0
    client.login.get("/who")
    assert seen == [
        "https://api.example/ping",
        "https://api.example/ping",
        "https://login.example/who",
    ]


def test_defaults_are_the_system_clock_and_the_sessions_default_retry():
    client = EchoClient(token=None)
    assert isinstance(client.clock, SystemClock)
    assert client.retry is None and client.transport is None
    assert client.session.retry == RetryPolicy()


def test_credentials_are_registered_as_secrets_at_once():
    EchoClient(token="sk-echo-credential-91f3")
    assert "sk-echo-credential-91f3" not in redact_text("token=sk-echo-credential-91f3")


def test_close_closes_every_pool_once_however_many_sessions_share_it():
    client = EchoClient(token="t", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    client.close()
    assert client.session.client.is_closed
    assert client.paced.client is client.session.client
    assert client.login.client.is_closed
