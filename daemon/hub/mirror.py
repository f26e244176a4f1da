"""The configured instances, mirrored into the hub's ``instance`` table.

The outbox fans a hub change out to the connections this table lists, so it must follow the
files in ``etc/``: a new instance appears, a changed one is updated, and one whose file is gone
is disabled (never deleted: its links and history stay).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from sqlalchemy import Engine, select, update

from daemon.hub.store import InstanceRow, utcnow

_INSTANCE = InstanceRow.__table__


class Mirrored(Protocol):
    """What the mirror needs of an instance (:class:`daemon.config.instances.Instance` is one)."""

    @property
    def name(self) -> str: ...

    def hub_row(self) -> Mapping[str, Any]:
        """The ``type``, ``connection``, ``direction`` and ``enabled`` columns of its row."""
        ...


def mirror_instances(
    engine: Engine, instances: Mapping[str, Mirrored], *, keep: Iterable[str] = ()
) -> None:
    """Mirror the configured instances into the ``instance`` table (the outbox fans out to
    the connections it lists). Instances no longer configured are disabled, not deleted;
    names in ``keep`` (files that are broken right now) stay as they were last mirrored, so
    changes made meanwhile still queue for their connection."""
    now = utcnow()
    keep = set(keep)
    with engine.begin() as conn:
        existing = {row["name"]: row for row in conn.execute(select(_INSTANCE)).mappings()}
        for instance in instances.values():
            values = dict(instance.hub_row())
            row = existing.get(instance.name)
            if row is None:
                conn.execute(
                    _INSTANCE.insert().values(name=instance.name, updated_at=now, **values)
                )
            elif any(row[k] != v for k, v in values.items()):
                conn.execute(
                    update(_INSTANCE)
                    .where(_INSTANCE.c.name == instance.name)
                    .values(updated_at=now, **values)
                )
        gone = {
            name
            for name, row in existing.items()
            if name not in instances and name not in keep and row["enabled"]
        }
        if gone:
            conn.execute(
                update(_INSTANCE)
                .where(_INSTANCE.c.name.in_(gone))
                .values(enabled=False, updated_at=now)
            )
