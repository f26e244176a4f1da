"""``contactsync plugins``: what is installed, what each plugin registers, and any clash.

It is the command to run when the daemon refuses to start over a plugin, so it reports
clashes instead of stopping at the first one, and exits 2 (a configuration error) when any
exists.
"""

from __future__ import annotations

from typing import Any

import click

from daemon.hookspecs import HOOKSPEC_VERSION
from daemon.output import console, fail, print_json, print_table
from daemon.plugins import (
    BLOCK_ENV,
    PluginError,
    blocked_plugins,
    describe_plugins,
    get_plugin_manager,
)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins_command(as_json: bool) -> None:
    """List the installed plugins, their hooks, connectors and transforms."""
    try:
        pm = get_plugin_manager()
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)
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
