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
from pydantic import BaseModel

from daemon.cli.output import console, err_console, fail, print_json, print_table, safe_text
from daemon.config.secrets import REFERENCE_KINDS
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
    help=(
        "Print the JSON Schema of connector TYPE's [settings] (to validate instance files; "
        "secrets are {env|file|credential} references)."
    ),
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
            console.print(f"problem: {safe_text(problem)}", markup=False)
    if problems:
        raise SystemExit(2)


def _print_schema(pm: pluggy.PluginManager, type_name: str) -> None:
    """The JSON Schema of one connector's ``Config``, for editors and for validating the
    ``[settings]`` table of instance files (:func:`settings_schema`)."""
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
    schema = settings_schema(registry.connectors[type_name].Config)
    # Not print_json: its redaction would mask the schema of any setting named like a secret
    # ("api_key": "***"); a schema holds no secret values, only their descriptions.
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")
    sys.stdout.flush()


SECRET_REFERENCE = "SecretReference"
# What each kind of reference names (daemon.config.secrets resolves them).
_REFERENCE_MEANINGS = {
    "env": "an environment variable's name",
    "file": "a file's path (its trailing newline is stripped)",
    "credential": "a systemd credential's name (LoadCredential=)",
}


def settings_schema(config: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of the ``[settings]`` table an instance file holds for ``config``.

    It is pydantic's schema with one change: an instance file never holds a secret, only a
    reference to it, so every ``SecretStr`` setting (which pydantic describes as a
    ``"format": "password"`` string) is described as the one-key table it must be,
    ``{"env": NAME}``, ``{"file": PATH}`` or ``{"credential": NAME}``
    (``#/$defs/SecretReference``). A secret written as plain text is refused on load, so the
    schema refuses it too.
    """
    schema = config.model_json_schema()
    if not _replace_secrets(schema):
        return schema
    schema.setdefault("$defs", {})[SECRET_REFERENCE] = {
        "title": "Secret reference",
        "description": (
            "Where the secret lives, never the secret itself: "
            + " | ".join(f'{{ {kind} = "…" }}' for kind in REFERENCE_KINDS)
        ),
        "oneOf": [
            {
                "type": "object",
                "properties": {kind: {"type": "string", "description": _REFERENCE_MEANINGS[kind]}},
                "required": [kind],
                "additionalProperties": False,
            }
            for kind in REFERENCE_KINDS
        ],
    }
    return schema


def _replace_secrets(node: Any) -> bool:
    """Swap every pydantic secret-string schema under ``node`` for a reference to
    ``SecretReference`` (keeping its title and description); whether any was found."""
    found = False
    if isinstance(node, dict):
        for key, value in node.items():
            if _is_secret_string(value):
                kept = {k: value[k] for k in ("title", "description") if k in value}
                node[key] = {"$ref": f"#/$defs/{SECRET_REFERENCE}", **kept}
                found = True
            else:
                found = _replace_secrets(value) or found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if _is_secret_string(value):
                node[index] = {"$ref": f"#/$defs/{SECRET_REFERENCE}"}
                found = True
            else:
                found = _replace_secrets(value) or found
    return found


def _is_secret_string(node: Any) -> bool:
    # How pydantic describes SecretStr (see pydantic.types._SecretBase).
    return (
        isinstance(node, dict)
        and node.get("type") == "string"
        and node.get("format") == "password"
        and node.get("writeOnly") is True
    )


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
