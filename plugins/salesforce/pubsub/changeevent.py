"""Change Data Capture events as Salesforce encodes them: the Avro schema, and the field bitmaps.

Both sides use this module, so the simulator's encoding and the client's decoding are one
piece of code, checked by the tests end to end over gRPC:

- a change event is an Avro record ``<Object>ChangeEvent`` whose first field is
  ``ChangeEventHeader`` (``entityName``, ``recordIds``, ``changeType``, ``commitTimestamp``,
  ``changedFields``, ``nulledFields``, ``diffFields``…), followed by the object's fields, each
  optional (``["null", T]``). An update carries values only for the fields it changed;
- the name fields are one compound field, ``Name``, a nested record (``Salutation``,
  ``FirstName``, ``LastName``), as Salesforce sends them;
- ``changedFields`` (and ``nulledFields``, ``diffFields``) are not names but bitmaps: the
  first entry is ``0x``-hex whose bit *i* (least significant first) marks the record's field
  at position *i* of the schema; an entry ``"p-0x…"`` does the same for the fields of the
  compound field at position *p*. Bitmaps keep events small; the schema is needed to read
  them, which is why a subscriber fetches it (``GetSchema``) by the event's schema id.

Invariant: :func:`field_names` over :func:`field_bitmaps` returns the same set of API field
names (``FirstName``, not ``Name.FirstName``: the connector maps API names).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    # Salesforce sends a gap event when it could not build the full event (the record's id
    # and the change type are right, the values are not): a targeted pull still fixes it.
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    # Too many changes at once (over 100,000 in one transaction): the ids are not listed.
    "GAP_OVERFLOW",
)
COMPOUND_NAME = ("Salutation", "FirstName", "LastName")
# Fields never in a change event: the id is in the header, deletion is the change type.
_LEFT_OUT = {"Id", "IsDeleted"}
_AVRO_TYPE = {"double": "double", "boolean": "boolean", "datetime": "long", "date": "int"}
NAMESPACE = "com.sforce.eventbus"


def topic_name(entity: str) -> str:
    """The standard change event channel of an object: ``/data/ContactChangeEvent``."""
    return f"/data/{entity}ChangeEvent"


def entity_of(topic: str) -> str | None:
    """The object of a ``/data/<Object>ChangeEvent`` topic, or None for another name."""
    prefix, suffix = "/data/", "ChangeEvent"
    if topic.startswith(prefix) and topic.endswith(suffix) and len(topic) > 17:
        return topic[len(prefix) : -len(suffix)]
    return None


def _optional(avro_type: Any) -> dict[str, Any]:
    return {"type": ["null", avro_type], "default": None}


def change_event_schema(entity: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The Avro schema of ``entity``'s change events; ``fields`` maps each field's API name to
    its describe type (``string``, ``double``, ``datetime``…), in describe order."""
    header = {
        "type": "record",
        "name": "ChangeEventHeader",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": {"type": "array", "items": "string"}},
            {
                "name": "changeType",
                "type": {"type": "enum", "name": "ChangeType", "symbols": list(CHANGE_TYPES)},
            },
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
            {"name": "diffFields", "type": {"type": "array", "items": "string"}},
            {"name": "changedFields", "type": {"type": "array", "items": "string"}},
        ],
    }
    out: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": header}]
    compound_done = False
    for name, kind in fields.items():
        if name in _LEFT_OUT:
            continue
        if name in COMPOUND_NAME:
            if not compound_done:
                inner = [{"name": n, **_optional("string")} for n in COMPOUND_NAME]
                record = {"type": "record", "name": "Switchable_PersonName", "fields": inner}
                out.append({"name": "Name", **_optional(record)})
                compound_done = True
            continue
        out.append({"name": name, **_optional(_AVRO_TYPE.get(kind, "string"))})
    return {"type": "record", "name": f"{entity}ChangeEvent", "namespace": NAMESPACE, "fields": out}


def schema_id(schema: Mapping[str, Any]) -> str:
    """A fingerprint of the schema (Salesforce's ids are fingerprints too: a new field gives a
    new id, and a subscriber fetches the new schema once)."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:22]


def _record_fields(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(schema["fields"])


def _nested(field: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The record inside an optional field, if it is a compound field."""
    kind = field["type"]
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, Mapping) and kind.get("type") == "record" else None


def _bitmap(positions: Iterable[int]) -> str:
    value = 0
    for position in positions:
        value |= 1 << position
    digits = f"{value:x}"
    return "0x" + digits.zfill(len(digits) + len(digits) % 2).upper()


def field_bitmaps(schema: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The bitmaps that mark ``names`` (API field names) in ``schema``: ``[]`` for none."""
    wanted = set(names)
    top: list[int] = []
    nested: list[str] = []
    for position, field in enumerate(_record_fields(schema)):
        inner = _nested(field)
        if field["name"] == "ChangeEventHeader" or inner is None:
            if field["name"] in wanted:
                top.append(position)
            continue
        children = [i for i, f in enumerate(inner["fields"]) if f["name"] in wanted]
        if children:
            top.append(position)
            nested.append(f"{position}-{_bitmap(children)}")
    return [_bitmap(top), *nested] if top else []


def field_names(schema: Mapping[str, Any], bitmaps: Sequence[str]) -> list[str]:
    """The API field names that ``bitmaps`` mark in ``schema``, in schema order. A compound
    field marked without a nested bitmap stands for all its parts. Entries that are already
    names (older API versions send names) pass through."""
    fields = _record_fields(schema)
    marked: list[int] = []
    by_parent: dict[int, list[str]] = {}
    plain: list[str] = []
    for entry in bitmaps:
        if entry.startswith("0x"):
            marked += _positions(entry, len(fields))
        elif "-0x" in entry:
            parent_text, _, bits = entry.partition("-")
            parent = int(parent_text)
            inner = _nested(fields[parent]) if 0 <= parent < len(fields) else None
            if inner is not None:
                children = inner["fields"]
                picked = [children[i]["name"] for i in _positions(bits, len(children))]
                by_parent[parent] = picked
        else:
            plain.append(entry)
    out: list[str] = []
    for position in marked:
        field = fields[position]
        inner = _nested(field)
        if inner is None:
            out.append(str(field["name"]))
        else:
            out += by_parent.get(position, [f["name"] for f in inner["fields"]])
    return out + plain


def _positions(bits: str, size: int) -> list[int]:
    value = int(bits, 16)
    # Bits past the schema's end mean a newer schema than ours: ignore, never IndexError.
    return [i for i in range(min(value.bit_length(), size)) if value >> i & 1]


def payload(
    schema: Mapping[str, Any], header: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The Avro datum of one event: ``header`` and the fields of ``values`` (API names; the
    name parts go into ``Name``). Fields not in ``values`` are null."""
    datum: dict[str, Any] = {"ChangeEventHeader": dict(header)}
    for field in _record_fields(schema)[1:]:
        inner = _nested(field)
        if inner is None:
            datum[field["name"]] = values.get(field["name"])
        else:
            parts = {f["name"]: values.get(f["name"]) for f in inner["fields"]}
            has_part = any(f["name"] in values for f in inner["fields"])
            datum[field["name"]] = parts if has_part else None
    return datum
