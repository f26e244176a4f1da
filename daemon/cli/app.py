"""What every command shares: the :class:`App` (config folder, settings, hub, plugins and
instances, each built on first use) and the ``--json`` option.

A command that touches the hub or the settings first finds its config folder
(:func:`~daemon.config.settings.find_config_folder`): where there is none and no hub is named,
it exits 2 saying how to fix that, instead of creating a new, empty hub in the current folder.
Commands that need neither (``--help``, ``errors``, ``plugins``, ``simulate``, ``init``,
``demo``) never ask, so they work anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click
import pluggy
from sqlalchemy import Engine

from daemon.cli.output import fail
from daemon.config.instances import LoadResult, load_instances
from daemon.config.settings import (
    ConfigError,
    Settings,
    find_config_folder,
    load_settings,
    redacted_url,
)
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
    # Which option or variable set etc / database_url, for messages and ``status``.
    etc_named_by: str = "--etc"
    database_url_named_by: str = "--database-url"
    pm: pluggy.PluginManager | None = field(default=None, repr=False)  # tests inject one
    _engine: Engine | None = field(default=None, repr=False)
    _registry: Registry | None = field(default=None, repr=False)
    _loaded: dict[bool, LoadResult] = field(default_factory=dict, repr=False)

    @cached_property
    def config_folder(self) -> Path | None:
        """The config folder in use (``None``: none, every setting its default, the hub named
        by ``--database-url``); exits 2 where there is none and no hub is named, or when
        ``--etc`` is not a config folder."""
        try:
            folder = find_config_folder(
                self.etc, named_by=self.etc_named_by, database_url=self.database_url
            )
        except ConfigError as exc:
            fail(str(exc), "config-invalid", exit_code=2)
        # Absolute, so the state folder and the SQLite URL derived from it are too: status
        # names a hub file that is the same wherever it is read from.
        return folder.absolute() if folder is not None else None

    @cached_property
    def settings(self) -> Settings:
        folder = self.config_folder
        try:
            settings = load_settings(folder) if folder is not None else Settings()
        except ConfigError as exc:
            fail(str(exc), "config-invalid", exit_code=2)
        if self.database_url:
            settings.database.url = self.database_url
        return settings

    def whereabouts(self) -> dict[str, Any]:
        """Which hub and which config folder this command uses, and what chose each:
        ``{"hub": {"url", "named_by"}, "config": {"folder", "named_by"}}``. The URL's
        password is never shown."""
        settings = self.settings
        folder = self.config_folder
        if self.database_url:
            hub_by = self.database_url_named_by
        elif settings.database.url:
            hub_by = f"{folder / 'contactsync.toml' if folder else 'contactsync.toml'} [database]"
        else:
            hub_by = "default: SQLite in the state folder"
        if folder is None:
            etc_by = None
        elif self.etc:
            etc_by = self.etc_named_by
        else:
            etc_by = "default"
        return {
            "hub": {"url": redacted_url(settings.database_url), "named_by": hub_by},
            "config": {
                "folder": str(folder) if folder is not None else None,
                "named_by": etc_by,
            },
        }

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

    def instances(self, *, required: bool = True, secrets: bool | None = None) -> LoadResult:
        """``etc/instances/*.toml`` loaded, the valid ones mirrored into the hub.

        Hub writes call it with ``required=False`` before writing, so the outbox fans out to
        the connections configured now: an invalid file or a plugin problem is then a warning
        on stderr and never stops the write (the mirror keeps what it had).

        ``secrets``: resolve the files' secrets. Only commands that build a connector need
        them (``sync``, ``check``, ``auth``); the default is ``required``, so a hub write never
        resolves one, and a command that only reads the hub passes ``secrets=False``. Without
        them a file's secret missing from this shell is not an error
        (``Instance.unavailable_secrets``).
        """
        resolve = required if secrets is None else secrets
        if resolve in self._loaded:
            return self._loaded[resolve]
        try:
            registry = self.load_registry()
        except PluginError as exc:
            if required:
                fail(str(exc), str(PluginError.code), exit_code=2)
            log.warning("instances_not_loaded", code=str(PluginError.code), reason=str(exc))
            return LoadResult({}, {})
        folder = self.config_folder
        loaded = (
            load_instances(folder, registry.connectors, secrets=resolve)
            if folder is not None
            else LoadResult({}, {})
        )
        # A file that is broken right now keeps its instance as last mirrored, so the outbox
        # still fans out to its connection.
        mirror_instances(self.engine, loaded.instances, keep=loaded.errors)
        if not required:
            for error in loaded.errors.values():
                log.warning(
                    "instance_file_invalid", file=error.path, key=error.key, reason=error.reason
                )
        self._loaded[resolve] = loaded
        return loaded


def _or_exit(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
