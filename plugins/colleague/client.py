"""Ethos Integration's wire protocol for persons and change notifications, and nothing else.

Retries, back-off, ``Retry-After`` and the mapping of 401/5xx to connector errors come from
:class:`daemon.sdk.HttpSession`; the token's renewal and the replay after a 401 from
:class:`daemon.kit.tokens.TokenCache`. This module adds what is Ethos's own:

- auth: ``POST /auth`` with the API key as a bearer token answers a JWT as plain text; its
  lifetime is read from the JWT's ``exp`` claim (the payload is base64 JSON; the signature is
  Ethos's business, not ours), so the cache renews it before it expires;
- versioned media types on every request (``Accept`` and ``Content-Type``): persons v12 and
  change notifications v2;
- ``GET /api/persons`` with ``offset``/``limit``/``criteria`` and its ``x-total-count`` and
  ``x-max-page-size`` headers; ``GET``/``PUT``/``POST`` of one person;
- ``GET /consume`` with an explicit ``lastProcessedID`` every time, and ``x-remaining``;
  ``HEAD /consume`` for the backlog alone;
- Ethos's error bodies (``errors[].message``) kept verbatim in messages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Unpack

import httpx

from daemon.sdk import (
    ClientSeams,
    MalformedResponse,
    PlatformClient,
    Token,
    TokenCache,
    check_page_size,
    int_header,
    json_answer,
    json_body,
    json_or_none,
    register_secret,
)

PERSONS = "/api/persons"
PERSONS_V12 = "application/vnd.hedtech.integration.v12+json"
CHANGE_NOTIFICATIONS_V2 = "application/vnd.hedtech.change-notifications.v2+json"
MAX_CONSUME_LIMIT = 1000
# Ethos's JWTs live 5 minutes; when one says nothing of its expiry, assume that.
DEFAULT_TOKEN_SECONDS = 300.0


def error_message(body: Any, status: int) -> str:
    """Ethos's own words from an error body: every ``errors[].message`` (or description)."""
    if isinstance(body, Mapping):
        parts = []
        for item in body.get("errors") or []:
            if isinstance(item, Mapping):
                text = item.get("message") or item.get("description")
                if text and str(text) not in parts:
                    parts.append(str(text))
        if parts:
            return "; ".join(parts)
    return f"HTTP {status}"


