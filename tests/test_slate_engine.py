"""Slate through the engine: a push stays pending until a pull sees it, and goes
``remote-unconfirmed`` when no pull does within the instance's window.

The real engine, the real Slate connector and the simulator on loopback; uploads go to the
simulator's SFTP root through the ``local`` transport. The window runs on a FakeClock.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from daemon.cli import App, cli
from daemon.config.instances import Instance
from daemon.engine import confirm
from daemon.engine.cycle import SyncEngine
from daemon.engine.registry import get_plugin_manager
from daemon.engine.status import instance_status
from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.hub import links
from daemon.hub.contacts import add_custom_field, get_contact, save_contact
from daemon.hub.store import utcnow
from daemon.hub.synclog import SyncContext, SyncLogBuffer
from plugins.slate.connector import PENDING_PREFIX, SlateConnector
from plugins.slate.simulator import SlateSimulator
from tests.enginekit import sync_engine
from tests.hubkit import log_rows
from tests.instancekit import contact_fields, load_written

TOKEN_ENV = "SLATE_ENGINE_TEST_TOKEN"
NAME = "slate-main"


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlateSimulator]:
    # Slate's clock starts at the hub's; a test moves it on to have Slate import "later".
    clock = FakeClock(start=utcnow())
    with SlateSimulator(seed=3, sftp_root=tmp_path / "sftp", clock=clock) as simulator:
        monkeypatch.setenv(TOKEN_ENV, simulator.user_token)
        yield simulator


HUB_ID_MAP = """
[[fields]]
hub = "id"
remote = "mainstay_id"
direction = "incoming"
"""


def slate_instance(
    etc: Path,
    sim: SlateSimulator,
    extra: str = "",
    hub_id: str = HUB_ID_MAP,
    more_fields: str = "",
    settings: str = "",
) -> Instance:
    text = (
        textwrap.dedent(
            f"""
            type = "slate"
            {extra}
            [settings]
            base_url = "{sim.url}"
            query_id = "{sim.query_id}"
            token = {{ env = "{TOKEN_ENV}" }}
            timezone = "{sim.timezone_name}"
            {{settings}}
            [settings.transport]
            kind = "local"
            path = "{sim.sftp_root}"
            {{hub_id}}
            """
        )
        .replace("{hub_id}", hub_id)
        .replace("{settings}", settings)
        + contact_fields("first_name", "last_name", "email", "phone")
        + textwrap.dedent(more_fields)
    )
    return load_written(etc / "instances", NAME, text, {"slate": SlateConnector})


def link_of(engine: Engine, contact_id: str) -> links.LinkRow:
    with engine.connect() as conn:
        return links.by_contact_ids(conn, NAME, [contact_id])[contact_id]


@pytest.fixture
def setup(
    sqlite_engine: Engine, sim: SlateSimulator, tmp_path: Path
) -> tuple[Engine, SyncEngine, Instance]:
    instance = slate_instance(tmp_path / "etc", sim)
    return sqlite_engine, sync_engine(sqlite_engine, instance), instance


def new_contact(engine: Engine, n: int = 1) -> str:
    return save_contact(
        engine,
        {
            "first_name": f"Hub{n}",
            "last_name": "Person",
            "phone": f"+1617555{n:04d}",
            "email": f"hub{n}@example.edu",
        },
    )


def test_a_push_is_pending_and_shown_until_a_pull_sees_the_hub_id(
    setup: tuple[Engine, SyncEngine, Instance], sim: SlateSimulator
) -> None:
    engine, sync, instance = setup
    contact_id = new_contact(engine)
    report = sync.run(instance, "push")
    assert report.outcome == "ok" and report.counts["created"] == 1
    link = link_of(engine, contact_id)
    assert link.state == links.PENDING and link.remote_id.startswith(PENDING_PREFIX)
    status = instance_status(engine, {NAME: NAME})[NAME]
    assert status["links"]["pending"] == 1 and status["pending_since"] is not None
    # The file sits in Slate's incoming folder until Slate picks it up.
    uploaded = list(sim.incoming.glob("mainstay_contact*Z.csv"))
    assert len(uploaded) == 1
    assert uploaded[0].read_text().splitlines()[0].startswith("mainstay_id,slate_id,")

    sim.process_pending()
    report = sync.run(instance, "pull")
    assert report.outcome == "ok" and report.counts["confirmed"] == 1
    person = sim.find("mainstay_id", contact_id)
    assert person is not None
    link = link_of(engine, contact_id)
    assert (link.state, link.remote_id) == (links.ACTIVE, person["slate_id"])
    assert link.values["first_name"] == "Hub1"
    status = instance_status(engine, {NAME: NAME})[NAME]
    assert status["links"]["pending"] == 0 and status["pending_since"] is None
    # Nothing to send back: the pull's values are the ones pushed.
    assert sync.run(instance, "push").counts.get("created", 0) == 0
    assert list(sim.processed.glob("*.csv")) == [sim.processed / uploaded[0].name]


def test_a_stale_read_of_a_pending_update_does_not_undo_it(
    setup: tuple[Engine, SyncEngine, Instance], sim: SlateSimulator
) -> None:
    engine, sync, instance = setup
    contact_id = new_contact(engine)
    sync.run(instance, "push")
    sim.process_pending()
    sync.run(instance, "pull")
    slate_id = link_of(engine, contact_id).remote_id

    save_contact(engine, {"last_name": "Renamed"}, contact_id=contact_id)
    assert sync.run(instance, "push").counts["updated"] == 1
    assert link_of(engine, contact_id).state == links.PENDING
    # Slate has not imported the file yet: a full pull reads the old last name.
    sim.edit_person(slate_id, first_name="EditedInSlate")  # a Slate user's own change
    files = list(sim.incoming.glob("*.csv"))
    assert files, "the update waits in incoming/ as a file"
    hold = files[0].rename(files[0].with_suffix(".held"))  # keep Slate from scanning it
    report = sync.run(instance, "pull", full=True)
    assert report.outcome == "ok"
    contact = get_contact(engine, contact_id)
    assert contact is not None and contact.row["last_name"] == "Renamed"
    assert link_of(engine, contact_id).state == links.PENDING

    hold.rename(files[0])
    sim.clock.advance(60)  # Slate imports the file a minute after the push
    sim.process_pending()
    assert sync.run(instance, "pull").outcome == "ok"
    link = link_of(engine, contact_id)
    assert link.state == links.ACTIVE and link.values["last_name"] == "Renamed"
    contact = get_contact(engine, contact_id)
    assert contact is not None and contact.row["first_name"] == "EditedInSlate"


def test_a_pending_push_unseen_past_the_window_is_remote_unconfirmed(
    setup: tuple[Engine, SyncEngine, Instance], sim: SlateSimulator
) -> None:
    engine, sync, instance = setup
    contact_id = new_contact(engine)
    sync.run(instance, "push")
    window = timedelta(seconds=instance.config.confirm_within_seconds)
    context = SyncContext("slate", "outgoing", "run-test", NAME)
    # Well inside the window nothing happens; past it the write is unconfirmed.
    clock = FakeClock(start=utcnow())  # starts at the push
    for advance, expected in ((window / 2, 0), (window, 1)):
        clock.advance(advance.total_seconds())
        buffer = SyncLogBuffer(context)
        with engine.begin() as conn:
            expired = confirm.expire(conn, NAME, buffer, window, clock.now())
            buffer.write(conn)
        assert len(expired) == expected
    assert link_of(engine, contact_id).state == links.UNCONFIRMED
    assert [(r["code"], r["contact_id"], r["direction"]) for r in log_rows(engine)] == [
        (str(Code.REMOTE_UNCONFIRMED), contact_id, "outgoing")
    ]
    status = instance_status(engine, {NAME: NAME})[NAME]
    assert status["links"]["unconfirmed"] == 1 and status["links"]["pending"] == 0

    # Slate imports it after all: the next pull still links the record.
    sim.process_pending()
    assert sync.run(instance, "pull").counts["confirmed"] == 1
    assert link_of(engine, contact_id).state == links.ACTIVE


def test_a_pull_expires_pending_writes_past_the_window(
    sqlite_engine: Engine, sim: SlateSimulator, tmp_path: Path
) -> None:
    instance = slate_instance(tmp_path / "etc", sim, extra="confirm_within_seconds = 1")
    sim.processing_delay_seconds = 3600  # Slate has not scanned incoming/ yet
    sync = sync_engine(sqlite_engine, instance)
    contact_id = new_contact(sqlite_engine)
    sync.run(instance, "push")
    with sqlite_engine.begin() as conn:  # as if the push had happened a minute ago
        conn.execute(links._LINK.update().values(updated_at=utcnow() - timedelta(minutes=1)))
    report = sync.run(instance, "pull")
    assert report.counts["unconfirmed"] == 1
    assert link_of(sqlite_engine, contact_id).state == links.UNCONFIRMED


def test_contactsync_status_shows_the_pending_write(
    setup: tuple[Engine, SyncEngine, Instance], tmp_path: Path
) -> None:
    engine, sync, instance = setup
    new_contact(engine)
    sync.run(instance, "push")
    args = ["--etc", str(tmp_path / "etc"), "--database-url", str(engine.url), "status"]
    pm = get_plugin_manager()  # the installed plugins, Slate among them
    text = CliRunner().invoke(cli, args, obj=App(pm=pm))
    assert text.exit_code == 0, text.output
    assert "pending 1" in text.stdout
    shown = json.loads(CliRunner().invoke(cli, [*args, "--json"], obj=App(pm=pm)).stdout)
    (row,) = shown["instances"]
    assert row["links"]["pending"] == 1 and row["pending_since"]


def test_an_instance_that_pushes_must_map_the_hub_id(
    sqlite_engine: Engine, sim: SlateSimulator, tmp_path: Path
) -> None:
    instance = slate_instance(tmp_path / "etc", sim, hub_id="")
    sync = sync_engine(sqlite_engine, instance)
    report = sync.run(instance, "pull")
    assert (report.outcome, report.code) == ("failed", str(Code.CONFIG_INVALID))
    assert 'hub = "id"' in (report.error or "")
    # An incoming-only instance needs it only while its connection has writes waiting.
    incoming = slate_instance(tmp_path / "etc", sim, hub_id="", extra='direction = "incoming"')
    assert sync.run(incoming, "pull").outcome == "ok"
    pushing = slate_instance(tmp_path / "etc", sim)
    new_contact(sqlite_engine)
    assert sync_engine(sqlite_engine, pushing).run(pushing, "push").outcome == "ok"
    report = sync.run(incoming, "pull")
    assert (report.outcome, report.code) == ("failed", str(Code.CONFIG_INVALID))


def test_custom_fields_travel_as_custom_columns(
    sqlite_engine: Engine, sim: SlateSimulator, tmp_path: Path
) -> None:
    add_custom_field(sqlite_engine, "Class Year", "number")
    instance = slate_instance(
        tmp_path / "etc",
        sim,
        settings='fields = ["first_name", "last_name", "email", "phone", "CUSTOM_Class Year"]',
        more_fields="""
        [[fields]]
        hub = "custom:Class Year"
        remote = "CUSTOM_Class Year"
        """,
    )
    sync = sync_engine(sqlite_engine, instance)
    contact_id = save_contact(
        sqlite_engine,
        {
            "first_name": "Cus",
            "last_name": "Tom",
            "phone": "+16175550123",
            "custom:Class Year": "2029",
        },
    )
    sync.run(instance, "push")
    (upload,) = sim.incoming.glob("*.csv")
    assert "CUSTOM_Class Year" in upload.read_text().splitlines()[0].split(",")
    sim.process_pending()
    assert sync.run(instance, "pull").counts["confirmed"] == 1
    person = sim.find("mainstay_id", contact_id)
    assert person is not None and person["CUSTOM_Class Year"] == "2029"
    # A Slate user changes it; the next pull brings it to the hub's custom field.
    sim.clock.advance(60)
    sim.edit_person(person["slate_id"], **{"CUSTOM_Class Year": "2030"})
    sync.run(instance, "pull")
    contact = get_contact(sqlite_engine, contact_id)
    assert contact is not None and contact.custom["Class Year"] == "2030"


def test_a_push_expires_pending_writes_too_when_no_instance_pulls(
    sqlite_engine: Engine, sim: SlateSimulator, tmp_path: Path
) -> None:
    """An outgoing-only connection has no pull to confirm or expire its writes: its own
    push cycle turns the overdue ones into remote-unconfirmed."""
    instance = slate_instance(
        tmp_path / "etc",
        sim,
        hub_id="",  # an outgoing instance maps nothing incoming
        extra='direction = "outgoing"\nconfirm_within_seconds = 1',
    )
    sim.processing_delay_seconds = 3600
    sync = sync_engine(sqlite_engine, instance)
    contact_id = new_contact(sqlite_engine)
    assert sync.run(instance, "push").counts.get("unconfirmed", 0) == 0
    with sqlite_engine.begin() as conn:  # as if the push had happened a minute ago
        conn.execute(links._LINK.update().values(updated_at=utcnow() - timedelta(minutes=1)))
    report = sync.run(instance, "push")
    assert report.counts["unconfirmed"] == 1
    assert link_of(sqlite_engine, contact_id).state == links.UNCONFIRMED
    assert [r["code"] for r in log_rows(sqlite_engine)] == [str(Code.REMOTE_UNCONFIRMED)]
