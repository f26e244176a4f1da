"""``contactsync demo``: the newcomer's first command. No account, no network.

It starts the HubSpot simulator in this process, writes a throw-away ``etc/`` with one two-way
HubSpot instance, seeds contacts on both sides (a few of them bad on purpose), and runs the
real daemon (:class:`daemon.service.Service`) on it. Meanwhile a scripted "user" edits
contacts on both sides, and the terminal shows each change arriving on the other side. At the
end it prints the sync log, where the bad records sit with their codes.

The daemon runs on the main thread, exactly as ``contactsync run`` runs it: only the main
thread may install signal handlers, and this way Ctrl-C stops it the usual way (drain the
running cycles, then exit). The script and the display run on a helper thread, which ends the
daemon after ``--duration`` by sending SIGTERM to the main thread.

What the display shows is observed, not assumed: every few hundred milliseconds it reads both
sides, pairs hub contacts with HubSpot records by CRM id (``owns_crm_id``), and reports a
field whose two values have just come to agree, and which side moved to reach agreement.
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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.live import Live
from rich.table import Table

from daemon import log as logging_setup
from daemon.config import load_settings
from daemon.database import make_engine
from daemon.hub import list_contacts, save_contact
from daemon.output import console, print_table
from daemon.synclog_query import query_log

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from daemon.cli import App
    from plugins.hubspot.simulator import HubSpotSimulator

TOKEN_ENV = "CONTACTSYNC_DEMO_HUBSPOT_TOKEN"
INSTANCE = "hubspot"
SEED = 7
REMOTE_CONTACTS = 8
POLL_SECONDS = 0.4
# These would point the daemon at the user's real hub; the demo must only touch its own.
_HUB_OVERRIDES = ("CONTACTSYNC_DATABASE_URL", "CONTACTSYNC_STATE_DIR", "STATE_DIRECTORY")
# hub field -> HubSpot property, as mapped in the instance file below.
FIELDS = {
    "first_name": "firstname",
    "last_name": "lastname",
    "email": "email",
    "phone": "phone",
}
LABELS = {"first_name": "first name", "last_name": "last name", "email": "email", "phone": "phone"}

SETTINGS_TOML = """\
# Written by `contactsync demo`: quick cycles, so changes show within seconds.
state_dir = "{state_dir}"

[database]
url = "{database_url}"

[daemon]
workers = 2
shutdown_grace_seconds = 5
reload_debounce_ms = 200
wake_debounce_ms = 200
poll_interval_ms = 200

[log]
level = "warning"
"""

INSTANCE_TOML = """\
# Written by `contactsync demo`: a two-way HubSpot instance on the local simulator.
type = "hubspot"
direction = "both"
owns_crm_id = true   # HubSpot's record id becomes the hub contact's CRM id

[schedule]
pull = "every 2s"
push = "every 2s"

[[fields]]
hub = "first_name"
remote = "firstname"

[[fields]]
hub = "last_name"
remote = "lastname"

[[fields]]
hub = "email"
remote = "email"

[[fields]]
hub = "phone"
remote = "phone"

