"""The Salesforce connector's own rules, against the Salesforce simulator over loopback.

Every test shares one fake clock between the simulator and the connector, so sessions, the
daily allowance and the connector's waits agree and no wait is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from daemon.config.instances import Instance
from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.hub.contacts import save_contact
from daemon.hub.store import Contact
from daemon.sdk import (
    AuthFailed,
    ConnectorContext,
    NotSignedIn,
    PushItem,
    PushStatus,
    RateLimited,
)
from plugins.salesforce.client import STATE_REFRESH_TOKEN, QueryRefused, default_audience
from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.simulator import SalesforceSimulator
from tests.connectorkit import build, pull_counted
from tests.enginekit import sync_engine
from tests.hubkit import log_rows
from tests.instancekit import contact_fields, load_written


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(seed=7, clock=clock) as simulator:
        yield simulator


def connect(
    sim: SalesforceSimulator,
    clock: FakeClock,
    context: ConnectorContext | None = None,
    **settings: Any,
) -> SalesforceConnector:
    defaults = {
        "login_url": sim.url,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "bulk_pull_threshold": 0,
        "bulk_push_threshold": 0,
    }
    return build(SalesforceConnector, defaults, settings, context or ConnectorContext("sf"), clock)


def seed(sim: SalesforceSimulator, count: int, start: int = 0, **extra: Any) -> list[str]:
    return [
        sim.add_contact(FirstName=f"F{i}", LastName="L", Email=f"c{i}@example.org", **extra)
        for i in range(start, start + count)
    ]


def items(count: int, start: int = 0, **extra: Any) -> list[PushItem]:
    return [
        PushItem(f"hub-{i}", None, {"LastName": f"Hub{i}", "Email": f"h{i}@example.org", **extra})
        for i in range(start, start + count)
    ]


# --- pull -------------------------------------------------------------------------------------


def test_pull_pages_by_keyset_through_one_shared_modstamp(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    """Many records stamped alike (a bulk update) are read once each across chunk restarts:
    the ``(SystemModstamp, Id)`` keyset neither loops nor skips."""
    ids = seed(sim, 23)
    sim.share_modstamp(ids)
    connector = connect(sim, clock, query_chunk=5)
    records, cursor, pages = pull_counted(connector, None)
    assert [r.remote_id for r in records] == ids
    assert pages >= 5  # five keyset queries of five rows, then one short one
    assert records[0].fields == {
        "FirstName": "F0",
        "LastName": "L",
        "Email": "c0@example.org",
        "Phone": None,
    }
    assert records[0].modified_at is not None and records[0].modified_at.tzinfo is not None
    position = json.loads(cursor)
    assert position["id"] == ids[-1]
    again, _, _ = pull_counted(connector, cursor)
    assert again == []  # the overlap re-reads them, the seen map drops them


def test_incremental_pull_follows_next_records_url(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    """A query of more rows than a page holds is followed through ``nextRecordsUrl``."""
    sim.query_batch_size = 200
    ids = seed(sim, 450)
    connector = connect(sim, clock)
    records, cursor, pages = pull_counted(connector, None)
    assert len(records) == 450 and pages == 3
    assert sim.counters["query_more"] == 2
    clock.advance(10)
    sim.edit_record(ids[3], FirstName="Changed")
    again, _, _ = pull_counted(connector, cursor)
    assert [(r.remote_id, r.fields["FirstName"]) for r in again] == [(ids[3], "Changed")]


def test_late_commit_behind_the_cursor_is_caught_by_the_overlap(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 3)
    connector = connect(sim, clock, overlap_seconds=120)
    _, cursor, _ = pull_counted(connector, None)
    clock.advance(60)
    sim.edit_record(ids[0], FirstName="Now")  # moves the cursor to now
    _, cursor, _ = pull_counted(connector, cursor)
    sim.late_commit_seconds = 30  # a transaction that began 30 s ago commits now
    sim.edit_record(ids[1], FirstName="Late")
    late_stamp = sim.record(ids[1])["SystemModstamp"]
    assert late_stamp < sim.record(ids[0])["SystemModstamp"]
    got, cursor, _ = pull_counted(connector, cursor)
    assert [(r.remote_id, r.fields["FirstName"]) for r in got] == [(ids[1], "Late")]
    got, _, _ = pull_counted(connector, cursor)
    assert got == []


def test_without_overlap_the_keyset_alone_bounds_the_query(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 4)
    sim.share_modstamp(ids)
    connector = connect(sim, clock, overlap_seconds=0, query_chunk=2)
    _, cursor, _ = pull_counted(connector, None)
    clock.advance(1)
    sim.edit_record(ids[2], Phone="+16175550100")
    got, _, _ = pull_counted(connector, cursor)
    assert [r.remote_id for r in got] == [ids[2]]


def test_deletes_arrive_through_query_all_as_tombstones(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 3)
    connector = connect(sim, clock)
    first, cursor, _ = pull_counted(connector, None)
    assert not any(r.deleted for r in first)
    clock.advance(5)
    sim.delete_record(ids[1])
    got, _, _ = pull_counted(connector, cursor)
    assert [(r.remote_id, r.deleted, dict(r.fields)) for r in got] == [(ids[1], True, {})]


def test_soql_filter_chooses_what_syncs_and_a_bad_one_is_a_config_error(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    seed(sim, 2, Title="Student")
    wanted = seed(sim, 2, start=2, Title="Alumnus")
    connector = connect(sim, clock, soql_filter="Title = 'Alumnus'")
    records, _, _ = pull_counted(connector, None)
    assert [r.remote_id for r in records] == wanted
    broken = connect(sim, clock, soql_filter="Nickname__c = 'x'")
    with pytest.raises(QueryRefused) as caught:
        pull_counted(broken, None)
    assert caught.value.code == Code.CONFIG_INVALID
    assert "INVALID_FIELD" in caught.value.message


def test_leads_are_synced_with_their_own_required_company(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    sim.add_record("Lead", LastName="Lee", Company="Acme")
    connector = connect(sim, clock, object="Lead", fields=["LastName", "Company"])
    records, _, _ = pull_counted(connector, None)
    assert [dict(r.fields) for r in records] == [{"LastName": "Lee", "Company": "Acme"}]
    required = {f.name for f in connector.describe() if f.required}
    assert required == {"LastName", "Company"}
    results = connector.push([PushItem("hub-1", None, {"LastName": "NoCompany"})])
    assert results[0].status is PushStatus.REJECTED
    assert results[0].code == Code.MISSING_REMOTE_REQUIRED_FIELD
    assert "Company" in results[0].message


def test_describe_marks_required_read_only_and_external_id_fields(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    fields = {f.name: f for f in connect(sim, clock).describe()}
    assert fields["LastName"].required and not fields["FirstName"].required
    assert fields["SystemModstamp"].read_only and fields["Id"].read_only
    assert fields["Mainstay_ID__c"].unique and not fields["Mainstay_ID__c"].read_only
    assert fields["Class_Year__c"].type == "double"


# --- push -------------------------------------------------------------------------------------


def test_push_upserts_by_hub_id_so_a_retry_never_duplicates(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock)
    batch = items(3)
    first = connector.push(batch)
    assert [r.status for r in first] == [PushStatus.OK] * 3
    again = connector.push(batch)  # as after a timeout whose answer was lost
    assert [r.remote_id for r in again] == [r.remote_id for r in first]
    assert len(sim.find()) == 3
    assert sim.record(first[0].remote_id or "")["Mainstay_ID__c"] == "hub-0"


def test_push_updates_linked_records_by_id_and_writes_the_hub_id_back(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    [remote] = seed(sim, 1)
    connector = connect(sim, clock)
    results = connector.push([PushItem("hub-9", remote, {"FirstName": "New", "Phone": None})])
    assert results[0].status is PushStatus.OK and results[0].remote_id == remote
    stored = sim.record(remote)
    assert stored["FirstName"] == "New" and stored["Phone"] is None
    assert stored["Mainstay_ID__c"] == "hub-9"  # linked from a pull; now keyed by the hub id


def test_per_record_errors_carry_salesforces_message(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    [remote] = seed(sim, 1)
    sim.delete_record(remote)
    connector = connect(sim, clock)
    batch = [
        *items(1),
        PushItem("hub-bad", None, {"LastName": "X", "Email": "not-an-email"}),
        PushItem("hub-none", None, {"FirstName": "No last name"}),
        PushItem("hub-gone", remote, {"FirstName": "Y"}),
    ]
    results = {r.contact_id: r for r in connector.push(batch)}
    assert results["hub-0"].status is PushStatus.OK
    bad = results["hub-bad"]
    assert bad.status is PushStatus.REJECTED and bad.code == Code.INVALID_EMAIL
    assert bad.message == "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email"
    assert results["hub-none"].code == Code.MISSING_REMOTE_REQUIRED_FIELD
    assert "Required fields are missing: [LastName]" in results["hub-none"].message
    assert results["hub-gone"].status is PushStatus.REJECTED
    assert "ENTITY_IS_DELETED" in results["hub-gone"].message


def test_push_sends_at_most_200_records_a_request(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock)
    before = sim.counters["collections"]
    results = connector.push(items(450))
    assert all(r.status is PushStatus.OK for r in results)
    assert sim.counters["collections"] - before == 3


def test_a_duplicate_hub_id_on_another_record_is_a_duplicate_key(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    first, second = seed(sim, 2)
    connector = connect(sim, clock)
    assert connector.push([PushItem("hub-1", first, {"FirstName": "A"})])[0].status == "ok"
    clash = connector.push([PushItem("hub-1", second, {"FirstName": "B"})])[0]
    assert clash.status is PushStatus.REJECTED and clash.code == Code.DUPLICATE_REMOTE_KEY


# --- limits and sessions ----------------------------------------------------------------------


def test_the_cycle_stops_above_the_share_of_the_daily_allowance(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    sim.daily_limit = 10
    sim.query_batch_size = 200
    seed(sim, 1400)  # seven pages
    connector = connect(sim, clock, daily_share=0.5, limit_backoff_seconds=900)
    with pytest.raises(RateLimited) as caught:
        pull_counted(connector, None)
    assert caught.value.retry_after == 900
    assert sim.api_usage() == 5  # stopped at the share, leaving the rest to others
    assert sim.counters["limit_refused"] == 0


def test_request_limit_exceeded_is_never_retried(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    seed(sim, 3)
    sim.daily_limit = 0  # another integration spent the org's allowance
    connector = connect(sim, clock, limit_backoff_seconds=1800)
    with pytest.raises(RateLimited) as caught:
        pull_counted(connector, None)
    assert caught.value.retry_after == 1800
    assert "REQUEST_LIMIT_EXCEEDED" in caught.value.message
    assert sim.counters["limit_refused"] == 1
    with pytest.raises(RateLimited):
        connector.push(items(1))  # the quota remembers: no further call is even sent
    assert sim.counters["limit_refused"] == 1


def test_an_expired_session_is_renewed_and_the_request_replayed(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    sim.query_batch_size = 200
    seed(sim, 450)
    connector = connect(sim, clock)
    pages = connector.pull(None)
    first = next(pages)
    sim.expire_sessions()  # mid-query: the next nextRecordsUrl call gets a 401
    rest = [r for page in pages for r in page.records]
    assert len(first.records) + len(rest) == 450
    assert sim.counters["invalid_session"] == 1 and sim.counters["token_grants"] == 2
    sim.expire_sessions()
    assert connector.push(items(1))[0].status is PushStatus.OK


def test_refresh_tokens_rotate_and_the_newest_is_kept(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    sim.rotate_refresh_tokens = True
    original = sim.refresh_token
    context = ConnectorContext("sf")
    connector = connect(
        sim, clock, context, client_secret=sim.client_secret, refresh_token=original
    )
    assert connector.settings.auth == "refresh_token"
    connector.check()
    assert context.state[STATE_REFRESH_TOKEN] == sim.refresh_token != original
    sim.expire_sessions()
    # A restart with the old token in config uses the rotated one from the state.
    again = connect(sim, clock, context, refresh_token=original)
    again.check()
    assert sim.counters["token_grants"] == 2


def test_jwt_bearer_signs_an_assertion_and_a_wrong_user_is_refused(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    seed(sim, 2)
    settings = {"client_secret": None, "username": sim.username}
    connector = connect(sim, clock, private_key=sim.private_key_pem, **settings)
    assert connector.settings.auth == "jwt"
    records, _, _ = pull_counted(connector, None)
    assert len(records) == 2
    settings["username"] = "intruder@example.org"
    stranger = connect(sim, clock, private_key=sim.private_key_pem, **settings)
    with pytest.raises(AuthFailed, match="hasn't approved"):
        stranger.check()


def test_jwt_audience_is_the_login_host_even_for_my_domain() -> None:
    assert default_audience("https://acme.my.salesforce.com") == "https://login.salesforce.com"
    sandbox = "https://acme--uat.sandbox.my.salesforce.com"
    assert default_audience(sandbox) == "https://test.salesforce.com"
    assert default_audience("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_config_refuses_a_grant_without_its_secrets(sim: SalesforceSimulator) -> None:
    with pytest.raises(ValueError, match="needs client_secret"):
        SalesforceConnector.Config.model_validate({"client_id": "x", "auth": "refresh_token"})
    # The refresh token may come from `contactsync auth` (the hub's state) instead; with
    # neither, the connector is config-invalid before it asks Salesforce anything.
    config = SalesforceConnector.Config.model_validate(
        {"login_url": sim.url, "client_id": "x", "client_secret": "y", "auth": "refresh_token"}
    )
    with pytest.raises(NotSignedIn, match="contactsync auth sf") as refused:
        SalesforceConnector(config, ConnectorContext("sf"))
    assert refused.value.code is Code.CONFIG_INVALID
    assert sim.counters["token_grants"] == 0
    with pytest.raises(ValueError, match="My Domain"):
        SalesforceConnector.Config.model_validate({"client_id": "x", "client_secret": "y"})


# --- Bulk API 2.0 -----------------------------------------------------------------------------


def test_a_big_first_pull_is_a_bulk_query_read_page_by_page(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 25)
    sim.bulk_poll_steps = 2
    connector = connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10)
    pages = list(connector.pull(None))
    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert sorted(r.remote_id for p in pages for r in p.records) == ids
    assert pages[0].records[0].fields["Phone"] is None  # an empty CSV cell is null
    assert sim.counters["bulk_jobs"] == 1 and sim.jobs == {}  # the job is removed after
    assert clock.sleeps  # it polled the job while Salesforce ran it
    assert "job" not in json.loads(pages[-1].cursor or "{}")
    clock.advance(5)
    sim.edit_record(ids[4], FirstName="After")
    got, _, _ = pull_counted(connector, pages[-1].cursor)
    assert [r.remote_id for r in got] == [ids[4]]


def test_a_bulk_pull_resumes_its_job_from_the_checkpointed_locator(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 25)
    connector = connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10)
    first = next(iter(connector.pull(None)))
    assert json.loads(first.cursor or "{}")["job"]
    rest = list(connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10).pull(first.cursor))
    assert sim.counters["bulk_jobs"] == 1
    got = [r.remote_id for r in first.records] + [r.remote_id for p in rest for r in p.records]
    assert sorted(got) == ids


def test_a_results_page_is_handed_on_in_smaller_pages_and_resumed_inside(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 25)
    connector = connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10)
    connector.bulk_rows_per_page = 4
    pages = list(connector.pull(None))
    assert [len(p.records) for p in pages] == [4, 4, 2, 4, 4, 2, 4, 1]
    # A pull stopped after its second page resumes inside the same results page.
    stopped = connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10)
    stopped.bulk_rows_per_page = 4
    pull = stopped.pull(None)
    first_two = [next(pull), next(pull)]
    pull.close()
    cursor = json.loads(first_two[1].cursor or "{}")
    assert cursor["job"] and cursor["skip"] == 8 and cursor["locator"] is None
    resumed = connect(sim, clock, bulk_pull_threshold=20, bulk_page_size=10)
    rest = [r.remote_id for p in resumed.pull(first_two[1].cursor) for r in p.records]
    done = [r.remote_id for p in first_two for r in p.records]
    assert sorted(done + rest) == ids
    assert sim.counters["bulk_jobs"] == 2  # the resumed pull made no job of its own


def test_a_big_initial_push_is_one_bulk_upsert_job(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock, bulk_push_threshold=50)
    batch = [*items(59), PushItem("hub-bad", None, {"LastName": "Bad", "Email": "nope"})]
    results = {r.contact_id: r for r in connector.push(batch)}
    assert sim.counters["bulk_jobs"] == 1 and sim.counters["collections"] == 0
    assert sum(r.status is PushStatus.OK for r in results.values()) == 59
    bad = results["hub-bad"]
    assert bad.status is PushStatus.REJECTED and bad.code == Code.INVALID_EMAIL
    assert "invalid email address" in bad.message
    again = {r.contact_id: r for r in connector.push(batch[:59])}
    assert again["hub-3"].remote_id == results["hub-3"].remote_id
    assert len(sim.find()) == 59  # upserted by the hub id: no duplicates


# --- through the engine -----------------------------------------------------------------------


def engine_instance(
    sim: SalesforceSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Instance:
    """An instance file on ``sim`` (client credentials, the secret by reference), loaded."""
    monkeypatch.setenv("SF_TEST_SECRET", sim.client_secret)
    text = (
        'type = "salesforce"\n[settings]\n'
        f'login_url = "{sim.url}"\nclient_id = "{sim.client_id}"\n'
        'client_secret = { env = "SF_TEST_SECRET" }\n'
        + contact_fields("FirstName", "LastName", "Email", "Phone")
    )
    return load_written(tmp_path / "instances", "sf", text, {"salesforce": SalesforceConnector})


def test_through_the_engine_a_delete_is_read_before_the_write_and_tombstoned(
    sim: SalesforceSimulator,
    clock: FakeClock,
    cs_hub: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record deleted in Salesforce before a hub edit is pushed: the push's read before
    writing sees it deleted, so nothing is written to it (no ENTITY_IS_DELETED refusal) and
    it leaves a tombstone the push never writes to again."""
    ada = sim.add_contact(
        FirstName="Ada", LastName="Lovelace", Email="ada@example.org", Phone="+12025550143"
    )
    alan = sim.add_contact(
        FirstName="Alan", LastName="Turing", Email="alan@example.org", Phone="+16175550199"
    )
    instance = engine_instance(sim, tmp_path, monkeypatch)
    sync = sync_engine(cs_hub, instance)
    first = sync.run(instance, "pull", full=True)
    assert first.counts.get("created") == 2, [r["message"] for r in log_rows(cs_hub)]

    with cs_hub.connect() as conn:
        table = Contact.__table__
        hub_ids = {r.email: r.id for r in conn.execute(select(table.c.email, table.c.id))}

    sim.delete_record(ada)  # deleted in Salesforce before the hub's edit is pushed
    save_contact(cs_hub, {"first_name": "Augusta"}, contact_id=hub_ids["ada@example.org"])
    save_contact(cs_hub, {"first_name": "Alonzo"}, contact_id=hub_ids["alan@example.org"])
    report = sync.run(instance, "push")
    assert sim.record(alan)["FirstName"] == "Alonzo"
    assert sim.record(alan)["Mainstay_ID__c"] == hub_ids["alan@example.org"]
    assert report.counts.get("tombstoned") is None and report.counts.get("updated") == 1
    assert log_rows(cs_hub, report.run_id) == []

    clock.advance(5)
    assert not sync.run(instance, "pull").counts.get("tombstoned")  # the push saw it first
    before = sim.counters["collections"]
    save_contact(cs_hub, {"first_name": "Ada"}, contact_id=hub_ids["ada@example.org"])
    sync.run(instance, "push")
    assert sim.counters["collections"] == before  # the tombstone keeps the push away


