"""Staff-side operations on the hub: custom fields and hand edits of contacts.

These are *hub-side* changes, unlike incoming sync: editing a phone here records the old one
as ``previous_phone`` (design §2, rule 6), and every change stamps the field's change time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.exc import IntegrityError

from daemon.foundation.dictionary import Code
from daemon.hub import outbox
from daemon.hub.database import READ_ONLY, upsert
from daemon.hub.fields import (
    CUSTOM_PREFIX,
    DEFAULT_FIELDS,
    REQUIRED_FOR_CREATE,
    Action,
    CustomFieldDef,
    Schema,
    column_value,
    plan_field,
)
from daemon.hub.normalize import CUSTOM_TYPES
from daemon.hub.store import Contact, CustomField, CustomValue, new_contact_id, utcnow

_CONTACT = Contact.__table__
_CUSTOM_FIELD = CustomField.__table__
_CUSTOM_VALUE = CustomValue.__table__


class HubError(Exception):
    """A staff edit the hub refuses; ``code`` comes from the dictionary."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_schema(engine: Engine, region: str = "US") -> Schema:
    """The custom field definitions, as the incoming pipeline needs them."""
    with engine.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(select(_CUSTOM_FIELD).order_by(_CUSTOM_FIELD.c.name)).all()
    return Schema([CustomFieldDef(r.id, r.name, r.type) for r in rows], region)


def add_custom_field(engine: Engine, name: str, field_type: str) -> CustomFieldDef:
    """Define a custom field; names are unique, ignoring case."""
    name = name.strip()
    if not name or len(name) > 255:
        raise HubError(Code.INVALID_VALUE, "a custom field name has 1 to 255 characters")
    if field_type not in CUSTOM_TYPES:
        raise HubError(Code.INVALID_VALUE, f"type must be one of {', '.join(CUSTOM_TYPES)}")
    with engine.begin() as conn:
        clash = conn.execute(
            select(_CUSTOM_FIELD.c.name).where(func.lower(_CUSTOM_FIELD.c.name) == name.lower())
        ).first()
        if clash:
            raise HubError(Code.INVALID_VALUE, f"custom field {clash.name!r} already exists")
        new_id = conn.execute(
            _CUSTOM_FIELD.insert().values(name=name, type=field_type, created_at=utcnow())
        ).inserted_primary_key[0]
    return CustomFieldDef(int(new_id), name, field_type)


@dataclass(slots=True)
class ContactView:
    """A contact with its custom values keyed by display name."""

    row: dict[str, Any]
    custom: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.row.items()}
        out["custom"] = dict(self.custom)
        return out


