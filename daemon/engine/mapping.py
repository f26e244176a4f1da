"""Field mapping: remote records to hub fields, and hub values to remote fields.

An instance's ``[[fields]]`` say which hub field each remote field carries, in which direction,
through which transform. Transforms are registered by plugins (``register_transforms``); a
transform's failure rejects that one field, never the record.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.config.instances import Direction, FieldMap, Instance
from daemon.foundation.dictionary import Code
from daemon.hub.fields import UNSET, is_blank
from daemon.hub.incoming import Problem
from daemon.kit.connector import RemoteRecord

_SCALARS = (str, int, float, bool, type(None))


class Transform(Protocol):
    """A pair of conversions between a hub value and a remote value."""

    def to_hub(self, value: Any) -> Any: ...

    def to_remote(self, value: Any) -> Any: ...


class MappingError(ValueError):
    """A mapping names a transform no plugin registered."""


@dataclass(frozen=True, slots=True)
class _Rule:
    field: FieldMap
    transform: Transform | None


class Mapper:
    """Converts between one instance's remote records and hub field values."""

    def __init__(self, instance: Instance, transforms: Mapping[str, Transform]) -> None:
        self.instance = instance
        self.owns_crm_id = instance.config.owns_crm_id
        rules = []
        for field_map in instance.config.fields:
            transform = None
            if field_map.transform:
                transform = transforms.get(field_map.transform)
                if transform is None:
                    raise MappingError(f"no transform named {field_map.transform!r}")
            rules.append(_Rule(field_map, transform))
        self.incoming = [r for r in rules if r.field.direction.allows(Direction.INCOMING)]
        self.outgoing = [r for r in rules if r.field.direction.allows(Direction.OUTGOING)]

    @property
    def outgoing_hub_fields(self) -> list[str]:
        """The hub fields this instance sends."""
        return [r.field.hub for r in self.outgoing]

    def to_hub(
        self, record: RemoteRecord, *, keys: Collection[str] = ()
    ) -> tuple[dict[str, Any], list[Problem]]:
        """The hub-named raw values of a remote record, and the fields that failed to convert.

        A remote field absent from the record is absent here too: "not sent" never clears.
        ``keys`` are hub fields read even where they are mapped outgoing only: the match keys
        by which a push's lookup finds the contact a platform record already is.
        """
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        incoming = {r.field.hub for r in self.incoming}
        also = [r for r in self.outgoing if r.field.hub in keys and r.field.hub not in incoming]
        for rule in (*self.incoming, *also):
            remote = rule.field.remote
            if remote not in record.fields:
                continue
            value = record.fields[remote]
            if not isinstance(value, _SCALARS):
                # A list or an object where a value belongs: the platform sent something this
                # mapping cannot read. That field is rejected; the record goes on.
                problems.append(
                    Problem(
                        Code.REMOTE_MALFORMED,
                        f"{remote}: expected a single value, got {type(value).__name__}",
                        rule.field.hub,
                    )
                )
                continue
            if rule.transform is not None and not is_blank(value) and value != UNSET:
                try:
                    value = rule.transform.to_hub(value)
                except (ValueError, TypeError) as exc:
                    problems.append(Problem(Code.INVALID_VALUE, f"{remote}: {exc}", rule.field.hub))
                    continue
            values[rule.field.hub] = value
        if self.owns_crm_id:
            # This connection's record id *is* the hub's CRM id (as Mainstay pre-maps HubSpot).
            values["crm_id"] = record.remote_id
        return values, problems

    def to_remote(self, hub_values: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
        """Remote-named values for the given hub values (already filtered by the caller)."""
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for rule in self.outgoing:
            if rule.field.hub not in hub_values:
                continue
            value = hub_values[rule.field.hub]
            if rule.transform is not None:
                try:
                    value = rule.transform.to_remote(value)
                except (ValueError, TypeError) as exc:
                    problems.append(
                        Problem(Code.INVALID_VALUE, f"{rule.field.remote}: {exc}", rule.field.hub)
                    )
                    continue
            values[rule.field.remote] = value
        return values, problems
