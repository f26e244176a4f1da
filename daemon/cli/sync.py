"""Operator commands for sync: ``sync``, ``status``, ``outbox``, ``links``, ``cursor``, ``check``.

They let an operator run a cycle by hand, see what the daemon sees, and repair an instance
(re-arm or drop outbox rows, re-link records, force a full pull) without writing SQL. The
queries live with their tables (:mod:`daemon.hub.outbox`, :mod:`daemon.hub.links`,
:mod:`daemon.hub.runs`, :mod:`daemon.engine.status`); this module parses options and prints.

Printed values pass through the log redactor: contact values are fine in the operator's own
terminal, secrets never are (a careless platform error message may quote a key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from daemon.cli.app import App, json_option
from daemon.cli.output import cell, console, fail, print_json, print_table, safe_text
from daemon.config.instances import Instance, LoadResult
from daemon.engine.checks import check_instance
from daemon.engine.cycle import CycleReport, SyncEngine
from daemon.engine.preview import Preview, preview
from daemon.engine.push import PushPlan
from daemon.engine.status import SECRET_UNAVAILABLE, error_dict, instance_status, status_rows
from daemon.foundation.dictionary import Code
from daemon.foundation.log import redact, redact_text
from daemon.hub import lease, links, outbox, runs
from daemon.hub.database import READ_ONLY
from daemon.hub.incoming import RecordPlan
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceRow, utcnow
from daemon.kit.exporter import is_exporter

PLAN_LIMIT = 1000  # per side; a dry run of a large platform must not fill the terminal
_CONFIG = str(Code.CONFIG_INVALID)
_INSTANCE = InstanceRow.__table__
_STATUS_COLUMNS = (
    *("instance", "type", "state", "connection", "direction", "enabled", "last pull"),
    "last push",
    *("back-off until", "lease", "outbox", "links", "cursor"),
)
_OUTBOX_COLUMNS = (
    *("id", "connection", "contact", "state", "attempts", "next attempt", "fields"),
    *("origin", "last error"),
)
_LINK_COLUMNS = (
    *("connection", "remote id", "contact", "state", "remote modified", "updated"),
    "last exchanged",
)


# --- shared helpers ---------------------------------------------------------------------------


def _known(loaded: LoadResult) -> str:
    return ", ".join(sorted([*loaded.instances, *loaded.errors])) or "none configured"


def _instance(app: App, name: str) -> Instance:
    """A valid configured instance, or exit 2 with the file's error (file, key, reason)."""
    loaded = app.instances()
    if name in loaded.errors:
        fail(str(loaded.errors[name]), _CONFIG, exit_code=2)
    if name not in loaded.instances:
        fail(f"no instance {name!r} (known: {_known(loaded)})", _CONFIG, exit_code=2)
    return loaded.instances[name]


def _say(text: str) -> None:
    """One line for people on stdout, redacted, never read as rich markup."""
    console.print(safe_text(text), markup=False)


def _busy(app: App, connection: str) -> None:
    with app.engine.connect() as conn:
        holder = lease.holders(conn, [connection], utcnow()).get(connection)
    who = f"{holder[0]} holds its lease until {cell(holder[1])}" if holder else "a run holds it"
    fail(f"connection {connection!r} is busy: {who}; try again when that run ends")


@contextmanager
def _holding(app: App, connection: str | None) -> Iterator[None]:
    """Hold a connection's lease around a repair, so no cycle interleaves with it."""
    if connection is None:  # never mirrored: nothing can be running it
        yield
        return
    owner = lease.owner_id()
    if not lease.acquire(app.engine, connection, owner, utcnow()):
        _busy(app, connection)
    try:
        yield
    finally:
        lease.release(app.engine, connection, owner)


def _ids_or_all_parked(ids: Sequence[int], all_parked: bool) -> None:
    if bool(ids) == all_parked:
        fail("name the rows: give IDs or --all-parked (not both)", exit_code=2)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str) -> None:
    print_table(columns, [[redact_text(cell(v)) for v in row] for row in rows], title=title)


# --- sync -------------------------------------------------------------------------------------


