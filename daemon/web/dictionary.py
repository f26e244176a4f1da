"""``/errors``: the error dictionary, every code with its meaning, effect and next step.

Each entry has an anchor named by its code (``/errors#duplicate-contact``), which the Sync
Log's codes link to. The same entries as ``contactsync errors`` and ``GET /api/v1/errors``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from daemon.foundation.dictionary import ENTRIES
from daemon.web.render import page
from daemon.web.session import Session, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/errors", response_class=HTMLResponse)
def dictionary_page(
    request: Request, session: Annotated[Session, Depends(signed_in)]
) -> HTMLResponse:
    """Every code, in the dictionary's order."""
    return page(request, "errors.html", session=session, entries=list(ENTRIES.values()))
