"""``contactsync demo``: the newcomer's first command. No account, no network.

It starts every built-in platform in this process (the HubSpot, Salesforce, Colleague and Slate
simulators on loopback, a local Banner folder for the ``sftp`` plugin and a local folder for the
conversations ``export``), writes a throw-away ``etc/`` with one instance each, seeds contacts on
every side (a few of them bad on purpose), and runs the real daemon
(:class:`daemon.runtime.service.Service`) on it. Meanwhile a scripted "user" edits contacts on
several sides, and the terminal shows each change arriving on the other side. At the end it prints
the sync log, where the bad records sit with their codes, and a summary per platform.

The daemon runs on the main thread, exactly as ``contactsync run`` runs it: only the main
thread may install signal handlers, and this way Ctrl-C stops it the usual way (drain the
running cycles, then exit). The script and the display run on a helper thread, which ends the
daemon after ``--duration`` by sending SIGTERM to the main thread.

What the display shows is observed, not assumed: every few hundred milliseconds it reads every
side, pairs hub contacts with platform records through the hub's links, and reports a record
that crossed over, a field whose two values have just come to agree (and which side moved to
reach agreement), a Slate upload a pull confirmed, and each file written or read. Those are
samples, and two samples can miss what happened between them; so the changes the feed
*counts* come from the hub's own record of its runs (every finished pull and push, each seen
once, the last ones after the daemon stopped), the same rows the summary adds up, and the two
always agree. The script's edits are spread over ``--duration``, so the sync keeps moving until
the end. On a terminal the daemon's warnings go to a log file the demo names at the end, not
into the live table. The platforms themselves live in :mod:`daemon.cli.demo_platforms`.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from daemon.cli.demo_platforms import SEED, Platform, Step, all_platforms
from daemon.cli.output import console, print_table
from daemon.config.settings import load_settings
from daemon.foundation import log as logging_setup
from daemon.hub import links
from daemon.hub.contacts import list_contacts, save_contact
from daemon.hub.database import make_engine
from daemon.hub.store import Link, SyncRun
from daemon.hub.synclog_query import query_log

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from daemon.cli.app import App

__all__ = ["SEED", "demo_command"]

POLL_SECONDS = 0.4
# The script's last edit lands this long before --duration ends, so its sync shows too.
SETTLE_SECONDS = 6.0
# These would point the daemon at the user's real hub; the demo must only touch its own.
_HUB_OVERRIDES = ("CONTACTSYNC_DATABASE_URL", "CONTACTSYNC_STATE_DIR", "STATE_DIRECTORY")
LABELS = {"first_name": "first name", "last_name": "last name", "email": "email", "phone": "phone"}

SETTINGS_TOML = """\
# Written by `contactsync demo`: quick cycles, so changes show within seconds.
state_dir = "{state_dir}"

[database]
url = "{database_url}"

[daemon]
workers = 3
shutdown_grace_seconds = 5
reload_debounce_ms = 200
wake_debounce_ms = 200
poll_interval_ms = 200

[log]
level = "warning"
"""


# --- what the sides look like --------------------------------------------------------------


def _norm(name: str, value: Any) -> str:
    """A value as both sides should agree on it: platforms lower-case emails, the hub stores
    phones as E.164 and some platforms keep ten digits, so compare emails case-blind and
    phones by their last ten digits."""
    text = "" if value is None else str(value).strip()
    if name == "email":
        return text.lower()
    if name == "phone":
        return "".join(c for c in text if c.isdigit())[-10:]
    return text


@dataclass
class Snapshot:
    """Every side at one moment: hub contacts by id, each platform's links by contact id
    (with the link's row id and state), records by remote id, and files."""

    hub: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, dict[str, tuple[int, str, str]]] = field(default_factory=dict)
    remote: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    # contact id -> the connection of its oldest link: where a pulled contact came from
    origin: dict[str, str] = field(default_factory=dict)


