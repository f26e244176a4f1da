"""The ``contactsync`` command line.

Every command takes ``--json`` where it prints data; people get rich tables. Logs go to stderr.
Exit codes: 0 done, 1 refused (a file, an edit), 2 usage or configuration error.

The root options ``--etc``, ``--database-url`` and ``--log-level`` may also follow the
subcommand (``contactsync status --etc DIR``): :class:`_RootGroup` moves them in front before
click reads the arguments, so no subcommand may define an option of those names.

One module per command family: :mod:`~daemon.cli.contacts` (``import``, ``contacts``,
``fields``), :mod:`~daemon.cli.synclog` (``log``, ``errors``), :mod:`~daemon.cli.sync`
(``sync``, ``status``, ``outbox``, ``links``, ``cursor``, ``check``), :mod:`~daemon.cli.run`,
:mod:`~daemon.cli.serve` and :mod:`~daemon.cli.tokens` (the HTTP API),
:mod:`~daemon.cli.messages`, :mod:`~daemon.cli.plugins`, :mod:`~daemon.cli.simulate` and
:mod:`~daemon.cli.demo`. They share :class:`~daemon.cli.app.App`; this module only assembles
the root group.
"""

from __future__ import annotations

import contextlib

import click

from daemon import __version__
from daemon.cli import (
    auth,
    contacts,
    demo,
    init,
    messages,
    run,
    serve,
    simulate,
    sync,
    synclog,
    tokens,
    webhooks,
)
from daemon.cli.app import App
from daemon.cli.plugins import add_plugin_commands, plugins_command
from daemon.engine.registry import PluginError
from daemon.foundation import log as logging_setup

__all__ = ["App", "cli", "main"]

ROOT_OPTIONS = ("--etc", "--database-url", "--log-level")
"""Options of the root group that may also be written after the subcommand."""


def hoist_root_options(args: list[str]) -> list[str]:
    """``args`` with every :data:`ROOT_OPTIONS` option (and its value) moved in front, so
    ``contactsync status --etc DIR`` means ``contactsync --etc DIR status``. Nothing after a
    ``--`` moves; a later occurrence wins, as click's does."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if name in ROOT_OPTIONS:
            if "=" in arg or index + 1 == len(args):
                front.append(arg)  # a missing value stays missing: click then says so
                index += 1
            else:
                front.extend(args[index : index + 2])
                index += 2
            continue
        rest.append(arg)
        index += 1
    return front + rest


class _RootGroup(click.Group):
    """The ``contactsync`` group. Plugins add their commands (``register_commands``) before
    the arguments are read, so that ``--help`` lists them and they can be invoked."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A broken plugin set must not take --help and the hub commands down with it; the
        # commands that need plugins say what is wrong.
        with contextlib.suppress(PluginError):
            add_plugin_commands(self, ctx.ensure_object(App).load_plugins())
        return super().parse_args(ctx, hoist_root_options(args))


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--etc",
    envvar="CONTACTSYNC_ETC",
    type=click.Path(file_okay=False),
    help="Config folder: one holding contactsync.toml or instances/ (default ./etc, else "
    "/etc/contactsync; env CONTACTSYNC_ETC).",
)
@click.option(
    "--database-url",
    envvar="CONTACTSYNC_DATABASE_URL",
    help="Hub database URL (overrides etc/contactsync.toml; env CONTACTSYNC_DATABASE_URL).",
)
@click.option("--log-level", default="warning", show_default=True, help="Log level on stderr.")
@click.version_option(__version__, prog_name="contactsync")
@click.pass_context
def cli(ctx: click.Context, etc: str | None, database_url: str | None, log_level: str) -> None:
    """contactsync keeps contacts in step between the hub and CRMs.

    --etc, --database-url and --log-level may come before or after the command. A command
    that needs the hub refuses (exit 2) where there is no config folder and no hub named;
    `contactsync init` makes a config folder.
    """
    logging_setup.configure(level=log_level)
    # Keep an App given as ``obj`` (tests inject a plugin manager); the options still apply.
    app = ctx.ensure_object(App)
    if etc is not None:
        app.etc = etc
        app.etc_named_by = _named_by(ctx, "etc", "--etc", "CONTACTSYNC_ETC")
    if database_url is not None:
        app.database_url = database_url
        app.database_url_named_by = _named_by(
            ctx, "database_url", "--database-url", "CONTACTSYNC_DATABASE_URL"
        )


def _named_by(ctx: click.Context, param: str, option: str, variable: str) -> str:
    """Whether the option or its environment variable gave ``param``'s value."""
    source = ctx.get_parameter_source(param)
    return variable if source is click.core.ParameterSource.ENVIRONMENT else option


for _command in (
    init.init_command,
    synclog.errors_cmd,
    contacts.import_cmd,
    contacts.contacts,
    contacts.fields,
    synclog.log_cmd,
    plugins_command,
    *sync.COMMANDS,
    run.run_command,
    serve.serve_command,
    tokens.tokens_group,
    auth.auth_command,
    simulate.simulate_command,
    demo.demo_command,
    messages.messages_group,
    webhooks.webhooks_command,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="contactsync")
