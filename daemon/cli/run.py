"""``contactsync run``: the daemon, as systemd's ``ExecStart`` runs it."""

from __future__ import annotations

import sys

import click

from daemon.cli.app import App
from daemon.config.settings import ConfigError, find_config_folder, load_settings
from daemon.foundation import log as logging_setup
from daemon.foundation.dictionary import Code

log = logging_setup.get_logger("contactsync.daemon")


@click.command("run")
@click.pass_obj
def run_command(app: App) -> None:
    """Run the sync daemon until SIGTERM: scheduled pulls and pushes, pushes woken by hub
    writes, hot reload of etc/instances (and on SIGHUP), systemd notify and watchdog.

    Logs go to stdout, one JSON object per line off a terminal. Exits 0 after SIGTERM and
    2 when etc/contactsync.toml is invalid or there is no config folder (``--etc``, before or
    after ``run``): the daemon never starts on a new, empty hub in whatever folder it was
    started from.
    """
    from daemon.runtime.service import Service, quiet_libraries

    # The daemon's log is its stdout (the journal under systemd); a CLI command's is stderr.
    logging_setup.configure(level="info", stream=sys.stdout)
    try:
        # The daemon watches its folder's instances/, so it needs one even when the hub is
        # named by URL: no database_url here.
        folder = find_config_folder(app.etc, named_by=app.etc_named_by)
        assert folder is not None  # find_config_folder raises rather than return None here
        settings = load_settings(folder)
    except ConfigError as exc:
        log.error(
            "daemon_not_started",
            code=str(Code.CONFIG_INVALID),
            file=exc.path,
            key=exc.key,
            reason=exc.reason,
        )
        raise SystemExit(2) from None
    if app.database_url:
        settings.database.url = app.database_url
    logging_setup.configure(level=settings.log.level, stream=sys.stdout)
    quiet_libraries(settings.log.level)
    raise SystemExit(Service(folder, settings, pm=app.pm).run())