def take_snapshot(engine: Engine, platforms: list[Platform]) -> Snapshot:
    """Read every side (each simulator under its lock, so a record is never half-written)."""
    snap = Snapshot()
    snap.hub = {
        row["id"]: dict(row) for row in list_contacts(engine, include_archived=True, limit=10_000)
    }
    table = Link.__table__
    query = select(
        table.c.id, table.c.connection, table.c.remote_id, table.c.contact_id, table.c.state
    ).order_by(table.c.id)
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.contact_id not in snap.hub:
                # Committed after the contacts were read: counted next time, with its contact.
                continue
            snap.links.setdefault(row.connection, {})[row.contact_id] = (
                row.id,
                row.remote_id,
                row.state,
            )
            snap.origin.setdefault(row.contact_id, row.connection)
    for platform in platforms:
        snap.remote[platform.instance] = platform.view()
        snap.files[platform.instance] = platform.files()
    return snap


def _who(contact: dict[str, Any]) -> str:
    first = contact.get("first_name") or "?"
    last = contact.get("last_name") or ""
    return f"{first} {last}".strip()


def diff(
    before: Snapshot, after: Snapshot, platforms: list[Platform], hub_made: set[str]
) -> list[tuple[str, str]]:
    """The changes that flowed between two snapshots, as ``(direction, what)``.

    A new link means a record crossed over: from the platform when the contact was made by
    that link's pull (its oldest link, and not made in the hub), else from the hub. A field
    whose two values now agree but did not before crossed from the side that did not move.
    (The driver snapshots right after each scripted change, so within one interval only the
    daemon moves a side; when both moved, the hub moved first and the platform followed.)
    """
    events: list[tuple[str, str]] = []
    for platform in platforms:
        name, label = platform.instance, platform.label
        inbound, outbound = f"{label} → hub", f"hub → {label}"
        old_links = before.links.get(name, {})
        for contact_id, (_, remote_id, state) in after.links.get(name, {}).items():
            contact = after.hub.get(contact_id)
            if contact is None:
                continue
            old = old_links.get(contact_id)
            if old is None:
                pulled = contact_id not in hub_made and after.origin.get(contact_id) == name
                if pulled:
                    events.append((inbound, f"new contact {_who(contact)}"))
                elif state == links.PENDING:
                    events.append((outbound, f"new contact {_who(contact)} (sent, pending)"))
                elif platform.confirms_later:
                    # Sent and already confirmed by a pull before the display looked.
                    events.append((outbound, f"new contact {_who(contact)} (sent)"))
                    events.append((inbound, f"confirmed {_who(contact)} (a pull saw the upload)"))
                elif not platform.files_out:
                    events.append((outbound, f"new contact {_who(contact)}"))
                continue
            if old[2] == links.PENDING and state == links.ACTIVE:
                events.append((inbound, f"confirmed {_who(contact)} (a pull saw the upload)"))
            events.extend(_field_events(platform, before, after, contact_id, remote_id))
        old_files = before.files.get(name, {})
        for key, text in after.files.get(name, {}).items():
            if key not in old_files:
                direction, what = text.split("|", 1)
                events.append((direction, what))
    return events


def _field_events(
    platform: Platform, before: Snapshot, after: Snapshot, contact_id: str, remote_id: str
) -> list[tuple[str, str]]:
    """Fields of one linked pair that have just come to agree, and which side moved."""
    name = platform.instance
    remote, old_remote = after.remote[name].get(remote_id), before.remote[name].get(remote_id)
    old_contact = before.hub.get(contact_id)
    if remote is None or old_remote is None or old_contact is None:
        return []
    contact = after.hub[contact_id]
    events = []
    for hub_name in platform.mapping:
        now_hub, now_remote = _norm(hub_name, contact[hub_name]), _norm(hub_name, remote[hub_name])
        was_hub, was_remote = (
            _norm(hub_name, old_contact[hub_name]),
            _norm(hub_name, old_remote[hub_name]),
        )
        if now_hub != now_remote or was_hub == was_remote:
            continue
        what = f"{_who(contact)}'s {LABELS[hub_name]}: {contact[hub_name] or '(blank)'}"
        if was_hub != now_hub and was_remote == now_remote:  # the hub moved to meet it
            events.append((f"{platform.label} → hub", what))
        else:
            events.append((f"hub → {platform.label}", what))
    return events