def test_records_linked_by_a_pull_get_the_hub_id_without_a_hub_edit(
    sim: SalesforceSimulator,
    clock: FakeClock,
    cs_hub: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [
        sim.add_contact(
            FirstName=f"F{i}", LastName="L", Email=f"c{i}@example.org", Phone=f"+1202555014{i}"
        )
        for i in range(3)
    ]
    instance = engine_instance(sim, tmp_path, monkeypatch)
    sync = sync_engine(cs_hub, instance)
    assert sync.run(instance, "pull", full=True).counts.get("created") == 3
    assert sync.run(instance, "push").outcome == "ok"
    with cs_hub.connect() as conn:
        hub_ids = set(conn.execute(select(Contact.__table__.c.id)).scalars())
    assert {sim.record(i)["Mainstay_ID__c"] for i in ids} == hub_ids
    before = sim.counters["collections"]
    sync.run(instance, "push")
    assert sim.counters["collections"] == before  # written once


def test_a_broken_row_is_reported_and_skipped_and_the_pull_goes_on(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 4)
    reports: list[tuple] = []
    context = ConnectorContext("sf", reporter=lambda *report: reports.append(report))
    connector = connect(sim, clock, context)
    real_query = connector.client.query

    def query_with_a_broken_row(soql: str, **kwargs: Any):
        for n, rows in enumerate(real_query(soql, **kwargs)):
            # A row as a broken proxy or a partial answer might carry it: no SystemModstamp.
            yield [{"Id": "003BROKEN", "FirstName": "X"}, *rows] if n == 0 else rows

    connector.client.query = query_with_a_broken_row  # type: ignore[method-assign]
    records, _, _ = pull_counted(connector, None)
    assert sorted(r.remote_id for r in records) == sorted(ids)
    assert [(code, details) for code, _, details in reports] == [
        (Code.REMOTE_MALFORMED, {"remote_id": "003BROKEN"})
    ]
