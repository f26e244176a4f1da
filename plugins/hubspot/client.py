"""HubSpot's CRM v3 wire protocol for contacts, and nothing else.

Retries, back-off, ``Retry-After``, pacing, the daily quota and the mapping of 401/5xx to
connector errors come from :class:`daemon.sdk.HttpSession`; this module adds what is
HubSpot's own:

- auth: a private-app token, or an OAuth refresh token exchanged ahead of the access token's
  expiry (HubSpot says a 401 is not the signal to refresh), the rotated refresh token kept in
  :attr:`ConnectorContext.state` so a restart uses the newest one;
- the rate-limit headers (``X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds`` and the
  legacy ``-Secondly`` pair) fed to the shared limiter, the daily pair to the daily quota, and a
  429 whose ``policyName`` is ``DAILY`` turned into :class:`RateLimited` until the reset instead
  of being retried;
- search (its own, lower rate limit), list, batch read/create/update/upsert chunked to 100
  inputs, and the properties API, with HubSpot's error bodies kept verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Unpack
from zoneinfo import ZoneInfo

import httpx

from daemon.sdk import (
    ClientSeams,
    ConnectorContext,
    ConnectorError,
    DailyQuota,
    MalformedResponse,
    NotSignedIn,
    PlatformClient,
    RateLimited,
    RateLimiter,
    Token,
    TokenCache,
    check_page_size,
    grant_answer,
    int_header,
    json_answer,
    json_body,
    json_or_none,
    pages,
)

CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
MAX_BATCH = 100  # HubSpot refuses more inputs in one batch call
MAX_SEARCH_RESULTS = 10_000  # paging a search past this answers 400
MAX_SEARCH_LIMIT = 200
# Refresh this long before the access token expires (at most half its life), so a request
# never leaves with a token that dies in flight; singer-io's tap uses 600 s for 30-min tokens.
REFRESH_MARGIN_SECONDS = 300.0
DEFAULT_TOKEN_SECONDS = 1800.0  # an OAuth access token's life when the answer does not say
STATE_REFRESH_TOKEN = "hubspot_refresh_token"
BURST_MARGIN_SECONDS = 0.25
# The general burst limit until HubSpot's headers say otherwise (Free/Starter private apps:
# 100 per 10 s; OAuth apps about 110), and search's own limit (4-5 per second per account,
# sent without headers to learn from: 4 in a window a little over a second, so a request on
# the window's edge cannot count as the fifth by HubSpot's clock).
DEFAULT_BURST = (100, 10.0)
DEFAULT_SEARCH_RATE = (5, 1.0)  # HubSpot: five searches per second per account
SEARCH_MARGIN_SECONDS = 0.15


@dataclass
class BatchOutcome:
    """One batch input's answer: the record HubSpot returned, or its error message."""

    record: dict[str, Any] | None = None
    message: str = ""
    category: str = ""
    status: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def error_message(body: Any, status: int) -> str:
    """HubSpot's own words from an error body (``message``, then ``errors[].message``)."""
    if isinstance(body, Mapping):
        parts = [str(body["message"])] if body.get("message") else []
        for item in body.get("errors") or []:
            if isinstance(item, Mapping) and item.get("message"):
                text = str(item["message"])
                if text not in parts:
                    parts.append(text)
        if parts:
            return "; ".join(parts)
        if body.get("error_description"):  # the OAuth endpoints' RFC 6749 shape
            return str(body["error_description"])
    return f"HTTP {status}"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """A 2xx JSON object body, else MalformedResponse with HubSpot's message."""
    body = json_answer(response, error_message)
    if not isinstance(body, dict):
        where = f"{response.request.method} {response.request.url.path}"
        raise MalformedResponse(f"{where}: the body is not a JSON object")
    return body