# The run counts that are changes: records created or updated, on the hub (a pull) or on the
# platform (a push). The summary's columns and the feed's counts both add up these.
CHANGE_COUNTS = ("created", "updated")


def run_changes(counts: dict[str, Any] | None) -> int:
    """Records a run created or updated."""
    return sum(int((counts or {}).get(k) or 0) for k in CHANGE_COUNTS)


def new_runs(
    engine: Engine, seen: set[str], platforms: list[Platform], *, finished_only: bool = True
) -> list[tuple[str, str, int]]:
    """The pulls and pushes not yet in ``seen`` (added to it) that changed records, as
    ``(direction, what, changes)``. Runs still going wait for a later call; the last call,
    after the daemon stopped, takes them all (``finished_only=False``)."""
    table = SyncRun.__table__
    labels = {p.instance: p.label for p in platforms}
    query = select(table.c.id, table.c.instance, table.c.direction, table.c.counts).order_by(
        table.c.started_at
    )
    if finished_only:
        query = query.where(table.c.finished_at.is_not(None))
    events = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.id in seen:
                continue
            seen.add(row.id)
            label = labels.get(row.instance)
            changes = run_changes(row.counts)
            if label is None or not changes or row.direction not in ("pull", "push"):
                continue
            counts = row.counts or {}
            what = ", ".join(f"{counts[k]} {k}" for k in CHANGE_COUNTS if counts.get(k))
            if row.direction == "pull":
                events.append((f"{label} → hub", f"pull: {what}", changes))
            else:
                events.append((f"hub → {label}", f"push: {what}", changes))
    return events


def spread(steps: list[Step], duration: float | None) -> list[Step]:
    """The script stretched over ``duration`` (its last edit :data:`SETTLE_SECONDS` before the
    end), so something happens the whole time; never squeezed, and as is without one."""
    if not steps or duration is None:
        return steps
    last = max(s.at for s in steps)
    factor = max(1.0, (duration - SETTLE_SECONDS) / last) if last > 0 else 1.0
    return [replace(s, at=s.at * factor) for s in steps]


# --- the show -------------------------------------------------------------------------------


class Feed:
    """The recent events, shown live on a terminal and as plain lines elsewhere (CI)."""

    def __init__(self, live: bool, keep: int = 16) -> None:
        self.live = live
        self.started = time.monotonic()
        self.events: deque[tuple[str, str, str]] = deque(maxlen=keep)
        self.status = "starting"
        self.counts: Counter[str] = Counter()  # direction -> changes seen

    def add(self, direction: str, what: str, changes: int = 0) -> None:
        """Show an event; ``changes`` is how many records it counts toward ``direction``
        (only the hub's runs count: a sampled event is a detail, and may be missed)."""
        stamp = f"{time.monotonic() - self.started:5.1f}s"
        self.events.append((stamp, direction, what))
        if changes:
            self.counts[direction] += changes
        if not self.live:
            console.print(f"{stamp}  {direction:<14} {what}", soft_wrap=True)

    def render(self) -> Table:
        arrived = sum(self.counts.values())
        table = Table(
            title="contactsync demo — changes flowing (Ctrl-C to stop)",
            caption=f"{self.status} · {arrived} changes seen",
            expand=False,
        )
        table.add_column("time", justify="right", style="dim")
        table.add_column("direction", no_wrap=True)
        table.add_column("what")
        for stamp, direction, what in self.events:
            if direction.endswith("→ hub"):
                style = "cyan"
            elif direction.startswith("hub →"):
                style = "green"
            else:
                style = "yellow"
            table.add_row(stamp, f"[{style}]{direction}[/{style}]", what)
        return table