@dataclass
class _Plans:
    """Dry-run plans of both sides, as dicts, at most PLAN_LIMIT each."""

    pull: list[dict[str, Any]] = field(default_factory=list)
    push: list[dict[str, Any]] = field(default_factory=list)
    not_shown: Counter[str] = field(default_factory=Counter)

    def add(self, plan: Any) -> None:
        if isinstance(plan, RecordPlan):
            self._keep(CycleKind.PULL, self.pull, _record_plan(plan))
        elif isinstance(plan, PushPlan):
            self._keep(CycleKind.PUSH, self.push, plan.as_dict())

    def _keep(self, side: str, kept: list[dict[str, Any]], data: dict[str, Any]) -> None:
        if len(kept) < PLAN_LIMIT:
            kept.append(data)
        else:
            self.not_shown[side] += 1


def _record_plan(plan: RecordPlan) -> dict[str, Any]:
    return {
        "remote_id": plan.record.remote_id,
        "outcome": str(plan.outcome),
        "contact_id": plan.contact_id,
        "fields": [f.as_dict() for f in plan.fields],
        "problems": [
            {"code": str(p.code), "field": p.field, "message": p.message} for p in plan.problems
        ],
    }


def _directions(instance: Instance, direction: str) -> list[str]:
    """The cycles to run; one the instance's direction forbids is a usage error (pushing
    through an incoming instance would use its mapping for a shared connection's outbox)."""
    if is_exporter(instance.connector_class):  # an exporter's one cycle
        if direction not in ("both", CycleKind.EXPORT):
            fail(f"instance {instance.name!r} is an exporter: it only exports", exit_code=2)
        return [CycleKind.EXPORT]
    allowed = [CycleKind.PULL] if instance.direction.pulls else []
    allowed += [CycleKind.PUSH] if instance.direction.pushes else []
    if direction == "both":
        return allowed
    if direction == CycleKind.DELETES and instance.direction.pulls:
        # The connector's deletion scan (none for most: deletes come in pulls).
        return [CycleKind.DELETES]
    if direction not in allowed:
        fail(
            f"instance {instance.name!r} is {instance.direction}: it does not {direction}",
            exit_code=2,
        )
    return [direction]


@click.command("sync")
@click.argument("name", metavar="INSTANCE")
@click.option(
    "--direction",
    type=click.Choice(["pull", "push", "both", "deletes", "export"]),
    default="both",
    show_default=True,
    help="both: pull, then push (each only where the instance's direction allows); "
    "deletes: the connector's deletion scan; export: an exporter's export (its default).",
)
@click.option("--full", is_flag=True, help="Pull everything, not only changes since the cursor.")
@click.option("--dry-run", is_flag=True, help="Print each record's plan; write and send nothing.")
@json_option
@click.pass_obj
def sync_command(
    app: App, name: str, direction: str, full: bool, dry_run: bool, as_json: bool
) -> None:
    """Run a cycle of INSTANCE now, as the daemon would (ignoring any back-off).

    Exits 1 when a cycle fails or another run holds the connection's lease.
    """
    instance = _instance(app, name)
    sides = _directions(instance, direction)
    if not instance.config.enabled and not dry_run:
        fail(f"instance {name!r} is disabled (enabled = false); --dry-run still works")
    engine = SyncEngine(
        app.engine,
        app.registry.transforms,
        region=app.settings.hub.default_region,
        pm=app.plugin_manager,
    )
    plans = _Plans()
    reports: list[CycleReport] = []
    counted: Preview | None = None
    if dry_run:
        # Both sides planned, nothing written; the push side of a first sync includes what
        # its seed would queue, so the counts are the ones the real sync then reports.
        counted = preview(engine, instance, sides, full=full, on_plan=plans.add)
        reports = counted.reports
    for side in sides if not dry_run else ():
        report = engine.run(
            instance,
            side,
            full=full,
            dry_run=dry_run,
            on_plan=plans.add if dry_run else None,
            respect_backoff=False,  # the operator asked for this run now
        )
        reports.append(report)
        if report.outcome != "ok":
            break  # a push after a failed pull would fail or race the same way
    if as_json:
        data: dict[str, Any] = {
            "instance": name,
            "dry_run": dry_run,
            "full": full,
            "reports": [r.as_dict() for r in reports],
        }
        if dry_run:
            data["plans"] = {CycleKind.PULL: plans.pull, CycleKind.PUSH: plans.push}
            data["plans_not_shown"] = dict(plans.not_shown)
            data["preview"] = counted.as_dict() if counted is not None else None
        print_json(data)
    else:
        _print_sync(instance, reports, plans, dry_run)
        if counted is not None:
            _print_preview(instance, counted)
    _exit_for(app, instance, reports)


