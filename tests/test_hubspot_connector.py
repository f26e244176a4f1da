"""The HubSpot connector's own rules, against the HubSpot simulator over loopback.

Every test shares one fake clock between the simulator and the connector, so HubSpot's
windows, token lifetimes and the connector's pacing agree and no wait is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.sdk import ConnectorContext, PushItem, PushStatus, RateLimited, RemoteRecord
from plugins.hubspot.client import STATE_REFRESH_TOKEN
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from tests.connectorkit import build, pull_all


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(seed=7, clock=clock) as simulator:
        yield simulator


def connect(
    sim: HubSpotSimulator,
    clock: FakeClock,
    context: ConnectorContext | None = None,
    **settings: Any,
) -> HubSpotConnector:
    defaults = {"base_url": sim.url, "access_token": sim.private_app_token}
    return build(HubSpotConnector, defaults, settings, context or ConnectorContext("hs"), clock)


def seed(sim: HubSpotSimulator, count: int, start: int = 0) -> list[str]:
    return [
        sim.add_contact(firstname=f"F{i}", lastname="L", email=f"c{i}@example.org")
        for i in range(start, start + count)
    ]


def oauth(sim: HubSpotSimulator, refresh_token: str | None = None) -> dict[str, Any]:
    """Settings for the OAuth flavour: no private-app token, the app's client and a refresh
    token (the simulator's current one unless given)."""
    return {
        "access_token": None,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "refresh_token": refresh_token or sim.refresh_token,
    }


# --- pull -------------------------------------------------------------------------------------


def test_first_pull_lists_then_later_pulls_search(sim: HubSpotSimulator, clock: FakeClock) -> None:
    ids = seed(sim, 7)
    connector = connect(sim, clock, page_size=3, pull_concurrency=1)
    records, cursor = pull_all(connector, None)
    assert [r.remote_id for r in records] == ids
    assert sim.counters["search"] == 0  # the first pull lists: no cap, no index lag
    assert json.loads(cursor)["mode"] == "search"
    record = records[0]
    # An unset property comes back null: blank, not absent.
    assert record.fields == {
        "firstname": "F0",
        "lastname": "L",
        "email": "c0@example.org",
        "phone": None,
    }
    assert record.modified_at is not None and record.modified_at.tzinfo is not None

    clock.advance(5)
    sim.edit_contact(ids[2], firstname="Changed")
    again, _ = pull_all(connector, cursor)
    assert [r.remote_id for r in again] == [ids[2]]
    assert again[0].fields["firstname"] == "Changed"
    assert sim.counters["search"] >= 1


def test_first_pull_scans_id_ranges_at_once_and_resumes_each_range(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 25)
    connector = connect(sim, clock, pull_concurrency=3, page_size=4)
    pages = connector.pull(None)
    first = [next(pages) for _ in range(3)]
    pages.close()  # the daemon stopped here: only these pages were committed
    cursor = first[-1].cursor
    assert json.loads(cursor)["mode"] == "scan"
    got = [r.remote_id for page in first for r in page.records]
    resumed = connect(sim, clock, pull_concurrency=3, page_size=4)
    rest, final = pull_all(resumed, cursor)
    got += [r.remote_id for r in rest]
    assert sorted(got, key=int) == ids  # every contact once: none lost, none read twice
    assert json.loads(final)["mode"] == "search"
    assert sim.counters["search"] >= 25 // 4  # keyset searches, not the list


def test_an_edit_during_the_scan_is_caught_by_the_next_pull(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 12)
    connector = connect(sim, clock, pull_concurrency=2, lookback_seconds=0, page_size=2)
    records: list[RemoteRecord] = []
    cursor = None
    for page in connector.pull(None):
        records.extend(page.records)
        cursor = page.cursor
        if len(records) == 2:
            clock.advance(1)
            sim.edit_contact(records[0].remote_id, firstname="Edited mid-scan")
    assert sorted((r.remote_id for r in records), key=int) == ids
    again, _ = pull_all(connector, cursor)
    assert [(r.remote_id, r.fields["firstname"]) for r in again] == [
        (records[0].remote_id, "Edited mid-scan")
    ]


def test_lookback_rereads_but_yields_only_what_is_new(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    """A write the index shows late, with a timestamp before the cursor, is still caught."""
    ids = seed(sim, 3)
    connector = connect(sim, clock, lookback_seconds=120)
    _, cursor = pull_all(connector, None)
    sim.indexing_lag_seconds = 30
    clock.advance(10)
    sim.edit_contact(ids[0], firstname="Late")  # stamped now, searchable 30 s later
    clock.advance(1)
    sim.edit_contact(ids[1], firstname="Early")
    sim.indexing_lag_seconds = 0
    sim.edit_contact(ids[2], firstname="Visible")  # newest: the cursor moves past the others
    got, cursor = pull_all(connector, cursor)
    assert [r.remote_id for r in got] == [ids[2]]
    clock.advance(40)  # the index catches up: ids[0] and ids[1] are older than the cursor
    got, cursor = pull_all(connector, cursor)
    assert sorted(r.remote_id for r in got) == sorted(ids[:2])
    got, _ = pull_all(connector, cursor)
    assert got == []  # re-read in the window, unchanged: not yielded again


def test_an_edit_in_the_same_millisecond_is_not_lost(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 2)
    connector = connect(sim, clock, lookback_seconds=0)
    _, cursor = pull_all(connector, None)
    sim.edit_contact(ids[1], lastname="Same-ms")  # the fake clock has not moved
    got, _ = pull_all(connector, cursor)
    assert [r.remote_id for r in got] == [ids[1]]


def test_search_restarts_before_the_cap(sim: HubSpotSimulator, clock: FakeClock) -> None:
    """Past the 10,000 cap (here 20) the search restarts; nothing is missed or repeated."""
    sim.search_result_cap = 20
    connector = connect(sim, clock, page_size=5, lookback_seconds=0)
    connector.search_cap = 20
    seed(sim, 2)
    _, cursor = pull_all(connector, None)
    ids = []
    for i in range(47):
        clock.advance(0.01 * (i % 3))  # some share a timestamp, most do not
        ids += seed(sim, 1, start=100 + i)
    got, cursor = pull_all(connector, cursor)
    assert sorted(r.remote_id for r in got) == sorted(ids)
    assert len(got) == len(ids)
    assert sim.counters["rate_limited"] == 0


def test_more_contacts_than_the_cap_share_one_timestamp(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    """HubSpot's month-end bulk update: the timestamp is paged by hs_object_id."""
    sim.search_result_cap = 20
    connector = connect(sim, clock, page_size=5, lookback_seconds=0)
    connector.search_cap = 20
    ids = seed(sim, 3)
    _, cursor = pull_all(connector, None)
    ids += seed(sim, 60, start=10)
    clock.advance(1)
    sim.share_lastmodified(ids)  # 63 contacts, one lastmodifieddate, cap 20
    got, cursor = pull_all(connector, cursor)
    assert sorted(int(r.remote_id) for r in got) == sorted(int(i) for i in ids)
    assert len(got) == len(ids)
    assert pull_all(connector, cursor)[0] == []


def test_a_resumed_pull_continues_a_sweep(sim: HubSpotSimulator, clock: FakeClock) -> None:
    sim.search_result_cap = 10
    connector = connect(sim, clock, page_size=5, lookback_seconds=0)
    connector.search_cap = 10
    _, cursor = pull_all(connector, None)
    ids = seed(sim, 30)
    sim.share_lastmodified(ids)
    seen: list[str] = []
    pages = connector.pull(cursor)
    for _ in range(4):  # stop mid-way, as a crash would, and resume from the checkpoint
        page = next(pages)
        seen += [r.remote_id for r in page.records]
        cursor = page.cursor or cursor
    resumed = connect(sim, clock, page_size=5, lookback_seconds=0)
    resumed.search_cap = 10
    rest, _ = pull_all(resumed, cursor)
    assert sorted(set(seen + [r.remote_id for r in rest]), key=int) == ids


# --- deletes and merges -------------------------------------------------------------------------


def test_scan_deletes_yields_tombstones_on_its_own(sim: HubSpotSimulator, clock: FakeClock) -> None:
    ids = seed(sim, 4)
    connector = connect(sim, clock)
    _, cursor = pull_all(connector, None)
    clock.advance(5)
    sim.delete_contact(ids[1])
    assert pull_all(connector, cursor)[0] == []  # search never shows deletes
    pages = list(connector.scan_deletes(None))
    tombstones = [r for p in pages for r in p.records]
    assert [(r.remote_id, r.deleted) for r in tombstones] == [(ids[1], True)]
    scan_cursor = pages[-1].cursor
    assert scan_cursor is not None
    assert [r for p in connector.scan_deletes(scan_cursor) for r in p.records] == []
    clock.advance(5)
    sim.delete_contact(ids[2])
    again = [r.remote_id for p in connector.scan_deletes(scan_cursor) for r in p.records]
    assert again == [ids[2]]


def test_a_merge_shows_and_resolves_to_the_survivor(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 3)
    connector = connect(sim, clock)
    _, cursor = pull_all(connector, None)
    clock.advance(5)
    survivor = sim.merge(ids[0], ids[1])
    got, _ = pull_all(connector, cursor)
    assert [r.remote_id for r in got] == [survivor]
    assert got[0].merged_from == (ids[1],)
    assert connector.resolve_merged([ids[1], ids[2]]) == {ids[1]: survivor}
    # A push to the old id lands on the survivor, and its result names the survivor.
    [result] = connector.push([PushItem("c-1", ids[1], {"lastname": "Merged"})])
    assert (result.status, result.remote_id) == (PushStatus.OK, survivor)


# --- push -------------------------------------------------------------------------------------


def test_linked_update_by_id_and_unlinked_upsert_by_email(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    [existing] = seed(sim, 1)
    connector = connect(sim, clock)
    results = {
        r.contact_id: r
        for r in connector.push(
            [
                PushItem("linked", existing, {"firstname": "Updated", "phone": 6175550100}),
                PushItem("new", None, {"firstname": "New", "email": "new@example.org"}),
                PushItem("same", None, {"firstname": "Upserted", "email": "C0@example.org"}),
            ]
        )
    }
    assert results["linked"].status is PushStatus.OK
    assert results["linked"].remote_id == existing
    assert results["same"].remote_id == existing  # matched by email: no duplicate created
    state = {c["id"]: c["properties"] for c in sim.state()["contacts"]}
    assert state[existing]["firstname"] == "Upserted"
    assert state[existing]["phone"] == "6175550100"  # values go as strings
    new_id = results["new"].remote_id
    assert new_id is not None and state[new_id]["email"] == "new@example.org"


def test_create_without_email_is_missing_required_field(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock)
    [result] = connector.push([PushItem("c", None, {"firstname": "NoEmail"})])
    assert result.status is PushStatus.REJECTED
    assert result.code == Code.MISSING_REMOTE_REQUIRED_FIELD


def test_207_errors_become_rejections_with_hubspots_message(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    ids = seed(sim, 3)
    connector = connect(sim, clock)
    results = {
        r.contact_id: r
        for r in connector.push(
            [
                PushItem("ok", ids[0], {"firstname": "Fine"}),
                PushItem("bad", ids[1], {"email": "not-an-email"}),
                PushItem("taken", ids[2], {"email": "c0@example.org"}),
                PushItem("bad-new", None, {"email": "nope", "firstname": "X"}),
                PushItem("good-new", None, {"email": "fresh@example.org"}),
            ]
        )
    }
    assert results["ok"].status is PushStatus.OK
    assert results["good-new"].status is PushStatus.OK
    assert results["bad"].status is PushStatus.REJECTED
    assert "Email address not-an-email is invalid" in results["bad"].message
    assert results["taken"].status is PushStatus.REJECTED
    assert "Contact already exists. Existing ID: " + ids[0] in results["taken"].message
    assert results["bad-new"].status is PushStatus.REJECTED
    assert "nope" in results["bad-new"].message


def test_batch_create_409_rejects_only_the_duplicate(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    seed(sim, 1)
    connector = connect(sim, clock, upsert_by_email=False)
    results = {
        r.contact_id: r
        for r in connector.push(
            [
                PushItem("dup", None, {"email": "c0@example.org"}),
                PushItem("fresh", None, {"email": "fresh@example.org"}),
            ]
        )
    }
    assert results["dup"].status is PushStatus.REJECTED
    assert "Contact already exists" in results["dup"].message
    assert results["fresh"].status is PushStatus.OK


def test_more_than_100_items_are_chunked(sim: HubSpotSimulator, clock: FakeClock) -> None:
    connector = connect(sim, clock)
    items = [PushItem(f"c{i}", None, {"email": f"bulk{i}@example.org"}) for i in range(230)]
    results = connector.push(items)
    assert len(results) == 230 and all(r.status is PushStatus.OK for r in results)
    assert len({r.remote_id for r in results}) == 230


def test_server_error_on_push_is_transient(sim: HubSpotSimulator, clock: FakeClock) -> None:
    connector = connect(sim, clock, upsert_by_email=False)
    sim.set_faults(error_rate=1.0)
    [result] = connector.push([PushItem("c", None, {"email": "x@example.org"})])
    assert result.status is PushStatus.TRANSIENT


def test_describe_reads_the_properties_api(sim: HubSpotSimulator, clock: FakeClock) -> None:
    fields = {f.name: f for f in connect(sim, clock).describe()}
    assert fields["email"].required and fields["email"].unique
    assert not fields["firstname"].required and not fields["firstname"].read_only
    for name in ("hs_object_id", "lastmodifieddate", "createdate"):
        assert fields[name].read_only


# --- pacing and quotas --------------------------------------------------------------------------


def test_requests_follow_the_rate_limit_headers(sim: HubSpotSimulator, clock: FakeClock) -> None:
    """The limiter learns HubSpot's figure from the headers and never meets a 429."""
    sim.rate_limit_per_10s = 10
    seed(sim, 60)
    connector = connect(sim, clock, page_size=3, pull_concurrency=1)
    start = clock.monotonic()
    records, _ = pull_all(connector, None)
    assert len(records) == 60
    assert sim.counters["rate_limited"] == 0
    assert clock.monotonic() - start >= 10  # 20 calls at 10 per 10 s take at least 10 s
    assert connector.client.limiter.limit == 10


def test_a_daily_limit_stops_the_cycle_until_the_reset(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    sim.daily_limit = 10
    seed(sim, 40)
    # The list answers carry the daily headers (searches carry none, as on HubSpot).
    connector = connect(sim, clock, page_size=2, daily_share=0.9, pull_concurrency=1)
    with pytest.raises(RateLimited) as raised:
        pull_all(connector, None)
    assert sim.counters["rate_limited"] == 0  # stopped before HubSpot had to refuse
    now = clock.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert raised.value.retry_after == pytest.approx((midnight - now).total_seconds(), abs=1)
    clock.advance(raised.value.retry_after or 0)
    connector.check()  # a new day: the instance resumes


def test_a_daily_429_is_not_retried(sim: HubSpotSimulator, clock: FakeClock) -> None:
    """OAuth calls carry no daily headers: HubSpot's DAILY 429 is the first word of it."""
    sim.daily_limit = 3
    connector = connect(sim, clock, **oauth(sim))
    for _ in range(3):
        connector.check()
    with pytest.raises(RateLimited, match="daily limit") as raised:
        connector.check()
    assert sim.counters["rate_limited"] == 1
    assert (raised.value.retry_after or 0) > 3600


def test_a_ten_secondly_429_is_paced_and_retried(sim: HubSpotSimulator, clock: FakeClock) -> None:
    connector = connect(sim, clock)
    sim.inject("rate_limit")
    connector.check()
    assert clock.sleeps


# --- tokens -------------------------------------------------------------------------------------


def test_oauth_refreshes_ahead_of_expiry_and_keeps_the_rotated_token(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    sim.rotate_refresh_tokens = True
    sim.token_ttl_seconds = 600
    original = sim.refresh_token
    context = ConnectorContext("hs-oauth")
    settings = oauth(sim, original)
    connector = connect(sim, clock, context, **settings)
    connector.check()
    assert sim.counters["token_grants"] == 1
    assert context.state[STATE_REFRESH_TOKEN] == sim.refresh_token != original
    clock.advance(550)  # inside the refresh margin, not yet expired
    connector.check()
    assert sim.counters["token_grants"] == 2  # refreshed before a 401 could happen
    # A restart with the stale refresh token of the config uses the rotated one from state.
    restarted = connect(sim, clock, context, **settings)
    restarted.check()
    assert sim.counters["token_grants"] == 3


def test_a_token_revoked_early_is_replaced_and_the_request_replayed(
    sim: HubSpotSimulator, clock: FakeClock
) -> None:
    connector = connect(sim, clock, **oauth(sim))
    connector.check()
    sim.expire_access_tokens()  # long before the client expected it
    connector.check()  # a 401, then a new token and the same request again
    assert sim.counters["token_grants"] == 2


def test_a_revoked_refresh_token_is_auth_failed(sim: HubSpotSimulator, clock: FakeClock) -> None:
    from daemon.sdk import AuthFailed

    connector = connect(sim, clock, **oauth(sim, "revoked"))
    with pytest.raises(AuthFailed, match="invalid, expired or revoked"):
        connector.check()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_broken_record_is_reported_and_skipped_and_the_pull_goes_on(
    sim: HubSpotSimulator, clock: FakeClock, concurrency: int
) -> None:
    ids = seed(sim, 6)
    broken = ids[2]
    for version in (sim.records[broken], *(s for _, s in sim._index[broken] if s)):
        version["properties"].pop("lastmodifieddate", None)
        version["updatedAt"] = None
    reports: list[tuple[str, str, dict]] = []
    context = ConnectorContext("hs", reporter=lambda *report: reports.append(report))
    connector = connect(sim, clock, context, page_size=2, pull_concurrency=concurrency)
    records, _ = pull_all(connector, None)
    assert sorted((r.remote_id for r in records), key=int) == [i for i in ids if i != broken]
    assert [(code, details) for code, _, details in reports] == [
        ("remote-malformed-response", {"remote_id": broken})
    ]
