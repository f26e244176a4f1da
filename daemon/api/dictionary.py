"""``/api/v1/errors``: the error dictionary, what ``contactsync errors`` prints.

Every sync-log row and every API refusal carries one of these codes; a client (the staff
page) shows the meaning, the effect and the next step beside a row.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from daemon.api.auth import needs
from daemon.api.errors import ApiError
from daemon.api.state import API_PREFIX
from daemon.foundation.dictionary import ENTRIES, Code, Entry, explain
from daemon.hub.apitokens import Role

router = APIRouter(prefix=API_PREFIX, tags=["errors"])


class ErrorEntry(BaseModel):
    """One code: what it means, what happened to the record or request, what to do."""

    code: str
    meaning: str
    effect: str
    next_step: str


def _entry(entry: Entry) -> ErrorEntry:
    return ErrorEntry(
        code=str(entry.code),
        meaning=entry.meaning,
        effect=entry.effect,
        next_step=entry.next_step,
    )


@router.get("/errors", response_model=list[ErrorEntry], **needs(Role.READ))
def list_errors() -> list[ErrorEntry]:
    """Every code of the dictionary, in its order."""
    return [_entry(e) for e in ENTRIES.values()]


@router.get("/errors/{code}", response_model=ErrorEntry, **needs(Role.READ))
def explain_error(code: str) -> ErrorEntry:
    """One code."""
    try:
        return _entry(explain(code))
    except KeyError:
        raise ApiError(
            404, Code.API_NOT_FOUND, "no such error code; GET /api/v1/errors lists them"
        ) from None