def seed_hub(engine: Engine) -> dict[str, str]:
    """Hub contacts before the first sync; returns their ids by nickname."""
    return {
        "ada": save_contact(
            engine,
            {
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada.lovelace@example.org",
                "phone": "+12025550104",
            },
        ),
        # No email: HubSpot requires one, so the push reports missing-remote-required-field.
        "noemail": save_contact(
            engine, {"first_name": "Nora", "last_name": "Noemail", "phone": "+12025550155"}
        ),
        # A test user is never sent anywhere; it must not appear on any platform.
        "test": save_contact(
            engine,
            {
                "first_name": "Test",
                "last_name": "User",
                "email": "test.user@example.org",
                "phone": "+12025550199",
            },
            test_user=True,
        ),
    }


def write_etc(root: Path, platforms: list[Platform]) -> Path:
    """The demo's own ``etc/``; its hub is an SQLite file under ``root/var``."""
    etc = root / "etc"
    (etc / "instances").mkdir(parents=True, exist_ok=True)
    state = root / "var"
    state.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(state / 'contactsync.db').as_posix()}"
    (etc / "contactsync.toml").write_text(
        SETTINGS_TOML.format(state_dir=state.as_posix(), database_url=url)
    )
    for platform in platforms:
        text = "# Written by `contactsync demo`.\n" + platform.instance_toml()
        (etc / "instances" / f"{platform.instance}.toml").write_text(text)
    return etc


class Driver(threading.Thread):
    """The helper thread: plays the script, watches every side, ends the daemon in time."""

    def __init__(
        self,
        engine: Engine,
        platforms: list[Platform],
        steps: list[Step],
        feed: Feed,
        duration: float | None,
    ) -> None:
        super().__init__(name="demo-driver", daemon=True)
        self.engine = engine
        self.platforms = platforms
        self.steps = sorted(steps, key=lambda s: s.at)
        self.feed = feed
        self.duration = duration
        self.done = threading.Event()  # set by the main thread once the daemon stopped
        self.error: BaseException | None = None
        self.hub_made: set[str] = set()  # contacts made in the hub, never pulled
        self.seen_runs: set[str] = set()  # the hub's runs already counted by the feed

    def run(self) -> None:
        try:
            if self.feed.live:
                with Live(self.feed.render(), console=console, refresh_per_second=4) as live:
                    self._watch(lambda: live.update(self.feed.render()))
            else:
                self._watch(lambda: None)
        except BaseException as exc:  # shown by the main thread; the daemon must still stop
            self.error = exc
            _stop_daemon()

    def _observe(self, before: Snapshot) -> Snapshot:
        after = take_snapshot(self.engine, self.platforms)
        for direction, what in diff(before, after, self.platforms, self.hub_made):
            self.feed.add(direction, what)
        self._count_runs()
        return after

    def _count_runs(self, *, finished_only: bool = True) -> None:
        for direction, what, changes in new_runs(
            self.engine, self.seen_runs, self.platforms, finished_only=finished_only
        ):
            self.feed.add(direction, what, changes)

    def last_look(self) -> None:
        """Count the runs the daemon finished after the display's last look."""
        self._count_runs(finished_only=False)

    def _watch(self, refresh: Callable[[], None]) -> None:
        started = time.monotonic()
        before = take_snapshot(self.engine, self.platforms)
        self.hub_made.update(before.hub)
        stop_sent = False
        while not self.done.wait(POLL_SECONDS):
            elapsed = time.monotonic() - started
            if self.steps and self.steps[0].at <= elapsed:
                # What the daemon did so far, then the change: the next interval then holds
                # only the daemon's moves, so the side that moved is the one that followed.
                before = self._observe(before)
                while self.steps and self.steps[0].at <= elapsed:
                    step = self.steps.pop(0)
                    made = step.apply()
                    if step.side == "hub" and isinstance(made, str):
                        self.hub_made.add(made)
                    self.feed.add(f"you, in {step.side}", step.what)
                before = take_snapshot(self.engine, self.platforms)
            before = self._observe(before)
            if self.duration is None:
                self.feed.status = f"running {elapsed:.0f}s"
            else:
                self.feed.status = f"running {elapsed:.0f}s of {self.duration:.0f}s"
                if elapsed >= self.duration and not stop_sent:
                    self.feed.status = "stopping"
                    _stop_daemon()
                    stop_sent = True
            refresh()


