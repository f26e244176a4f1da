"""``contactsync serve``: the HTTP API alone, for a node that does not sync."""

from __future__ import annotations

import sys

import click

from daemon.cli.app import App, pass_app
from daemon.foundation import log as logging_setup


@click.command("serve")
@click.option("--bind", help="Address to listen on (default: [http] bind, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="TCP port (default: [http] port, 8765)."
)
@pass_app
def serve_command(app: App, bind: str | None, port: int | None) -> None:
    """Serve the HTTP API (without syncing) until SIGTERM, then drain within
    [daemon] shutdown_grace_seconds. The OpenAPI document is at /openapi.json.

    Logs go to stdout as JSON lines, as the daemon's do; `api_serving` names the URL.
    `contactsync run` serves the same API when [http] enabled = true.
    """
    from daemon import web
    from daemon.api.app import app_for
    from daemon.api.server import ApiServer

    settings = app.settings  # exits 2 on a bad contactsync.toml or no config folder
    logging_setup.configure(level=settings.log.level, stream=sys.stdout)
    # Mirror today's instances, so an edit's outbox rows go to every outgoing connection;
    # GET /api/v1/instances shows them as read now (no secret resolved), and "sync now" is
    # refused: there is no scheduler here.
    loaded = app.instances(required=False)
    server = ApiServer(
        app_for(app.engine, settings, instances=lambda: loaded, sites=(web.mount,)),
        bind=bind or settings.http.bind,
        port=settings.http.port if port is None else port,
        grace_seconds=settings.daemon.shutdown_grace_seconds,
    )
    server.serve_foreground()