def _print_sync(
    instance: Instance, reports: list[CycleReport], plans: _Plans, dry_run: bool
) -> None:
    if dry_run:
        _print_pull_plans(plans.pull)
        _print_push_plans(plans.push)
    _table(
        ("cycle", "outcome", "counts", "run", "error"),
        [
            (
                r.direction,
                r.outcome,
                ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())),
                r.run_id,
                f"{r.code}: {r.error}" if r.code else r.error,
            )
            for r in reports
        ],
        title=f"{instance.name}{' (dry run)' if dry_run else ''}",
    )
    for side, count in sorted(plans.not_shown.items()):
        _say(f"{count} more {side} plans not shown")
    if dry_run:
        _say("Dry run: nothing was written and nothing was sent.")
        return
    for r in reports:
        problems = r.counts.get("errors", 0) + r.counts.get("failed", 0)
        if problems:
            _say(f"{r.direction}: {problems} record problem(s); contactsync log --run {r.run_id}")


def _print_preview(instance: Instance, counted: Preview) -> None:
    """The counts a staff member reads before saying yes."""
    config = instance.config
    skipped = ", ".join(f"{code} {n}" for code, n in sorted(counted.skipped.items())) or "none"
    _table(
        ("what the sync would do", "count"),
        [
            ("link to contacts the hub already holds", counted.link),
            ("create in the hub", counted.create_in_hub),
            ("create on the platform", counted.create_on_platform),
            (
                f"conflicts settled (first_sync = {config.first_sync}, "
                f"conflict = {config.conflict})",
                counted.conflicts,
            ),
            ("skipped, by code", skipped),
        ],
        title=f"Preview of {instance.name}{' (first sync)' if counted.first_sync else ''}",
    )


def _print_pull_plans(plans: list[dict[str, Any]]) -> None:
    rows: list[tuple[Any, ...]] = []
    for plan in plans:
        head = (plan["remote_id"], plan["outcome"], plan["contact_id"])
        items = [
            (f["field"], f["action"], f.get("value"), _why(f.get("code"), f.get("reason")))
            for f in plan["fields"]
        ]
        # Problems no field plan shows, such as a required field the record lacks.
        shown = {(f["field"], f.get("code")) for f in plan["fields"]}
        items += [
            (p["field"] or "", "", None, _why(p["code"], p["message"]))
            for p in plan["problems"]
            if (p["field"], p["code"]) not in shown
        ]
        for index, item in enumerate(items or [("", "", None, "")]):
            rows.append((*(head if index == 0 else ("", "", "")), *item))
    _table(
        ("remote id", "outcome", "contact", "field", "action", "value", "why"),
        rows,
        title=f"Pull plan ({len(plans)} records)",
    )


def _print_push_plans(plans: list[dict[str, Any]]) -> None:
    rows = [
        (
            p["contact_id"],
            p["action"],
            p.get("remote_id"),
            ", ".join(f"{k}={v}" for k, v in redact(p.get("fields") or {}).items())
            or p.get("reason", ""),
        )
        for p in plans
    ]
    _table(
        ("contact", "action", "remote id", "fields / reason"),
        rows,
        title=f"Push plan ({len(plans)} records)",
    )


def _why(code: str | None, reason: str | None) -> str:
    return ": ".join(part for part in (code, reason) if part)


def _exit_for(app: App, instance: Instance, reports: list[CycleReport]) -> None:
    for report in reports:
        if report.outcome == "busy":
            _busy(app, instance.connection)
        if report.outcome != "ok":
            fail(
                f"{report.direction} of {instance.name} {report.outcome}: "
                f"{report.error or 'see contactsync log'}",
                report.code,
            )


# --- status -----------------------------------------------------------------------------------


