"""Who is calling: ``Authorization: Bearer TOKEN``, checked against the hub's token hashes.

Every route names the role it needs with ``dependencies=[Depends(Require(Role.X))]``; a route
without one is refused by a test (the auth matrix is generated from the app's routes). A
missing, unknown or revoked token is ``api-unauthorized`` (401); a role too low is
``api-forbidden`` (403). The token itself is never logged, only its name.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from daemon.api.errors import ApiError
from daemon.api.state import hub_of
from daemon.foundation.dictionary import Code
from daemon.hub.apitokens import Role, TokenInfo, authenticate

_bearer = HTTPBearer(auto_error=False, description="A token from `contactsync tokens create`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Require:
    """The dependency that admits a token whose role is at least ``role``."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> TokenInfo:
        # A plain function: FastAPI runs it on a worker thread, so the database lookup never
        # blocks the event loop.
        if credentials is None or not credentials.credentials:
            raise ApiError(
                401,
                Code.API_UNAUTHORIZED,
                "send Authorization: Bearer TOKEN",
                headers=_CHALLENGE,
            )
        info = authenticate(hub_of(request).engine, credentials.credentials)
        if info is None:
            raise ApiError(
                401, Code.API_UNAUTHORIZED, "unknown or revoked token", headers=_CHALLENGE
            )
        request.state.token_name = info.name
        if not info.role.allows(self.role):
            raise ApiError(
                403,
                Code.API_FORBIDDEN,
                f"this route needs the {self.role} role; token {info.name!r} has {info.role}",
            )
        return info


def needs(role: Role) -> dict[str, Any]:
    """A route's keyword arguments for ``role``: the dependency that enforces it, and
    ``x-role`` in the OpenAPI document, which clients read and the auth matrix test walks."""
    return {"dependencies": [Depends(Require(role))], "openapi_extra": {"x-role": str(role)}}
