"""``contactsync auth INSTANCE``: sign in the way the platform's own setup does, and keep the
refresh token where the daemon keeps rotated ones.

The platform's parts (where to sign in, the scopes, PKCE, the state key) come from the
connector's ``oauth_app`` classmethod (:mod:`daemon.kit.oauth`); this module only runs the
flow for staff and stores its result. What must hold:

- the refresh token goes into the instance's ``connector_state`` in the hub, under the key the
  connector's token cache reads, and never into the instance file. It is written while the
  connection's lease is held, so a sync running at that moment cannot save its older state
  over it afterwards;
- nothing is stored unless the flow ended with a refresh token (a timeout, a refusal, a
  forged redirect: exit 1, and the hub is as it was);
- the code, the tokens and the client secret are never printed: only the authorize URL is,
  and it holds none of them.
"""

from __future__ import annotations

import time
import webbrowser
from typing import Any

import click
from sqlalchemy import Engine, select, update

from daemon.cli.app import App, pass_app
from daemon.cli.output import err_console, fail
from daemon.config.instances import Instance
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub import lease
from daemon.hub.database import insert_ignore
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.connector import ConnectorError
from daemon.kit.oauth import OAuthApp, authorize, oauth_app_of

log = get_logger("contactsync.auth")
_STATE = InstanceState.__table__
# How long to wait for a running sync to give the connection's lease back before storing.
LEASE_WAIT_SECONDS = 60.0


@click.command("auth")
@click.argument("instance")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Loopback port for the redirect (0: a free one). The redirect URI is "
    "http://127.0.0.1:PORT/callback and must be the one registered with the app.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the sign-in to finish.",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@pass_app
def auth_command(app: App, instance: str, port: int, timeout: float, no_browser: bool) -> None:
    """Sign INSTANCE in with the platform's OAuth login, and keep its refresh token in the hub.

    Prints the sign-in URL (and opens it in a browser unless --no-browser), waits for the
    platform's redirect on 127.0.0.1, exchanges the code and stores the refresh token with
    the daemon's state, never in the instance file. Exit 1 when the sign-in fails or times
    out (nothing is stored), 2 for an instance that cannot sign in this way.
    """
    chosen = _instance(app, instance)
    oauth = _oauth_app(chosen)

    def show(url: str) -> None:
        click.echo(f"Sign in to {oauth.platform} for instance {instance!r} at:")
        click.echo(url)
        click.echo(f"Waiting up to {timeout:g} s for the sign-in to finish …", err=True)
        if not no_browser and not webbrowser.open(url):
            click.echo("No browser could be opened here: open the URL above yourself.", err=True)

    try:
        token = authorize(oauth, show=show, port=port, timeout=timeout)
    except ConnectorError as exc:
        log.warning("auth_failed", instance=instance, code=str(exc.code))
        fail(exc.message, str(exc.code), exit_code=1)
    assert token.refresh_token is not None  # authorize() refuses an answer without one
    _store(app.engine, chosen, oauth.state_key, token.refresh_token)
    log.info("auth_stored", instance=instance, state_key=oauth.state_key)
    click.echo(
        f"Signed in. The refresh token is stored in the hub for instance {instance!r}; "
        "the instance file needs no refresh_token."
    )


def _instance(app: App, name: str) -> Instance:
    loaded = app.instances()
    if name in loaded.errors:
        fail(str(loaded.errors[name]), str(Code.CONFIG_INVALID), exit_code=2)
    if name not in loaded.instances:
        known = ", ".join(sorted([*loaded.instances, *loaded.errors])) or "none configured"
        fail(f"no instance {name!r} (known: {known})", str(Code.CONFIG_INVALID), exit_code=2)
    return loaded.instances[name]


def _oauth_app(instance: Instance) -> OAuthApp:
    try:
        oauth = oauth_app_of(instance.connector_class, instance.settings)
    except ValueError as exc:
        fail(f"{instance.name}: {exc}", str(Code.CONFIG_INVALID), exit_code=2)
    if oauth is None:
        fail(
            f"{instance.name}: the {instance.config.type} connector has no OAuth sign-in "
            "(contactsync auth needs its oauth_app hook)",
            str(Code.CONFIG_INVALID),
            exit_code=2,
        )
    return oauth


def _store(engine: Engine, instance: Instance, key: str, refresh_token: str) -> None:
    """Put ``refresh_token`` into the instance's connector state, holding the lease."""
    holder = f"{lease.owner_id()}/auth"
    deadline = time.monotonic() + LEASE_WAIT_SECONDS
    waited = False
    while not lease.acquire(engine, instance.connection, holder, utcnow()):
        if time.monotonic() >= deadline:
            fail(
                f"a sync of {instance.connection!r} held the connection for "
                f"{LEASE_WAIT_SECONDS:g} s; the sign-in worked but nothing was stored: "
                "run contactsync auth again",
                exit_code=1,
            )
        if not waited:
            err_console.print("A sync is running; storing the token when it ends …")
            waited = True
        time.sleep(0.5)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert_ignore(_STATE, conn.dialect.name),
                [{"instance": instance.name, "connector_state": {}}],
            )
            current: Any = conn.execute(
                select(_STATE.c.connector_state).where(_STATE.c.instance == instance.name)
            ).scalar()
            state = {**(current or {}), key: refresh_token}
            conn.execute(
                update(_STATE)
                .where(_STATE.c.instance == instance.name)
                .values(connector_state=state)
            )
    finally:
        lease.release(engine, instance.connection, holder)
