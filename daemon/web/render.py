"""Rendering the staff pages: Jinja2 templates with autoescape, strict headers, and refusals
as pages.

Every page is answered with a Content-Security-Policy that allows this server's own scripts
and styles only (no inline script, no CDN: the pages work without a network), is never
cached, and sends no Referer (a page's address holds a hub id, never personal data, but it
is nobody else's business either). A refusal (:class:`~daemon.api.errors.ApiError`) raised by
a page is shown as a page with its dictionary code linked to the entry; the API's routes keep
their JSON.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from daemon import __version__
from daemon.api.errors import ApiError
from daemon.web.session import SignInNeeded, current

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_env = Environment(
    loader=PackageLoader("daemon.web", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    """A UTC time as staff read it: to the second, with its zone."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


_env.filters["when"] = _when
_env.globals["version"] = __version__

STATIC: dict[str, tuple[bytes, str]] = {
    name: ((resources.files("daemon.web") / "static" / name).read_bytes(), kind)
    for name, kind in (
        ("htmx.min.js", "text/javascript"),
        ("site.css", "text/css"),
        ("site.js", "text/javascript"),
    )
}
"""The vendored and own static files, read once: a fixed list, so no path is ever joined."""


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered for ``request`` (its session, if any, is ``session``)."""
    context.setdefault("session", getattr(request.state, "web_session", None) or current(request))
    html = _env.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def refusal_page(request: Request, exc: ApiError) -> HTMLResponse:
    """A refusal as a page: the code (linked to its dictionary entry) and the message."""
    request.state.error_code = str(exc.code)  # for the access line
    return page(request, "refused.html", status=exc.status, code=str(exc.code), message=exc.message)


def is_page(request: Request) -> bool:
    """Whether ``request`` was routed to a staff page (not to the JSON API)."""
    return bool(getattr(request.state, "web_page", False))


def install(app: FastAPI) -> None:
    """Make the pages' refusals pages: sign-in needed is a redirect to the form, and an
    :class:`ApiError` raised by a page is shown as one. The API's handler stays for the API."""
    api_handler = app.exception_handlers[ApiError]

    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        back = quote(request.url.path, safe="/")  # the path only: a hub id at most
        return RedirectResponse(f"/sign-in?next={back}", status_code=303, headers=HEADERS)

    async def _refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if is_page(request):
            return refusal_page(request, exc)
        return await api_handler(request, exc)  # type: ignore[no-any-return]

    app.add_exception_handler(SignInNeeded, _sign_in)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _refused)