def jwt_seconds_left(token: str, now: float) -> float:
    """Seconds until a JWT's ``exp`` (read from its payload, unverified); a token that is not
    a JWT is a :class:`MalformedResponse`, one without ``exp`` lives the Ethos default."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        raise MalformedResponse("Ethos's /auth answer is not a JWT")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("Ethos's /auth answer is not a JWT (unreadable payload)") from None
    if not isinstance(claims, dict):
        raise MalformedResponse("Ethos's /auth answer is not a JWT (payload is not an object)")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        return DEFAULT_TOKEN_SECONDS
    return max(0.0, float(exp) - now)


class EthosClient(PlatformClient):
    """One Ethos application's persons and change-notification queue."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        state: dict[str, Any],
        token_margin_seconds: float = 60.0,
        **seams: Unpack[ClientSeams],
    ) -> None:
        super().__init__(secrets=(api_key,), **seams)
        self._api_key = api_key
        self.session = self.open_session(self.open_pool(base_url.rstrip("/")))
        self.tokens = TokenCache(
            self._fetch_token, clock=self.clock, margin_seconds=token_margin_seconds, state=state
        )

    # --- auth -------------------------------------------------------------------------------

    def _fetch_token(self, _refresh_token: str | None) -> Token:
        """Exchange the API key for a JWT; a refused key is AuthFailed (from the session)."""
        response = self.session.post(
            "/auth",
            headers={"Authorization": f"Bearer {self._api_key}", "Accept": "text/plain"},
            idempotent=True,  # asking for a token twice does no harm
        )
        if response.status_code >= 400:
            raise MalformedResponse(
                f"POST /auth: HTTP {response.status_code}: "
                f"{error_message(json_or_none(response), response.status_code)}"
            )
        token = response.text.strip().strip('"')
        register_secret(token)
        return Token(token, expires_in=jwt_seconds_left(token, self.clock.now().timestamp()))

    def _send(self, method: str, url: str, media: str, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": media}
        if "json" in kwargs:
            headers["Content-Type"] = media
        return self.tokens.send(self.session, method, url, headers=headers, **kwargs)

    # --- persons ----------------------------------------------------------------------------

    def list_persons(
        self, offset: int, limit: int, criteria: str | None = None
    ) -> tuple[list[dict[str, Any]], int | None, int | None]:
        """One page of persons, with ``x-total-count`` and ``x-max-page-size``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if criteria:
            params["criteria"] = criteria
        response = self._send("GET", PERSONS, PERSONS_V12, params=params)
        body = _object_array(response, f"GET {PERSONS}", "persons")
        check_page_size(body, limit, f"GET {PERSONS}")
        return (
            body,
            int_header(response.headers, "x-total-count"),
            int_header(response.headers, "x-max-page-size"),
        )

    def find_persons(self, criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Persons matching ``criteria`` (a match by email or Colleague id finds a few)."""
        persons, _, _ = self.list_persons(0, 10, json.dumps(criteria, separators=(",", ":")))
        return persons

    def get_person(self, guid: str) -> dict[str, Any] | None:
        """One person by GUID; ``None`` when Ethos answers 404."""
        response = self._send("GET", f"{PERSONS}/{guid}", PERSONS_V12)
        if response.status_code == 404:
            return None
        body = json_body(response)
        if response.status_code >= 400 or not isinstance(body, dict):
            raise MalformedResponse(
                f"GET {PERSONS}/{{id}}: HTTP {response.status_code}: "
                f"{error_message(body, response.status_code)}"
            )
        return body

    def write_person(
        self, guid: str | None, person: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """PUT (``guid`` given) or POST a person: the status and the body, errors included,
        for the caller to attribute. A POST that timed out is not repeated (it may have
        created the person); a PUT is, since it lands the same state however often."""
        if guid is None:
            response = self._send("POST", PERSONS, PERSONS_V12, json=dict(person))
        else:
            response = self._send("PUT", f"{PERSONS}/{guid}", PERSONS_V12, json=dict(person))
        body = json_body(response)
        if not isinstance(body, dict):
            raise MalformedResponse(f"{response.request.method} persons: the body is not an object")
        return response.status_code, body

    # --- change notifications ---------------------------------------------------------------

    def consume(self, last_processed_id: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Messages after ``last_processed_id`` and ``x-remaining``.

        Destructive: Ethos deletes every message up to ``last_processed_id`` for good, so
        pass only an id whose messages are committed. The id is always sent, even 0: without
        it Ethos deletes whatever the previous call returned, committed or not.
        """
        params = {"lastProcessedID": last_processed_id, "limit": min(limit, MAX_CONSUME_LIMIT)}
        response = self._send("GET", "/consume", CHANGE_NOTIFICATIONS_V2, params=params)
        body = _object_array(response, "GET /consume", "messages")
        check_page_size(body, params["limit"], "GET /consume")
        remaining = int_header(response.headers, "x-remaining")
        return body, remaining if remaining is not None else (1 if body else 0)

    def queue_remaining(self) -> int | None:
        """How many messages wait in the queue (``HEAD /consume``: reads, deletes nothing)."""
        response = self._send("HEAD", "/consume", CHANGE_NOTIFICATIONS_V2)
        if response.status_code >= 400:
            raise MalformedResponse(f"HEAD /consume: HTTP {response.status_code}")
        return int_header(response.headers, "x-remaining")


def _object_array(response: httpx.Response, where: str, what: str) -> list[dict[str, Any]]:
    """A 2xx body that is a JSON array of objects, else MalformedResponse with Ethos's words."""
    body = json_answer(response, error_message, where)
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise MalformedResponse(f"{where}: the body is not an array of {what}")
    return body
