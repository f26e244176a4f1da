"""Tests that would catch a regression in the push (issue 16): what a mutation run of
daemon/engine/push.py changed without any test failing.

Each test drives the real push (``SyncEngine.run``) against the in-memory platform
(tests/memremote.py) and checks what an operator sees: the counts of the cycle report, the
sync-log rows, the outbox rows left and the links saved. bench/mutation.md ("push.py") names
the mutants each one kills. Every test runs on SQLite and PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select

from daemon.hub import links
from daemon.hub.contacts import save_contact
from daemon.hub.store import Link, utcnow
from daemon.kit.connector import Capabilities, PushItem, PushStatus, RemoteRecord
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.hubkit import OUTBOX, contact, log_rows, outbox_rows
from tests.instancekit import contact_fields, memory_fields
from tests.memremote import MemoryConnector

OUTGOING = 'direction = "outgoing"\n'


@pytest.fixture
def remote():
    return fresh_remote()


def person(engine, first: str, phone: str, **values: Any) -> str:
    """A contact staff created in the hub; its id. ``test_user`` is a flag, the rest values."""
    flags = {"test_user": values.pop("test_user")} if "test_user" in values else {}
    values = {"first_name": first, "last_name": "Hub", "phone": phone, **values}
    return save_contact(engine, values, **flags)


def link_rows(engine, connection: str) -> dict[str, dict[str, Any]]:
    """contact id -> the link row of every link on ``connection``."""
    table = Link.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.connection == connection)).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def record_sent(remote) -> list[dict[str, Any]]:
    """The fields of every item the platform receives from now on, in order (through the
    remote's per-item hook, which then accepts the item)."""
    sent: list[dict[str, Any]] = []

    def accept(item: PushItem) -> None:
        sent.append(dict(item.fields))

    remote.reject = accept
    return sent


def answer_as(monkeypatch, **changes: Any) -> None:
    """Make the memory platform's answers say ``changes`` too (``existed``, a ``PENDING``
    status, no record id): the records are still written, as a platform doing so would."""
    push = MemoryConnector.push

    def answered(self, batch):
        return [dataclasses.replace(r, **changes) for r in push(self, batch)]

    monkeypatch.setattr(MemoryConnector, "push", answered)


# --- rows with nothing sent: skipped, or parked at once with their code ----------------------


def test_unsent_rows_are_counted_once_each_and_a_refusal_is_parked_and_logged_for_its_contact(
    engine, tmp_path, remote
):
    # The platform's required LastName is fed from the hub's email here, so a contact with
    # no email cannot be created: refused before sending, and parked at once. Two of those,
    # and two test users (outgoing rule 1: skipped, done with).
    fields = contact_fields("FirstName", "Status", "LastName", "Phone")
    instance = write_instance(tmp_path, "mem", extra=OUTGOING + "max_attempts = 5", fields=fields)
    sync = sync_engine(engine, instance)
    testers = [person(engine, "T", p, test_user=True) for p in ("2025550101", "2025550102")]
    refused = [person(engine, "R", p) for p in ("2025550103", "2025550104")]

    report = sync.run(instance, "push")

    assert report.outcome == "ok", report.error
    assert (report.counts.get("skipped"), report.counts.get("failed")) == (2, 2)
    assert remote.pushed_items == 0
    refusals = [(r["code"], r["contact_id"]) for r in log_rows(engine)]
    assert sorted(refusals) == sorted(("missing-remote-required-field", c) for c in refused)
    # Parked on the first try, whatever max_attempts says: the same data would fail again,
    # so only a change to the contact re-arms the row.
    rows = {r["contact_id"]: r for r in outbox_rows(engine)}
    assert set(rows) == set(refused)  # the test users' rows are done with
    assert {(r["state"], r["attempts"]) for r in rows.values()} == {("parked", 1)}
    assert not set(testers) & set(link_rows(engine, "mem"))


# --- accepted records: the link each one leaves, and how it is counted -------------------------


def test_an_update_keeps_what_was_exchanged_before_so_the_next_one_sends_only_its_change(
    engine, tmp_path, remote
):
    # An outgoing-only instance: no pull in between refreshes the link, so only the push
    # keeps its values whole. If an update's link held only that update's fields, the next
    # push would send every other field again.
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143", email="ada@example.edu")
    assert sync.run(instance, "push").counts.get("created") == 1
    sent = record_sent(remote)

    save_contact(engine, {"last_name": "King"}, contact_id=ada)
    assert sync.run(instance, "push").counts.get("updated") == 1
    save_contact(engine, {"phone": "2025550181"}, contact_id=ada)
    assert sync.run(instance, "push").counts.get("updated") == 1

    assert sent == [{"LastName": "King"}, {"Phone": "+12025550181"}]
    link = link_rows(engine, "mem")[ada]
    assert (link["state"], link["values"]) == (
        links.ACTIVE,
        {
            "first_name": "Ada",
            "last_name": "King",
            "email": "ada@example.edu",
            "phone": "+12025550181",
        },
    )


def test_an_update_keeps_the_platform_time_the_link_last_saw_and_counts_each_record(
    engine, tmp_path, remote
):
    ids = [
        remote.add(FirstName=n, LastName="Lovelace", Phone=p, StudentId=s)
        for n, p, s in [("Ada", "2025550143", "S1"), ("Kate", "6175550112", "S2")]
    ]
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    assert sync.run(instance, "pull").counts.get("created") == 2
    pulled = link_rows(engine, "mem")
    assert all(link["remote_modified_at"] is not None for link in pulled.values())

    for contact_id in pulled:
        save_contact(engine, {"last_name": "King"}, contact_id=contact_id)
    report = sync.run(instance, "push")

    assert report.counts.get("updated") == 2  # one batch, two records
    assert "created" not in report.counts
    assert all(remote.rows[rid].fields["LastName"] == "King" for rid in ids)
    pushed = link_rows(engine, "mem")
    # The push does not learn when the platform changed the record: the link keeps the time
    # the pull saw (`contactsync links show`), not none at all.
    assert {c: link["remote_modified_at"] for c, link in pushed.items()} == {
        c: link["remote_modified_at"] for c, link in pulled.items()
    }
    assert {c: link["state"] for c, link in pushed.items()} == dict.fromkeys(pulled, links.ACTIVE)


def test_a_write_the_platform_confirms_later_leaves_a_pending_link(
    engine, tmp_path, remote, monkeypatch
):
    monkeypatch.setattr(MemoryConnector, "capabilities", Capabilities(confirms_later=True))
    answer_as(monkeypatch, status=PushStatus.PENDING)
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")

    report = sync.run(instance, "push")

    assert report.counts.get("created") == 1
    (link,) = link_rows(engine, "mem").values()
    # Pending until a pull confirms it: `contactsync status` counts it as waiting.
    assert (link["contact_id"], link["state"]) == (ada, links.PENDING)
    assert outbox_rows(engine) == []


def test_an_upsert_that_found_the_record_counts_as_linked_not_created(
    engine, tmp_path, remote, monkeypatch
):
    answer_as(monkeypatch, existed=True)
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")

    report = sync.run(instance, "push")

    assert (report.counts.get("linked"), report.counts.get("created")) == (1, None)
    assert link_rows(engine, "mem")[ada]["state"] == links.ACTIVE


# --- what the dry run shows (`contactsync sync --dry-run --json`'s push plans) -------------------


def test_the_dry_run_shows_each_push_plan_with_its_action_and_reason(engine, tmp_path, remote):
    fields = contact_fields("FirstName", "Status", "LastName", "Phone")  # LastName from email
    instance = write_instance(tmp_path, "mem", extra=OUTGOING, fields=fields)
    sync = sync_engine(engine, instance)
    linked = person(engine, "Ada", "2025550143", email="ada@example.edu")
    assert sync.run(instance, "push").counts.get("created") == 1
    save_contact(engine, {"last_name": "King"}, contact_id=linked)  # an update of Status
    new = person(engine, "Grace", "2025550181", email="grace@example.edu")
    refused = person(engine, "Kate", "6175550112")  # no email: no LastName
    tester = person(engine, "Test", "4155550199", test_user=True)
    plans: list[dict[str, Any]] = []

    report = sync.run(instance, "push", dry_run=True, on_plan=lambda p: plans.append(p.as_dict()))

    assert report.counts.get("would_send") == 2
    rid = link_rows(engine, "mem")[linked]["remote_id"]
    by_contact = {p.pop("contact_id"): p for p in plans}
    assert by_contact == {
        linked: {"action": "update", "remote_id": rid, "fields": {"Status": "King"}},
        new: {
            "action": "create",
            "remote_id": None,
            "fields": {
                "FirstName": "Grace",
                "Status": "Hub",
                "LastName": "grace@example.edu",
                "Phone": "+12025550181",
            },
        },
        refused: {"action": "skip", "reason": "the platform needs email to create a record"},
        tester: {"action": "skip", "reason": "test user"},
    }


# --- the CRM id a connection owns ---------------------------------------------------------------


def test_a_connection_that_owns_the_crm_id_writes_it_back_once_and_never_a_taken_one(
    engine, tmp_path, remote
):
    # The platform's record id is the hub's CRM id: a contact created there gets it back,
    # unless it has one already (set by staff or another source: never rewritten).
    instance = write_instance(
        tmp_path, "mem", extra=OUTGOING + "owns_crm_id = true", fields=memory_fields(crm_id=False)
    )
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")
    kate = person(engine, "Kate", "6175550112", crm_id="S-7")
    assert sync.run(instance, "push").counts.get("created") == 2
    made = {c: link["remote_id"] for c, link in link_rows(engine, "mem").items()}
    assert {c: contact(engine, c)["crm_id"] for c in (ada, kate)} == {ada: made[ada], kate: "S-7"}
    assert log_rows(engine) == []

    # A contact whose new record id another contact already holds as CRM id gets none, with
    # a row saying why; and an update never rewrites a CRM id already set.
    holder = person(engine, "Test", "4155550199", crm_id="R000003", test_user=True)
    grace = person(engine, "Grace", "2025550181")  # its record will be R000003
    save_contact(engine, {"last_name": "King"}, contact_id=ada)
    report = sync.run(instance, "push")

    assert (report.counts.get("created"), report.counts.get("updated")) == (1, 1)
    assert link_rows(engine, "mem")[grace]["remote_id"] == "R000003"
    assert [(r["code"], r["contact_id"], r["remote_id"]) for r in log_rows(engine)] == [
        ("duplicate-unique-id-crmId", grace, "R000003")
    ]
    crm_ids = {c: contact(engine, c)["crm_id"] for c in (ada, kate, grace, holder)}
    assert crm_ids == {ada: made[ada], kate: "S-7", grace: None, holder: "R000003"}


# --- the platform's answer to a sent record ----------------------------------------------------


def test_a_refused_update_is_logged_against_its_contact_and_record_then_parked(
    engine, tmp_path, remote
):
    instance = write_instance(tmp_path, "mem", extra=OUTGOING + "max_attempts = 2")
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")
    assert sync.run(instance, "push").counts.get("created") == 1
    rid = link_rows(engine, "mem")[ada]["remote_id"]
    remote.reject = lambda item: "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope"
    save_contact(engine, {"last_name": "King"}, contact_id=ada)

    first = sync.run(instance, "push")
    (row,) = outbox_rows(engine)
    assert (row["state"], row["attempts"]) == ("pending", 1)  # retried later
    with engine.begin() as conn:  # the back-off passed
        conn.execute(OUTBOX.update().values(next_attempt_at=utcnow()))
    second = sync.run(instance, "push")

    assert (first.counts.get("failed"), second.counts.get("failed")) == (1, 1)
    assert [
        (r["code"], r["contact_id"], r["remote_id"], r["message"]) for r in log_rows(engine)
    ] == [
        ("remote-rejected", ada, rid, "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope"),
        ("remote-rejected", ada, rid, "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope (parked)"),
    ]
    (row,) = outbox_rows(engine)
    assert (row["state"], row["attempts"]) == ("parked", 2)


def test_an_accepted_answer_links_by_the_record_id_else_the_updated_one_else_the_handle(
    engine, tmp_path, remote, monkeypatch
):
    # Platforms differ in what an accepted answer carries: an update's may give no id (the
    # record updated is the one), a write confirmed later only a handle.
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")
    assert sync.run(instance, "push").counts.get("created") == 1
    rid = link_rows(engine, "mem")[ada]["remote_id"]

    with monkeypatch.context() as patched:
        answer_as(patched, remote_id=None, handle="H-ada")
        save_contact(engine, {"last_name": "King"}, contact_id=ada)
        assert sync.run(instance, "push").counts.get("updated") == 1
        assert link_rows(engine, "mem")[ada]["remote_id"] == rid

        answer_as(patched, remote_id=None, handle="H-grace", status=PushStatus.PENDING)
        patched.setattr(MemoryConnector, "capabilities", Capabilities(confirms_later=True))
        grace = person(engine, "Grace", "2025550181")
        assert sync.run(instance, "push").counts.get("created") == 1
        assert (link_rows(engine, "mem")[grace]["remote_id"], outbox_rows(engine)) == (
            "H-grace",
            [],
        )

    # An accepted answer with no id at all cannot be linked: tried again, not lost.
    answer_as(monkeypatch, remote_id=None)
    kate = person(engine, "Kate", "6175550112")
    report = sync.run(instance, "push")
    assert (report.counts.get("failed"), report.counts.get("created")) == (1, None)
    (row,) = outbox_rows(engine)
    assert (row["contact_id"], row["state"], row["last_error"]) == (
        kate,
        "pending",
        "the connector returned no record id",
    )
    assert kate not in link_rows(engine, "mem")


def test_the_dry_run_says_link_for_a_contact_the_platform_already_holds(
    engine, tmp_path, remote, monkeypatch
):
    # A platform that looks records up by email before creating (as HubSpot and Salesforce
    # do): the memory platform, answering from its own rows.
    def lookup(self, batch):
        wanted = {item.fields.get("Email") for item in batch} - {None}
        return [
            RemoteRecord(r.id, dict(r.fields))
            for r in remote.live()
            if r.fields.get("Email") in wanted
        ]

    monkeypatch.setattr(MemoryConnector, "capabilities", Capabilities(looks_up=True))
    monkeypatch.setattr(MemoryConnector, "lookup", lookup, raising=False)
    rid = remote.add(FirstName="Ada", LastName="Hub", Email="ada@example.edu", Phone="2025550143")
    instance = write_instance(tmp_path, "mem")  # never pulled: only the lookup finds it
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143", email="ada@example.edu")
    plans: list[dict[str, Any]] = []

    sync.run(instance, "push", dry_run=True, on_plan=lambda p: plans.append(p.as_dict()))

    assert plans == [
        {
            "contact_id": ada,
            "action": "link",
            "reason": "linked to the record the platform already holds",
        }
    ]
    assert list(remote.rows) == [rid] and link_rows(engine, "mem") == {}


def test_an_answer_without_words_is_retried_with_its_status_as_the_error(
    engine, tmp_path, remote, monkeypatch
):
    answer_as(monkeypatch, status=PushStatus.TRANSIENT, remote_id=None)  # a lock, say
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143")

    assert sync.run(instance, "push").counts.get("failed") == 1

    (row,) = outbox_rows(engine)
    assert (row["contact_id"], row["state"], row["last_error"]) == (ada, "pending", "transient")
    assert log_rows(engine) == []  # a transient failure is logged only when it parks


def test_an_instance_that_only_sends_links_the_record_the_platform_already_holds(
    engine, tmp_path, remote, monkeypatch
):
    """Its fields map outgoing only, so a looked-up record is read for its match keys alone:
    the push links it and updates it, never creating the person twice on the platform, and
    the platform's other values never reach the hub."""

    def lookup(self, batch):
        wanted = {item.fields.get("Email") for item in batch} - {None}
        return [
            RemoteRecord(r.id, dict(r.fields))
            for r in remote.live()
            if r.fields.get("Email") in wanted
        ]

    monkeypatch.setattr(MemoryConnector, "capabilities", Capabilities(looks_up=True))
    monkeypatch.setattr(MemoryConnector, "lookup", lookup, raising=False)
    rid = remote.add(FirstName="Ada", LastName="Platform", Email="ada@example.edu")
    instance = write_instance(tmp_path, "mem", extra=OUTGOING)
    sync = sync_engine(engine, instance)
    ada = person(engine, "Ada", "2025550143", email="ada@example.edu")

    report = sync.run(instance, "push")

    assert report.outcome == "ok", report.error
    assert list(remote.rows) == [rid]  # linked and updated, not created again
    assert remote.rows[rid].fields["LastName"] == "Hub"
    assert link_rows(engine, "mem")[ada]["remote_id"] == rid
    assert contact(engine, ada)["last_name"] == "Hub"  # nothing came in
