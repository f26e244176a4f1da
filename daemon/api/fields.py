"""``/api/v1/fields``: the fields a contact has, default and custom.

A client builds its edit forms from this: which default fields ``UNSET`` may clear, their
length caps, and each custom field's type. Defining a custom field changes every client's
schema, so it is an admin's act.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from daemon.api.auth import needs
from daemon.api.errors import ApiError
from daemon.api.state import API_PREFIX, hub_of
from daemon.hub.apitokens import Role
from daemon.hub.contacts import HubError, add_custom_field, load_schema
from daemon.hub.fields import DEFAULT_FIELDS

router = APIRouter(prefix=API_PREFIX, tags=["fields"])


class DefaultFieldOut(BaseModel):
    """A default field: how it is checked, its length cap, and whether UNSET clears it."""

    name: str
    kind: str
    max_length: int
    unset_allowed: bool


class CustomFieldOut(BaseModel):
    """A custom field, keyed by its display name in a contact's ``custom``."""

    name: str
    type: str


class FieldsOut(BaseModel):
    default: list[DefaultFieldOut]
    custom: list[CustomFieldOut]


class CustomFieldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    type: Literal["text", "number", "date", "boolean"] = "text"


@router.get("/fields", response_model=FieldsOut, **needs(Role.READ))
def list_fields(request: Request) -> FieldsOut:
    """The default fields and the custom fields."""
    schema = load_schema(hub_of(request).engine)
    return FieldsOut(
        default=[
            DefaultFieldOut(
                name=f.name,
                kind=str(f.kind),
                max_length=f.max_length,
                unset_allowed=f.unset_allowed,
            )
            for f in DEFAULT_FIELDS.values()
        ],
        custom=[CustomFieldOut(name=f.name, type=f.type) for f in schema.custom.values()],
    )


@router.post("/fields", response_model=CustomFieldOut, status_code=201, **needs(Role.ADMIN))
def define_field(request: Request, body: CustomFieldIn) -> JSONResponse:
    """Define a custom field (names are unique, ignoring case)."""
    try:
        definition = add_custom_field(hub_of(request).engine, body.name, body.type)
    except HubError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    out = CustomFieldOut(name=definition.name, type=definition.type)
    return JSONResponse(out.model_dump(), status_code=201)