[settings]
base_url = "{base_url}"
access_token = {{ env = "{token_env}" }}   # the token itself is never written down
"""


# --- what the two sides look like -----------------------------------------------------------


def _norm(name: str, value: Any) -> str:
    """A value as both sides should agree on it: HubSpot lower-cases emails and the hub
    stores phones as E.164, so compare emails case-blind and phones by their digits."""
    text = "" if value is None else str(value).strip()
    if name == "email":
        return text.lower()
    if name == "phone":
        return "".join(c for c in text if c.isdigit())
    return text


@dataclass
class Snapshot:
    """Both sides at one moment: hub contacts by id, HubSpot records by id."""

    hub: dict[str, dict[str, Any]] = field(default_factory=dict)
    remote: dict[str, dict[str, Any]] = field(default_factory=dict)


def take_snapshot(engine: Engine, sim: HubSpotSimulator) -> Snapshot:
    """Read both sides (the simulator under its lock, so a record is never half-written)."""
    hub = {
        row["id"]: dict(row) for row in list_contacts(engine, include_archived=True, limit=10_000)
    }
    with sim.lock:
        remote = {
            rid: {prop: record["properties"].get(prop) for prop in FIELDS.values()}
            for rid, record in sim.records.items()
            if not record.get("archived")
        }
    return Snapshot(hub, remote)


def _who(contact: dict[str, Any]) -> str:
    first = contact.get("first_name") or contact.get("firstname") or "?"
    last = contact.get("last_name") or contact.get("lastname") or ""
    return f"{first} {last}".strip()


def diff(before: Snapshot, after: Snapshot) -> list[tuple[str, str]]:
    """The changes that flowed between two snapshots, as ``(direction, what)``.

    A pair (hub contact, HubSpot record with that id) that is new means a record crossed over:
    from HubSpot when the hub contact is new, from the hub when the HubSpot record is. A field
    whose two values now agree but did not before crossed from the side that did not move.
    """
    events: list[tuple[str, str]] = []
    old_pairs = {c["crm_id"]: cid for cid, c in before.hub.items() if c.get("crm_id")}
    for contact_id, contact in after.hub.items():
        crm_id = contact.get("crm_id")
        remote = after.remote.get(crm_id) if crm_id else None
        if remote is None:
            continue
        if old_pairs.get(crm_id) != contact_id:
            if contact_id not in before.hub:
                events.append(("HubSpot → hub", f"new contact {_who(contact)}"))
            else:
                # The hub's contact got its HubSpot id: it was created there. (The record may
                # show up a snapshot before the id is written back, so don't ask whether the
                # record is new too.)
                events.append(("hub → HubSpot", f"new contact {_who(contact)}"))
            continue
        old_contact, old_remote = before.hub[contact_id], before.remote.get(crm_id)
        if old_remote is None:
            continue
        for hub_name, prop in FIELDS.items():
            now_hub, now_remote = _norm(prop, contact[hub_name]), _norm(prop, remote[prop])
            was_hub = _norm(prop, old_contact[hub_name])
            was_remote = _norm(prop, old_remote[prop])
            if now_hub != now_remote or was_hub == was_remote:
                continue
            what = f"{_who(contact)}'s {LABELS[hub_name]}: {contact[hub_name] or '(blank)'}"
            if was_hub != now_hub:  # the hub moved to meet HubSpot
                events.append(("HubSpot → hub", what))
            else:
                events.append(("hub → HubSpot", what))
    return events


# --- the show -------------------------------------------------------------------------------


class Feed:
    """The recent events, shown live on a terminal and as plain lines elsewhere (CI)."""

    def __init__(self, live: bool, keep: int = 14) -> None:
        self.live = live
        self.started = time.monotonic()
        self.events: deque[tuple[str, str, str]] = deque(maxlen=keep)
        self.status = "starting"
        self.counts = {"HubSpot → hub": 0, "hub → HubSpot": 0}

    def add(self, direction: str, what: str) -> None:
        stamp = f"{time.monotonic() - self.started:5.1f}s"
        self.events.append((stamp, direction, what))
        if direction in self.counts:
            self.counts[direction] += 1
        if not self.live:
            console.print(f"{stamp}  {direction:<14} {what}")

    def render(self) -> Table:
        arrived = ", ".join(f"{d}: {n}" for d, n in self.counts.items())
        table = Table(
            title="contactsync demo — changes flowing (Ctrl-C to stop)",
            caption=f"{self.status} · {arrived}",
            expand=False,
        )
        table.add_column("time", justify="right", style="dim")
        table.add_column("direction", no_wrap=True)
        table.add_column("what")
        for stamp, direction, what in self.events:
            style = {"HubSpot → hub": "cyan", "hub → HubSpot": "green"}.get(direction, "yellow")
            table.add_row(stamp, f"[{style}]{direction}[/{style}]", what)
        return table


@dataclass
class Step:
    """One scripted change, made ``at`` seconds into the demo."""

    at: float
    side: str  # "HubSpot" or "hub": where the change is made
    what: str
    apply: Callable[[], None]


def script(engine: Engine, sim: HubSpotSimulator, hub_ids: dict[str, str]) -> list[Step]:
    """The scripted user's changes, on both sides, spaced so each one is seen arriving."""
    remote_first = str(min(int(i) for i in sim.records))
    remote_name = _who(sim.records[remote_first]["properties"])

    def hub_edit(values: dict[str, str]) -> Callable[[], None]:
        return lambda: save_contact(engine, values, contact_id=hub_ids["ada"])

    return [
        Step(
            3.0,
            "HubSpot",
            f"a HubSpot user edits {remote_name}'s phone",
            lambda: sim.edit_contact(remote_first, phone="+16175550123"),
        ),
        Step(
            5.0,
            "hub",
            "staff edit Ada Lovelace's email in the hub",
            hub_edit({"email": "ada@analytical.engine.example"}),
        ),
        Step(
            7.0,
            "HubSpot",
            "a HubSpot user adds Hedy Lamarr",
            lambda: sim.add_contact(
                firstname="Hedy",
                lastname="Lamarr",
                email="hedy.lamarr@example.org",
                phone="+13105550147",
            ),
        ),
        Step(
            9.0,
            "hub",
            "staff add Linus Torvalds in the hub",
            lambda: save_contact(
                engine,
                {
                    "first_name": "Linus",
                    "last_name": "Torvalds",
                    "phone": "+15035550188",
                    "email": "linus@example.org",
                },
            ),
        ),
        Step(
            11.0,
            "hub",
            "staff fix Ada Lovelace's phone in the hub",
            hub_edit({"phone": "+442079460958"}),
        ),
    ]