def _results(body: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    results = body.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise MalformedResponse(f"{where}: no 'results' list of objects in the body")
    return results


def _next_after(body: Mapping[str, Any]) -> str | None:
    nxt = (body.get("paging") or {}).get("next") if isinstance(body.get("paging"), dict) else None
    after = nxt.get("after") if isinstance(nxt, dict) else None
    return str(after) if after not in (None, "") else None


def midnight_in(zone: str) -> Callable[[datetime], datetime]:
    """The daily reset: HubSpot resets the daily limit at midnight in the account's zone."""
    tz = ZoneInfo(zone)

    def resets_at(now: datetime) -> datetime:
        local = now.astimezone(tz)
        nxt = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
        return nxt.astimezone(UTC)

    return resets_at


class HubSpotClient(PlatformClient):
    """One HubSpot account's contacts API over a paced, retrying :class:`HttpSession`."""

    def __init__(
        self,
        *,
        base_url: str,
        context: ConnectorContext,
        access_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        token_path: str = "/oauth/2026-03/token",
        daily_share: float = 0.9,
        account_timezone: str = "UTC",
        **seams: Unpack[ClientSeams],
    ) -> None:
        super().__init__(secrets=(access_token, client_secret, refresh_token), **seams)
        self.context = context
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_path = token_path
        self._static_token = access_token
        # A private app's token never expires; OAuth's are renewed (and a rotated refresh
        # token, newer than the one in config, is kept in the daemon's state).
        self.tokens = TokenCache(
            self._grant,
            clock=self.clock,
            margin_seconds=REFRESH_MARGIN_SECONDS,
            refresh_token=refresh_token,
            state=context.state,
            state_key=STATE_REFRESH_TOKEN,
        )
        if not access_token and not self.tokens.refresh_token:
            raise NotSignedIn("HubSpot", context.instance)
        # HubSpot counts a call when it arrives; the margin absorbs concurrent calls arriving
        # in another order than they were granted (2.5% of the 10 s window).
        self.limiter = RateLimiter(
            *DEFAULT_BURST, self.clock, name="hubspot", margin_seconds=BURST_MARGIN_SECONDS
        )
        self.search_limiter = RateLimiter(
            *DEFAULT_SEARCH_RATE,
            self.clock,
            name="hubspot-search",
            margin_seconds=SEARCH_MARGIN_SECONDS,
        )
        self._resets_at = midnight_in(account_timezone)
        self.quota = DailyQuota(
            None,
            stop_at_share=daily_share,
            clock=self.clock,
            resets_at=self._resets_at,
            name="hubspot",
        )
        pool = self.open_pool(base_url.rstrip("/"))
        kwargs: dict[str, Any] = {
            "limiter": self.limiter,
            "quota": self.quota,
            "on_response": self._on_response,
            "classify": self._classify,
        }
        self.session = self.open_session(pool, **kwargs)
        # Search also counts against the burst window, but answers without rate headers and
        # has a per-second limit of its own, which search() takes first.
        self.search_session = self.open_session(pool, **kwargs)

    # --- auth -------------------------------------------------------------------------------

    def _grant(self, refresh_token: str | None) -> Token:
        """A private app's token as is, or an OAuth refresh-token grant."""
        if self._static_token:
            return Token(self._static_token)
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id or "",
            "client_secret": self._client_secret or "",
            "refresh_token": refresh_token or "",
        }
        response = self.session.post(self._token_path, data=form, idempotent=True)
        token, _ = grant_answer(
            response,
            platform="HubSpot",
            grant="OAuth refresh token",
            error_text=error_message,
            expires_in=DEFAULT_TOKEN_SECONDS,
        )
        return token

    # --- pacing -----------------------------------------------------------------------------

    def _on_response(self, response: httpx.Response) -> None:
        """Feed HubSpot's own count of the window and the day to the limiter and quota."""
        headers = response.headers
        interval = int_header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        window = interval / 1000 if interval else None
        maximum = int_header(headers, "X-HubSpot-RateLimit-Max")
        remaining = int_header(headers, "X-HubSpot-RateLimit-Remaining")
        if maximum is None and remaining is None:  # the 2018 header names
            maximum = int_header(headers, "X-HubSpot-RateLimit-Secondly")
            remaining = int_header(headers, "X-HubSpot-RateLimit-Secondly-Remaining")
            window = window or (DEFAULT_BURST[1] if maximum is not None else None)
        if maximum is not None or remaining is not None:
            self.limiter.update_from_headers(remaining, limit=maximum, window_seconds=window)
        daily = int_header(headers, "X-HubSpot-RateLimit-Daily")
        daily_left = int_header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        if daily is not None and daily_left is not None:
            self.quota.update(max(0, daily - daily_left), limit=daily)

    def _classify(self, response: httpx.Response) -> ConnectorError | None:
        """A 429 for the daily policy is not retried: the cycle stops until the reset."""
        if response.status_code != 429:
            return None
        body = json_or_none(response)
        if not isinstance(body, dict) or str(body.get("policyName", "")).upper() != "DAILY":
            return None  # TEN_SECONDLY_ROLLING: HttpSession pauses the limiter and retries
        if self.quota.limit is not None:
            self.quota.update(self.quota.limit, limit=self.quota.limit)
        now = self.clock.now()
        reset = max(0.0, (self._resets_at(now) - now).total_seconds())
        return RateLimited(
            f"HubSpot daily limit reached: {error_message(body, 429)}", retry_after=reset
        )

    # --- requests ---------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """A GET answering a JSON object."""
        return _json_object(self.tokens.send(self.session, "GET", path, params=params))

    def check(self) -> None:
        """One small read proves the URL, the token and the contacts scope."""
        _results(self.get(CONTACTS, limit=1), "GET contacts")

    def properties(self) -> list[dict[str, Any]]:
        """The contact property catalogue (``GET /crm/v3/properties/contacts``)."""
        return _results(self.get(PROPERTIES), "GET properties")

    def list_pages(
        self,
        properties: Sequence[str],
        *,
        archived: bool = False,
        after: str | None = None,
        limit: int = MAX_BATCH,
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Pages of ``GET /crm/v3/objects/contacts`` (at most 100 each) and their next token."""

        def fetch(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params: dict[str, Any] = {
                "limit": min(limit, MAX_BATCH),
                "properties": ",".join(properties),
                "archived": "true" if archived else "false",
            }
            if token:
                params["after"] = token
            body = self.get(CONTACTS, **params)
            return _results(body, "GET contacts"), _next_after(body)

        yield from pages(fetch, after, cancel=self.session.cancel, asked=min(limit, MAX_BATCH))

    def search(
        self,
        filter_groups: list[dict[str, Any]],
        sorts: list[dict[str, str]],
        properties: Sequence[str],
        limit: int,
        after: int,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of ``POST /crm/v3/objects/contacts/search`` and the next offset."""
        payload: dict[str, Any] = {
            "filterGroups": filter_groups,
            "sorts": sorts,
            "properties": list(properties),
            "limit": min(limit, MAX_SEARCH_LIMIT),
        }
        if after:
            payload["after"] = str(after)
        self.search_limiter.acquire(self.search_session.cancel)
        # A search changes nothing, so a timed-out one is safe to send again.
        response = self.tokens.send(
            self.search_session, "POST", f"{CONTACTS}/search", json=payload, idempotent=True
        )
        body = _json_object(response)
        nxt = _next_after(body)
        results = _results(body, "POST search")
        check_page_size(results, payload["limit"], "POST search")
        try:
            return results, int(nxt) if nxt is not None else None
        except ValueError:
            raise MalformedResponse(f"search paging.next.after is not an offset: {nxt!r}") from None

    def batch(
        self, action: str, inputs: Sequence[dict[str, Any]], *, idempotent: bool, **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        """One ``POST .../batch/<action>`` of at most 100 inputs: the status and the body.

        2xx (200, 201, 207) and 4xx bodies come back for the caller to attribute per input;
        a 5xx or a failure to connect raises :class:`~daemon.sdk.Unavailable` from the session.
        """
        if len(inputs) > MAX_BATCH:
            raise ValueError(f"a HubSpot batch takes at most {MAX_BATCH} inputs")
        # A 401 means nothing was applied, so the replay with a new token is safe.
        response = self.tokens.send(
            self.session,
            "POST",
            f"{CONTACTS}/batch/{action}",
            json={"inputs": list(inputs), **extra},
            idempotent=idempotent,
        )
        body = json_body(response)
        if not isinstance(body, dict):
            raise MalformedResponse(f"batch/{action}: the body is not a JSON object")
        return response.status_code, body