def get_contact(engine: Engine, contact_id: str) -> ContactView | None:
    """One contact by hub id, CRM id or phone (as staff would look it up)."""
    with engine.connect().execution_options(**READ_ONLY) as conn:
        row = (
            conn.execute(
                select(_CONTACT).where(
                    or_(
                        _CONTACT.c.id == contact_id,
                        _CONTACT.c.crm_id == contact_id,
                        _CONTACT.c.phone == contact_id,
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        custom = {
            r.name: r.value
            for r in conn.execute(
                select(_CUSTOM_FIELD.c.name, _CUSTOM_VALUE.c.value)
                .join(_CUSTOM_VALUE, _CUSTOM_VALUE.c.field_id == _CUSTOM_FIELD.c.id)
                .where(_CUSTOM_VALUE.c.contact_id == row["id"])
                .order_by(_CUSTOM_FIELD.c.name)
            )
        }
    return ContactView(dict(row), custom)


def contact_names(engine: Engine, ids: Iterable[str]) -> dict[str, str]:
    """The display name ("First Last") of each of ``ids`` that is a contact, in one query:
    how staff know a contact, where a page lists rows that name it by hub id."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    table = Contact.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.id, table.c.first_name, table.c.last_name).where(
                table.c.id.in_(sorted(wanted))
            )
        ).all()
    return {
        row.id: " ".join(part for part in (row.first_name, row.last_name) if part) or row.id
        for row in rows
    }


def list_contacts(
    engine: Engine,
    *,
    search: str | None = None,
    include_archived: bool = False,
    test_users: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Contacts, newest change first."""
    query = select(_CONTACT).order_by(_CONTACT.c.updated_at.desc(), _CONTACT.c.id)
    if not include_archived:
        query = query.where(_CONTACT.c.archived.is_(False))
    if test_users is not None:
        query = query.where(_CONTACT.c.test_user.is_(test_users))
    if search:
        # autoescape: "%", "_" and the escape character in the search are themselves, not
        # LIKE wildcards ("%" listed every contact), the same on SQLite and PostgreSQL.
        lowered = search.lower()
        query = query.where(
            or_(
                func.lower(_CONTACT.c.first_name).contains(lowered, autoescape=True),
                func.lower(_CONTACT.c.last_name).contains(lowered, autoescape=True),
                func.lower(_CONTACT.c.email).contains(lowered, autoescape=True),
                _CONTACT.c.phone.contains(search, autoescape=True),
                _CONTACT.c.crm_id == search,
                _CONTACT.c.id == search,
            )
        )
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return [dict(r) for r in conn.execute(query.limit(limit).offset(offset)).mappings()]


def save_contact(
    engine: Engine,
    values: Mapping[str, str],
    *,
    contact_id: str | None = None,
    test_user: bool | None = None,
    archived: bool | None = None,
    region: str = "US",
) -> str:
    """Create a contact (no ``contact_id``) or edit one, as a hub-side change.

    ``values`` maps hub field names (``custom:Name`` for custom fields) to raw values; ``UNSET``
    clears where the rules allow it. Returns the contact's id.
    """
    schema = load_schema(engine, region)
    plans = [plan_field(name, raw, schema) for name, raw in values.items()]
    for plan in plans:
        if plan.action is Action.REJECT:
            raise HubError(plan.code or Code.INVALID_VALUE, f"{plan.field}: {plan.reason}")
    now = utcnow()
    columns: dict[str, Any] = {}
    custom_set: dict[int, str] = {}
    custom_clear: list[int] = []
    custom_names: list[str] = []
    for plan in plans:
        if plan.action is Action.SKIP:
            continue
        if plan.field.startswith(CUSTOM_PREFIX):
            custom_names.append(plan.field)
            definition = schema.custom[plan.field[len(CUSTOM_PREFIX) :]]
            if plan.action is Action.SET:
                custom_set[definition.id] = plan.value
            else:
                custom_clear.append(definition.id)
        elif plan.field in DEFAULT_FIELDS:
            column, value = column_value(plan.field, plan)
            columns[column] = value
    if test_user is not None:
        columns["test_user"] = test_user
    if archived is not None:
        columns["archived"] = archived
    try:
        with engine.begin() as conn:
            if contact_id is None:
                contact_id = _insert(conn, columns, now, custom_names)
                touched = [*columns, *custom_names]
            else:
                touched = _update(conn, contact_id, columns, now, custom_names)
            _write_custom(conn, contact_id, custom_set, custom_clear)
            if touched:
                # A staff edit goes out to every connection, in the same transaction.
                outbox.fan_out(conn, {contact_id: touched}, "hub", now)
    except IntegrityError as exc:
        raise _explain_integrity(exc) from None
    return contact_id


def _insert(conn: Any, columns: dict[str, Any], now: datetime, custom_names: list[str]) -> str:
    missing = [name for name in REQUIRED_FOR_CREATE if not columns.get(name)]
    if missing:
        raise HubError(Code.BLANK_REQUIRED_DATA, f"a new contact needs {', '.join(missing)}")
    contact_id = new_contact_id()
    stamp = now.isoformat()
    conn.execute(
        _CONTACT.insert().values(
            id=contact_id,
            created_at=now,
            updated_at=now,
            changed_at={name: stamp for name in [*columns, *custom_names]},
            **columns,
        )
    )
    return contact_id


def _update(
    conn: Any, contact_id: str, columns: dict[str, Any], now: datetime, custom_names: list[str]
) -> list[str]:
    current = conn.execute(select(_CONTACT).where(_CONTACT.c.id == contact_id)).mappings().first()
    if current is None:
        raise HubError(Code.UNKNOWN_CONTACT_ID, f"no contact has id {contact_id}")
    changed = {k: v for k, v in columns.items() if current[k] != v}
    if "phone" in changed:
        # Staff changed the number: remember the old one so a stale import can't undo it.
        changed["previous_phone"] = current["phone"]
        changed["invalid_phone"] = False
    stamp = now.isoformat()
    changed_at = dict(current["changed_at"] or {})
    changed_at.update({name: stamp for name in changed if name != "previous_phone"})
    changed_at.update({name: stamp for name in custom_names})
    conn.execute(
        _CONTACT.update()
        .where(_CONTACT.c.id == contact_id)
        .values(updated_at=now, changed_at=changed_at, **changed)
    )
    return [name for name in changed if name not in _HUB_OWN] + custom_names


# Changing these is bookkeeping, not news for the platforms.
_HUB_OWN = frozenset({"previous_phone", "invalid_phone"})


def _write_custom(conn: Any, contact_id: str, values: dict[int, str], clear: list[int]) -> None:
    for field_id in clear:
        conn.execute(
            _CUSTOM_VALUE.delete().where(
                _CUSTOM_VALUE.c.contact_id == contact_id, _CUSTOM_VALUE.c.field_id == field_id
            )
        )
    if values:
        conn.execute(
            upsert(_CUSTOM_VALUE, conn.dialect.name, ("contact_id", "field_id"), ("value",)),
            [{"contact_id": contact_id, "field_id": f, "value": v} for f, v in values.items()],
        )


def _explain_integrity(exc: IntegrityError) -> HubError:
    text = str(exc.orig).lower()
    if "phone" in text:
        return HubError(Code.DUPLICATE_CONTACT, "another contact has this phone")
    if "crm_id" in text:
        return HubError(Code.DUPLICATE_CRM_ID, "another contact has this CRM id")
    return HubError(Code.INVALID_VALUE, "the hub refused the change (a unique value is taken)")
