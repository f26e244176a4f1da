"""The hub's field catalogue, and turning one raw incoming value into a per-field plan.

Field names are the ones the mapping format uses: the default fields by their column name
(``first_name``, ``phone``, …), ``active`` (the inverse of ``archived``, as CSV imports spell
it) and ``custom:<display name>`` for custom fields. ``id`` is the hub id: a match key only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from daemon.foundation.dictionary import Code
from daemon.hub import normalize

UNSET = "UNSET"
CUSTOM_PREFIX = "custom:"
HUB_ID = "id"


class Kind(StrEnum):
    """How a default field's values are validated."""

    TEXT = "text"
    NAME = "name"
    PHONE = "phone"
    EMAIL = "email"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class DefaultField:
    """A default contact field: its kind, its length cap, and whether UNSET may clear it."""

    name: str
    kind: Kind
    max_length: int = 255
    unset_allowed: bool = False
    column: str | None = None  # the contact column it writes, when not ``name``


DEFAULT_FIELDS: dict[str, DefaultField] = {
    f.name: f
    for f in (
        DefaultField("crm_id", Kind.TEXT, 255, unset_allowed=True),
        DefaultField("enrollment_id", Kind.TEXT, 255, unset_allowed=True),
        DefaultField("first_name", Kind.NAME, 64, unset_allowed=True),
        DefaultField("last_name", Kind.NAME, 64, unset_allowed=True),
        DefaultField("preferred_name", Kind.NAME, 64, unset_allowed=True),
        DefaultField("phone", Kind.PHONE, unset_allowed=True),
        DefaultField("email", Kind.EMAIL, 320),
        DefaultField("archived", Kind.BOOLEAN),
        DefaultField("active", Kind.BOOLEAN, column="archived"),
    )
}
"""Default fields an incoming record may carry. ``test_user``, ``invalid_phone`` and
``previous_phone`` are the hub's own and never come from a platform."""

REQUIRED_FOR_CREATE = ("first_name", "last_name", "phone")

# Columns a client may read or an outgoing mapping may send, beyond the incoming ones.
READABLE_FIELDS = (*DEFAULT_FIELDS, "id", "test_user", "invalid_phone", "created_at", "updated_at")


class Action(StrEnum):
    """What the pipeline does with one field of one record."""

    SET = "set"
    CLEAR = "clear"
    SKIP = "skip"
    REJECT = "reject"


@dataclass(slots=True)
class FieldPlan:
    """The plan for one field: its action, the canonical value, and why."""

    field: str
    action: Action
    value: Any = None
    code: Code | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for dry runs and reports."""
        out: dict[str, Any] = {"field": self.field, "action": str(self.action)}
        if self.action is Action.SET:
            out["value"] = self.value
        if self.code:
            out["code"] = str(self.code)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class CustomFieldDef:
    """A custom field as the pipeline sees it."""

    id: int
    name: str
    type: str


class Schema:
    """The custom fields and the phone region: what incoming values are checked against."""

    def __init__(self, custom_fields: list[CustomFieldDef], region: str = "US") -> None:
        self.region = region
        self.custom = {f.name: f for f in custom_fields}
        self._folded = {f.name.casefold(): f for f in custom_fields}
        self.by_id = {f.id: f for f in custom_fields}

    def custom_field(self, name: str) -> CustomFieldDef | None:
        """Look a custom field up by display name: exact first, then ignoring case."""
        return self.custom.get(name) or self._folded.get(name.casefold())


def is_blank(raw: Any) -> bool:
    """Blank or null: the rule says such a value is skipped and the hub keeps what it had."""
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


def plan_field(name: str, raw: Any, schema: Schema) -> FieldPlan:
    """Turn one raw incoming value into a plan, independent of the hub's current state."""
    if is_blank(raw):
        return FieldPlan(name, Action.SKIP, reason="blank")
    is_unset = isinstance(raw, str) and raw.strip() == UNSET
    if name.startswith(CUSTOM_PREFIX):
        definition = schema.custom_field(name[len(CUSTOM_PREFIX) :])
        if definition is None:
            return FieldPlan(
                name, Action.REJECT, code=Code.UNKNOWN_CUSTOM_FIELD, reason="no such custom field"
            )
        name = CUSTOM_PREFIX + definition.name
        if is_unset:
            return FieldPlan(name, Action.CLEAR)
        try:
            return FieldPlan(name, Action.SET, normalize.custom(str(raw), definition.type))
        except normalize.InvalidValue as exc:
            return FieldPlan(name, Action.REJECT, code=exc.code, reason=exc.message)
    spec = DEFAULT_FIELDS.get(name)
    if spec is None:
        return FieldPlan(name, Action.REJECT, code=Code.INVALID_VALUE, reason="not a hub field")
    if is_unset:
        if spec.unset_allowed:
            return FieldPlan(name, Action.CLEAR)
        return FieldPlan(
            name, Action.REJECT, code=Code.UNSET_NOT_ALLOWED, reason=f"{name} cannot be cleared"
        )
    try:
        return FieldPlan(name, Action.SET, _canonical(spec, raw, schema.region))
    except normalize.InvalidValue as exc:
        return FieldPlan(name, Action.REJECT, code=exc.code, reason=exc.message)


def _canonical(spec: DefaultField, raw: Any, region: str) -> Any:
    if spec.kind is Kind.BOOLEAN:
        return normalize.boolean(raw)
    value = str(raw)
    if spec.kind is Kind.PHONE:
        return normalize.phone(value, region)
    if spec.kind is Kind.EMAIL:
        return normalize.email(value)
    return normalize.text(value, spec.max_length)


def column_value(field: str, plan: FieldPlan) -> tuple[str, Any]:
    """The contact column and value a SET or CLEAR of a default field writes."""
    spec = DEFAULT_FIELDS[field]
    if spec.name == "active":
        return "archived", (not plan.value) if plan.action is Action.SET else False
    return spec.column or spec.name, plan.value if plan.action is Action.SET else None


def current_value(contact: Mapping[str, Any], field: str) -> Any:
    """The contact's current value of a default field, in the field's own terms."""
    if field == "active":
        return not contact["archived"]
    return contact[DEFAULT_FIELDS[field].column or field]
