"""``contactsync plugins``: what is installed, what each plugin registers, and any clash;
and :func:`add_plugin_commands`, through which plugins add their own commands.

It is the command to run when the daemon refuses to start over a plugin, so it reports
clashes instead of stopping at the first one, and exits 2 (a configuration error) when any
exists.
"""

from __future__ import annotations

import weakref
from typing import Any

import click
import pluggy

from daemon.hookspecs import HOOKSPEC_VERSION
from daemon.output import console, err_console, fail, print_json, print_table
from daemon.plugins import (
    BLOCK_ENV,
    PluginError,
    blocked_plugins,
    describe_plugins,
    get_plugin_manager,
    plugin_label,
)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List the installed plugins, their hooks, connectors and transforms."""
    pm = _plugin_manager(ctx.obj)
    plugins = describe_plugins(pm)
    problems = sorted({p for plugin in plugins for p in plugin["problems"]})
    data: dict[str, Any] = {
        "hookspec_version": HOOKSPEC_VERSION,
        "plugins": plugins,
        "blocked": blocked_plugins(pm),
        "problems": problems,
    }
    if as_json:
        print_json(data)
    else:
        console.print(f"hookspec version {HOOKSPEC_VERSION}")
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
