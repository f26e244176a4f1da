"""``/sign-in`` and ``/sign-out``: a member of staff signs in with an API token.

The token is checked as the API checks it (:func:`~daemon.hub.apitokens.authenticate`) and
never kept: the session cookie names the token (:mod:`daemon.web.session`). The sign-in form
is protected by a double-submit cookie (a random value in a cookie and in the form, which
another site can neither read nor set), so no page elsewhere can sign a browser in to a
token of its choosing. Where the form sends the browser next is a path on this server only.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from daemon.api.errors import ApiError
from daemon.api.state import hub_of
from daemon.foundation.dictionary import Code
from daemon.hub.apitokens import authenticate, session_key
from daemon.web.render import HEADERS, page
from daemon.web.session import (
    COOKIE,
    MAX_AGE,
    SIGN_IN_COOKIE,
    Session,
    check_form,
    seal,
    set_cookie,
    signed_in,
)

router = APIRouter(include_in_schema=False)
HOME = "/sync-log"


def _local(path: str | None) -> str:
    """``path`` if it is a path on this server, else the home page (no open redirect)."""
    if path and path.startswith("/") and not path.startswith(("//", "/\\")):
        return path
    return HOME


def _form(
    request: Request, *, status: int = 200, failed: str | None = None, next_path: str = HOME
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = page(
        request,
        "sign_in.html",
        status=status,
        session=None,
        nonce=nonce,
        failed=failed,
        next_path=next_path,
    )
    set_cookie(request, response, SIGN_IN_COOKIE, nonce, max_age=3600)
    return response


@router.get("/", response_class=RedirectResponse)
def home() -> RedirectResponse:
    """The Sync Log is the staff's first page."""
    return RedirectResponse(HOME, 303, headers=HEADERS)


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(
    request: Request, next: Annotated[str | None, Query(max_length=512)] = None
) -> HTMLResponse:
    """The sign-in form."""
    return _form(request, next_path=_local(next))


@router.post("/sign-in", response_class=HTMLResponse, response_model=None)
def sign_in(
    request: Request,
    token: Annotated[str, Form(max_length=256)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = HOME,
) -> HTMLResponse | RedirectResponse:
    """Check the token; on success, a session cookie and the page asked for."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not csrf or not expected or not hmac.compare_digest(csrf, expected):
        raise ApiError(
            403, Code.WEB_CSRF_REFUSED, "the sign-in form expired; load it again and sign in"
        )
    engine = hub_of(request).engine
    info = authenticate(engine, token.strip()) if token.strip() else None
    if info is None:
        request.state.error_code = str(Code.API_UNAUTHORIZED)
        return _form(
            request, status=401, failed="That token is unknown or revoked.", next_path=_local(next)
        )
    request.state.token_name = info.name
    value, _ = seal(session_key(engine), info.name)
    response = RedirectResponse(_local(next), 303, headers=HEADERS)
    set_cookie(request, response, COOKIE, value, max_age=MAX_AGE)
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.post("/sign-out")
def sign_out(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
    csrf: Annotated[str | None, Form(max_length=128)] = None,
) -> RedirectResponse:
    """End the session in this browser (the token itself stays valid)."""
    check_form(session, csrf)
    response = RedirectResponse("/sign-in", 303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response
