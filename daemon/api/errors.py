"""Every refusal of the API is one JSON shape: ``{"error": {"code": …, "message": …}}``.

The code is always a dictionary code, so a client handles an API refusal the way staff handle
a sync-log row. Routes raise :class:`ApiError`; FastAPI's own refusals (a body that does not
validate, an unknown route, a wrong method) are mapped to the same shape here, in one place.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger

log = get_logger("contactsync.api")


class ErrorBody(BaseModel):
    """The code and a message fit to show; never personal data or a secret."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """What every refusal answers (``extra`` may add keys beside ``error``)."""

    error: ErrorBody


class ApiError(Exception):
    """A refusal: the HTTP status, the dictionary code, a message, and optional extra keys."""

    def __init__(
        self,
        status: int,
        code: Code,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra


def error_json(
    status: int,
    code: Code | str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The JSON response of one refusal."""
    body = {"error": {"code": str(code), "message": message}, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


# Responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "api-unauthorized"},
    403: {"model": ErrorResponse, "description": "api-forbidden"},
    422: {"model": ErrorResponse, "description": "api-invalid-request or a record refused"},
}


# A key named in a message: a field name, or a custom field's display name. Any other key is
# the client's (an object keyed by phone or by email, sent by mistake) and is not repeated:
# the message goes to the sync log and the daemon's log.
_KEY_SHOWN = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,63}")


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "records", 3, "phone") -> "body.records[3].phone"
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part) if _KEY_SHOWN.fullmatch(str(part)) else "(a key)"
        out += f".{name}" if out else name
    return out


def validation_message(errors: list[Any]) -> str:
    """A short message for pydantic errors: where and why, never the value sent (it may be
    a phone or an email)."""
    parts = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install(app: FastAPI) -> None:
    """Register the handlers that turn every refusal into the one JSON shape."""

    def refuse(
        request: Request, status: int, code: Code, message: str, headers: Any = None, **extra: Any
    ) -> JSONResponse:
        request.state.error_code = str(code)  # for the access line
        return error_json(status, code, message, headers, **extra)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return refuse(request, exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(list(exc.errors()))
        return refuse(request, 422, Code.API_INVALID_REQUEST, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return refuse(request, 404, Code.API_NOT_FOUND, "no such route")
        if exc.status_code in (408, 413):  # raised by daemon.api.limits
            return refuse(
                request,
                exc.status_code,
                Code.API_BODY_TOO_LARGE,
                str(exc.detail),
                {"Connection": "close"},
            )
        if exc.status_code == 405:
            return refuse(
                request, 405, Code.API_INVALID_REQUEST, "method not allowed here", exc.headers
            )
        # Starlette's own 400s (a body that is not JSON, say).
        return refuse(request, exc.status_code, Code.API_INVALID_REQUEST, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The request fails, the server carries on; the traceback goes to the log, redacted,
        # and without the failed statement's parameters (a searched email, a phone).
        _hide_parameters(exc)
        log.error("api_internal_error", code=str(Code.INTERNAL_ERROR), exc_info=exc)
        # Starlette raises the exception again once this answer is sent, and uvicorn then
        # drops the connection: "close" tells the client not to send its next request on it.
        return refuse(
            request,
            500,
            Code.INTERNAL_ERROR,
            "internal error; see the daemon's log",
            {"Connection": "close"},
        )


def _hide_parameters(exc: BaseException) -> None:
    """Mark every SQLAlchemy error in ``exc``'s chain to print its SQL without the values
    bound to it (``[SQL parameters hidden …]``): those are the request's personal data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StatementError):
            current.hide_parameters = True
        current = current.__cause__ or current.__context__
