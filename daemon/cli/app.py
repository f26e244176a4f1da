"""What every command shares: the :class:`App` (settings, hub, plugins and instances, each
built on first use) and the ``--json`` option."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import click
import pluggy
from sqlalchemy import Engine

from daemon.cli.output import fail
from daemon.config.instances import LoadResult, load_instances
from daemon.config.settings import ConfigError, Settings, load_settings
from daemon.engine.registry import PluginError, Registry, get_plugin_manager
from daemon.foundation.log import get_logger
from daemon.hub.mirror import mirror_instances

log = get_logger("contactsync.cli")
_T = TypeVar("_T")


@dataclass
class App:
    """What every command needs, built on first use so ``--help`` never opens a database."""

    etc: str | None = None
    database_url: str | None = None
    pm: pluggy.PluginManager | None = field(default=None, repr=False)  # tests inject one
    _engine: Engine | None = field(default=None, repr=False)
    _registry: Registry | None = field(default=None, repr=False)
    _loaded: LoadResult | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = load_settings(self.etc)
        except ConfigError as exc:
            fail(str(exc), "config-invalid", exit_code=2)
        if self.database_url:
            settings.database.url = self.database_url
        return settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from daemon.hub.database import make_engine

            try:
                self._engine = make_engine(self.settings.database_url)
            except Exception as exc:  # a bad URL or an unreachable server
                fail(f"cannot open the hub database: {type(exc).__name__}", "config-invalid", 2)
        return self._engine

    def load_plugins(self) -> pluggy.PluginManager:
        """The given plugin manager, else the installed plugins less those blocked in
        ``CONTACTSYNC_BLOCK_PLUGINS``; raises :class:`PluginError`."""
        if self.pm is None:
            self.pm = get_plugin_manager()
        return self.pm

    def load_registry(self) -> Registry:
        """The connectors and transforms the plugins register; raises :class:`PluginError`."""
        if self._registry is None:
            self._registry = Registry.from_plugin_manager(self.load_plugins())
        return self._registry

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """:meth:`load_plugins`, exiting 2 with the plugin error."""
        return _or_exit(self.load_plugins)

    @property
    def registry(self) -> Registry:
        """:meth:`load_registry`, exiting 2 with the plugin error (a clash, say)."""
        return _or_exit(self.load_registry)

    def instances(self, *, required: bool = True) -> LoadResult:
        """``etc/instances/*.toml`` loaded, the valid ones mirrored into the hub.

        Hub writes call it with ``required=False`` before writing, so the outbox fans out to
        the connections configured now: an invalid file or a plugin problem is then a warning
        on stderr and never stops the write (the mirror keeps what it had).
        """
        if self._loaded is not None:
            return self._loaded
        try:
            registry = self.load_registry()
        except PluginError as exc:
            if required:
                fail(str(exc), str(PluginError.code), exit_code=2)
            log.warning("instances_not_loaded", code=str(PluginError.code), reason=str(exc))
            return LoadResult({}, {})
        loaded = load_instances(self.settings.etc_dir, registry.connectors)
        # A file that is broken right now keeps its instance as last mirrored, so the outbox
        # still fans out to its connection.
        mirror_instances(self.engine, loaded.instances, keep=loaded.errors)
        if not required:
            for error in loaded.errors.values():
                log.warning(
                    "instance_file_invalid", file=error.path, key=error.key, reason=error.reason
                )
        self._loaded = loaded
        return loaded


def _or_exit(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
