"""Access tokens: fetched on first use, renewed before they expire, replayed after a 401.

Every OAuth-style platform (HubSpot's OAuth apps, Salesforce, Ellucian Ethos) hands out a
short-lived bearer token in exchange for something longer-lived (a refresh token, a signed
JWT, an API key). The mechanics are the same everywhere, so they live here once:

- :class:`TokenCache` calls the connector's ``fetch`` when there is no token, or when the one
  it has is within ``margin_seconds`` of expiring, so a request never leaves with a token that
  dies in flight;
- a platform that rotates refresh tokens returns the new one in :class:`Token`; the cache keeps
  it in the connector's persisted state (``ConnectorContext.state``), because the one in config
  stops working the moment it is rotated;
- :meth:`TokenCache.send` replays a request once after a 401 with a fresh token (sessions can
  be revoked or expire early: Salesforce's have no ``expires_in`` at all);
- every token is registered as a secret, so no log line, sync-log row or error shows it.

Threads share one cache (the pull's prefetch thread and the push's workers): one of them
fetches, the others wait for its token instead of fetching their own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx

from daemon.foundation.clock import Clock, SystemClock
from daemon.foundation.log import register_secret
from daemon.kit.connector import AuthFailed, MalformedResponse
from daemon.kit.http import HttpSession, Unauthorized, json_body


@dataclass(frozen=True, slots=True)
class Token:
    """What a token endpoint answered.

    ``expires_in`` is in seconds; ``None`` means the platform does not say, and the token is
    used until the platform refuses it. ``refresh_token`` is set when the platform rotated it.
    """

    value: str
    expires_in: float | None = None
    refresh_token: str | None = None


Fetch = Callable[[str | None], Token]
"""``fetch(refresh_token)`` → a new :class:`Token`; raises a ``ConnectorError`` on refusal."""


class TokenCache:
    """One connection's bearer token, renewed before expiry and after a 401.

    ``refresh_token`` is the long-lived credential from config (or ``None`` for flows that
    need none, like an API key or a JWT assertion); a rotated one found in ``state`` under
    ``state_key`` wins over it, since it is newer.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        clock: Clock | None = None,
        margin_seconds: float = 300.0,
        refresh_token: str | None = None,
        state: MutableMapping[str, Any] | None = None,
        state_key: str = "refresh_token",
    ) -> None:
        self._fetch = fetch
        self._clock = clock or SystemClock()
        self._margin = margin_seconds
        self._state = state if state is not None else {}
        self._state_key = state_key
        stored = self._state.get(state_key)
        self._refresh_token: str | None = stored if isinstance(stored, str) else refresh_token
        if self._refresh_token:
            register_secret(self._refresh_token)
        self._value: str | None = None
        self._renew_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def refresh_token(self) -> str | None:
        """The refresh token in use: the latest rotated one, else the configured one."""
        return self._refresh_token

    def get(self) -> str:
        """A token that is valid for at least the margin (fetching one if needed)."""
        with self._lock:
            if self._value is None or self._clock.monotonic() >= self._renew_at:
                self._renew()
            assert self._value is not None
            return self._value

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header carrying :meth:`get`'s token."""
        return {"Authorization": f"Bearer {self.get()}"}

    def invalidate(self, refused: str | None = None) -> None:
        """Forget the token (after the platform refused ``refused``). If another thread has
        already replaced the refused token, the newer one is kept."""
        with self._lock:
            if refused is None or refused == self._value:
                self._value = None

    def send(
        self,
        session: HttpSession,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """``session.request`` with the bearer token; after a 401, once more with a new one."""
        for attempt in (1, 2):
            token = self.get()
            merged = {**(headers or {}), "Authorization": f"Bearer {token}"}
            try:
                return session.request(method, url, headers=merged, **kwargs)
            except Unauthorized:
                if attempt == 2:
                    raise
                self.invalidate(token)
        raise AssertionError("unreachable")

    def _renew(self) -> None:
        token = self._fetch(self._refresh_token)
        register_secret(token.value)
        self._value = token.value
        if token.expires_in is None:
            self._renew_at = float("inf")
        else:
            # A token shorter-lived than twice the margin is renewed halfway through its life.
            margin = min(self._margin, token.expires_in / 2)
            self._renew_at = self._clock.monotonic() + token.expires_in - margin
        rotated = token.refresh_token
        if rotated and rotated != self._refresh_token:
            register_secret(rotated)
            self._refresh_token = rotated
            self._state[self._state_key] = rotated


def grant_answer(
    response: httpx.Response,
    *,
    platform: str,
    grant: str,
    error_text: Callable[[Any, int], str],
    expires_in: float | None = None,
) -> tuple[Token, dict[str, Any]]:
    """Read a token endpoint's answer (RFC 6749, section 5): the :class:`Token` and the whole
    body, for a platform's own fields (Salesforce's ``instance_url``).

    A refusal (a 4xx or 5xx, or a body that is not a JSON object) is :class:`AuthFailed`
    ``"<platform> refused the <grant>: <the platform's words>"``, read by
    ``error_text(body, status)``; an answer without ``access_token`` is
    :class:`MalformedResponse`. ``expires_in`` is the token's lifetime when the answer gives
    none, or none that is a number (``None``: used until the platform refuses it). A rotated
    refresh token is in :attr:`Token.refresh_token`.
    """
    body = json_body(response)
    if response.status_code >= 400 or not isinstance(body, dict):
        why = error_text(body, response.status_code)
        raise AuthFailed(f"{platform} refused the {grant}: {why}")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise MalformedResponse(f"{platform}'s token answer has no access_token")
    lifetime = expires_in
    # Nonsense from the platform keeps the default, rather than failing the sign-in.
    with contextlib.suppress(KeyError, TypeError, ValueError):
        lifetime = float(body["expires_in"])
    rotated = body.get("refresh_token")
    return Token(token, lifetime, rotated if isinstance(rotated, str) and rotated else None), body
