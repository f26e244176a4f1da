"""Crash safety (design §4): a process killed with SIGKILL mid-pull or mid-push, then
restarted, ends in the same hub and platform state as an uninterrupted run. No duplicate
contact, no duplicate remote record, no lost change, links consistent, outbox empty.

The worker (tests/crashworker.py) runs in a child process against an SQLite hub and a
remote kept in a JSON file, and kills itself at an injected point. The parent compares the
outcome with a reference run of the same seed that nobody killed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.database import make_engine
from daemon.hub.normalize import phone as normal_phone
from daemon.hub.store import Contact, Link, Outbox, RunKey, SyncLease, SyncRun
from tests.crashworker import INSTANCE, run_steps
from tests.enginekit import FIELDS
from tests.memremote import MemoryRemote, RemoteRow

REPO = Path(__file__).resolve().parent.parent
TO_THE_END = ["pull", "push", "pull", "push"]
WORKER_TIMEOUT = 60


@dataclass(frozen=True)
class Setup:
    """One scenario's files: the hub, the config folder and the remote."""

    hub: Path
    etc: Path
    remote: Path


def seed(folder: Path) -> Setup:
    """The same starting point every time: 20 remote records (7 pages of 3), 10 hub
    contacts of which 4 match remote records by CRM id, and a few that differ."""
    folder.mkdir(parents=True, exist_ok=True)
    setup = Setup(folder / "hub.db", folder / "etc", folder / "remote.json")
    (setup.etc / "instances").mkdir(parents=True)
    (setup.etc / "instances" / f"{INSTANCE}.toml").write_text(
        f"""
type = "memory"
push_batch_size = 3
[settings]
remote = "crash"
page_size = 3
persist = "{setup.remote}"
{FIELDS}""",
        encoding="utf-8",
    )
    remote = MemoryRemote()
    for n in range(1, 21):
        fields: dict[str, Any] = {
            "FirstName": f"Remote{n}",
            "LastName": "Platform",
            "Phone": f"20255501{n:02d}",
            "StudentId": f"S{n:03d}",
        }
        if n % 2 == 0:
            fields["Email"] = f"r{n}@example.edu"
        if n == 20:
            del fields["Phone"]  # cannot become a contact: skipped on every run alike
        remote.add(**fields)
    remote.save(setup.remote)

    engine = make_engine(f"sqlite:///{setup.hub}")
    try:
        for n in range(10):
            values = {"first_name": f"Hub{n}", "last_name": "Side", "phone": f"20255501{50 + n}"}
            if n < 4:  # the platform's records 1-4: linked by CRM id on the first pull
                values |= {"crm_id": f"S{n + 1:03d}", "phone": f"20255501{n + 1:02d}"}
            elif n < 6:
                values["crm_id"] = f"H{n:03d}"
            if n == 9:
                values["email"] = "hub9@example.edu"
            save_contact(engine, values)
    finally:
        engine.dispose()
    return setup


def edit_both_sides(setup: Setup) -> None:
    """Changes on both sides after a first sync, the same every time (no conflicts)."""
    remote = MemoryRemote()
    remote.load(setup.remote)
    remote.edit("R000005", LastName="Edited")
    remote.edit("R000006", Email="new6@example.edu")
    remote.add(FirstName="Late", LastName="Comer", Phone="2025550190", StudentId="S090")
    remote.delete("R000007")
    remote.save(setup.remote)

    engine = make_engine(f"sqlite:///{setup.hub}")
    try:
        for phone, values in (
            ("+12025550108", {"last_name": "HubEdit"}),
            ("+12025550154", {"email": "h4@example.edu"}),
            ("+12025550101", {"first_name": "Ada"}),
            ("+12025550159", {"last_name": "Nine", "email": "Nine@Example.EDU"}),
        ):
            contact = get_contact(engine, phone)
            assert contact is not None
            save_contact(engine, values, contact_id=contact.row["id"])
    finally:
        engine.dispose()


def run_in_process(setup: Setup, steps: list[str]) -> None:
    """Uninterrupted cycles, in this process (the same code as the worker's)."""
    reports = run_steps(setup.hub, setup.etc, steps)
    assert [r.outcome for r in reports] == ["ok"] * len(steps), [r.as_dict() for r in reports]


def run_worker(
    setup: Setup, steps: list[str], kill: str | None = None
) -> subprocess.CompletedProcess:
    """The worker in a child process, as a daemon (re)started by systemd would run."""
    command = [sys.executable, "-m", "tests.crashworker", str(setup.hub), str(setup.etc)]
    command.append(",".join(steps))
    if kill:
        command += ["--kill", kill]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False
    )