def _stop_daemon() -> None:
    """SIGTERM to the main thread, the daemon's own way to stop. Aimed at that thread so
    its wait wakes at once (a process-wide signal may land on another thread)."""
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signal.SIGTERM)


def print_sync_log(engine: Engine, platforms: list[Platform]) -> None:
    """The sync log of the demo: each refused record with its code, and what to do."""
    names = {c["id"]: _who(c) for c in list_contacts(engine, include_archived=True, limit=10_000)}
    labels = {p.instance: p.label for p in platforms}
    rows = query_log(engine, limit=200)
    rows.reverse()  # oldest first reads like a story
    print_table(
        ("platform", "direction", "record", "code", "message"),
        [
            (
                labels.get(str(r.get("instance") or ""), r.get("instance") or ""),
                r["direction"],
                _record(r, names),
                r["code"],
                r["message"],
            )
            for r in rows
        ],
        title="Sync log (also: contactsync log)",
    )
    codes = sorted({str(r["code"]) for r in rows if r["code"]})
    if codes:
        console.print(f"codes in the sync log: {', '.join(codes)}")
        console.print("`contactsync errors CODE` explains each one and the next step.")


def _record(row: dict[str, Any], names: dict[str, str]) -> str:
    """Who a log row is about: the hub contact's name, else the platform record's id (a
    refused incoming record has no hub contact), else its file and row."""
    if row.get("contact_id"):
        return names.get(row["contact_id"], row["contact_id"])
    if row.get("remote_id"):
        return f"#{row['remote_id']}"
    return ""


_IN = ("read", "created", "updated")
_OUT = ("created", "updated", "failed")


def print_summary(engine: Engine, platforms: list[Platform], feed: Feed) -> None:
    """Per platform: records in and out (from the runs' own counts), changes seen (the feed's
    count of the same runs' created and updated: the two agree), files."""
    table = SyncRun.__table__
    totals: dict[tuple[str, str], Counter[str]] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(table.c.instance, table.c.direction, table.c.counts)):
            bucket = totals.setdefault((row.instance, row.direction), Counter())
            bucket.update({k: int(v) for k, v in (row.counts or {}).items() if isinstance(v, int)})
    rows = []
    for p in platforms:
        pulled = totals.get((p.instance, "pull"))
        pushed = totals.get((p.instance, "push"))
        exported = totals.get((p.instance, "export"))
        files = p.files()
        rows.append(
            (
                p.label,
                " / ".join(str(pulled[k]) for k in _IN) if pulled else "",
                " / ".join(str(pushed[k]) for k in _OUT) if pushed else "",
                str(pulled["confirmed"]) if pulled and pulled["confirmed"] else "",
                f"{feed.counts[f'{p.label} → hub']} in, {feed.counts[f'hub → {p.label}']} out",
                str(len(files)) if files else "",
                str(exported["messages"]) if exported else "",
            )
        )
    print_table(
        (
            "platform",
            "in: read / created / updated",
            "out: created / updated / failed",
            "confirmed",
            "changes seen",
            "files",
            "messages exported",
        ),
        rows,
        title="Per platform (also: contactsync status)",
    )


def report_test_user(engine: Engine, platforms: list[Platform], test_id: str) -> None:
    """Say, after checking every platform's records, that the test user stayed in the hub."""
    contact = next(
        (
            c
            for c in list_contacts(engine, include_archived=True, limit=10_000)
            if c["id"] == test_id
        ),
        None,
    )
    email = _norm("email", contact["email"] if contact else "")
    found = [
        p.label
        for p in platforms
        if any(_norm("email", r.get("email")) == email for r in p.view().values())
        or p.mentions(email)
    ]
    where = ", ".join(found)
    verdict = f"was SENT to {where} (a bug)" if found else "was never sent to HubSpot"
    if not found and len(platforms) > 1:
        verdict += " nor any other platform (nor exported)"
    console.print(f"test user {_who(contact or {})} {verdict}")


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is at the moment of each write. While the live display runs,
    rich swaps in a proxy that prints above the table; a log handler holding the original
    stream would write straight through it and tear the display apart."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.__stderr__ is not None and sys.__stderr__.isatty()


