"""What one cycle of an instance carries from the engine to pull, push, confirm and export.

The engine (:mod:`daemon.engine.cycle`) builds a :class:`CycleContext` fresh for each cycle and
hands it down; the cycle modules read it and never import the engine back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from daemon.config.instances import Instance
from daemon.engine.mapping import Mapper
from daemon.hub.fields import Schema
from daemon.hub.synclog import SyncContext
from daemon.kit.connector import Connector


@dataclass
class CycleContext:
    """Everything one cycle needs, built fresh for each cycle."""

    db: Engine
    instance: Instance
    connector: Connector
    mapper: Mapper
    schema: Schema
    owner: str
    sync_context: SyncContext
    dry_run: bool = False
    on_plan: Callable[[Any], None] | None = None
    resolve_conflict: Callable[..., str | None] | None = None
    match_record: Callable[..., Any] | None = None
    # A dry-run push that previews a first sync: it also plans the contacts the seed would
    # queue, leaving out these (the ones the previewed pull links or creates).
    preview_exclude: frozenset[str] | None = None
