"""The sync log's commands: ``log`` (newest first, filtered), ``log prune`` and ``errors``
(the error dictionary that says what each code means and what to do)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from daemon.cli.app import App, json_option, pass_app
from daemon.cli.output import console, fail, print_json, print_table, say
from daemon.foundation.dictionary import ENTRIES, explain
from daemon.hub.store import utcnow
from daemon.hub.synclog import prune_sync_log
from daemon.hub.synclog_query import parse_age, parse_when, query_log


@click.command("errors")
@click.argument("code", required=False)
@json_option
def errors_cmd(code: str | None, as_json: bool) -> None:
    """List the error codes, or explain CODE."""
    if code:
        try:
            entry = explain(code)
        except KeyError:
            fail(f"unknown error code {code!r}; `contactsync errors` lists them", exit_code=2)
        data = {
            "code": str(entry.code),
            "meaning": entry.meaning,
            "effect": entry.effect,
            "next_step": entry.next_step,
        }
        if as_json:
            print_json(data)
        else:
            console.print(f"[bold]{entry.code}[/bold]\n{entry.meaning}\n")
            console.print(f"[bold]Effect:[/bold] {entry.effect}")
            console.print(f"[bold]Next step:[/bold] {entry.next_step}")
        return
    rows = [(str(e.code), e.meaning, e.next_step) for e in ENTRIES.values()]
    if as_json:
        print_json([{"code": c, "meaning": m, "next_step": n} for c, m, n in rows])
    else:
        print_table(("code", "meaning", "next step"), rows, title="Error dictionary")


@click.group("log", invoke_without_command=True)
@click.option("--integration", help="e.g. csv, hubspot.")
@click.option("--direction", type=click.Choice(["incoming", "outgoing"]))
@click.option("--contact", "contact_id", help="Hub id of the contact.")
@click.option("--code", help="An error code (see `contactsync errors`).")
@click.option("--run", "run_id", help="A run id, as printed by import.")
@click.option("--instance", help="An instance name.")
@click.option("--since", help="ISO time or an age such as 2h, 7d.")
@click.option("--until", help="ISO time or an age.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@click.pass_context
def log_cmd(
    ctx: click.Context,
    since: str | None,
    until: str | None,
    as_json: bool,
    limit: int,
    **filters: Any,
) -> None:
    """Show the sync log, newest first (`log prune` deletes old rows)."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.ensure_object(App)
    try:
        since_at = parse_when(since) if since else None
        until_at = parse_when(until) if until else None
    except ValueError as exc:
        fail(str(exc), exit_code=2)
    rows = query_log(app.engine, since=since_at, until=until_at, limit=limit, **filters)
    if as_json:
        print_json(rows)
        return
    print_table(
        ("timestamp", "id", "integration", "direction", "contact", "code", "message", "where"),
        (
            (
                r["timestamp"],
                r["id"],
                r["integration"],
                r["direction"],
                r["contact_id"],
                r["code"],
                r["message"],
                _where(r["details"]),
            )
            for r in rows
        ),
        title="Sync log",
    )


@log_cmd.command("prune")
@click.option(
    "--older-than",
    metavar="AGE",
    help="Delete rows older than this age (30d, 12h, 4w). Default: [log] retention_days.",
)
@click.option("--dry-run", is_flag=True, help="Count the rows that would go; delete nothing.")
@json_option
@pass_app
def log_prune(app: App, older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete old sync-log rows, in small transactions."""
    if older_than is None:
        age = timedelta(days=app.settings.log.retention_days)
    else:
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            fail(str(exc), exit_code=2)
    now = utcnow()
    try:
        cutoff = now - age
    except OverflowError:
        fail(f"{older_than!r} is too long ago", exit_code=2)
    count = prune_sync_log(app.engine, age, now=now, dry_run=dry_run)
    if as_json:
        print_json(
            {
                "rows": count,
                "dry_run": dry_run,
                "cutoff": cutoff,
                "older_than_days": age / timedelta(days=1),
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    say(f"{verb} {count} sync-log row(s) older than {cutoff:%Y-%m-%d %H:%M:%S} UTC")


def _where(details: dict[str, Any] | None) -> str:
    details = details or {}
    parts = [str(details[k]) for k in ("file",) if k in details]
    if "row" in details:
        parts.append(f"row {details['row']}")
    if "field" in details:
        parts.append(str(details["field"]))
    return " ".join(parts)
