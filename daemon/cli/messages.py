"""``contactsync messages``: put conversation messages into the hub and look at them.

``add`` adds one message, ``import`` a CSV file of them (the same file checks, row numbers
and coded sync-log rows as ``contactsync import``), ``list`` shows the latest, and
``exports`` shows the batches export instances recorded (file, id range, state). The rules
live in :mod:`daemon.hub.messages` and :mod:`daemon.engine.export_cycle`; this module parses
and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from daemon.cli.app import App, json_option
from daemon.cli.output import cell, fail, print_json, print_table, say
from daemon.engine import export_cycle as exports
from daemon.hub.messages import (
    CHANNELS,
    DIRECTIONS,
    MESSAGE_TYPES,
    MessagesReport,
    add_message,
    import_messages,
    list_messages,
)


@click.group("messages")
def messages_group() -> None:
    """Conversation messages in the hub, for export instances."""


def _print_report(report: MessagesReport, title: str, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        print_table(
            ("outcome", "messages"),
            [
                ("added", report.added),
                ("already present", report.already_present),
                ("skipped", report.skipped),
            ],
            title=title,
        )
        if report.problems:
            print_table(
                ("code", "field", "where", "message"),
                [
                    (
                        p.code,
                        p.field or "",
                        " ".join(f"{k}={v}" for k, v in p.source.items()),
                        p.message,
                    )
                    for p in report.problems
                ],
                title=f"Problems ({report.problem_count})",
            )
            say(f"contactsync log --run {report.run_id}")
    if report.file_error is not None or (
        report.skipped and not report.added and not report.already_present
    ):
        raise SystemExit(1)


@messages_group.command("add")
@click.option("--contact", "contact_id", help="The contact's hub id.")
@click.option("--crm-id", help="The contact's CRM id (instead of --contact).")
@click.option("--channel", type=click.Choice(CHANNELS), required=True)
@click.option("--direction", type=click.Choice(DIRECTIONS), required=True)
@click.option("--body", required=True, help="The message text.")
@click.option("--campaign-id")
@click.option("--campaign-name")
@click.option("--type", "message_type", type=click.Choice(MESSAGE_TYPES), help="Outgoing only.")
@click.option("--sent-at", help="ISO 8601 time (UTC unless it names a zone); default now.")
@click.option("--external-id", help="The source's id of the message: added once only.")
@json_option
@click.pass_obj
def add_command(
    app: App,
    contact_id: str | None,
    crm_id: str | None,
    channel: str,
    direction: str,
    body: str,
    campaign_id: str | None,
    campaign_name: str | None,
    message_type: str | None,
    sent_at: str | None,
    external_id: str | None,
    as_json: bool,
) -> None:
    """Add one message to the hub. Exits 1 when it is refused (the code says why)."""
    if bool(contact_id) == bool(crm_id):
        fail("name the contact: --contact ID or --crm-id ID (one of them)", exit_code=2)
    report = add_message(
        app.engine,
        contact_id=contact_id,
        crm_id=crm_id,
        channel=channel,
        direction=direction,
        body=body,
        campaign_id=campaign_id,
        campaign_name=campaign_name,
        message_type=message_type,
        sent_at=sent_at,
        external_id=external_id,
    )
    _print_report(report, "messages add", as_json)


@messages_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch-size", type=click.IntRange(1, 50_000), default=1000, show_default=True)
@click.option("--delimiter", default=",", show_default=True, help="Cell separator (\\t: tab).")
@json_option
@click.pass_obj
def import_command(app: App, file: Path, batch_size: int, delimiter: str, as_json: bool) -> None:
    """Import messages from a CSV FILE.

    Columns (header names as in `contactsync import`: case, spaces and dashes do not
    matter): contact_id (or mainstay_id) or crm_id, channel, direction and body (or a
    conversations export's incoming and outgoing), and optional
    campaign_id, campaign_name, type, sent_at, external_id (the source's id of the message:
    a message whose id the hub has is not added again, so a file can be imported again
    after a crash). Exits 1 when the file is refused.
    """
    delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
    if len(delimiter) != 1:
        fail("--delimiter must be one character", exit_code=2)
    report = import_messages(app.engine, file, batch_size=batch_size, delimiter=delimiter)
    _print_report(report, file.name, as_json)


@messages_group.command("list")
@click.option("--contact", "contact_id", help="Only this contact's messages.")
@click.option("--after", "after_id", type=int, default=0, help="Only ids above this one.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@click.pass_obj
def list_command(
    app: App, contact_id: str | None, after_id: int, limit: int, as_json: bool
) -> None:
    """List messages in id order (the order exports send them in)."""
    rows = list_messages(app.engine, contact_id=contact_id, after_id=after_id, limit=limit)
    if as_json:
        print_json(rows)
        return
    columns = ("id", "contact_id", "channel", "direction", "message_type", "sent_at", "body")
    print_table(columns, [[cell(r[c]) for c in columns] for r in rows], title="Messages")


@messages_group.command("exports")
@click.argument("instance", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@click.pass_obj
def exports_command(app: App, instance: str | None, limit: int, as_json: bool) -> None:
    """The files export instances recorded, newest first: pending ones are uploaded again
    under the same name on the next export cycle."""
    rows = exports.list_batches(app.engine, instance, limit)
    if as_json:
        print_json(rows)
        return
    columns = ("id", "instance", "file_name", "after_message_id", "last_message_id", "rows")
    columns += ("state", "attempts", "created_at", "uploaded_at", "last_error")
    data: list[list[Any]] = [[cell(r[c]) for c in columns] for r in rows]
    print_table(columns, data, title="Export batches")
