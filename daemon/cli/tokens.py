"""``contactsync tokens``: the HTTP API's tokens (create, list, revoke).

A token is printed once, by ``create``, on stdout alone (so ``$(contactsync tokens create …)``
captures it); the hub keeps only its hash, so a lost token is revoked and replaced, never
recovered.
"""

from __future__ import annotations

import json
import sys

import click

from daemon.cli.app import App, json_option, pass_app
from daemon.cli.output import err_console, fail, print_json, print_table
from daemon.hub.apitokens import Role, TokenError, create_token, list_tokens, revoke_token


@click.group("tokens")
def tokens_group() -> None:
    """HTTP API tokens: read views; staff also edits contacts; admin also instances and
    tokens."""


@tokens_group.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([str(r) for r in Role]),
    required=True,
    help="read: view; staff: also edit contacts and act on the sync log; admin: everything.",
)
@json_option
@pass_app
def tokens_create(app: App, name: str, role: str, as_json: bool) -> None:
    """Create the token NAME and print it, once: the hub keeps only its hash."""
    try:
        token = create_token(app.engine, name, Role(role))
    except TokenError as exc:
        fail(str(exc), "api-invalid-request")
    # Not print_json: it redacts every key named like a secret, and this one is the point.
    if as_json:
        sys.stdout.write(json.dumps({"name": name.strip(), "role": role, "token": token}) + "\n")
    else:
        sys.stdout.write(token + "\n")
        err_console.print(
            f"token {name.strip()!r} ({role}) created: it is shown this once; send it as "
            "Authorization: Bearer TOKEN",
            markup=False,
        )
    sys.stdout.flush()


@tokens_group.command("list")
@json_option
@pass_app
def tokens_list(app: App, as_json: bool) -> None:
    """List the tokens: name, role, created, last used, revoked (never the token)."""
    rows = list_tokens(app.engine)
    if as_json:
        print_json(
            [
                {
                    "name": t.name,
                    "role": str(t.role),
                    "created_at": t.created_at,
                    "last_used_at": t.last_used_at,
                    "revoked_at": t.revoked_at,
                }
                for t in rows
            ]
        )
        return
    print_table(
        ("name", "role", "created", "last used", "revoked"),
        [(t.name, str(t.role), t.created_at, t.last_used_at, t.revoked_at) for t in rows],
        title="API tokens",
    )


@tokens_group.command("revoke")
@click.argument("name")
@pass_app
def tokens_revoke(app: App, name: str) -> None:
    """Revoke the token NAME at once (its row stays, for the record)."""
    try:
        info = revoke_token(app.engine, name)
    except TokenError as exc:
        fail(str(exc), "api-not-found")
    err_console.print(f"token {info.name!r} revoked", markup=False)
