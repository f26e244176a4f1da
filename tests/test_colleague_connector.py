"""The Colleague connector's own rules, against the Colleague simulator over loopback.

Every test shares one fake clock between the simulator and the connector, so the JWT's
lifetime and the connector's renewals agree and no wait is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.sdk import ConnectorContext, Page, PushItem, PushStatus
from plugins.colleague.connector import ColleagueConnector, apply_fields
from plugins.colleague.simulator import ColleagueSimulator
from tests.connectorkit import build, pull_all
from tests.instancekit import contact_fields, load_written


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[ColleagueSimulator]:
    with ColleagueSimulator(seed=9, clock=clock) as simulator:
        yield simulator


def connect(
    sim: ColleagueSimulator, clock: FakeClock, **settings: Any
) -> Iterator[ColleagueConnector]:
    defaults = {"base_url": sim.url, "api_key": sim.api_key, "page_size": 3}
    return build(ColleagueConnector, defaults, settings, ConnectorContext("colleague"), clock)


@pytest.fixture
def conn(sim: ColleagueSimulator, clock: FakeClock) -> Iterator[ColleagueConnector]:
    connector = connect(sim, clock)
    yield connector
    connector.close()


def cid(person: dict[str, Any]) -> str:
    return person["credentials"][0]["value"]


def student(sim: ColleagueSimulator, i: int, **more: Any) -> str:
    return cid(sim.add_person(f"S{i}", "Student", email=f"s{i}@example.edu", **more))


# --- auth ------------------------------------------------------------------------------------


def test_the_jwt_is_renewed_before_it_expires_and_after_a_401(
    sim: ColleagueSimulator, clock: FakeClock, conn: ColleagueConnector
) -> None:
    student(sim, 1)
    conn.check()
    assert sim.counters["token_grants"] == 1
    assert len(sim.messages) == 1  # check() reads the queue's length without consuming
    clock.advance(200)  # within the 60 s margin of the 5-minute JWT? not yet
    conn.check()
    assert sim.counters["token_grants"] == 1
    clock.advance(50)  # 250 s: inside the margin, renewed before it is sent
    conn.check()
    assert sim.counters["token_grants"] == 2
    sim.expire_tokens()  # revoked early: the 401 is answered by one replay with a new JWT
    conn.check()
    assert sim.counters["token_grants"] == 3


# --- pull: scope, mapping -------------------------------------------------------------------


def test_staff_and_vendors_are_out_of_scope(
    sim: ColleagueSimulator, clock: FakeClock, conn: ColleagueConnector
) -> None:
    kept = [student(sim, i) for i in range(4)]
    both = cid(sim.add_person("Two", "Roles", roles=("student", "prospectiveStudent")))
    prospect = cid(sim.add_person("Pro", "Spect", roles=("prospectiveStudent",)))
    staff = cid(sim.add_person("Eve", "Employee", roles=("employee",)))
    vendor = cid(sim.add_person("Vic", "Vendor", roles=("vendor",)))
    records, cursor = pull_all(conn, None)
    ids = [r.remote_id for r in records]
    assert sorted(ids) == sorted([*kept, both, prospect])  # the two-role person once
    sim.edit_person(staff, first_name="Still staff")
    sim.edit_person(kept[0], first_name="Changed")
    sim.edit_person(vendor, roles=["vendor", "student"])  # enrolled: now in scope
    again, _ = pull_all(conn, cursor)
    assert sorted(r.remote_id for r in again) == sorted([kept[0], vendor])


def test_persons_map_to_names_primary_email_and_mobile_or_primary_phone(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    person = sim.add_person("Ada", "Lovelace", email="ada@example.edu")
    guid = person["id"]
    with sim.lock:
        stored = sim.persons[guid]
        stored["names"].append(
            {"type": {"category": "chosen"}, "firstName": "Addie", "lastName": "L"}
        )
        stored["emails"].insert(
            0, {"type": {"emailType": "school"}, "address": "alovelace@college.edu"}
        )
        stored["phones"] = [
            {"type": {"phoneType": "home"}, "number": "2125550100", "preference": "primary"},
            {"type": {"phoneType": "mobile"}, "number": "6175550100", "countryCallingCode": "1"},
        ]
    (record,), _ = pull_all(conn, None)
    assert record.remote_id == cid(person)
    assert record.fields == {
        "firstName": "Ada",  # the preferred name (the legal one here), not the chosen one
        "lastName": "Lovelace",
        "email": "ada@example.edu",  # the primary one, though listed second
        "phone": "+16175550100",  # the mobile, though home is primary
        "colleaguePersonId": cid(person),
    }
    with sim.lock:
        sim.persons[guid]["phones"] = [sim.persons[guid]["phones"][0]]
    sim.edit_person(guid, last_name="King")
    (record,), _ = pull_all(conn, json.dumps({"mode": "consume", "cn": 0}))
    assert record.fields["phone"] == "2125550100"  # no mobile: the primary phone
    assert record.modified_at is not None  # a change carries its published time


# --- pull: the checkpoint before the walk, and the destructive queue ------------------------


def test_the_checkpoint_is_taken_before_the_walk(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    ids = [student(sim, i) for i in range(7)]  # 7 queued "created" messages, older than the walk
    pages = conn.pull(None)
    first = next(pages)
    assert first.records == [] and json.loads(first.cursor)["cn"] == 7
    walked = next(pages)
    assert [r.remote_id for r in walked.records] == ids[:3]
    # Changed while the walk runs: one already walked, one not yet, one new person.
    sim.edit_person(ids[0], first_name="DuringWalk")
    sim.edit_person(ids[5], first_name="AheadOfWalk")
    late = student(sim, 99)
    rest = [r for page in pages for r in page.records]
    changed = {r.remote_id: r.fields["firstName"] for r in rest}
    assert changed[ids[0]] == "DuringWalk"  # from the queue, after the walk
    assert changed[ids[5]] == "AheadOfWalk"
    assert late in changed
    assert {r.remote_id for r in [*walked.records, *rest]} == {*ids, late}


def test_a_crash_before_the_commit_loses_no_change(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    ids = [student(sim, i) for i in range(3)]
    _, committed = pull_all(conn, None)
    for i, remote_id in enumerate(ids):
        sim.edit_person(remote_id, first_name=f"Edit{i}")
    # The daemon reads a page of messages and dies before committing it: its cursor was
    # never checkpointed. Ethos still holds the messages, since only the next /consume
    # (sent when the engine asks for the next page) deletes them.
    pages = conn.pull(committed)
    lost = next(pages)
    assert {r.remote_id for r in lost.records} == set(ids)
    pages.close()
    assert len(sim.messages) == 3
    replay, checkpoint = pull_all(conn, committed)
    assert {r.remote_id: r.fields["firstName"] for r in replay} == {
        ids[0]: "Edit0",
        ids[1]: "Edit1",
        ids[2]: "Edit2",
    }
    # Once a later pull starts from the committed cursor, the queue is emptied for good.
    again, _ = pull_all(conn, checkpoint)
    assert again == [] and len(sim.messages) == 0


def test_consuming_pages_one_checkpoint_at_a_time(
    sim: ColleagueSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock, consume_limit=2)
    ids = [student(sim, i) for i in range(5)]
    _, cursor = pull_all(connector, None)
    for remote_id in ids:
        sim.edit_person(remote_id, last_name="Edited")
    seen: list[Page] = []
    for page in connector.pull(cursor):
        # Before the engine asks for the next page, this page's messages are still queued.
        assert sim.messages[0]["id"] <= json.loads(page.cursor)["cn"]
        seen.append(page)
    assert [len(p.records) for p in seen] == [2, 2, 1]
    assert [json.loads(p.cursor)["cn"] for p in seen] == [7, 9, 10]
    connector.close()


def test_a_crash_mid_walk_resumes_from_the_page_cursor(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    ids = [student(sim, i) for i in range(8)]
    pages = conn.pull(None)
    got = [next(pages), next(pages)]  # the checkpoint page and one page of three
    pages.close()
    assert [r.remote_id for r in got[1].records] == ids[:3]
    rest, _ = pull_all(conn, got[-1].cursor)
    # The resumed walk re-reads the page overlap (one person at this page size), no more.
    assert [r.remote_id for r in rest] == ids[2:]


@pytest.mark.parametrize("overlap", [0, 10])
def test_a_person_leaving_the_listing_mid_walk_does_not_hide_another(
    sim: ColleagueSimulator, clock: FakeClock, overlap: int
) -> None:
    ids = [student(sim, i) for i in range(9)]
    connector = connect(sim, clock, concurrency=1, walk_overlap=overlap)
    pages = connector.pull(None)
    next(pages)  # the checkpoint
    assert [r.remote_id for r in next(pages).records] == ids[:3]
    # ids[0] stops being a student: everyone after moves back one place in the listing.
    sim.edit_person(ids[0], roles=["employee"])
    walked = {r.remote_id for page in pages for r in page.records}
    if overlap:
        assert walked >= set(ids[3:])  # ids[3] was read again from the overlap
    else:
        assert ids[3] not in walked  # what an offset walk without overlap misses
    connector.close()


def test_a_listing_that_ignores_the_offset_is_malformed_not_endless(
    sim: ColleagueSimulator, conn: ColleagueConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.sdk import MalformedResponse

    for i in range(7):
        student(sim, i)
    real = conn.client.list_persons
    monkeypatch.setattr(conn.client, "list_persons", lambda at, limit, c=None: real(0, limit, c))
    with pytest.raises(MalformedResponse, match="did not move"):
        pull_all(conn, None)


def test_walk_pages_fetched_concurrently_come_in_order(clock: FakeClock) -> None:
    with ColleagueSimulator(contacts=200, seed=4, clock=clock, staff_share=0.0) as sim:
        connector = connect(sim, clock, page_size=7, concurrency=4, roles=[])
        records, cursor = pull_all(connector, None)
        assert [r.remote_id for r in records] == [f"{n:07d}" for n in range(1, 201)]
        assert json.loads(cursor)["mode"] == "consume"
        connector.close()


def test_id_only_messages_are_fetched_and_other_resources_skipped(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    ids = [student(sim, i) for i in range(2)]
    _, cursor = pull_all(conn, None)
    sim.full_notifications = False
    sim.edit_person(ids[0], first_name="Fetched")
    sim.publish_other("sections", "5f0c-section")
    ghost = sim.add_person("Gone", "Soon")
    sim.delete_person(ghost["id"])  # a delete Ethos sends without content
    records, _ = pull_all(conn, cursor)
    assert [(r.remote_id, r.fields["firstName"]) for r in records] == [(ids[0], "Fetched")]


def test_a_deleted_person_with_its_id_is_a_tombstone(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    remote_id = student(sim, 1)
    _, cursor = pull_all(conn, None)
    person = sim.person(remote_id)
    with sim.lock:
        sim._publish("deleted", person["id"], None)
        sim.messages[-1]["content"] = person  # a publisher that sends the last state
    (record,), _ = pull_all(conn, cursor)
    assert record.deleted and record.remote_id == remote_id


# --- push -------------------------------------------------------------------------------------


def test_updating_one_number_keeps_the_others(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    remote_id = student(sim, 1, phone="6175550100")
    with sim.lock:
        guid = sim.by_colleague_id[remote_id]
        sim.persons[guid]["phones"].append({"type": {"phoneType": "home"}, "number": "2125550199"})
    before = sim.person(remote_id)
    (result,) = conn.push([PushItem("c1", remote_id, {"phone": "+16175550123"})])
    assert result.status is PushStatus.OK and result.remote_id == remote_id
    after = sim.person(remote_id)
    assert after["phones"] == [
        {"type": {"phoneType": "mobile"}, "number": "6175550123", "countryCallingCode": "1"},
        {"type": {"phoneType": "home"}, "number": "2125550199"},
    ]
    # Only the mapped outgoing field went out: the PUT named the phones array alone.
    assert set(sim.last_put or {}) == {"phones"}
    assert after["names"] == before["names"] and after["emails"] == before["emails"]
    puts = sim.counters["puts"]
    (same,) = conn.push([PushItem("c1", remote_id, {"phone": "+16175550123"})])
    assert same.status is PushStatus.OK and sim.counters["puts"] == puts  # nothing to change


def test_clearing_a_field_removes_only_that_entry(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    remote_id = student(sim, 1, phone="6175550100")
    with sim.lock:
        guid = sim.by_colleague_id[remote_id]
        sim.persons[guid]["emails"].append({"type": {"emailType": "school"}, "address": "x@c.edu"})
    (result,) = conn.push([PushItem("c1", remote_id, {"email": None, "phone": ""})])
    assert result.status is PushStatus.OK
    after = sim.person(remote_id)
    assert after["emails"] == [{"type": {"emailType": "school"}, "address": "x@c.edu"}]
    assert after["phones"] == []


def test_names_are_written_into_the_name_they_were_read_from() -> None:
    person = {
        "names": [
            {"type": {"category": "birth"}, "firstName": "Old", "lastName": "Name"},
            {"type": {"category": "legal"}, "firstName": "Ada", "lastName": "Byron"},
        ]
    }
    body = apply_fields(person, {"lastName": "Lovelace"})
    assert body["names"][0] == person["names"][0]
    assert body["names"][1] == {
        "type": {"category": "legal"},
        "firstName": "Ada",
        "lastName": "Lovelace",
        "fullName": "Ada Lovelace",
    }
    assert apply_fields(person, {"firstName": "Ada"}).get("names") is not None  # fullName set
    assert apply_fields(body, {"lastName": "Lovelace"}) == {}


def test_unlinked_contacts_match_by_email_before_creating(
    sim: ColleagueSimulator, conn: ColleagueConnector
) -> None:
    existing = student(sim, 1)
    fields = {"firstName": "S1", "lastName": "Student", "email": "S1@example.edu"}
    (matched,) = conn.push([PushItem("c1", None, fields)])
    assert matched.status is PushStatus.OK and matched.remote_id == existing
    twin = sim.add_person("Twin", "One", email="twin@example.edu")
    sim.add_person("Twin", "Two", email="twin@example.edu")
    (dup,) = conn.push([PushItem("c2", None, {"lastName": "X", "email": "twin@example.edu"})])
    assert dup.status is PushStatus.REJECTED and dup.code is Code.DUPLICATE_REMOTE_KEY
    assert cid(twin) in dup.message
    (nameless,) = conn.push([PushItem("c3", None, {"email": "new@example.edu"})])
    assert nameless.status is PushStatus.REJECTED
    assert nameless.code is Code.MISSING_REMOTE_REQUIRED_FIELD
    (gone,) = conn.push([PushItem("c4", "9999999", {"lastName": "X"})])
    assert gone.status is PushStatus.REJECTED and "9999999" in gone.message


def test_a_server_error_on_push_is_transient(
    sim: ColleagueSimulator, conn: ColleagueConnector, clock: FakeClock
) -> None:
    remote_id = student(sim, 1)
    conn.check()
    sim.set_faults(error_rate=1.0)
    (result,) = conn.push([PushItem("c1", remote_id, {"lastName": "X"})])
    assert result.status is PushStatus.TRANSIENT and result.remote_id == remote_id


# --- the real engine: nothing lost when the daemon dies mid-consume --------------------------

INSTANCE = """
type = "colleague"
owns_crm_id = true

