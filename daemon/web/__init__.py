"""The staff's pages: the Sync Log, the error dictionary, a contact, the instances.

Server-rendered HTML (Jinja2) on the same app and port as the HTTP API, built on the same
hub and engine functions as its routes; a small vendored script (htmx) only enhances them.
Every page needs a signed-in session (:mod:`daemon.web.session`); reading is the ``read``
role's, every change is ``staff``'s and carries the session's form token.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from daemon.web import contacts, dictionary, instances, signin, synclog
from daemon.web.render import STATIC, install

__all__ = ["install", "mount", "router"]


def _mark_page(request: Request) -> None:
    # A refusal raised under a page is shown as a page (render.install), not as JSON.
    request.state.web_page = True


router = APIRouter(include_in_schema=False, dependencies=[Depends(_mark_page)])
for _module in (signin, synclog, dictionary, contacts, instances):
    router.include_router(_module.router)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """A vendored or own static file; cached for a day (their names change with releases)."""
    found = STATIC.get(name)
    if found is None:
        return Response(status_code=404)
    body, kind = found
    return Response(body, media_type=kind, headers={"Cache-Control": "public, max-age=86400"})


def mount(app: FastAPI) -> None:
    """Serve the staff's pages on the API's ``app`` (a :data:`daemon.api.app.Site`): same hub,
    same tokens, HTML; not in the OpenAPI document."""
    app.include_router(router)
    install(app)