def _name_the_log(path: Path, stream: Any) -> None:
    """Close the demo's log file; name it if the daemon wrote anything, else remove it."""
    if isinstance(stream, io.IOBase):
        stream.close()
    if path.exists() and path.stat().st_size:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        console.print(f"the daemon's warnings ({lines} lines, JSON): {path}", soft_wrap=True)
    else:
        path.unlink(missing_ok=True)


# --- the command ----------------------------------------------------------------------------


@click.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Stop by itself after this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Build the demo in DIR and keep it (default: a temporary folder, deleted at the end).",
)
@click.pass_obj
def demo_command(app: App, duration: float | None, keep: Path | None) -> None:
    """Watch contacts sync with every built-in platform, simulated: no account, no network.

    Starts the HubSpot, Salesforce, Colleague and Slate simulators, a local Banner folder
    (sftp) and a local export folder, writes a temporary etc/ with an instance each, seeds
    contacts on every side (some bad on purpose), runs the daemon, edits contacts on several
    sides, and shows the changes arrive. Ends with the sync log and a summary per platform.
    """
    from daemon.runtime.service import Service, quiet_libraries

    live = console.is_terminal
    log_file: Path | None = None
    if live:
        # A JSON line printed while the live table redraws tears it apart: on a terminal the
        # daemon's warnings go to a file, named at the end.
        log_file = (keep.resolve() / "demo.log") if keep is not None else None
        if log_file is None:
            handle, name = tempfile.mkstemp(prefix="contactsync-demo-", suffix=".log")
            os.close(handle)
            log_file = Path(name)
    # Quiet logs on stderr (or in the file), so the display on stdout stays readable.
    log_stream: Any = _CurrentStderr()
    quiet_libraries("warning")
    for name in _HUB_OVERRIDES:
        os.environ.pop(name, None)
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            raise click.UsageError(f"--keep {keep}: the folder must be new or empty")
        root = keep.resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="contactsync-demo-"))
    if log_file is not None:
        log_stream = log_file.open("a", encoding="utf-8")
    logging_setup.configure(level="warning", stream=log_stream)
    platforms = all_platforms()
    started: list[Platform] = []
    try:
        for platform in platforms:
            platform.start(root)
            started.append(platform)
            secret = platform.secret()
            if secret is not None:
                # The connector reads it by reference, from this process's environment only.
                logging_setup.register_secret(secret)
                os.environ[platform.env] = secret
            platform.seed()
        etc = write_etc(root, platforms)
        settings = load_settings(etc)
        engine = make_engine(settings.database_url)
        hub_ids = seed_hub(engine)
        for platform in platforms:
            platform.seed_hub(engine, hub_ids)
        feed = Feed(live=live)
        for platform in platforms:
            console.print(platform.describe())
        console.print(f"hub {settings.database_url}; config {etc}")
        steps = spread([s for p in platforms for s in p.steps(engine, hub_ids)], duration)
        driver = Driver(engine, platforms, steps, feed, duration)
        driver.start()
        service = Service(etc, settings, pm=app.pm)
        code = service.run()  # on this, the main thread: its signals, Ctrl-C included
        driver.done.set()
        driver.join(timeout=10)
        if driver.error is not None:
            raise driver.error
        if code != 0:
            raise SystemExit(code)
        driver.last_look()
        console.print(
            "changes seen: " + ", ".join(f"{d} {n}" for d, n in sorted(feed.counts.items())),
            soft_wrap=True,
        )
        report_test_user(engine, platforms, hub_ids["test"])
        print_sync_log(engine, platforms)
        print_summary(engine, platforms, feed)
        engine.dispose()
    finally:
        for platform in reversed(started):
            platform.stop()
        for platform in platforms:
            if platform.env:
                os.environ.pop(platform.env, None)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"kept {root}: try `contactsync --etc {root / 'etc'} log`")
        if log_file is not None:
            _name_the_log(log_file, log_stream)