@click.command("status")
@click.option("--wide", is_flag=True, help="Every column (counts of each run, lease, cursor).")
@json_option
@click.pass_obj
def status_command(app: App, wide: bool, as_json: bool) -> None:
    """Show which hub and config folder this command uses, and each instance: its state,
    last runs, back-off, outbox and links (--wide: also lease, run counts and cursor).

    Never resolves a secret: an instance whose secret this shell lacks shows
    secret-unavailable, a broken file config-invalid.
    """
    where = app.whereabouts()
    rows = status_rows(app.engine, app.instances(secrets=False))
    if as_json:
        print_json({**where, "instances": rows})
        return
    _say_whole(f"Hub: {where['hub']['url']} ({where['hub']['named_by']})")
    config = where["config"]
    _say_whole(
        f"Config: {config['folder']} ({config['named_by']})"
        if config["folder"]
        else "Config: none (every setting at its default)"
    )
    if wide:
        _status_wide(rows)
    else:
        _status_narrow(rows)
    for row in rows:
        if row["config_error"]:
            error = row["config_error"]
            where_ = ": ".join(p for p in (error["file"], error["key"]) if p)
            _say_whole(f"{row['name']}: {_CONFIG}: {where_}: {error['reason']}")
        for missing in row["not_in_this_shell"]:
            _say_whole(
                f"{row['name']}: {SECRET_UNAVAILABLE}: {missing['setting']}: "
                f"{missing['reason']} in this shell"
            )
    if not rows:
        folder = config["folder"] or "etc"
        _say_whole(f"No instances: add {folder}/instances/NAME.toml")


def _say_whole(text: str) -> None:
    """One line never wrapped by us: a path or URL split in two is not found by grep."""
    console.print(safe_text(text), markup=False, soft_wrap=True)


def _status_narrow(rows: list[dict[str, Any]]) -> None:
    """The columns that matter, each cell a few short words, so that a 100-column terminal
    shows them without breaking a word (no column is allowed narrower than its longest
    word)."""
    columns = ("instance", "type", "state", "last pull", "last push", "outbox", "links")
    cells = [
        (
            r["name"],
            r["type"] or "",
            r["state"],
            _short_run(r["last_runs"]["pull"]),
            _short_run(r["last_runs"]["push"] or r["last_runs"].get("export")),
            _nonzero(r["outbox"]),
            _nonzero(r["links"]),
        )
        for r in rows
    ]
    table = Table(title="Instances", header_style="bold")
    for index, column in enumerate(columns):
        words = [w for row in cells for w in row[index].split()] + column.split()
        table.add_column(column, min_width=max(map(len, words)), overflow="fold")
    for row in cells:
        table.add_row(*(Text(safe_text(v, keep_newlines=True)) for v in row))
    console.print(table)


def _status_wide(rows: list[dict[str, Any]]) -> None:
    _table(
        _STATUS_COLUMNS,
        [
            (
                r["name"],
                r["type"],
                r["state"],
                r["connection"],
                r["direction"],
                r["enabled"],
                _run_cell(r["last_runs"]["pull"]),
                # An exporter's last export shows where an outgoing instance's last push does.
                _run_cell(r["last_runs"]["push"] or r["last_runs"].get("export")),
                r["backoff_until"],
                (r["lease"] or {}).get("owner"),
                " / ".join(f"{k} {v}" for k, v in r["outbox"].items()),
                " / ".join(f"{k} {v}" for k, v in r["links"].items()),
                r["cursor_updated_at"],
            )
            for r in rows
        ],
        title="Instances",
    )


def _short_run(run: dict[str, Any] | None) -> str:
    """A run as ``outcome MM-DD HH:MM`` (UTC); --wide and --json have its counts."""
    if run is None:
        return ""
    at = run["finished_at"] or run["started_at"]
    return f"{run['outcome']} {at:%m-%d %H:%M}" if at else str(run["outcome"])


def _nonzero(counts: dict[str, int]) -> str:
    """``pending 2, parked 1``: the states with rows, or ``0``."""
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "0"


def _run_cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return ""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run["counts"].items()) if v)
    return f"{run['outcome']} {cell(run['finished_at'] or run['started_at'])}\n{counts}".strip()


