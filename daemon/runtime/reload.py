"""Hot reload of ``etc/instances/*.toml``: what changed since the last good config.

:class:`ConfigState` keeps the current good config of every instance. Each :meth:`reload`
re-reads the folder and sorts the instances into added, changed, removed and unchanged. A file
that no longer loads keeps its instance's last good config (the daemon goes on syncing it as it
was) and is reported once as a ``config-invalid`` sync-log row and JSON line naming the file,
the key and the reason; the other instances are untouched. The result is mirrored into the
hub's ``instance`` table, so the outbox fans out to the connections configured now.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from sqlalchemy import Engine

from daemon.config.instances import Direction, Instance, LoadResult, load_instances
from daemon.config.settings import ConfigError, read_toml
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub.mirror import mirror_instances
from daemon.hub.synclog import SyncContext, new_run_id, record
from daemon.kit.connector import Connector

log = get_logger("contactsync.reload")

CONFIG_INTEGRATION = "config"
"""The sync log's ``integration`` for a broken file whose connector type is unknown."""


@dataclass
class ReloadResult:
    """What one reload found, by instance name (each list sorted).

    An instance whose file is invalid now is in ``invalid`` only: it keeps its last good
    config (when it ever had one) and is in none of the four lists."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    invalid: dict[str, ConfigError] = field(default_factory=dict)

    @property
    def touched(self) -> bool:
        """Whether anything was added, changed or removed."""
        return bool(self.added or self.changed or self.removed)

    def as_dict(self) -> dict[str, Any]:
        """For logs and ``--json``: names only, errors as file, key and reason."""
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "invalid": {name: _error_dict(error) for name, error in self.invalid.items()},
        }


def _error_dict(error: ConfigError) -> dict[str, str]:
    return {"file": error.path, "key": error.key, "reason": error.reason}


def _comparable(value: Any) -> Any:
    """``value`` with models dumped and secrets unwrapped, for an equality test only (never
    logged): a rotated secret in a ``{ file = ... }`` reference is a change."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            {name: _comparable(getattr(value, name)) for name in type(value).model_fields},
        )
    if isinstance(value, SecretStr | SecretBytes):
        return ("secret", value.get_secret_value())
    if isinstance(value, Mapping):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_comparable(item) for item in value]
    return value


def same_config(old: Instance, new: Instance) -> bool:
    """Whether two loads of an instance file configure the same thing."""
    return (
        old.connector_class is new.connector_class
        and old.path == new.path
        and _comparable(old.config) == _comparable(new.config)
        and _comparable(old.settings) == _comparable(new.settings)
    )


class ConfigState:
    """The daemon's current good config of every instance, reloaded on demand.

    Thread-safe: the watcher's thread and a SIGHUP may reload at once; reloads run one at a
    time and ``instances`` is replaced whole, never mutated in place.
    """

    def __init__(
        self, etc: Path, engine: Engine, connectors: Mapping[str, type[Connector]]
    ) -> None:
        self.etc = Path(etc)
        self.engine = engine
        self.connectors = connectors
        self.instances: dict[str, Instance] = {}
        self.invalid: dict[str, ConfigError] = {}  # the files that did not load last time
        # The error last reported for each broken file: the same error is logged once.
        self._reported: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def loaded(self) -> LoadResult:
        """The instances running now (a broken file's last good config included) and the
        errors of the broken files, as ``contactsync status`` and the API show them."""
        return LoadResult(self.instances, self.invalid)

    def reload(self) -> ReloadResult:
        """Re-read ``etc/instances/*.toml``, mirror the result into the hub, and say what
        changed. A failure to mirror (the database is down) raises and leaves the state as
        it was, so the next reload finds the same differences."""
        with self._lock:
            loaded = load_instances(self.etc, self.connectors)
            result = ReloadResult()
            current: dict[str, Instance] = {}
            for name, instance in loaded.instances.items():
                old = self.instances.get(name)
                if old is None:
                    result.added.append(name)
                    current[name] = instance
                elif same_config(old, instance):
                    result.unchanged.append(name)
                    current[name] = old
                else:
                    result.changed.append(name)
                    current[name] = instance
            for name, error in loaded.errors.items():
                result.invalid[name] = error
                if name in self.instances:
                    current[name] = self.instances[name]  # the last good config runs on
            result.removed = sorted(set(self.instances) - set(current))
            for names in (result.added, result.changed, result.unchanged):
                names.sort()
            result.invalid = dict(sorted(result.invalid.items()))

            mirror_instances(self.engine, current, keep=result.invalid)
            self.instances = dict(sorted(current.items()))
            self.invalid = result.invalid
            healthy: list[str] = []
            for name in list(self._reported):
                if name not in result.invalid:
                    del self._reported[name]  # fixed or deleted: a new break logs again
                    if name in loaded.instances:
                        healthy.append(name)
            reported = [n for n, e in result.invalid.items() if self._report(n, e)]
        for name in healthy:
            # The broken file that was reported is valid again: say so, or the operator
            # who fixed it sees only the error in the journal.
            log.info(
                "instance_file_healthy",
                instance=name,
                file=str(self.instances[name].path),
                changed=name in result.changed,
            )
        if result.touched or reported:
            log.info(
                "config_reloaded",
                added=result.added,
                changed=result.changed,
                removed=result.removed,
                invalid=sorted(result.invalid),
                instances=len(self.instances),
            )
        return result

    def _report(self, name: str, error: ConfigError) -> bool:
        """One ``config-invalid`` sync-log row and JSON line, unless this very error was
        reported last time for this file. Whether it wrote one."""
        signature = (error.path, error.key, error.reason)
        if self._reported.get(name) == signature:
            return False
        last_good = self.instances.get(name)
        if last_good is not None:
            integration = last_good.config.type
            direction = "outgoing" if last_good.direction is Direction.OUTGOING else "incoming"
        else:
            integration = _declared_type(error.path) or CONFIG_INTEGRATION
            direction = "incoming"
        context = SyncContext(integration[:64], direction, new_run_id(), name[:128])
        kept = "keeps its last good config" if last_good is not None else "is not running"
        try:
            record(
                self.engine,
                context,
                Code.CONFIG_INVALID,
                f"{error}; the instance {kept}",
                file=error.path,
                key=error.key,
                reason=error.reason,
                last_good=last_good is not None,
            )
        except Exception:  # the hub is unreachable: say so, and report it again next time
            log.exception("config_invalid_not_recorded", instance=name, **_error_dict(error))
            return False
        self._reported[name] = signature
        return True


def _declared_type(path: str) -> str | None:
    """The ``type`` a broken file declares, when it can be read at all."""
    try:
        value = read_toml(Path(path)).get("type")
    except ConfigError:
        return None
    return value if isinstance(value, str) and value else None
