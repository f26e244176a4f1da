"""``/instances``: each instance's health at a glance, and "sync now" for staff.

The rows are ``contactsync status --json``'s (:func:`~daemon.engine.status.status_rows`), as
``GET /api/v1/instances`` answers them; "sync now" wakes the scheduler through the same
function as ``POST /api/v1/instances/{name}/sync`` (:func:`~daemon.api.instances.wake`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from daemon.api.instances import wake
from daemon.api.state import hub_of
from daemon.engine.status import status_rows
from daemon.hub.apitokens import Role
from daemon.web.render import HEADERS, page
from daemon.web.session import Session, check_form, require, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/instances", response_class=HTMLResponse)
def instances_page(
    request: Request,
    session: Annotated[Session, Depends(signed_in)],
) -> HTMLResponse:
    """Every instance: state, last pull and push, outbox, back-off, pending writes."""
    hub = hub_of(request)
    return page(
        request,
        "instances.html",
        session=session,
        rows=status_rows(hub.engine, hub.instances()),
        staff=session.may(Role.STAFF),
        woken=request.query_params.get("woken"),
        can_sync=hub.cycles is not None,
    )


@router.post("/instances/{name}/sync")
def sync_now(
    request: Request,
    name: str,
    session: Annotated[Session, Depends(signed_in)],
    csrf: Annotated[str | None, Form(max_length=128)] = None,
) -> RedirectResponse:
    """Run the instance's cycles now on the daemon's scheduler (not in this request)."""
    check_form(session, csrf)
    require(session, Role.STAFF)
    wake(hub_of(request), name)
    return RedirectResponse(f"/instances?woken={name}", 303, headers=HEADERS)
