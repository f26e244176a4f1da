"""The sync engine against the in-memory platform: two-way cycles that never lose,
duplicate or loop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from daemon.hub.contacts import add_custom_field, get_contact, save_contact
from daemon.hub.store import Contact, Link, Outbox, SyncLog, utcnow
from daemon.kit.connector import AuthFailed
from tests.enginekit import fresh_remote, snapshot, sync_engine, write_instance
from tests.hubkit import outbox_rows


def codes(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(SyncLog.__table__.c.code)).scalars())


def contacts(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(Contact.__table__)).mappings()]


def links_of(engine, connection: str) -> dict[str, dict]:
    table = Link.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.connection == connection)).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def add_contact(engine, first: str, phone: str, **extra: str) -> str:
    values = {"first_name": first, "last_name": "Hub", "phone": phone, **extra}
    return save_contact(engine, values)


@pytest.fixture
def remote():
    return fresh_remote()


def test_first_sync_links_existing_creates_new_and_pushes_the_unlinked(engine, tmp_path, remote):
    matched = add_contact(engine, "Ada", "2025550143", crm_id="S1")
    unlinked = add_contact(engine, "Grace", "2025550181")
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="+1 202 555 0143", StudentId="S1")
    remote.add(FirstName="Alan", LastName="Turing", Phone="4155550199", StudentId="S2")
    remote.add(FirstName="NoPhone", LastName="X", StudentId="S3")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)

    pulled = sync.run(instance, "pull")
    assert pulled.outcome == "ok", pulled.error
    assert pulled.counts["created"] == 1 and pulled.counts["updated"] == 1
    assert "blank-required-data-in-record" in codes(engine)
    assert get_contact(engine, matched).row["last_name"] == "Lovelace"

    pushed = sync.run(instance, "push")
    assert pushed.outcome == "ok", pushed.error
    # Only the contact the platform did not have is created there.
    created = [r for r in remote.live() if r.created_for]
    assert [r.created_for for r in created] == [unlinked]
    assert created[0].fields["FirstName"] == "Grace"
    assert set(links_of(engine, "mem")) >= {matched, unlinked}

    # Nothing changed anywhere: the next cycles move nothing.
    calls = remote.push_calls
    assert sync.run(instance, "pull").counts.get("updated", 0) == 0
    assert sync.run(instance, "push").outcome == "ok"
    assert remote.push_calls == calls
    assert len(contacts(engine)) == 3


def test_two_way_changes_flow_and_never_echo(engine, tmp_path, remote):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    sync.run(instance, "push")
    (contact_id,) = [c["id"] for c in contacts(engine)]

    remote.edit(rid, LastName="King")
    sync.run(instance, "pull")
    assert get_contact(engine, contact_id).row["last_name"] == "King"
    assert outbox_rows(engine) == []  # a pulled change is not queued back to its source

    save_contact(engine, {"email": "ada@example.edu"}, contact_id=contact_id)
    before = remote.pushed_items
    report = sync.run(instance, "push")
    assert report.counts["updated"] == 1
    assert remote.pushed_items == before + 1
    assert remote.rows[rid].fields["Email"] == "ada@example.edu"
    assert remote.rows[rid].fields["LastName"] == "King"

    # The push touched the remote record; pulling it back must not bounce anything.
    for _ in range(3):
        assert sync.run(instance, "pull").counts.get("updated", 0) == 0
        sync.run(instance, "push")
    assert remote.pushed_items == before + 1
    assert outbox_rows(engine) == []


def test_incoming_and_outgoing_instances_on_one_connection_share_links(engine, tmp_path, remote):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    incoming = write_instance(
        tmp_path, "mem-in", extra='connection = "mem"\ndirection = "incoming"'
    )
    outgoing = write_instance(
        tmp_path, "mem-out", extra='connection = "mem"\ndirection = "outgoing"'
    )
    sync = sync_engine(engine, incoming, outgoing)
    assert sync.run(incoming, "pull").counts["created"] == 1
    assert outbox_rows(engine) == []
    (contact_id,) = [c["id"] for c in contacts(engine)]

    save_contact(engine, {"first_name": "Augusta"}, contact_id=contact_id)
    assert sync.run(outgoing, "push").counts["updated"] == 1
    assert remote.rows[rid].fields["FirstName"] == "Augusta"
    assert len(remote.rows) == 1  # linked through the incoming instance: no duplicate

    pushed = remote.pushed_items
    sync.run(incoming, "pull")
    sync.run(outgoing, "push")
    assert remote.pushed_items == pushed


@pytest.mark.parametrize(
    ("policy", "hub_first", "winner"),
    [
        ("hub", True, "hub"),
        ("hub", False, "hub"),
        ("platform", True, "platform"),
        ("platform", False, "platform"),
        ("newest", True, "platform"),  # the platform's edit came later
        ("newest", False, "hub"),  # the hub's edit came later
    ],
)
def test_conflicts_follow_the_policy(engine, tmp_path, remote, policy, hub_first, winner):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem", extra=f'conflict = "{policy}"')
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    sync.run(instance, "push")
    (contact_id,) = [c["id"] for c in contacts(engine)]

    if hub_first:
        save_contact(engine, {"last_name": "HubSide"}, contact_id=contact_id)
        remote.edit(rid, LastName="PlatformSide")
    else:
        remote.edit(rid, LastName="PlatformSide")
        save_contact(engine, {"last_name": "HubSide"}, contact_id=contact_id)
    sync.run(instance, "pull")
    sync.run(instance, "push")

    expected = "HubSide" if winner == "hub" else "PlatformSide"
    assert get_contact(engine, contact_id).row["last_name"] == expected
    assert remote.rows[rid].fields["LastName"] == expected
    assert codes(engine).count("sync-conflict") == 1


def test_value_cleared_in_hub_is_not_refilled_by_unrelated_remote_edit(engine, tmp_path, remote):
    rid = remote.add(
        FirstName="Ada",
        LastName="Lovelace",
        Phone="2025550143",
        StudentId="S1",
        Email="ada@example.edu",
    )
    fields = """
    [[fields]]
    hub = "first_name"
    remote = "FirstName"
    [[fields]]
    hub = "last_name"
    remote = "LastName"
    [[fields]]
    hub = "phone"
    remote = "Phone"
    [[fields]]
    hub = "enrollment_id"
    remote = "Email"
    """
    instance = write_instance(tmp_path, "mem", fields=fields)
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    (contact_id,) = [c["id"] for c in contacts(engine)]
    assert get_contact(engine, contact_id).row["enrollment_id"] == "ada@example.edu"

    save_contact(engine, {"enrollment_id": "UNSET"}, contact_id=contact_id)
    sync.run(instance, "push")  # an empty hub value is never sent
    assert remote.rows[rid].fields["Email"] == "ada@example.edu"
    remote.edit(rid, FirstName="Augusta")
    sync.run(instance, "pull")
    row = get_contact(engine, contact_id).row
    assert row["first_name"] == "Augusta"
    assert row["enrollment_id"] is None


def test_remote_delete_leaves_a_tombstone_and_is_never_recreated(engine, tmp_path, remote):
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    (contact_id,) = [c["id"] for c in contacts(engine)]

    remote.delete(rid)
    report = sync.run(instance, "pull")
    assert report.counts["tombstoned"] == 1
    assert links_of(engine, "mem")[contact_id]["state"] == "deleted"
    save_contact(engine, {"first_name": "Augusta"}, contact_id=contact_id)
    calls = remote.push_calls
    sync.run(instance, "push")
    assert remote.push_calls == calls
    assert len(remote.live()) == 0
    assert get_contact(engine, contact_id) is not None  # the hub keeps the contact


def test_rejections_retry_then_park_without_blocking_the_queue(engine, tmp_path, remote):
    instance = write_instance(tmp_path, "mem", extra='max_attempts = 2\ndirection = "outgoing"')
    sync = sync_engine(engine, instance)
    bad = add_contact(engine, "Bad", "2025550143")
    good = add_contact(engine, "Good", "2025550181")
    remote.reject = lambda item: (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope" if item.fields.get("FirstName") == "Bad" else None
    )
    sync.run(instance, "push")
    assert [r.created_for for r in remote.live()] == [good]
    (row,) = outbox_rows(engine)
    assert row["contact_id"] == bad and row["attempts"] == 1 and row["state"] == "pending"
    assert row["next_attempt_at"] > utcnow()
    with engine.connect() as conn:
        messages = conn.execute(select(SyncLog.__table__.c.message)).scalars().all()
    assert any("FIELD_CUSTOM_VALIDATION_EXCEPTION" in m for m in messages)

    with engine.begin() as conn:  # let the back-off pass
        conn.execute(update(Outbox.__table__).values(next_attempt_at=utcnow() - timedelta(1)))
    sync.run(instance, "push")
    (row,) = outbox_rows(engine)
    assert row["state"] == "parked" and row["attempts"] == 2
    assert codes(engine).count("remote-rejected") == 2

    # A later hub edit re-arms the parked row.
    save_contact(engine, {"last_name": "Fixed"}, contact_id=bad)
    assert outbox_rows(engine)[0]["state"] == "pending"


def test_one_failing_instance_never_stops_another(engine, tmp_path):
    broken = fresh_remote("broken")
    broken.fail_pull = RuntimeError("plugin bug")
    healthy = fresh_remote("healthy")
    healthy.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    bad = write_instance(tmp_path, "bad", remote="broken")
    good = write_instance(tmp_path, "good", remote="healthy")
    sync = sync_engine(engine, bad, good)

    failed = sync.run(bad, "pull")
    assert failed.outcome == "failed" and failed.code == "internal-error"
    assert sync.run(good, "pull").counts["created"] == 1

    broken.fail_pull = AuthFailed("401 INVALID_SESSION_ID", retry_after=600)
    sync.run(bad, "pull", respect_backoff=False)
    assert "remote-auth-failed" in codes(engine)
    assert sync.run(bad, "pull").outcome == "backoff"  # until the platform's retry time
    assert sync.run(good, "pull").outcome == "ok"


def test_dry_run_changes_nothing(engine, tmp_path, remote):
    add_custom_field(engine, "Class Year", "number")
    add_contact(engine, "Grace", "2025550181")
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    before = snapshot(engine)
    plans = []
    pulled = sync.run(instance, "pull", dry_run=True, on_plan=plans.append)
    assert pulled.counts["created"] == 1 and plans
    pushed = sync.run(instance, "push", dry_run=True)
    assert pushed.outcome == "ok"
    assert remote.push_calls == 0
    after = snapshot(engine)
    after.pop("sync_lease"), before.pop("sync_lease", None)
    before.pop("instance_state", None), after.pop("instance_state", None)
    assert after == before


def test_malformed_platform_data_is_a_coded_error_never_a_crash(engine, tmp_path, remote):
    from daemon.kit.connector import MalformedResponse

    remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", Email={"oops": 1})
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    report = sync.run(instance, "pull")
    assert report.outcome == "ok" and report.counts["created"] == 1
    assert "remote-malformed-response" in codes(engine)
    (contact,) = contacts(engine)
    assert contact["last_name"] == "Lovelace" and contact["email"] is None

    remote.fail_pull = MalformedResponse("page 3 is not JSON")
    failed = sync.run(instance, "pull", respect_backoff=False)
    assert failed.outcome == "failed" and failed.code == "remote-malformed-response"


def test_a_push_answered_with_another_record_id_moves_the_link(engine, tmp_path, remote):
    from daemon.kit.connector import PushResult, PushStatus
    from tests.memremote import MemoryConnector

    old_id = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    (contact_id,) = [c["id"] for c in contacts(engine)]
    survivor = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143")
    original = MemoryConnector.push

    def merged_push(self, batch):  # as HubSpot answers an update of a merged-away id
        return [
            PushResult(r.contact_id, r.status, remote_id=survivor)
            if r.status is PushStatus.OK
            else r
            for r in original(self, batch)
        ]

    MemoryConnector.push = merged_push
    try:
        save_contact(engine, {"first_name": "Augusta"}, contact_id=contact_id)
        assert sync.run(instance, "push").outcome == "ok"
    finally:
        MemoryConnector.push = original
    link = links_of(engine, "mem")[contact_id]
    assert link["remote_id"] == survivor and link["remote_id"] != old_id


def test_a_merge_on_the_platform_moves_the_link_to_the_survivor(engine, tmp_path, remote):
    from tests.memremote import MemoryConnector

    old_id = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    (contact_id,) = [c["id"] for c in contacts(engine)]
    remote.delete(old_id)
    survivor = remote.add(FirstName="Ada", LastName="King", Phone="2025550143", StudentId="S1")
    original = MemoryConnector.pull

    def merging_pull(self, cursor):  # the survivor names the record it absorbed
        for page in original(self, cursor):
            yield type(page)(
                [
                    type(r)(
                        r.remote_id,
                        r.fields,
                        r.modified_at,
                        r.deleted,
                        merged_from=(old_id,) if r.remote_id == survivor else (),
                    )
                    for r in page.records
                    if r.remote_id != old_id  # the platform no longer lists it
                ],
                page.cursor,
            )

    MemoryConnector.pull = merging_pull
    try:
        report = sync.run(instance, "pull")
    finally:
        MemoryConnector.pull = original
    assert report.counts["merged"] == 1
    assert links_of(engine, "mem")[contact_id]["remote_id"] == survivor
    assert get_contact(engine, contact_id).row["last_name"] == "King"
    assert len(contacts(engine)) == 1


def test_the_deletion_scan_leaves_tombstones_with_its_own_checkpoint(engine, tmp_path, remote):
    from daemon.hub.runs import get_cursor
    from daemon.kit.connector import Page, RemoteRecord
    from tests.memremote import MemoryConnector

    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    (contact_id,) = [c["id"] for c in contacts(engine)]

    def scan_deletes(self, cursor):
        yield Page([RemoteRecord(rid, {}, None, deleted=True)], cursor="scan-1")

    MemoryConnector.scan_deletes = scan_deletes
    try:
        report = sync.run(instance, "deletes")
    finally:
        del MemoryConnector.scan_deletes
    assert report.outcome == "ok" and report.counts["tombstoned"] == 1
    assert links_of(engine, "mem")[contact_id]["state"] == "deleted"
    with engine.connect() as conn:
        assert get_cursor(conn, "mem", "deletes") == "scan-1"
        assert get_cursor(conn, "mem") != "scan-1"


def test_a_matched_record_gets_what_only_the_hub_had(engine, tmp_path, remote):
    """The first pull links a record to an existing contact; the hub's email, blank on the
    platform, goes out on the next push, though no one edited the contact since."""
    contact = add_contact(engine, "Ada", "2025550143", crm_id="S1", email="ada@x.edu")
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    other = remote.add(
        FirstName="Al", LastName="Complete", Phone="4155550100", StudentId="S2", Email="al@x.edu"
    )
    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    assert sync.run(instance, "pull").outcome == "ok"
    queued = {r["contact_id"] for r in outbox_rows(engine)}
    assert contact in queued
    # A record that brought every mapped field has nothing the hub could add: not queued.
    assert links_of(engine, "mem")[contact]["remote_id"] == rid
    complete = next(c["id"] for c in contacts(engine) if c["crm_id"] == "S2")
    assert complete not in queued
    assert sync.run(instance, "push").outcome == "ok"
    assert remote.rows[rid].fields["Email"] == "ada@x.edu"
    assert "Email" in remote.rows[other].fields
    calls = remote.push_calls
    assert sync.run(instance, "push").outcome == "ok"
    assert remote.push_calls == calls  # sent once; the link remembers it


def test_back_off_doubles_with_each_failure_in_a_row_and_resets_after_a_good_cycle(
    engine, tmp_path, remote
):
    from daemon.engine.cycle import MAX_BACKOFF, backoff_after
    from daemon.hub.store import InstanceState
    from daemon.kit.connector import Unavailable

    instance = write_instance(tmp_path, "mem")
    sync = sync_engine(engine, instance)
    state = InstanceState.__table__

    def waits() -> tuple[float, int]:
        with engine.connect() as conn:
            until, failures = conn.execute(select(state.c.backoff_until, state.c.failures)).one()
        return (until - utcnow()).total_seconds() / 60, failures

    remote.fail_pull = Unavailable("503 from the platform")
    seen = []
    for _ in range(4):
        assert sync.run(instance, "pull", respect_backoff=False).outcome == "failed"
        seen.append(waits())
    assert [failures for _, failures in seen] == [1, 2, 3, 4]
    assert [round(minutes) for minutes, _ in seen] == [1, 2, 4, 8]
    assert sync.run(instance, "pull").outcome == "backoff"
    # The documented steps: 1, 2, 4, 8, 16, 32, then the cap of 60 minutes.
    assert [backoff_after(n) / timedelta(minutes=1) for n in range(1, 9)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]
    assert backoff_after(10_000) == MAX_BACKOFF

    remote.fail_pull = None
    assert sync.run(instance, "pull", respect_backoff=False).outcome == "ok"
    assert waits()[1] == 0
    remote.fail_pull = Unavailable("503 again")
    sync.run(instance, "pull", respect_backoff=False)
    minutes, failures = waits()
    assert failures == 1 and round(minutes) == 1