def seed_remote(sim: HubSpotSimulator) -> None:
    """Bad records a HubSpot account really holds: the hub refuses them, with a code."""
    sim.add_contact(
        firstname="Phil", lastname="Badphone", email="phil@example.org", phone="12345"
    )  # invalid-phone
    sim.add_contact(
        firstname="Cher", lastname="", email="cher@example.org", phone="+12135550176"
    )  # blank-required-data-in-record: a new hub contact needs a last name


def seed_hub(engine: Engine) -> dict[str, str]:
    """Hub contacts before the first sync; returns their ids by nickname."""
    ids = {
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
        # A test user is never sent anywhere; it must not appear in HubSpot.
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
    return ids


def write_etc(root: Path, base_url: str) -> Path:
    """The demo's own ``etc/``; its hub is an SQLite file under ``root/var``."""
    etc = root / "etc"
    (etc / "instances").mkdir(parents=True, exist_ok=True)
    state = root / "var"
    state.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(state / 'contactsync.db').as_posix()}"
    (etc / "contactsync.toml").write_text(
        SETTINGS_TOML.format(state_dir=state.as_posix(), database_url=url)
    )
    (etc / "instances" / f"{INSTANCE}.toml").write_text(
        INSTANCE_TOML.format(base_url=base_url, token_env=TOKEN_ENV)
    )
    return etc


class Driver(threading.Thread):
    """The helper thread: plays the script, watches both sides, ends the daemon in time."""

    def __init__(
        self,
        engine: Engine,
        sim: HubSpotSimulator,
        steps: list[Step],
        feed: Feed,
        duration: float | None,
    ) -> None:
        super().__init__(name="demo-driver", daemon=True)
        self.engine = engine
        self.sim = sim
        self.steps = list(steps)
        self.feed = feed
        self.duration = duration
        self.done = threading.Event()  # set by the main thread once the daemon stopped
        self.error: BaseException | None = None

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

    def _watch(self, refresh: Callable[[], None]) -> None:
        started = time.monotonic()
        before = take_snapshot(self.engine, self.sim)
        stop_sent = False
        while not self.done.wait(POLL_SECONDS):
            elapsed = time.monotonic() - started
            while self.steps and self.steps[0].at <= elapsed:
                step = self.steps.pop(0)
                step.apply()
                self.feed.add(f"you, in {step.side}", step.what)
            after = take_snapshot(self.engine, self.sim)
            for direction, what in diff(before, after):
                self.feed.add(direction, what)
            before = after
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


