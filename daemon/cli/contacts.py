"""The hub's own commands: ``import`` (a CSV through the incoming rules), ``contacts`` and
``fields``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import click

from daemon.cli.app import App, json_option, pass_app
from daemon.cli.output import cell, err_console, fail, print_json, print_table, safe_text, say
from daemon.hub.contacts import (
    HubError,
    add_custom_field,
    get_contact,
    list_contacts,
    load_schema,
    save_contact,
)
from daemon.hub.csv_import import MapError, import_csv, parse_maps, template_header
from daemon.hub.incoming import RecordPlan
from daemon.hub.normalize import CUSTOM_TYPES


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--dry-run", is_flag=True, help="Report what would happen; write nothing.")
@click.option("--plan", "show_plan", is_flag=True, help="Also print each record's field plan.")
@click.option("--batch-size", type=click.IntRange(1, 50_000), help="Rows per commit.")
@click.option("--delimiter", default=",", show_default=True, help="Cell separator (\\t: tab).")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Map a column to a hub field (crm_id, custom:Class Year, …; empty: ignore it). "
    "Repeat for several.",
)
@click.option("--strict", is_flag=True, help="Refuse a file with an unknown column.")
@click.option(
    "--template", is_flag=True, help="Print the header of an import file (every field); no FILE."
)
@json_option
@pass_app
def import_cmd(
    app: App,
    file: Path | None,
    dry_run: bool,
    show_plan: bool,
    batch_size: int | None,
    delimiter: str,
    maps: tuple[str, ...],
    strict: bool,
    template: bool,
    as_json: bool,
) -> None:
    """Import contacts from a CSV FILE through the incoming rules.

    An unknown column is logged (unknown-column) and ignored; --strict refuses the file.
    """
    delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
    if len(delimiter) != 1:
        fail("--delimiter must be one character", exit_code=2)
    schema = load_schema(app.engine, app.settings.hub.default_region)
    if template:
        if file is not None:
            fail("--template prints a header and imports nothing: drop FILE", exit_code=2)
        _print_template(template_header(schema), delimiter, as_json)
        return
    if file is None:
        fail("missing FILE (or --template to print an import file's header)", exit_code=2)
    try:
        overrides = parse_maps(maps, schema)
    except MapError as exc:
        fail(str(exc), exit_code=2)
    if not dry_run:
        app.instances(required=False)  # so the import fans out to today's connections
    plans: list[dict[str, Any]] = []

    def keep(plan: RecordPlan) -> None:
        if len(plans) < 1000:
            plans.append(_plan_dict(plan))

    result = import_csv(
        app.engine,
        file,
        schema,
        batch_size=batch_size or app.settings.hub.batch_size,
        dry_run=dry_run,
        delimiter=delimiter,
        column_overrides=overrides,
        strict=strict,
        on_plan=keep if show_plan else None,
    )
    for column in result.unused_overrides:
        err_console.print(
            safe_text(f"contactsync: --map: {file.name} has no column {column!r}"), markup=False
        )
    report = result.report
    problems = [
        {
            "code": p.code,
            "message": p.message,
            "field": p.field,
            "contact_id": p.contact_id,
            **p.source,
        }
        for p in report.problems
    ]
    if as_json:
        data: dict[str, Any] = {
            "file": str(file),
            "run_id": report.run_id,
            "dry_run": dry_run,
            "file_error": result.file_error,
            "summary": report.summary,
            "problems": problems,
        }
        if show_plan:
            data["plans"] = plans
        print_json(data)
    else:
        if show_plan:
            print_table(
                ("row", "outcome", "contact", "changes"),
                [(p.get("row"), p["outcome"], p["contact_id"], _changes_text(p)) for p in plans],
                title="Plan",
            )
        _print_import_report(
            file, report.summary, problems, report.problem_count, dry_run, report.run_id
        )
    if not result.ok:
        raise SystemExit(1)


def _print_template(header: list[str], delimiter: str, as_json: bool) -> None:
    """The template's header row, written as the CSV writer quotes it (a name may hold the
    delimiter), on stdout alone so it can be redirected into a file."""
    if as_json:
        print_json({"header": header})
        return
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(header)
    click.echo(out.getvalue(), nl=False)


def _plan_dict(plan: RecordPlan) -> dict[str, Any]:
    return {
        **dict(plan.record.source or {}),
        "outcome": str(plan.outcome),
        "contact_id": plan.contact_id,
        "fields": [f.as_dict() for f in plan.fields],
    }


def _changes_text(plan: dict[str, Any]) -> str:
    parts = []
    for f in plan["fields"]:
        if f["action"] == "set":
            parts.append(f"{f['field']}←set")
        elif f["action"] == "clear":
            parts.append(f"{f['field']}←clear")
        elif f["action"] == "reject":
            parts.append(f"{f['field']}✗{f.get('code')}")
    return ", ".join(parts)


def _print_import_report(
    file: Path,
    summary: dict[str, int],
    problems: list[dict[str, Any]],
    total: int,
    dry_run: bool,
    run_id: str,
) -> None:
    title = f"{file.name}{' (dry run)' if dry_run else ''}"
    print_table(("outcome", "records"), summary.items(), title=title)
    if problems:
        shown = problems[:50]
        print_table(
            ("row", "field", "code", "message"),
            [
                (p.get("row"), p.get("field") or p.get("column"), p["code"], p["message"])
                for p in shown
            ],
            title="Problems",
        )
        if total > len(shown):
            where = "" if dry_run else f"; all are in `contactsync log --run {run_id}`"
            say(f"{total - len(shown)} more problems{where}")
    if dry_run:
        say("Dry run: nothing was written; the counts are what an import would do.")


# --- contacts -------------------------------------------------------------------------------


@click.group()
def contacts() -> None:
    """List, show, add, edit and archive contacts."""


_CONTACT_COLUMNS = (
    "id",
    "crm_id",
    "first_name",
    "last_name",
    "phone",
    "email",
    "archived",
    "test_user",
    "updated_at",
)


@contacts.command("list")
@click.option("--search", "-s", help="Match name, email, phone, CRM id or id.")
@click.option("--archived", "include_archived", is_flag=True, help="Include archived contacts.")
@click.option("--test-users/--no-test-users", default=None, help="Only (or no) test users.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@pass_app
def contacts_list(
    app: App,
    search: str | None,
    include_archived: bool,
    test_users: bool | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List contacts, most recently changed first."""
    rows = list_contacts(
        app.engine,
        search=search,
        include_archived=include_archived,
        test_users=test_users,
        limit=limit,
        offset=offset,
    )
    if as_json:
        print_json(
            [
                {k: r[k] for k in (*_CONTACT_COLUMNS, "preferred_name", "enrollment_id")}
                for r in rows
            ]
        )
    else:
        print_table(
            _CONTACT_COLUMNS,
            ([r[c] for c in _CONTACT_COLUMNS] for r in rows),
            title=f"Contacts ({len(rows)} shown)",
        )


