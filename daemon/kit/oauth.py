"""Signing in with OAuth's authorization-code flow (RFC 6749 §4.1, PKCE: RFC 7636), both ends.

``contactsync auth INSTANCE`` turns a staff member's browser login into a refresh token the
daemon keeps. What must hold:

- the code, the tokens and the client secret never reach a log line, an error or the terminal:
  each is registered as a secret the moment it is known, the loopback receiver logs nothing
  (its request line carries the code), and the only thing printed is the authorize URL, which
  holds no secret;
- a redirect is accepted only with the ``state`` this run made (compared in constant time), so
  a forged or stale redirect cannot plant someone else's account; ``error=access_denied`` and
  a timeout end the run with :class:`AuthorizationFailed` and nothing stored;
- the code is exchanged once and never replayed (it is single-use: a blind retry of a
  timed-out exchange would only earn ``invalid_grant``);
- the answer must carry a refresh token, since that is what the daemon keeps.

A connector supports ``auth`` with one classmethod, ``oauth_app(config) -> OAuthApp``, which
says where the platform's authorize and token endpoints are, the scopes, the extra authorize
parameters, whether to use PKCE and the key of ``ConnectorContext.state`` the refresh token
goes under (the one its :class:`~daemon.kit.tokens.TokenCache` reads). It raises
``ValueError`` when the config cannot sign in this way (no client secret, say).
:func:`oauth_app_of` asks a connector class for it.

The platform's end, for simulators: :class:`AuthorizationCodes` issues codes bound to the
client, the redirect URI and the PKCE challenge, short-lived and single-use, and
:func:`redirect_reply` answers the authorize request with the redirect to the client,
:func:`redirect_allowed` checks the redirect URI against the app's, and :func:`consent_page`
renders a two-link Allow/Deny page for a simulator that wants one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx

from daemon.foundation.clock import SYSTEM_CLOCK, Clock
from daemon.foundation.dictionary import Code
from daemon.foundation.log import register_secret
from daemon.kit.connector import AuthFailed, ConnectorError
from daemon.kit.http import HttpSession, RetryPolicy, make_client
from daemon.kit.tokens import Token, grant_answer

CALLBACK_PATH = "/callback"
# A refused or timed-out exchange must not be resent: the code is single-use.
_NO_RETRY = RetryPolicy(attempts=1)
_DONE_PAGE = (
    b"<!doctype html><title>contactsync</title>"
    b"<p>%s</p><p>You can close this window and return to the terminal.</p>"
)


class AuthorizationFailed(AuthFailed):
    """The sign-in did not end with a refresh token: it timed out, the user refused, the
    redirect was not ours (``state``), or the platform refused the code."""


class NotSignedIn(ConnectorError):
    """An OAuth instance with no refresh token, neither in its file nor stored by
    ``contactsync auth``: a configuration problem (``config-invalid``), not a refusal by the
    platform. The message says how to fix it."""

    code = Code.CONFIG_INVALID

    def __init__(self, platform: str, instance: str) -> None:
        super().__init__(
            f"{platform} needs a refresh token: set refresh_token in the instance file, or run "
            f"`contactsync auth {instance}` to sign in and store one in the hub"
        )


@dataclass(frozen=True)
class OAuthApp:
    """What ``contactsync auth`` needs to know of a platform's OAuth app.

    ``authorize_url`` and ``token_url`` are absolute; ``scopes`` are joined with spaces;
    ``authorize_params`` are added to the authorize URL (Salesforce's ``response_type=code``);
    ``pkce`` adds an S256 ``code_challenge``; ``state_key`` is the key of
    ``ConnectorContext.state`` the refresh token is stored under; ``error_text(body, status)``
    reads the platform's words from a refused exchange.
    """

    platform: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str | None
    state_key: str
    scopes: tuple[str, ...] = ()
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    pkce: bool = False
    error_text: Callable[[Any, int], str] = lambda body, status: f"HTTP {status}"

    def __post_init__(self) -> None:
        register_secret(self.client_secret)


def oauth_app_of(connector_class: type, config: Any) -> OAuthApp | None:
    """The connector's :class:`OAuthApp` for ``config``, or ``None`` when the connector has no
    ``oauth_app`` classmethod. Its ``ValueError`` (a config that cannot sign in) passes on."""
    hook = getattr(connector_class, "oauth_app", None)
    return None if hook is None else hook(config)


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` with the S256 method."""
    verifier = secrets.token_urlsafe(48)  # 64 characters, inside RFC 7636's 43-128
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """RFC 7636's S256 challenge of ``verifier``: base64url(SHA-256), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(app: OAuthApp, redirect_uri: str, state: str, challenge: str | None) -> str:
    """The URL the user opens to sign in and consent."""
    params: dict[str, str] = {"client_id": app.client_id, "redirect_uri": redirect_uri}
    if app.scopes:
        params["scope"] = " ".join(app.scopes)
    params["state"] = state
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(app.authorize_params)
    separator = "&" if urlsplit(app.authorize_url).query else "?"
    # Scopes are separated by %20, as the platforms document (not "+").
    return f"{app.authorize_url}{separator}{urlencode(params, quote_via=quote)}"


class CallbackServer:
    """A one-shot HTTP receiver on ``127.0.0.1:port`` (0: a free port) for the redirect.

    :attr:`redirect_uri` is ``http://127.0.0.1:PORT/callback``; :meth:`wait` returns the query
    of the first request to that path, or ``None`` after ``timeout`` seconds. It logs nothing:
    the request line carries the code. Use it as a context manager.
    """

    def __init__(self, port: int = 0) -> None:
        self._received = threading.Event()
        self._params: dict[str, str] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != CALLBACK_PATH or receiver._received.is_set():
                    self.send_error(404)
                    return
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                register_secret(params.get("code"))
                ok = "code" in params and "error" not in params
                page = _DONE_PAGE % (b"Signed in." if ok else b"Sign-in did not complete.")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                receiver._params = params
                receiver._received.set()

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the request line holds the authorization code."""

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise AuthorizationFailed(
                f"cannot listen on 127.0.0.1:{port} for the redirect: {exc.strerror}"
            ) from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"
        # A short poll: close() waits for the loop to notice, and staff wait for close().
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="oauth-callback",
            daemon=True,
        )
        self._thread.start()

    def wait(self, timeout: float) -> dict[str, str] | None:
        """The redirect's query parameters, or ``None`` if none came within ``timeout``."""
        return self._params if self._received.wait(timeout) else None

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> CallbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange_code(
    app: OAuthApp,
    code: str,
    redirect_uri: str,
    verifier: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Token:
    """Trade ``code`` at the token endpoint (``grant_type=authorization_code``); the answer's
    :class:`Token` has the refresh token, else :class:`AuthorizationFailed`."""
    register_secret(code)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": app.client_id,
    }
    if app.client_secret:
        form["client_secret"] = app.client_secret
    if verifier is not None:
        form["code_verifier"] = verifier
    with make_client(transport=transport) as client:
        session = HttpSession(client, retry=_NO_RETRY, clock=clock)
        try:
            response = session.post(app.token_url, data=form)
            token, _ = grant_answer(
                response,
                platform=app.platform,
                grant="authorization code",
                error_text=app.error_text,
            )
        except AuthFailed as exc:  # a 401 (a wrong secret) as much as a 400
            raise AuthorizationFailed(exc.message) from None
    register_secret(token.value)
    if not token.refresh_token:
        raise AuthorizationFailed(
            f"{app.platform} signed in but sent no refresh token: the app must be allowed "
            "offline access (Salesforce: the refresh_token scope)"
        )
    register_secret(token.refresh_token)
    return token