# --- outbox -----------------------------------------------------------------------------------


@click.group("outbox")
def outbox_group() -> None:
    """List, retry and drop the rows waiting to be pushed."""


@outbox_group.command("list")
@click.option("--connection", help="Only this connection's rows.")
@click.option("--state", type=click.Choice([outbox.PENDING, outbox.PARKED]))
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@click.pass_obj
def outbox_list(
    app: App, connection: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """List outbox rows, oldest first."""
    with app.engine.connect().execution_options(**READ_ONLY) as conn:
        rows = outbox.list_rows(conn, connection=connection, state=state, limit=limit)
    if as_json:
        print_json(rows)
        return
    _table(
        _OUTBOX_COLUMNS,
        [
            (
                r["id"],
                r["connection"],
                r["contact_id"],
                r["state"],
                r["attempts"],
                r["next_attempt_at"],
                ", ".join(r["fields"] or []),
                r["origin"],
                r["last_error"],
            )
            for r in rows
        ],
        title=f"Outbox ({len(rows)} shown)",
    )


@outbox_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-parked", is_flag=True, help="Every parked row (of --connection).")
@click.option("--connection", help="Only this connection's rows.")
@click.pass_obj
def outbox_retry(app: App, ids: tuple[int, ...], all_parked: bool, connection: str | None) -> None:
    """Re-arm rows by ID (or all parked ones): pending, no attempts, due now."""
    _ids_or_all_parked(ids, all_parked)
    with app.engine.begin() as conn:
        found = outbox.rearm(
            conn, utcnow(), ids=ids or None, connection=connection, all_parked=all_parked
        )
    _say(f"re-armed {len(found)} row(s); the next push sends them")
    _missing(ids, found)


@outbox_group.command("drop")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-parked", is_flag=True, help="Every parked row (of --connection).")
@click.option("--connection", help="Only this connection's rows.")
@click.pass_obj
def outbox_drop(app: App, ids: tuple[int, ...], all_parked: bool, connection: str | None) -> None:
    """Delete rows by ID (or all parked ones); their changes are not pushed."""
    _ids_or_all_parked(ids, all_parked)
    with app.engine.begin() as conn:
        found = outbox.drop(conn, ids=ids or None, connection=connection, all_parked=all_parked)
    _say(f"dropped {len(found)} row(s)")
    _missing(ids, found)


def _missing(ids: Sequence[int], found: Sequence[int]) -> None:
    missing = sorted(set(ids) - set(found))
    if missing:
        fail(f"no such outbox row: {', '.join(map(str, missing))}")


# --- links ------------------------------------------------------------------------------------


@click.group("links")
def links_group() -> None:
    """Show and reset links between contacts and remote records."""


@links_group.command("show")
@click.argument("key", metavar="CONTACT_OR_REMOTE_ID")
@click.option("--connection", help="Only this connection's links.")
@json_option
@click.pass_obj
def links_show(app: App, key: str, connection: str | None, as_json: bool) -> None:
    """Show the links of a hub contact id, or of a remote record id."""
    with app.engine.connect().execution_options(**READ_ONLY) as conn:
        rows = links.find(conn, key, connection)
    if not rows:
        fail(f"no link has contact or remote id {key!r}", exit_code=1)
    if as_json:
        print_json(rows)
        return
    _table(
        _LINK_COLUMNS,
        [
            (
                r["connection"],
                r["remote_id"],
                r["contact_id"],
                r["state"],
                r["remote_modified_at"],
                r["updated_at"],
                "\n".join(f"{k}={v}" for k, v in redact(r["values"] or {}).items()),
            )
            for r in rows
        ],
        title=f"Links of {key}",
    )


@links_group.command("reset")
@click.option("--connection", required=True, help="The connection whose links to delete.")
@click.option("--contact", "contact_id", help="The links of this hub contact id.")
@click.option("--remote-id", help="The link of this remote record id.")
@click.option("--all", "all_links", is_flag=True, help="Every link of the connection.")
@click.option("--yes", is_flag=True, help="Confirm --all.")
@click.pass_obj
def links_reset(
    app: App,
    connection: str,
    contact_id: str | None,
    remote_id: str | None,
    all_links: bool,
    yes: bool,
) -> None:
    """Delete links (tombstones included) so the next full pull re-links the records.

    Pull (sync INSTANCE --direction pull --full) before the next push: a queued contact
    without a link would otherwise be created on the platform again.
    """
    if sum(map(bool, (contact_id, remote_id, all_links))) != 1:
        fail("give exactly one of --contact, --remote-id or --all", exit_code=2)
    if all_links and not yes:
        fail(f"--all deletes every link of {connection!r}; add --yes to confirm", exit_code=2)
    with _holding(app, connection), app.engine.begin() as conn:
        count = links.reset(conn, connection, contact_id=contact_id, remote_id=remote_id)
    _say(f"deleted {count} link(s) of {connection}")
    if count:
        _say("re-link them with a full pull: contactsync sync INSTANCE --direction pull --full")
    elif not all_links:
        fail("no link matched", exit_code=1)


# --- cursor -----------------------------------------------------------------------------------


@click.group("cursor")
def cursor_group() -> None:
    """Pull checkpoints."""


@cursor_group.command("reset")
@click.argument("name", metavar="INSTANCE")
@click.option("--stream", default=runs.CONTACTS_STREAM, show_default=True)
@click.pass_obj
def cursor_reset(app: App, name: str, stream: str) -> None:
    """Delete INSTANCE's checkpoint: its next pull reads everything."""
    loaded = app.instances(secrets=False)
    if name not in loaded.instances and name not in loaded.errors:
        fail(f"no instance {name!r} (known: {_known(loaded)})", _CONFIG, exit_code=2)
    instance = loaded.instances.get(name)
    connection = (
        instance.connection
        if instance
        else instance_status(app.engine, {name: None})[name]["connection"]
    )
    with _holding(app, connection), app.engine.begin() as conn:
        existed = runs.reset_cursor(conn, name, stream)
    if existed:
        _say(f"deleted the {stream} cursor of {name}; the next pull is a full pull")
    else:
        _say(f"{name} had no {stream} cursor; the next pull is a full pull already")


# --- check ------------------------------------------------------------------------------------


@click.command("check")
@click.argument("name", metavar="[INSTANCE]", required=False)
@json_option
@click.pass_obj
def check_command(app: App, name: str | None, as_json: bool) -> None:
    """Validate instance files and prove each connector works: check(), describe() and the
    mapping against the platform's fields. Exits 1 on a problem, 2 on an invalid file."""
    loaded = app.instances()
    names = sorted([*loaded.instances, *loaded.errors])
    if name is not None:
        if name not in names:
            fail(f"no instance {name!r} (known: {_known(loaded)})", _CONFIG, exit_code=2)
        names = [name]
    results = [_check_one(app, loaded, n) for n in names]
    if as_json:
        print_json(results)
    else:
        _print_checks(results)
    if any(r["config_error"] for r in results):
        raise SystemExit(2)
    if any(not r["ok"] for r in results):
        raise SystemExit(1)


def _check_one(app: App, loaded: LoadResult, name: str) -> dict[str, Any]:
    error = loaded.errors.get(name)
    if error is not None:
        return {
            "instance": name,
            "ok": False,
            "problems": [{"code": _CONFIG, "message": str(error)}],
            "remote_fields": None,
            "config_error": error_dict(error),
        }
    instance = loaded.instances[name]
    result = check_instance(app.engine, instance, app.registry.transforms).as_dict()
    return {
        **result,
        "type": instance.config.type,
        "connection": instance.connection,
        "config_error": None,
    }


def _print_checks(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        if r["ok"]:
            rows.append((r["instance"], "ok", "", f"{r['remote_fields']} remote fields"))
        for p in r["problems"]:
            rows.append((r["instance"], "problem", p["code"] or "", p["message"]))
    _table(("instance", "result", "code", "detail"), rows, title="Check")
    if not results:
        _say("No instances: add etc/instances/NAME.toml")


COMMANDS: tuple[click.Command, ...] = (
    sync_command,
    status_command,
    outbox_group,
    links_group,
    cursor_group,
    check_command,
)
"""The commands :mod:`daemon.cli` adds to ``contactsync``."""