def print_sync_log(engine: Engine) -> None:
    """The sync log of the demo: each refused record with its code, and what to do."""
    names = {c["id"]: _who(c) for c in list_contacts(engine, include_archived=True, limit=10_000)}
    rows = query_log(engine, limit=200)
    rows.reverse()  # oldest first reads like a story
    print_table(
        ("direction", "record", "code", "message"),
        [(r["direction"], _record(r, names), r["code"], r["message"]) for r in rows],
        title="Sync log (also: contactsync log)",
    )
    codes = sorted({str(r["code"]) for r in rows if r["code"]})
    if codes:
        console.print(f"codes in the sync log: {', '.join(codes)}")
        console.print("`contactsync errors CODE` explains each one and the next step.")


def _record(row: dict[str, Any], names: dict[str, str]) -> str:
    """Who a log row is about: the hub contact's name, else the HubSpot record's id (a
    refused incoming record has no hub contact)."""
    if row.get("contact_id"):
        return names.get(row["contact_id"], row["contact_id"])
    if row.get("remote_id"):
        return f"HubSpot #{row['remote_id']}"
    return ""


def report_test_user(engine: Engine, sim: HubSpotSimulator, test_id: str) -> None:
    """Say, after checking, that the test user stayed in the hub."""
    contact = next(
        (
            c
            for c in list_contacts(engine, include_archived=True, limit=10_000)
            if c["id"] == test_id
        ),
        None,
    )
    email = _norm("email", contact["email"] if contact else "")
    with sim.lock:
        sent = any(
            _norm("email", r["properties"].get("email")) == email for r in sim.records.values()
        )
    verdict = "was SENT to HubSpot (a bug)" if sent else "was never sent to HubSpot"
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
    """Watch contacts sync both ways with a simulated HubSpot: no account, no network.

    Starts the HubSpot simulator, writes a temporary etc/ with a two-way instance, seeds
    contacts on both sides (some bad on purpose), runs the daemon, edits contacts on both
    sides, and shows the changes arrive. Ends with the sync log and its error codes.
    """
    from daemon.service import Service, quiet_libraries
    from plugins.hubspot.simulator import HubSpotSimulator

    # Quiet logs on stderr, so the display on stdout stays readable.
    logging_setup.configure(level="warning", stream=_CurrentStderr())
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
    sim = HubSpotSimulator(contacts=REMOTE_CONTACTS, seed=SEED).start()
    try:
        # The connector reads the token by reference, from this process's environment only.
        os.environ[TOKEN_ENV] = sim.credentials()["access_token"]
        seed_remote(sim)
        etc = write_etc(root, sim.url)
        settings = load_settings(etc)
        engine = make_engine(settings.database_url)
        hub_ids = seed_hub(engine)
        feed = Feed(live=console.is_terminal)
        console.print(
            f"HubSpot simulator at {sim.url} with {len(sim.records)} contacts; "
            f"hub {settings.database_url}; config {etc}"
        )
        driver = Driver(engine, sim, script(engine, sim, hub_ids), feed, duration)
        driver.start()
        service = Service(etc, settings, pm=app.pm)
        code = service.run()  # on this, the main thread: its signals, Ctrl-C included
        driver.done.set()
        driver.join(timeout=10)
        if driver.error is not None:
            raise driver.error
        if code != 0:
            raise SystemExit(code)
        console.print(
            f"changes seen: HubSpot → hub {feed.counts['HubSpot → hub']}, "
            f"hub → HubSpot {feed.counts['hub → HubSpot']}"
        )
        report_test_user(engine, sim, hub_ids["test"])
        print_sync_log(engine)
        engine.dispose()
    finally:
        sim.stop()
        os.environ.pop(TOKEN_ENV, None)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"kept {root}: try `contactsync --etc {root / 'etc'} log`")