def authorize(
    app: OAuthApp,
    *,
    show: Callable[[str], None],
    port: int = 0,
    timeout: float = 300.0,
    transport: httpx.BaseTransport | None = None,
) -> Token:
    """The whole flow: listen on loopback, hand the authorize URL to ``show`` (print it, open
    a browser), wait up to ``timeout`` seconds for the redirect, check its ``state`` and
    exchange the code. Raises :class:`AuthorizationFailed` with what went wrong."""
    state = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair() if app.pkce else (None, None)
    with CallbackServer(port) as server:
        show(authorize_url(app, server.redirect_uri, state, challenge))
        params = server.wait(timeout)
    if params is None:
        raise AuthorizationFailed(
            f"no sign-in arrived within {timeout:g} s; run the command again and finish the "
            "login in the browser sooner (or raise --timeout)"
        )
    if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
        raise AuthorizationFailed(
            "the redirect's state does not match this sign-in (a stale or forged redirect); "
            "nothing was stored"
        )
    if "error" in params:
        why = params.get("error_description") or params["error"]
        raise AuthorizationFailed(f"{app.platform} refused the sign-in: {why}")
    code = params.get("code")
    if not code:
        raise AuthorizationFailed(f"{app.platform}'s redirect carried no code")
    return exchange_code(app, code, server.redirect_uri, verifier, transport=transport)