@contacts.command("show")
@click.argument("contact")
@json_option
@pass_app
def contacts_show(app: App, contact: str, as_json: bool) -> None:
    """Show one CONTACT (hub id, CRM id or E.164 phone)."""
    view = get_contact(app.engine, contact)
    if view is None:
        fail(f"no contact matches {contact!r}", "unknown-contact-id")
    if as_json:
        print_json(view.as_dict())
        return
    data = view.as_dict()
    data.pop("custom")
    data.pop("changed_at", None)
    rows = [(k, cell(v)) for k, v in data.items()]
    rows += [(f"custom:{k}", v) for k, v in view.custom.items()]
    print_table(("field", "value"), rows, title=f"Contact {view.row['id']}")


def _contact_options(func: Any) -> Any:
    options = [
        click.option("--first-name"),
        click.option("--last-name"),
        click.option("--preferred-name"),
        click.option("--phone"),
        click.option("--email"),
        click.option("--crm-id"),
        click.option("--enrollment-id"),
        click.option(
            "--custom",
            "custom",
            multiple=True,
            metavar="NAME=VALUE",
            help="A custom field value; repeat for several.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _values(kwargs: dict[str, Any]) -> dict[str, str]:
    values = {
        name: kwargs[name]
        for name in (
            "first_name",
            "last_name",
            "preferred_name",
            "phone",
            "email",
            "crm_id",
            "enrollment_id",
        )
        if kwargs.get(name) is not None
    }
    for item in kwargs.get("custom") or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--custom takes NAME=VALUE, not {item!r}", exit_code=2)
        values[f"custom:{name.strip()}"] = value
    return values


def _save(app: App, values: dict[str, str], **kwargs: Any) -> str:
    app.instances(required=False)  # so the edit fans out to today's connections
    try:
        return save_contact(app.engine, values, region=app.settings.hub.default_region, **kwargs)
    except HubError as exc:
        fail(str(exc), str(exc.code))
    raise AssertionError("unreachable")


@contacts.command("add")
@_contact_options
@click.option("--test-user", is_flag=True, help="Mark as a test user (never synced).")
@json_option
@pass_app
def contacts_add(app: App, test_user: bool, as_json: bool, **kwargs: Any) -> None:
    """Add a contact (needs first name, last name and phone)."""
    contact_id = _save(app, _values(kwargs), test_user=test_user or None)
    if as_json:
        print_json({"id": contact_id})
    else:
        say(f"added {contact_id}")


@contacts.command("edit")
@click.argument("contact_id")
@_contact_options
@click.option("--test-user/--no-test-user", default=None, help="Set or clear the test-user flag.")
@json_option
@pass_app
def contacts_edit(
    app: App, contact_id: str, test_user: bool | None, as_json: bool, **kwargs: Any
) -> None:
    """Edit CONTACT_ID; UNSET clears a field. Changing the phone keeps the old as previous."""
    _save(app, _values(kwargs), contact_id=contact_id, test_user=test_user)
    if as_json:
        print_json({"id": contact_id})
    else:
        say(f"updated {contact_id}")


@contacts.command("archive")
@click.argument("contact_id")
@click.option("--undo", is_flag=True, help="Un-archive instead.")
@pass_app
def contacts_archive(app: App, contact_id: str, undo: bool) -> None:
    """Archive CONTACT_ID (or un-archive it with --undo)."""
    _save(app, {}, contact_id=contact_id, archived=not undo)
    say(f"{'un-archived' if undo else 'archived'} {contact_id}")


# --- fields ---------------------------------------------------------------------------------


@click.group()
def fields() -> None:
    """Custom field definitions."""


@fields.command("list")
@json_option
@pass_app
def fields_list(app: App, as_json: bool) -> None:
    """List the custom fields."""
    schema = load_schema(app.engine)
    rows = [(f.name, f.type) for f in schema.custom.values()]
    if as_json:
        print_json([{"name": n, "type": t} for n, t in rows])
    else:
        print_table(("name", "type"), rows, title="Custom fields")


@fields.command("add")
@click.argument("name")
@click.option(
    "--type", "field_type", type=click.Choice(CUSTOM_TYPES), default="text", show_default=True
)
@click.option("--exist-ok", is_flag=True, help="Succeed if a field of that name and type exists.")
@pass_app
def fields_add(app: App, name: str, field_type: str, exist_ok: bool) -> None:
    """Define a custom field NAME (its display name, e.g. "Class Year")."""
    existing = load_schema(app.engine).custom_field(name.strip())
    if existing is not None and exist_ok and existing.type == field_type:
        say(f"custom field {existing.name!r} ({existing.type}) already exists")
        return
    try:
        definition = add_custom_field(app.engine, name, field_type)
    except HubError as exc:
        fail(str(exc), str(exc.code))
    say(f"added custom field {definition.name!r} ({definition.type})")
