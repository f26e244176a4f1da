"""Tests that would catch a regression (issue 16): behaviours a mutation run could break unseen.

Each test here guards one line of the incoming rules (daemon/hub/incoming.py), the push
(daemon/engine/push.py) or the outbox (daemon/hub/outbox.py) that no other test failed for when
it was mutated. The hub-level ones go through :class:`daemon.hub.ingest.Ingestor` (tests/hubkit.py);
the engine-level ones drive the real pull and push against the in-memory platform
(tests/memremote.py). Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
bench/mutation.md says which mutant each one kills.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from daemon.hub import links, outbox
from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.incoming import IncomingRecord
from daemon.hub.store import Link, Outbox, utcnow
from daemon.kit.connector import Capabilities
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.hubkit import (
    ADA_E164,
    ADA_PHONE,
    CONTACT,
    KATE_E164,
    KATE_PHONE,
    contact,
    define_custom_fields,
    ingest,
    log_codes,
    outbox_rows,
    seed,
    snapshot,
)
from tests.memremote import MemoryConnector

ADA = {"crm_id": "S-1", "first_name": "Ada", "last_name": "Lovelace", "phone": ADA_PHONE}
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def hub(engine):
    """A hub with the test custom fields defined."""
    define_custom_fields(engine)
    return engine


def links_of(engine, connection: str) -> dict[str, str]:
    """remote id -> contact id of every link on ``connection``."""
    table = Link.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.remote_id, table.c.contact_id).where(table.c.connection == connection)
        )
        return {remote_id: contact_id for remote_id, contact_id in rows}


def as_utc(moment: datetime) -> datetime:
    """A timestamp as read back from either backend (SQLite's are naive, in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def hub_codes(engine) -> list[str]:
    """The code of every sync-log row."""
    return [code for code, _field in log_codes(engine)]


# --- the incoming rules -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "yes", True])
def test_archived_true_for_an_archived_contact_leaves_it_archived(hub, value):
    # Rule 8 un-archives a contact a record arrives for, unless the record says otherwise.
    # Saying so with ``archived`` (not only ``active``) must count as saying otherwise.
    ada = seed(hub, ADA, archived=True)

    run = ingest(hub, [{"crm_id": "S-1", "archived": value, "first_name": "Augusta"}])

    after = contact(hub, ada)
    assert (after["archived"], after["first_name"]) == (True, "Augusta")
    assert run.outcomes == ["updated"]


def test_invalid_phone_is_cleared_by_a_new_phone_and_kept_by_any_other_change(hub):
    ada = seed(hub, ADA)
    with hub.begin() as conn:  # a delivery failed on the number
        conn.execute(update(CONTACT).where(CONTACT.c.id == ada).values(invalid_phone=True))

    ingest(hub, [{"crm_id": "S-1", "last_name": "King"}])
    assert contact(hub, ada)["invalid_phone"] is True  # the number did not change

    ingest(hub, [{"crm_id": "S-1", "phone": KATE_PHONE}])
    after = contact(hub, ada)
    # A new number has not failed delivery yet.
    assert (after["phone"], after["invalid_phone"]) == (KATE_E164, False)


def test_a_link_to_a_deleted_contact_recreates_it_with_the_unchanged_fields_too(hub):
    # The platform still holds what was last exchanged, so prepare() skips each field as
    # unchanged; the link's contact is gone, so every one of them is needed to re-create it.
    gone = seed(hub, {**ADA, "crm_id": "S-9", "phone": "415 555 0199"})
    with hub.begin() as conn:
        conn.execute(CONTACT.delete().where(CONTACT.c.id == gone))
    last = {"first_name": "Ada", "last_name": "Lovelace", "phone": ADA_E164, "crm_id": "S-1"}
    record = IncomingRecord(
        {**ADA, "email": "ada@example.edu"},
        remote_id="R1",
        linked_contact_id=gone,
        last_exchanged=last,
    )

    run = ingest(hub, [record])

    assert run.outcomes == ["created"]
    created = contact(hub, "S-1")
    assert (created["first_name"], created["last_name"], created["phone"]) == (
        "Ada",
        "Lovelace",
        ADA_E164,
    )
    assert created["email"] == "ada@example.edu"
    assert hub_codes(hub) == []


@pytest.mark.parametrize(
    ("name", "raw", "last", "outcome", "codes"),
    [
        # A JSON number the same as the text last exchanged: no spurious change.
        ("custom:Class Year", 2027, "2027", "unchanged", []),
        # A JSON boolean that differs from the boolean last exchanged: applied, not missed.
        ("active", False, True, "updated", []),
        # A boolean where a number was exchanged (True == 1 in Python): not "unchanged since
        # the exchange" but a value of the wrong type, refused with its code.
        ("custom:Class Year", True, 1, "unchanged", [("invalid-custom-field-value", None)]),
    ],
)
def test_non_string_platform_values_are_compared_with_the_last_exchange(
    hub, name, raw, last, outcome, codes
):
    ada = seed(hub, {**ADA, "custom:Class Year": "2027"})
    record = IncomingRecord(
        {name: raw}, remote_id="R1", linked_contact_id=ada, last_exchanged={name: last}
    )

    run = ingest(hub, [record])

    assert run.outcomes == [outcome]
    assert log_codes(hub) == [(code, name) for code, _ in codes]
    after = contact(hub, ada)
    assert after["custom"]["Class Year"] == "2027"
    assert after["archived"] is (name == "active")


def test_a_remote_record_for_a_contact_linked_in_an_earlier_run_is_skipped(hub):
    # The link that makes the contact taken is in the database, from an earlier run: the
    # batch must load it, not only know the links it makes itself.
    first = ingest(hub, [IncomingRecord(dict(ADA), remote_id="R1")], connection="mem")
    (ada,) = [p.contact_id for p in first.plans]
    with hub.begin() as conn:
        links.save(conn, [links.LinkRow("mem", "R1", ada, "linked", {"crm_id": "S-1"})], utcnow())
    before = snapshot(hub)

    run = ingest(
        hub,
        [IncomingRecord({**ADA, "first_name": "Impostor"}, remote_id="R2")],
        connection="mem",
    )

    assert run.outcomes == ["skipped"]
    assert log_codes(hub, run.run_id) == [("duplicate-unique-id-crmId", "crm_id")]
    assert snapshot(hub) == before
    assert links_of(hub, "mem") == {"R1": ada}


# --- conflicts, through the real pull -----------------------------------------------------------


@pytest.fixture
def remote():
    return fresh_remote()


def first_sync(engine, tmp_path, remote, *, extra: str = ""):
    """An instance on the memory platform, pulled and pushed once; returns it and its engine."""
    instance = write_instance(tmp_path, "mem", extra=extra)
    sync = sync_engine(engine, instance)
    assert sync.run(instance, "pull").outcome == "ok"
    assert sync.run(instance, "push").outcome == "ok"
    return instance, sync


def test_a_change_made_only_on_the_platform_applies_under_the_hub_policy(engine, tmp_path, remote):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance, sync = first_sync(engine, tmp_path, remote, extra='conflict = "hub"')
    # The hub changed another field: the contact has changes, just not this one.
    (contact_id,) = links_of(engine, "mem").values()
    save_contact(engine, {"first_name": "Augusta"}, contact_id=contact_id)

    remote.edit(rid, LastName="King")
    report = sync.run(instance, "pull")

    assert report.outcome == "ok"
    assert get_contact(engine, contact_id).row["last_name"] == "King"
    assert "sync-conflict" not in hub_codes(engine)


# --- the push: what it may create ---------------------------------------------------------------


def test_create_remote_false_creates_nothing_and_still_updates_linked_records(
    engine, tmp_path, remote
):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    hub_only = save_contact(
        engine, {"first_name": "Grace", "last_name": "H", "phone": "2025550181"}
    )
    instance, sync = first_sync(engine, tmp_path, remote, extra="create_remote = false")
    linked = links_of(engine, "mem")[rid]
    save_contact(engine, {"last_name": "King"}, contact_id=linked)
    save_contact(engine, {"last_name": "Hopper"}, contact_id=hub_only)

    assert sync.run(instance, "push").outcome == "ok"

    assert [r.id for r in remote.rows.values()] == [rid]  # nothing created
    assert remote.rows[rid].fields["LastName"] == "King"  # the push did run
    assert hub_only not in links_of(engine, "mem").values()
    assert outbox_rows(engine) == []  # done with, not retried forever


def test_a_connector_that_cannot_create_is_never_asked_to(engine, tmp_path, remote, monkeypatch):
    monkeypatch.setattr(MemoryConnector, "capabilities", Capabilities(deletes=True, create=False))
    save_contact(engine, {"first_name": "Grace", "last_name": "Hopper", "phone": "2025550181"})
    instance = write_instance(tmp_path, "mem", extra='direction = "outgoing"')
    sync = sync_engine(engine, instance)

    assert sync.run(instance, "push").outcome == "ok"

    assert remote.rows == {}
    assert remote.pushed_items == 0
    assert outbox_rows(engine) == []


# --- the first sync's seed, with two connections -----------------------------------------------


def test_the_first_sync_seeds_each_connection_with_what_it_has_no_link_for(engine, tmp_path):
    remote_a, remote_b = fresh_remote("a"), fresh_remote("b")
    ada = save_contact(
        engine, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143", "crm_id": "S1"}
    )
    grace = save_contact(engine, {"first_name": "Grace", "last_name": "Hub", "phone": "2025550181"})
    # Ada is already on platform a, exactly as the hub holds her (linked, nothing to send).
    rid = remote_a.add(FirstName="Ada", LastName="Hub", Phone="+12025550143", StudentId="S1")
    inst_a = write_instance(tmp_path, "mem-a", remote="a")
    inst_b = write_instance(tmp_path, "mem-b", remote="b")
    sync = sync_engine(engine, inst_a, inst_b)

    assert sync.run(inst_a, "pull").outcome == "ok"
    assert links_of(engine, "mem-a") == {rid: ada}
    assert sync.run(inst_b, "pull").outcome == "ok"
    # b seeds first: Ada's link on a is no link on b, and both are queued for b only.
    assert sync.run(inst_b, "push").outcome == "ok"
    assert sorted(r.created_for for r in remote_b.live()) == sorted([ada, grace])
    # a seeds next: Grace, whatever b queued or linked for her.
    assert sync.run(inst_a, "push").outcome == "ok"
    assert [r.created_for for r in remote_a.live() if r.created_for] == [grace]
    assert set(links_of(engine, "mem-a").values()) == {ada, grace}
    assert set(links_of(engine, "mem-b").values()) == {ada, grace}


# --- the outbox: re-arming a parked row, and the back-off -------------------------------------


def park(engine, sync, instance) -> dict:
    """Push until the one outbox row is parked (each back-off let pass); returns it."""
    for _ in range(10):
        sync.run(instance, "push")
        (row,) = outbox_rows(engine)
        if row["state"] == outbox.PARKED:
            return row
        with engine.begin() as conn:
            conn.execute(update(Outbox.__table__).values(next_attempt_at=utcnow() - timedelta(1)))
    raise AssertionError("never parked")


@pytest.mark.parametrize("how", ["hub edit", "operator retry"])
def test_a_re_armed_row_gets_every_attempt_again(engine, tmp_path, remote, how):
    instance = write_instance(tmp_path, "mem", extra='max_attempts = 2\ndirection = "outgoing"')
    sync = sync_engine(engine, instance)
    bad = save_contact(engine, {"first_name": "Bad", "last_name": "Hub", "phone": "2025550143"})
    remote.reject = lambda item: "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope"
    parked = park(engine, sync, instance)
    assert parked["attempts"] == 2

    if how == "hub edit":
        save_contact(engine, {"last_name": "Fixed"}, contact_id=bad)
    else:
        with engine.begin() as conn:
            assert outbox.rearm(conn, utcnow(), ids=[parked["id"]]) == [parked["id"]]
    (row,) = outbox_rows(engine)
    assert (row["state"], row["attempts"], row["last_error"] is None or how != "hub edit") == (
        "pending",
        0,
        True,
    )
    assert row["next_attempt_at"] <= utcnow()  # due at once

    # Two attempts left, as at first: one more failure is a retry, not a park.
    sync.run(instance, "push")
    (row,) = outbox_rows(engine)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert park(engine, sync, instance)["attempts"] == 2


def queue_row(
    engine, connection: str, contact_id: str, now: datetime, state: str = outbox.PENDING
) -> int:
    """An outbox row as a failed push leaves it (one attempt made when parked); its id."""
    with engine.begin() as conn:
        return conn.execute(
            Outbox.__table__.insert().values(
                connection=connection,
                contact_id=contact_id,
                fields=[],
                origin="test",
                version=1,
                attempts=1 if state == outbox.PARKED else 0,
                state=state,
                last_error="nope" if state == outbox.PARKED else None,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]


def _readme_back_off() -> list[timedelta]:
    """The back-off steps README's "How a sync works" states."""
    text = README.read_text()
    found = re.search(r"back-off of ([^.]*?), then (an hour|\d+ min) between attempts", text)
    assert found, "README no longer states the back-off steps"
    units = {"s": 1, "min": 60, "h": 3600}
    steps = []
    for amount, unit in re.findall(r"(\d+) (s|min|h)\b", found.group(1)):
        steps.append(timedelta(seconds=int(amount) * units[unit]))
    last = found.group(2)
    steps.append(timedelta(hours=1) if last == "an hour" else timedelta(minutes=int(last[:-4])))
    return steps


def test_the_back_off_steps_are_the_ones_readme_states(engine):
    steps = _readme_back_off()
    assert [outbox.retry_delay(n) for n in range(1, len(steps) + 1)] == steps
    assert outbox.retry_delay(len(steps) + 5) == steps[-1]  # capped there for good

    # And a failed push waits exactly that long: attempt n is retried after step n.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    contact_id = save_contact(engine, {"first_name": "A", "last_name": "B", "phone": "2025550143"})
    earlier = now - timedelta(hours=1)  # when the row was queued
    queue_row(engine, "mem", contact_id, earlier)
    other = queue_row(engine, "mem", person(engine, "Other", "2025550181"), earlier)
    for n, step in enumerate(steps, start=1):
        with engine.begin() as conn:
            query = select(Outbox.__table__).where(Outbox.__table__.c.id != other)
            (row,) = [dict(r) for r in conn.execute(query).mappings()]
            parked = outbox.failed(conn, row, "nope", now, max_attempts=len(steps))
        row, untouched = sorted(outbox_rows(engine), key=lambda r: r["id"])
        assert (row["attempts"], row["last_error"], as_utc(row["updated_at"])) == (n, "nope", now)
        assert as_utc(row["next_attempt_at"]) - now == step
        assert (untouched["id"], untouched["attempts"]) == (other, 0)  # only the row named
        assert parked is (n == len(steps))


def person(engine, first: str, phone: str, **flags) -> str:
    """A contact staff created in the hub; its id."""
    return save_contact(engine, {"first_name": first, "last_name": "Hub", "phone": phone}, **flags)


def test_the_operator_repairs_touch_exactly_the_rows_they_name(engine):
    then = datetime(2026, 1, 1, tzinfo=UTC)
    one = person(engine, "A", "2025550143")
    two = person(engine, "B", "2025550181")
    three = person(engine, "C", "4155550199")
    parked_a = queue_row(engine, "a", one, then, outbox.PARKED)
    parked_b = queue_row(engine, "b", two, then, outbox.PARKED)
    pending_a = queue_row(engine, "a", three, then)
    pending_b = queue_row(engine, "b", three, then)
    now = then + timedelta(hours=1)

    with engine.begin() as conn:
        with pytest.raises(ValueError, match=r"^name the rows"):
            outbox.rearm(conn, now)
        with pytest.raises(ValueError, match=r"^name the rows"):
            outbox.drop(conn, connection="a")
        assert outbox.rearm(conn, now, ids=[parked_b], connection="a") == []  # ids AND connection
        assert outbox.rearm(conn, now, connection="a", all_parked=True) == [parked_a]
        # A row backing off (not parked) is made due now too when named.
        assert outbox.rearm(conn, now, ids=[pending_a]) == [pending_a]
        assert outbox.counts(conn) == {"a": {"pending": 2}, "b": {"parked": 1, "pending": 1}}
        assert [r["id"] for r in outbox.list_rows(conn, state=outbox.PARKED)] == [parked_b]
        assert [r["id"] for r in outbox.list_rows(conn, connection="a", limit=1)] == [parked_a]
        assert outbox.drop(conn, ids=[pending_a, parked_b], connection="a") == [pending_a]
        assert outbox.drop(conn, all_parked=True) == [parked_b]
    row, untouched = sorted(outbox_rows(engine), key=lambda r: r["id"])
    assert untouched["id"] == pending_b and untouched["version"] == 1
    assert (row["id"], row["state"], row["attempts"], row["version"]) == (parked_a, "pending", 0, 2)
    assert as_utc(row["next_attempt_at"]) == as_utc(row["updated_at"]) == now


def test_the_first_sync_preview_lists_the_unlinked_contacts_of_its_connection_only(engine):
    # Ids chosen so that id order is not the order of creation, and one sorts before any
    # letter: the preview pages by id, from the start.
    ids = {}
    for name, phone, wanted in [
        ("Ada", "2025550143", "c0"),
        ("Test", "2025550181", "t0"),
        ("Kate", "6175550112", "b1"),
        ("Grace", "4155550199", "0a"),
    ]:
        made = person(engine, name, phone, test_user=name == "Test" or None)
        with engine.begin() as conn:
            conn.execute(update(CONTACT).where(CONTACT.c.id == made).values(id=wanted))
        ids[name] = wanted
    linked, tester, plain = ids["Ada"], ids["Test"], [ids["Grace"], ids["Kate"]]
    with engine.begin() as conn:
        links.save(conn, [links.LinkRow("a", "R1", linked, "linked", {})], utcnow())

    with engine.connect() as conn:
        on_a = outbox.unlinked_rows(conn, "a", set(), limit=10)
        on_b = outbox.unlinked_rows(conn, "b", {plain[0]}, limit=10)
        first = outbox.unlinked_rows(conn, "a", set(), limit=1)
        after = outbox.unlinked_rows(conn, "a", set(), limit=10, after=plain[0])

    assert [r["contact_id"] for r in on_a] == plain  # not the linked one, never a test user
    assert [r["contact_id"] for r in on_b] == sorted([linked, plain[1]])
    assert [r["contact_id"] for r in first] == plain[:1]
    assert [r["contact_id"] for r in after] == plain[1:]
    assert {(r["connection"], r["state"], len(r["fields"])) for r in on_a} == {("a", "pending", 0)}
    assert tester not in {r["contact_id"] for r in on_a + on_b}


def test_a_failure_recorded_after_a_newer_write_leaves_the_re_armed_row_alone(engine):
    # The push read the row, a hub write re-armed it (version bumped), then the push's
    # failure came back: it must not count against the newer change.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    contact_id = person(engine, "Ada", "2025550143")
    queue_row(engine, "mem", contact_id, now)
    (read,) = outbox_rows(engine)
    with engine.begin() as conn:
        outbox.rearm(conn, now, ids=[read["id"]])
        # Not parked: the push must not log "(parked)" for a row it no longer holds.
        assert outbox.failed(conn, read, "too late", now, max_attempts=1) is False
    (row,) = outbox_rows(engine)
    assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 0, None)


def test_a_push_that_ends_after_a_newer_write_leaves_its_row_queued(engine):
    # The push read the row, a hub write coalesced into it (version bumped) while the push was
    # in flight, then the push succeeded: the newer change still has to go.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    queue_row(engine, "mem", person(engine, "Ada", "2025550143"), now)
    (read,) = outbox_rows(engine)
    with engine.begin() as conn:
        outbox.rearm(conn, now, ids=[read["id"]])
        outbox.done(conn, [read])
    (row,) = outbox_rows(engine)
    assert row["version"] == read["version"] + 1
    with engine.begin() as conn:
        outbox.done(conn, [row])
    assert outbox_rows(engine) == []
