"""``contactsync plugins``: what is installed, what each plugin registers, and any clash;
and :func:`add_plugin_commands`, through which plugins add their own commands.

It is the command to run when the daemon refuses to start over a plugin, so it reports
clashes instead of stopping at the first one, and exits 2 (a configuration error) when any
exists.
"""

from __future__ import annotations

import json
import sys
import weakref
from typing import Any

import click
import pluggy

from daemon.cli.output import console, err_console, fail, print_json, print_table
from daemon.engine.registry import (
    BLOCK_ENV,
    PluginError,
    Registry,
    blocked_plugins,
    describe_plugins,
    get_plugin_manager,
    plugin_label,
)
from daemon.hookspecs import HOOKSPEC_VERSION
from daemon.sdk import SDK_VERSION


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--schema",
    "schema_type",
    metavar="TYPE",
    help="Print the JSON Schema of connector TYPE's settings (to validate instance files).",
)
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool, schema_type: str | None) -> None:
    """List the installed plugins, their hooks, connectors and transforms."""
    pm = _plugin_manager(ctx.obj)
    if schema_type is not None:
        _print_schema(pm, schema_type)
        return
    plugins = describe_plugins(pm)
    problems = sorted({p for plugin in plugins for p in plugin["problems"]})
    data: dict[str, Any] = {
        "hookspec_version": HOOKSPEC_VERSION,
        "sdk_version": SDK_VERSION,
        "plugins": plugins,
        "blocked": blocked_plugins(pm),
        "problems": problems,
    }
    if as_json:
        print_json(data)
    else:
        console.print(f"hookspec version {HOOKSPEC_VERSION}, sdk version {SDK_VERSION}")
        print_table(
            ("plugin", "distribution", "hooks", "connectors", "transforms"),
            [
                (
                    p["name"],
                    f"{p['distribution']} {p['version']}"
                    if p["distribution"]
                    else "(not installed)",
                    ", ".join(p["hooks"]),
                    ", ".join(p["connectors"]),
                    ", ".join(p["transforms"]),
                )
                for p in plugins
            ],
            title="Plugins",
        )
        if data["blocked"]:
            console.print(f"blocked ({BLOCK_ENV}): {', '.join(data['blocked'])}", markup=False)
        for problem in problems:
            console.print(f"problem: {problem}", markup=False)
    if problems:
        raise SystemExit(2)


def _print_schema(pm: pluggy.PluginManager, type_name: str) -> None:
    """The JSON Schema of one connector's ``Config``, for editors and for validating the
    ``[settings]`` table of instance files. SecretStr settings come out as
    ``"format": "password"`` and ``writeOnly``, which is how pydantic marks them."""
    try:
        registry = Registry.from_plugin_manager(pm)
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)
    if type_name not in registry.connectors:
        known = ", ".join(registry.connectors) or "none installed"
        fail(
            f"unknown connector type {type_name!r} (known: {known})",
            str(PluginError.code),
            exit_code=2,
        )
    schema = registry.connectors[type_name].Config.model_json_schema()
    # Not print_json: its redaction would mask the schema of any setting named like a secret
    # ("api_key": "***"); a schema holds no secret values, only their descriptions.
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")
    sys.stdout.flush()


def _plugin_manager(app: object) -> pluggy.PluginManager:
    # Under ``contactsync`` the App holds the manager every other command uses (a test may
    # have injected it); run on its own, the command builds one.
    if hasattr(app, "plugin_manager"):
        return app.plugin_manager
    try:
        return get_plugin_manager()
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)


_COMMANDS_ADDED: weakref.WeakSet[pluggy.PluginManager] = weakref.WeakSet()


def add_plugin_commands(group: click.Group, pm: pluggy.PluginManager) -> None:
    """Let every plugin add its commands to ``group`` (the ``register_commands`` hook),
    once per plugin manager: once per process, in practice, as datasette does.

    A plugin whose hook raises loses its commands, not the command line: it gets a warning
    on stderr (logging is not configured yet when the group's arguments are being read).
    """
    if pm in _COMMANDS_ADDED:
        return
    _COMMANDS_ADDED.add(pm)
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(**({"cli": group} if "cli" in impl.argnames else {}))
        except Exception as exc:
            err_console.print(
                f"contactsync: warning: {plugin_label(pm, impl.plugin)}: register_commands "
                f"failed: {type(exc).__name__}: {exc}",
                markup=False,
            )