# --- the state to compare -----------------------------------------------------------------


@dataclass
class State:
    """Hub and platform, described by content (hub ids and new remote ids are random or
    depend on the order of creation, so they are compared through what they point at)."""

    contacts: Counter
    remote: Counter
    links: Counter
    raw: dict[str, Any]


def record_key(row: RemoteRow, phone_of: dict[str, str]) -> tuple:
    """A remote record by content: its fields, who it was created for, and whether deleted."""
    created_for = phone_of.get(row.created_for or "", "?") if row.created_for else ""
    return (tuple(sorted(row.fields.items())), created_for, row.deleted)


def read_state(setup: Setup) -> State:
    """The hub's tables and the remote's file, as a :class:`State`."""
    engine = make_engine(f"sqlite:///{setup.hub}")
    try:
        with engine.connect() as conn:
            raw = {
                table.name: [dict(r) for r in conn.execute(select(table)).mappings()]
                for table in (
                    Contact.__table__,
                    Link.__table__,
                    Outbox.__table__,
                    SyncRun.__table__,
                    RunKey.__table__,
                    SyncLease.__table__,
                )
            }
    finally:
        engine.dispose()
    remote = MemoryRemote()
    remote.load(setup.remote)
    raw["remote"] = remote.rows
    phone_of = {c["id"]: c["phone"] for c in raw["contact"]}
    contacts = Counter(
        (c["crm_id"], c["phone"], c["first_name"], c["last_name"], c["email"], c["archived"])
        for c in raw["contact"]
    )
    records = Counter(record_key(r, phone_of) for r in remote.rows.values())
    links = Counter(
        (
            phone_of[link["contact_id"]],
            record_key(remote.rows[link["remote_id"]], phone_of),
            link["state"],
        )
        for link in raw["link"]
    )
    return State(contacts, records, links, raw)


def assert_consistent(state: State) -> None:
    """What must hold after any run that was allowed to finish, killed before or not."""
    raw = state.raw
    assert raw["outbox"] == [], "the outbox is not empty"
    assert raw["run_key"] == [], "a run's keys were never forgotten"
    assert [r["outcome"] for r in raw["sync_run"] if r["outcome"] == "running"] == []
    assert all(lease["owner"] is None for lease in raw["sync_lease"])
    contacts = {c["id"]: c for c in raw["contact"]}
    rows: dict[str, RemoteRow] = raw["remote"]
    # No record was created twice for one contact.
    created = Counter(r.created_for for r in rows.values() if r.created_for)
    assert [cid for cid, n in created.items() if n > 1] == []
    # Every contact is linked once, to a record that holds what the hub holds.
    linked = Counter(link["contact_id"] for link in raw["link"])
    assert set(linked) == set(contacts) and set(linked.values()) == {1}
    for link in raw["link"]:
        contact, row = contacts[link["contact_id"]], rows[link["remote_id"]]
        if link["state"] == "deleted":
            assert row.deleted
            continue
        assert link["state"] == "active" and not row.deleted
        assert row.created_for in (None, contact["id"])
        assert normal_phone(row.fields["Phone"]) == contact["phone"]
        for hub_field, remote_field in (
            ("first_name", "FirstName"),
            ("last_name", "LastName"),
            ("crm_id", "StudentId"),
        ):
            assert row.fields.get(remote_field) == contact[hub_field], (hub_field, contact)
        if contact["email"] is not None:
            assert row.fields.get("Email") == contact["email"]
        # The link remembers what both sides now hold: nothing left to echo or re-apply.
        for hub_field, value in link["values"].items():
            if hub_field in contact and contact[hub_field] is not None:
                assert value == contact[hub_field], (hub_field, link["values"], contact)


def assert_same(actual: State, expected: State) -> None:
    """Same contacts, same remote records, same links, by content."""
    assert actual.contacts == expected.contacts, "the hub's contacts differ"
    assert actual.remote == expected.remote, "the platform's records differ"
    assert actual.links == expected.links, "the links differ"


# --- reference runs -----------------------------------------------------------------------


