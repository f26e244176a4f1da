"""Helpers for engine tests: instance files, a memory connector registry, table snapshots."""

from __future__ import annotations

import functools
import os
import textwrap
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from daemon.config.instances import Instance, load_instance
from daemon.engine.cycle import SyncEngine
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.hub.mirror import mirror_instances
from tests.instancekit import memory_fields
from tests.memremote import MemoryConnector, MemoryRemote

CONNECTORS = {"memory": MemoryConnector}

FIELDS = memory_fields()


def write_instance(
    etc: Path,
    name: str,
    *,
    remote: str = "default",
    extra: str = "",
    fields: str = FIELDS,
    settings: str = "",
) -> Instance:
    """Write ``etc/instances/<name>.toml`` for the memory connector and load it."""
    folder = etc / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    body = f'type = "memory"\n{textwrap.dedent(extra)}\n'
    body += f'[settings]\nremote = "{remote}"\n{textwrap.dedent(settings)}\n'
    body += textwrap.dedent(fields)
    path.write_text(body)
    return load_instance(path, CONNECTORS)


def fresh_remote(name: str = "default") -> MemoryRemote:
    """A new, empty remote under ``name``."""
    remote = MemoryRemote()
    MemoryConnector.REMOTES[name] = remote
    return remote


@functools.cache
def _installed_transforms(
    blocked: str | None, modules: str | None
) -> dict[str, Any]:  # the env is the key
    # Loading every entry point and checking the plugins costs ~0.3 s; the tests that build
    # an engine per step would pay it dozens of times for the same answer.
    return Registry.from_plugin_manager(get_plugin_manager()).transforms


def sync_engine(engine: Engine, *instances: Instance) -> SyncEngine:
    """A sync engine with the built-in transforms, and the instances mirrored."""
    transforms = _installed_transforms(
        os.environ.get("CONTACTSYNC_BLOCK_PLUGINS"), os.environ.get("CONTACTSYNC_PLUGINS")
    )
    mirror_instances(engine, {i.name: i for i in instances})
    return SyncEngine(engine, dict(transforms))


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for "nothing changed" assertions."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted(tuple(map(repr, r)) for r in rows)
    return out
