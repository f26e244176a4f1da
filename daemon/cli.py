"""The ``contactsync`` command line.

Every command takes ``--json`` where it prints data; people get rich tables. Logs go to stderr.
Exit codes: 0 done, 1 refused (a file, an edit), 2 usage or configuration error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click
import pluggy
from sqlalchemy import Engine

from daemon import __version__, cli_demo, cli_messages, cli_run, cli_simulate, cli_sync
from daemon import log as logging_setup
from daemon.cli_plugins import add_plugin_commands, plugins_command
from daemon.config import ConfigError, Settings, load_settings
from daemon.csv_import import import_csv
from daemon.dictionary import ENTRIES, explain
from daemon.hub import (
    HubError,
    add_custom_field,
    get_contact,
    list_contacts,
    load_schema,
    save_contact,
)
from daemon.incoming import RecordPlan
from daemon.instances import LoadResult, load_instances
from daemon.normalize import CUSTOM_TYPES
from daemon.output import cell, console, fail, print_json, print_table
from daemon.plugins import PluginError, Registry, get_plugin_manager
from daemon.store import utcnow
from daemon.synclog import prune_sync_log
from daemon.synclog_query import parse_age, parse_when, query_log

log = logging_setup.get_logger("contactsync.cli")
_T = TypeVar("_T")


@dataclass
class App:
    """What every command needs, built on first use so ``--help`` never opens a database."""

    etc: str | None = None
    database_url: str | None = None
    pm: pluggy.PluginManager | None = field(default=None, repr=False)  # tests inject one
    _engine: Engine | None = field(default=None, repr=False)
    _registry: Registry | None = field(default=None, repr=False)
    _loaded: LoadResult | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = load_settings(self.etc)
        except ConfigError as exc:
            fail(str(exc), "config-invalid", exit_code=2)
        if self.database_url:
            settings.database.url = self.database_url
        return settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from daemon.database import make_engine

            try:
                self._engine = make_engine(self.settings.database_url)
            except Exception as exc:  # a bad URL or an unreachable server
                fail(f"cannot open the hub database: {type(exc).__name__}", "config-invalid", 2)
        return self._engine

    def load_plugins(self) -> pluggy.PluginManager:
        """The given plugin manager, else the installed plugins less those blocked in
        ``CONTACTSYNC_BLOCK_PLUGINS``; raises :class:`PluginError`."""
        if self.pm is None:
            self.pm = get_plugin_manager()
        return self.pm

    def load_registry(self) -> Registry:
        """The connectors and transforms the plugins register; raises :class:`PluginError`."""
        if self._registry is None:
            self._registry = Registry.from_plugin_manager(self.load_plugins())
        return self._registry

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """:meth:`load_plugins`, exiting 2 with the plugin error."""
        return _or_exit(self.load_plugins)

    @property
    def registry(self) -> Registry:
        """:meth:`load_registry`, exiting 2 with the plugin error (a clash, say)."""
        return _or_exit(self.load_registry)

    def instances(self, *, required: bool = True) -> LoadResult:
        """``etc/instances/*.toml`` loaded, the valid ones mirrored into the hub.

        Hub writes call it with ``required=False`` before writing, so the outbox fans out to
        the connections configured now: an invalid file or a plugin problem is then a warning
        on stderr and never stops the write (the mirror keeps what it had).
        """
        if self._loaded is not None:
            return self._loaded
        try:
            registry = self.load_registry()
        except PluginError as exc:
            if required:
                fail(str(exc), str(PluginError.code), exit_code=2)
            log.warning("instances_not_loaded", code=str(PluginError.code), reason=str(exc))
            return LoadResult({}, {})
        loaded = load_instances(self.settings.etc_dir, registry.connectors)
        cli_sync.mirror_configured(self.engine, loaded)
        if not required:
            for error in loaded.errors.values():
                log.warning(
                    "instance_file_invalid", file=error.path, key=error.key, reason=error.reason
                )
        self._loaded = loaded
        return loaded


def _or_exit(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class _RootGroup(click.Group):
    """The ``contactsync`` group. Plugins add their commands (``register_commands``) before
    the arguments are read, so that ``--help`` lists them and they can be invoked."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A broken plugin set must not take --help and the hub commands down with it; the
        # commands that need plugins say what is wrong.
        with contextlib.suppress(PluginError):
            add_plugin_commands(self, ctx.ensure_object(App).load_plugins())
        return super().parse_args(ctx, args)


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--etc",
    envvar="CONTACTSYNC_ETC",
    type=click.Path(file_okay=False),
    help="Config folder (default ./etc; env CONTACTSYNC_ETC).",
)
@click.option(
    "--database-url",
    envvar="CONTACTSYNC_DATABASE_URL",
    help="Hub database URL (overrides etc/contactsync.toml).",
)
@click.option("--log-level", default="warning", show_default=True, help="Log level on stderr.")
@click.version_option(__version__, prog_name="contactsync")
@click.pass_context
def cli(ctx: click.Context, etc: str | None, database_url: str | None, log_level: str) -> None:
    """contactsync keeps contacts in step between the hub and CRMs."""
    logging_setup.configure(level=log_level)
    # Keep an App given as ``obj`` (tests inject a plugin manager); the options still apply.
    app = ctx.ensure_object(App)
    if etc is not None:
        app.etc = etc
    if database_url is not None:
        app.database_url = database_url


cli.add_command(plugins_command)
for _command in cli_sync.COMMANDS:
    cli.add_command(_command)
cli.add_command(cli_run.run_command)
cli.add_command(cli_simulate.simulate_command)
cli.add_command(cli_demo.demo_command)
cli.add_command(cli_messages.messages_group)


# --- errors ---------------------------------------------------------------------------------


@cli.command("errors")
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


# --- import ---------------------------------------------------------------------------------


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report what would happen; write nothing.")
@click.option("--plan", "show_plan", is_flag=True, help="Also print each record's field plan.")
@click.option("--batch-size", type=click.IntRange(1, 50_000), help="Rows per commit.")
@click.option("--delimiter", default=",", show_default=True, help="Cell separator (\\t: tab).")
@json_option
@pass_app
def import_cmd(
    app: App,
    file: Path,
    dry_run: bool,
    show_plan: bool,
    batch_size: int | None,
    delimiter: str,
    as_json: bool,
) -> None:
    """Import contacts from a CSV FILE through the incoming rules."""
    delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
    if len(delimiter) != 1:
        fail("--delimiter must be one character", exit_code=2)
    if not dry_run:
        app.instances(required=False)  # so the import fans out to today's connections
    plans: list[dict[str, Any]] = []

    def keep(plan: RecordPlan) -> None:
        if len(plans) < 1000:
            plans.append(_plan_dict(plan))

    schema = load_schema(app.engine, app.settings.hub.default_region)
    result = import_csv(
        app.engine,
        file,
        schema,
        batch_size=batch_size or app.settings.hub.batch_size,
        dry_run=dry_run,
        delimiter=delimiter,
        on_plan=keep if show_plan else None,
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
            console.print(f"{total - len(shown)} more problems{where}")
    if dry_run:
        console.print("Dry run: nothing was written; the counts are what an import would do.")


# --- contacts -------------------------------------------------------------------------------


@cli.group()
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
        console.print(f"added {contact_id}")


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
        console.print(f"updated {contact_id}")


@contacts.command("archive")
@click.argument("contact_id")
@click.option("--undo", is_flag=True, help="Un-archive instead.")
@pass_app
def contacts_archive(app: App, contact_id: str, undo: bool) -> None:
    """Archive CONTACT_ID (or un-archive it with --undo)."""
    _save(app, {}, contact_id=contact_id, archived=not undo)
    console.print(f"{'un-archived' if undo else 'archived'} {contact_id}")


# --- fields ---------------------------------------------------------------------------------


@cli.group()
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
        console.print(f"custom field {existing.name!r} ({existing.type}) already exists")
        return
    try:
        definition = add_custom_field(app.engine, name, field_type)
    except HubError as exc:
        fail(str(exc), str(exc.code))
    console.print(f"added custom field {definition.name!r} ({definition.type})")


# --- log ------------------------------------------------------------------------------------


@cli.group("log", invoke_without_command=True)
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
    console.print(f"{verb} {count} sync-log row(s) older than {cutoff:%Y-%m-%d %H:%M:%S} UTC")


def _where(details: dict[str, Any] | None) -> str:
    details = details or {}
    parts = [str(details[k]) for k in ("file",) if k in details]
    if "row" in details:
        parts.append(f"row {details['row']}")
    if "field" in details:
        parts.append(str(details["field"]))
    return " ".join(parts)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="contactsync")