# --- the platform's end (simulators) -----------------------------------------------------------


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    expires_at: float
    used: bool = False


class AuthorizationCodes:
    """The codes a simulated authorize endpoint has issued: each bound to its client id,
    redirect URI and PKCE challenge, valid ``ttl_seconds`` on ``clock``'s monotonic time, and
    good for one exchange (a second one is refused as the platform would refuse it).

    :meth:`redeem` answers ``None`` for a good code, else why not: ``"unknown"``,
    ``"used"``, ``"expired"``, ``"client"``, ``"redirect_uri"`` or ``"verifier"``. Call both
    under the simulator's lock, like every platform rule.
    """

    def __init__(self, clock: Clock, *, ttl_seconds: float = 600.0) -> None:
        self.clock = clock
        self.ttl_seconds = ttl_seconds
        self._grants: dict[str, _Grant] = {}

    def issue(self, client_id: str, redirect_uri: str, challenge: str | None = None) -> str:
        """A new code for this client, redirect URI and S256 challenge (``None``: no PKCE)."""
        code = secrets.token_urlsafe(32)
        expires = self.clock.monotonic() + self.ttl_seconds
        self._grants[code] = _Grant(client_id, redirect_uri, challenge, expires)
        return code

    def answer(
        self,
        request: Any,
        *,
        client_id: str,
        redirect_uri: str,
        decision: str,
        challenge: str | None = None,
        denied: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """What an authorize endpoint answers once the platform's own checks of ``request``
        (client id, redirect URI, response type …) have passed: for ``decision`` ``"consent"``
        the :func:`consent_page`, for ``"allow"`` a redirect with a new code, for anything else
        a redirect with ``denied`` (default ``error=access_denied``); ``state`` is echoed."""
        if decision == "consent":
            return consent_page(request)
        back = {"state": request.query["state"]} if "state" in request.query else {}
        if decision != "allow":
            return redirect_reply(redirect_uri, {**(denied or {"error": "access_denied"}), **back})
        code = self.issue(client_id, redirect_uri, challenge)
        return redirect_reply(redirect_uri, {"code": code, **back})

    def redeem(
        self, code: str, client_id: str, redirect_uri: str, verifier: str | None = None
    ) -> str | None:
        """Spend ``code``; ``None`` if it was good, else the reason it is refused."""
        grant = self._grants.get(code)
        if grant is None:
            return "unknown"
        if grant.used:
            return "used"
        grant.used = True  # spent by any attempt, as platforms do
        if self.clock.monotonic() >= grant.expires_at:
            return "expired"
        if client_id != grant.client_id:
            return "client"
        if redirect_uri != grant.redirect_uri:
            return "redirect_uri"
        if grant.challenge is not None and (
            verifier is None or not hmac.compare_digest(s256(verifier), grant.challenge)
        ):
            return "verifier"
        return None


def redirect_reply(redirect_uri: str, params: Mapping[str, str]) -> tuple[int, dict[str, str], str]:
    """A simulator's ``302`` to ``redirect_uri`` with ``params`` added to its query."""
    separator = "&" if urlsplit(redirect_uri).query else "?"
    location = f"{redirect_uri}{separator}{urlencode(dict(params))}"
    return 302, {"Location": location, "Content-Type": "text/plain"}, ""


def redirect_allowed(redirect_uri: str, registered: str) -> bool:
    """Whether a simulated app accepts ``redirect_uri``: equal to ``registered``, or, when
    none is registered (``""``), any ``http`` URL on loopback, as for a desktop app."""
    if registered:
        return redirect_uri == registered
    parts = urlsplit(redirect_uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def consent_page(request: Any) -> tuple[int, dict[str, str], str]:
    """A simulator's tiny consent page for an authorize ``request``: an Allow and a Deny link
    back to the same URL with ``decision=allow`` or ``decision=deny``."""
    links = []
    for decision in ("allow", "deny"):
        query = urlencode({**request.query, "decision": decision})
        links.append(f'<a href="{html.escape(request.path)}?{html.escape(query)}">{decision}</a>')
    page = (
        "<!doctype html><title>Sign in</title><p>contactsync asks for access to your "
        f"contacts.</p><p>{' | '.join(links)}</p>"
    )
    return 200, {"Content-Type": "text/html; charset=utf-8"}, page