@dataclass
class Reference:
    """The states an uninterrupted run reaches: after the first sync, and after the edits."""

    initial: State
    incremental: State


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The uninterrupted run, once for the module."""
    setup = seed(tmp_path_factory.mktemp("reference"))
    run_in_process(setup, TO_THE_END)
    initial = read_state(setup)
    edit_both_sides(setup)
    run_in_process(setup, TO_THE_END)
    incremental = read_state(setup)
    # The reference itself is a fixed point: another round changes nothing.
    run_in_process(setup, ["pull", "push"])
    again = read_state(setup)
    assert_same(again, incremental)
    return Reference(initial, incremental)


def test_the_reference_run_is_what_the_rules_say(reference):
    initial, incremental = reference.initial, reference.incremental
    assert_consistent(initial)
    assert_consistent(incremental)
    # 19 usable remote records (4 of them matching hub contacts) and 6 hub-only contacts.
    assert sum(initial.contacts.values()) == 10 + 15
    assert sum(initial.remote.values()) == 20 + 6
    assert sum(incremental.contacts.values()) == 26  # the late remote record arrived
    assert sum(1 for key in incremental.remote if key[2]) == 1  # one record deleted remotely
    names = {(c[2], c[3]) for c in incremental.contacts}
    assert ("Ada", "Platform") in names and ("Remote5", "Edited") in names
    assert ("Remote8", "HubEdit") in names and ("Hub9", "Nine") in names


# --- kills --------------------------------------------------------------------------------

INITIAL_KILLS = [
    "pull-precommit:1",
    "pull-precommit:4",
    "pull-between:2",
    "pull-between:7",
    "push-item:1",
    "push-item:5",
    "push-after-remote:1",
    "push-after-remote:2",
    "push-precommit:1",
    "push-precommit:2",
]
INCREMENTAL_KILLS = [
    "pull-precommit:1",
    "pull-between:1",
    "push-item:2",
    "push-after-remote:1",
    "push-precommit:1",
]


# For kills in the first push (batches of 3: the 6 unlinked contacts to create, and the
# first exchange of linked records that lack a field the hub has, queued first by the pull):
# how many records the platform had created, and how many of them the hub had recorded,
# when the worker died.
FIRST_PUSH_AT_KILL = {
    "push-item:1": (0, 0),
    "push-item:5": (4, 2),
    "push-after-remote:1": (2, 0),
    "push-after-remote:2": (5, 2),
    "push-precommit:1": (2, 0),
    "push-precommit:2": (5, 2),
}


def kill(setup: Setup, point: str) -> None:
    """Run "pull, push" and die at ``point``."""
    killed = run_worker(setup, ["pull", "push"], kill=point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    # Died where it should: the cycles before the point finished, the one with it did not.
    finished = [json.loads(line) for line in killed.stdout.splitlines()]
    assert len(finished) == (1 if point.startswith("push") else 0), finished


def kill_then_restart(setup: Setup, point: str) -> None:
    """Run "pull, push" and die at ``point``; then start again and run to the end."""
    kill(setup, point)
    restart(setup)


def restart(setup: Setup) -> None:
    """Start the worker again, as systemd would, and run to the end."""
    restarted = run_worker(setup, TO_THE_END)
    assert restarted.returncode == 0, (restarted.stdout, restarted.stderr)
    reports = [json.loads(line) for line in restarted.stdout.splitlines()]
    assert [r["outcome"] for r in reports] == ["ok"] * len(TO_THE_END)


@pytest.mark.parametrize("point", INITIAL_KILLS)
def test_killed_during_the_first_sync(tmp_path, reference, point):
    setup = seed(tmp_path)
    kill(setup, point)
    if point in FIRST_PUSH_AT_KILL:
        # The kill really left the platform ahead of the hub.
        dead = read_state(setup).raw
        created = {r.id for r in dead["remote"].values() if r.created_for}
        recorded = {link["remote_id"] for link in dead["link"]} & created
        assert (len(created), len(recorded)) == FIRST_PUSH_AT_KILL[point]
    restart(setup)
    state = read_state(setup)
    assert_consistent(state)
    assert_same(state, reference.initial)
    # And the connection goes on working normally afterwards.
    edit_both_sides(setup)
    run_in_process(setup, TO_THE_END)
    later = read_state(setup)
    assert_consistent(later)
    assert_same(later, reference.incremental)


@pytest.mark.parametrize("point", INCREMENTAL_KILLS)
def test_killed_during_an_incremental_sync(tmp_path, reference, point):
    setup = seed(tmp_path)
    run_in_process(setup, TO_THE_END)
    edit_both_sides(setup)
    kill_then_restart(setup, point)
    state = read_state(setup)
    assert_consistent(state)
    assert_same(state, reference.incremental)


def test_a_kill_point_that_is_never_reached_lets_the_worker_finish(tmp_path):
    setup = seed(tmp_path)
    done = run_worker(setup, ["pull"], kill="pull-precommit:99")
    assert done.returncode == 0, done.stderr
    (report,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert report["outcome"] == "ok" and report["counts"]["read"] == 20