[settings]
base_url = "{url}"
api_key = {{ env = "TEST_ETHOS_API_KEY" }}
consume_limit = 4
roles = []

""" + contact_fields("firstName", "lastName", "email", "phone")


def load(sim: ColleagueSimulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TEST_ETHOS_API_KEY", sim.api_key)
    text = INSTANCE.format(url=sim.url)
    return load_written(
        tmp_path / "instances", "colleague", text, {"colleague": ColleagueConnector}
    )


def test_the_engine_loses_no_change_when_a_pull_dies_before_its_commit(
    sqlite_engine: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from daemon.engine import pull
    from daemon.hub.store import Contact
    from tests.enginekit import sync_engine

    with ColleagueSimulator(contacts=12, seed=2, staff_share=0.0) as sim:
        instance = load(sim, tmp_path, monkeypatch)
        engine = sync_engine(sqlite_engine, instance)

        def hub() -> dict[str, str]:
            with sqlite_engine.connect() as conn:
                rows = conn.execute(select(Contact.__table__)).mappings()
                return {r["crm_id"]: r["last_name"] for r in rows}

        assert engine.run(instance, "pull").outcome == "ok"
        assert hub() == {
            f"{n:07d}": sim.person(f"{n:07d}")["names"][0]["lastName"] for n in range(1, 13)
        }
        for n in range(1, 11):
            sim.edit_person(f"{n:07d}", last_name=f"Edited{n}")

        real = pull.runs.set_cursor
        calls = {"n": 0}

        def dies_on_the_second_page(*args: Any, **kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:  # the daemon dies here: its database connection is gone
                raise OperationalError("UPDATE sync_cursor", {}, Exception("connection lost"))
            real(*args, **kwargs)

        monkeypatch.setattr(pull.runs, "set_cursor", dies_on_the_second_page)
        assert engine.run(instance, "pull").outcome == "failed"
        edited = [crm for crm, last in hub().items() if last.startswith("Edited")]
        assert len(edited) == 4  # the first page of four committed, the second rolled back
        monkeypatch.setattr(pull.runs, "set_cursor", real)
        assert engine.run(instance, "pull", respect_backoff=False).outcome == "ok"
        expected = {f"{n:07d}": f"Edited{n}" for n in range(1, 11)}
        assert {k: v for k, v in hub().items() if k in expected} == expected
        assert len(sim.messages) == 2  # the last page is deleted by the next pull's first call


def test_a_dry_run_deletes_nothing_from_the_queue(
    sqlite_engine: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.enginekit import sync_engine

    with ColleagueSimulator(contacts=6, seed=2, staff_share=0.0) as sim:
        instance = load(sim, tmp_path, monkeypatch)
        engine = sync_engine(sqlite_engine, instance)
        sim.edit_person("0000001", last_name="Queued")  # one message before any pull
        assert engine.run(instance, "pull", dry_run=True).outcome == "ok"
        assert len(sim.messages) == 1  # no checkpoint drain in a dry run
        assert engine.run(instance, "pull").outcome == "ok"
        for n in range(1, 7):
            sim.edit_person(f"{n:07d}", last_name=f"Edited{n}")
        queued = len(sim.messages)
        plans: list[Any] = []
        report = engine.run(instance, "pull", dry_run=True, on_plan=plans.append)
        assert report.outcome == "ok" and len(plans) == 4  # one page of consume_limit
        assert len(sim.messages) == queued
        assert engine.run(instance, "pull").counts["updated"] == 6


def test_a_person_without_a_colleague_id_is_reported_and_skipped(
    sim: ColleagueSimulator, clock: FakeClock
) -> None:
    kept = student(sim, 1)
    broken = sim.add_person("No", "Credential", email="nc@example.edu")
    student(sim, 2)
    with sim.lock:
        sim.persons[broken["id"]]["credentials"] = []
    reports: list[tuple] = []
    connector = build(
        ColleagueConnector,
        {"base_url": sim.url, "api_key": sim.api_key, "page_size": 3},
        {},
        ConnectorContext("colleague", reporter=lambda *report: reports.append(report)),
        clock,
    )
    records, _ = pull_all(connector, None)
    assert kept in {r.remote_id for r in records} and len(records) == 2
    assert [(code, details) for code, _, details in reports] == [
        ("remote-malformed-response", {"guid": broken["id"]})
    ]
