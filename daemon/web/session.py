"""Who is looking at a staff page: a signed session cookie that names an API token.

Invariants:

- The cookie holds the token's *name* (never the token), a per-session form token and the
  time of sign-in, signed with HMAC-SHA256 under the hub's session key
  (:func:`~daemon.hub.apitokens.session_key`: in the hub, never in config or logs). It is
  HttpOnly and SameSite=Strict, and Secure when the page is served over HTTPS.
- Every request re-reads the token by name (:func:`~daemon.hub.apitokens.live_token`): a
  revoked token's sessions die on their next request, and the role is the token's as it is
  now.
- Every form that changes something carries the session's form token, checked in constant
  time; a post without it (another site's form, an old tab) is ``web-csrf-refused`` (403).
  The sign-in form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from daemon.api.errors import ApiError
from daemon.api.state import hub_of
from daemon.foundation.dictionary import Code
from daemon.hub.apitokens import Role, live_token, session_key

COOKIE = "cs_session"
SIGN_IN_COOKIE = "cs_sign_in"
MAX_AGE = 12 * 3600
"""A session lasts a working day; then the token is asked for again."""


class SignInNeeded(Exception):
    """No live session: a page answers with the sign-in form (a redirect), not an error."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in member of staff: the token's name and role, and the session's form token."""

    name: str
    role: Role
    csrf: str

    def may(self, role: Role) -> bool:
        """Whether the token's role allows ``role``'s actions (the buttons shown, too)."""
        return self.role.allows(role)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def seal(key: bytes, name: str, now: float | None = None) -> tuple[str, str]:
    """A new session's cookie value for token ``name``, and its form token."""
    csrf = secrets.token_urlsafe(24)
    body = {"n": name, "c": csrf, "t": int(now if now is not None else time.time())}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_signature(key, payload)}", csrf


def unseal(key: bytes, value: str, now: float | None = None) -> tuple[str, str] | None:
    """The token name and form token of a cookie this hub signed and that has not expired;
    ``None`` for anything else (tampered, another hub's, too old, garbage)."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(_signature(key, payload), signature):
        return None
    try:
        body = json.loads(_unb64(payload))
        name, csrf, issued = body["n"], body["c"], body["t"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not isinstance(csrf, str) or not isinstance(issued, int):
        return None
    age = (now if now is not None else time.time()) - issued
    return (name, csrf) if 0 <= age < MAX_AGE else None


def current(request: Request) -> Session | None:
    """The session of ``request`` if it names a live token; ``None`` otherwise."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    engine = hub_of(request).engine
    opened = unseal(session_key(engine), value)
    if opened is None:
        return None
    info = live_token(engine, opened[0])
    if info is None:
        return None  # revoked since the sign-in: the session ends here
    request.state.token_name = info.name  # the access line names the caller
    return Session(info.name, info.role, opened[1])


def signed_in(request: Request) -> Session:
    """The dependency of every page: the session, or the sign-in form."""
    found = current(request)
    if found is None:
        raise SignInNeeded
    return found


def check_form(session: Session, sent: str | None) -> None:
    """Refuse a form whose token is not the session's (``web-csrf-refused``)."""
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise ApiError(
            403,
            Code.WEB_CSRF_REFUSED,
            "this form did not come from your session's page; reload the page and try again",
        )


def require(session: Session, role: Role) -> None:
    """Refuse an action the token's role does not allow (``api-forbidden``)."""
    if not session.may(role):
        raise ApiError(
            403,
            Code.API_FORBIDDEN,
            f"this needs the {role} role; token {session.name!r} has {session.role}",
        )


def set_cookie(request: Request, response: Response, name: str, value: str, **extra: int) -> None:
    """Set a cookie the page's scripts cannot read and other sites never send."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        **extra,  # type: ignore[arg-type]
    )
