"""daemon.kit.tokens: fetched once, renewed before expiry, rotated refresh kept, 401 replay."""

from __future__ import annotations

import threading

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from daemon.foundation.log import redact_text
from daemon.kit.http import HttpSession, RetryPolicy, Unauthorized
from daemon.kit.tokens import Token, TokenCache


class Issuer:
    """A token endpoint: numbered tokens, optionally rotating the refresh token."""

    def __init__(self, expires_in: float | None = 1800.0, rotate: bool = False) -> None:
        self.expires_in = expires_in
        self.rotate = rotate
        self.calls: list[str | None] = []

    def __call__(self, refresh_token: str | None) -> Token:
        self.calls.append(refresh_token)
        n = len(self.calls)
        rotated = f"refresh-{n}" if self.rotate else None
        return Token(f"access-{n}", self.expires_in, rotated)


def test_a_token_is_fetched_once_and_renewed_before_it_expires():
    clock = FakeClock()
    issuer = Issuer(expires_in=1800)
    cache = TokenCache(issuer, clock=clock, margin_seconds=300)
    assert cache.get() == "access-1"
    clock.advance(1499)  # 1800 - 300 margin: still good
    assert cache.get() == "access-1"
    clock.advance(2)
    assert cache.get() == "access-2"
    assert len(issuer.calls) == 2


def test_a_short_lived_token_is_renewed_halfway():
    clock = FakeClock()
    cache = TokenCache(Issuer(expires_in=60), clock=clock, margin_seconds=300)
    assert cache.get() == "access-1"
    clock.advance(29)
    assert cache.get() == "access-1"
    clock.advance(2)
    assert cache.get() == "access-2"


def test_a_token_without_expiry_lives_until_refused():
    clock = FakeClock()
    cache = TokenCache(Issuer(expires_in=None), clock=clock)
    token = cache.get()
    clock.advance(10 * 86400)
    assert cache.get() == token
    cache.invalidate("someone-else's-token")  # a stale refusal keeps the newer token
    assert cache.get() == token
    cache.invalidate(token)
    assert cache.get() == "access-2"


def test_rotated_refresh_tokens_are_kept_in_state_and_win_over_config():
    state: dict = {}
    issuer = Issuer(expires_in=0.0, rotate=True)
    cache = TokenCache(issuer, clock=FakeClock(), refresh_token="from-config", state=state)
    cache.get()
    assert issuer.calls == ["from-config"]
    assert state["refresh_token"] == "refresh-1" == cache.refresh_token
    # A restart: the daemon hands the persisted state back; the rotated token is used.
    issuer2 = Issuer(rotate=True)
    TokenCache(issuer2, clock=FakeClock(), refresh_token="from-config", state=state).get()
    assert issuer2.calls == ["refresh-1"]


def test_tokens_never_show_in_logs():
    cache = TokenCache(lambda _: Token("s3cr3t-access", 60, "s3cr3t-refresh"), clock=FakeClock())
    cache.get()
    assert "s3cr3t" not in redact_text("sent s3cr3t-access, kept s3cr3t-refresh")


def test_threads_share_one_fetch():
    gate = threading.Event()
    calls = []

    def slow_fetch(_):
        calls.append(1)
        gate.wait(5)
        return Token("shared", None)

    cache = TokenCache(slow_fetch, clock=FakeClock())
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(cache.get())) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert seen == ["shared"] * 4 and len(calls) == 1


def _session(handler) -> HttpSession:
    client = httpx.Client(base_url="http://platform", transport=httpx.MockTransport(handler))
    return HttpSession(client, retry=RetryPolicy(attempts=1), clock=FakeClock())


def test_send_replays_once_after_a_401_with_a_new_token():
    revoked = {"access-1"}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        seen.append(token)
        return httpx.Response(401 if token in revoked else 200, json={"ok": True})

    cache = TokenCache(Issuer(expires_in=None), clock=FakeClock())
    response = cache.send(_session(handler), "GET", "/things", headers={"Accept": "x"})
    assert response.status_code == 200
    assert seen == ["access-1", "access-2"]


def test_send_gives_up_after_the_second_401():
    cache = TokenCache(Issuer(expires_in=None), clock=FakeClock())
    with pytest.raises(Unauthorized):
        cache.send(_session(lambda request: httpx.Response(401)), "GET", "/things")


# --- grant_answer: reading a token endpoint's answer --------------------------------------


def _answer(status: int, body: object) -> httpx.Response:
    request = httpx.Request("POST", "https://login.example/oauth/token")
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, request=request)
    return httpx.Response(status, json=body, request=request)


def _words(body: object, status: int) -> str:
    return f"words<{body}>@{status}"


def _read(response: httpx.Response, **options: object) -> tuple[Token, dict]:
    from daemon.kit.tokens import grant_answer

    return grant_answer(response, platform="Acme", grant="refresh grant", **options)


def test_grant_answer_reads_token_lifetime_rotation_and_keeps_the_body():
    body = {"access_token": "a1", "expires_in": "600", "refresh_token": "r2", "instance": "x"}
    token, whole = _read(_answer(200, body), error_text=_words, expires_in=1800.0)
    assert token == Token("a1", 600.0, "r2")
    assert whole["instance"] == "x"


@pytest.mark.parametrize(
    ("extra", "lifetime", "rotated"),
    [
        ({}, 1800.0, None),  # no expires_in: the platform's default
        ({"expires_in": None, "refresh_token": ""}, 1800.0, None),
        ({"expires_in": "soon", "refresh_token": 7}, 1800.0, None),
    ],
)
def test_grant_answer_falls_back_to_the_default_lifetime(extra, lifetime, rotated):
    token, _ = _read(
        _answer(200, {"access_token": "a", **extra}), error_text=_words, expires_in=1800.0
    )
    assert (token.expires_in, token.refresh_token) == (lifetime, rotated)


def test_grant_answer_without_a_default_lives_until_refused():
    token, _ = _read(_answer(200, {"access_token": "a"}), error_text=_words)
    assert token.expires_in is None


@pytest.mark.parametrize(
    ("status", "body"), [(400, {"error": "invalid_grant"}), (200, ["not", "an", "object"])]
)
def test_grant_answer_refused_is_auth_failed_in_the_platforms_words(status, body):
    from daemon.kit.connector import AuthFailed

    with pytest.raises(AuthFailed) as caught:
        _read(_answer(status, body), error_text=_words)
    assert str(caught.value).startswith("Acme refused the refresh grant: words<")
    assert f"@{status}" in str(caught.value)


@pytest.mark.parametrize("token", [None, "", 12])
def test_grant_answer_without_an_access_token_is_malformed(token):
    from daemon.kit.connector import MalformedResponse

    with pytest.raises(MalformedResponse, match="Acme's token answer has no access_token"):
        _read(_answer(200, {"access_token": token}), error_text=_words)


def test_grant_answer_that_is_not_json_is_malformed():
    from daemon.kit.connector import MalformedResponse

    with pytest.raises(MalformedResponse, match="not JSON"):
        _read(_answer(200, b"<html>"), error_text=_words)
