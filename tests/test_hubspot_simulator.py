"""The HubSpot simulator over real HTTP on loopback: its wire protocol and its rules.

Every window (rate limits, token expiry, indexing lag) runs on a FakeClock, so no test waits
and none asserts on wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from plugins.hubspot.simulator import HubSpotSimulator

BASE = "/crm/v3/objects/contacts"


@contextmanager
def _serve(clock: FakeClock, **knobs: Any) -> Iterator[tuple[HubSpotSimulator, httpx.Client]]:
    sim = HubSpotSimulator(clock=clock, **knobs)
    sim.start()
    headers = {"Authorization": f"Bearer {sim.private_app_token}"}
    try:
        with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as client:
            yield sim, client
    finally:
        sim.stop()


@pytest.fixture
def hub(clock: FakeClock) -> Iterator[tuple[HubSpotSimulator, httpx.Client]]:
    # A high limit: tests of other rules must never trip the rate limiter by accident.
    with _serve(clock, contacts=25, rate_limit_per_10s=10_000, search_rate_per_s=1000) as pair:
        yield pair


def _search(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(f"{BASE}/search", json=body)


def _assert_hubspot_error(response: httpx.Response, status: int, category: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == category
    assert body["message"] and body["correlationId"]
    return body


# --- auth ---------------------------------------------------------------------------------


def test_describe_gives_the_credentials(hub) -> None:
    sim, _ = hub
    creds = sim.describe()["credentials"]
    assert set(creds) == {"access_token", "client_id", "client_secret", "refresh_token"}
    assert sim.describe()["name"] == "hubspot"


def test_missing_or_wrong_token_is_a_401(hub) -> None:
    sim, client = hub
    assert client.get(BASE).status_code == 200
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": ""}):
        reply = httpx.get(sim.url + BASE, headers=headers)
        _assert_hubspot_error(reply, 401, "INVALID_AUTHENTICATION")


@pytest.mark.parametrize("path", ["/oauth/v1/token", "/oauth/2026-03/token"])
def test_refresh_grant_expiry_and_rotation(clock: FakeClock, path: str) -> None:
    with _serve(clock, rotate_refresh_tokens=True) as (sim, _):
        creds = sim.credentials()
        form = {
            "grant_type": "refresh_token",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
            "refresh_token": creds["refresh_token"],
        }
        reply = httpx.post(sim.url + path, data=form)
        assert reply.status_code == 200, reply.text
        grant = reply.json()
        assert grant["expires_in"] == 1800 and grant["token_type"] == "bearer"
        assert grant["refresh_token"] != creds["refresh_token"]  # rotated
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        ok = httpx.get(sim.url + BASE, headers=bearer)
        assert ok.status_code == 200
        # OAuth calls carry the burst headers but not the daily ones.
        assert "X-HubSpot-RateLimit-Max" in ok.headers
        assert "X-HubSpot-RateLimit-Daily" not in ok.headers
        clock.advance(1801)
        _assert_hubspot_error(
            httpx.get(sim.url + BASE, headers=bearer), 401, "EXPIRED_AUTHENTICATION"
        )
        # The spent refresh token is refused; the rotated one works.
        stale = httpx.post(sim.url + path, data=form)
        assert stale.status_code == 400
        assert stale.json()["status"] == "BAD_REFRESH_TOKEN"
        assert stale.json()["error"] == "invalid_grant"
        fresh = httpx.post(sim.url + path, data={**form, "refresh_token": grant["refresh_token"]})
        assert fresh.status_code == 200
        assert sim.credentials()["refresh_token"] == fresh.json()["refresh_token"]


def test_refresh_without_rotation_keeps_the_refresh_token(clock: FakeClock) -> None:
    with _serve(clock) as (sim, _):
        creds = sim.credentials()
        form = {
            "grant_type": "refresh_token",
            **{k: creds[k] for k in creds if k != "access_token"},
        }
        first = httpx.post(sim.url + "/oauth/v1/token", data=form).json()
        second = httpx.post(sim.url + "/oauth/v1/token", data=form).json()
        assert first["refresh_token"] == second["refresh_token"] == creds["refresh_token"]
        assert first["access_token"] != second["access_token"]
        bad = httpx.post(sim.url + "/oauth/v1/token", data={**form, "client_secret": "x"})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"


# --- reads --------------------------------------------------------------------------------


def test_list_pages_with_after_and_shows_archived(hub) -> None:
    sim, client = hub
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        page = client.get(BASE, params=params).json()
        seen += [r["id"] for r in page["results"]]
        if "paging" not in page:
            break
        params["after"] = page["paging"]["next"]["after"]
    assert len(seen) == 25 == len(set(seen))
    assert all(s.isdigit() for s in seen)
    record = client.get(BASE, params={"limit": 1}).json()["results"][0]
    assert set(record["properties"]) >= {"email", "firstname", "lastname", "hs_object_id"}
    assert record["createdAt"].endswith("Z") and len(record["createdAt"]) == 24
    assert record["properties"]["lastmodifieddate"] == record["updatedAt"]
    sim.delete_contact(seen[0])
    archived = client.get(BASE, params={"archived": "true"}).json()["results"]
    assert [r["id"] for r in archived] == [seen[0]]
    assert archived[0]["archived"] is True and archived[0]["archivedAt"]
    assert seen[0] not in [
        r["id"] for r in client.get(BASE, params={"limit": 100}).json()["results"]
    ]
    assert client.get(BASE, params={"limit": 101}).status_code == 400


def test_seeded_phones_are_valid_us_numbers(hub) -> None:
    phonenumbers = pytest.importorskip("phonenumbers")
    sim, _ = hub
    for record in sim.records.values():
        number = phonenumbers.parse(record["properties"]["phone"], "US")
        assert phonenumbers.is_valid_number(number), record["properties"]["phone"]


def test_search_filters_sorts_and_pages(hub, clock: FakeClock) -> None:
    sim, client = hub
    clock.advance(60)
    edited = sorted(sim.records)[3:6]
    for contact_id in edited:
        sim.edit_contact(contact_id, company="Analytical Engines")
    since = str(int((clock.now().timestamp() - 1) * 1000))
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since}]}
        ],
        "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
        "properties": ["company", "lastmodifieddate"],
    }
    found = _search(client, **body).json()
    assert found["total"] == 3
    assert [r["id"] for r in found["results"]] == sorted(edited, key=int, reverse=True)
    assert found["results"][0]["properties"]["company"] == "Analytical Engines"
    # hs_object_id filters, and paging by an offset string.
    flt = {"propertyName": "hs_object_id", "operator": "GT", "value": edited[0]}
    page = _search(client, filterGroups=[{"filters": [flt]}], limit=5).json()
    assert page["paging"]["next"]["after"] == "5"
    assert all(int(r["id"]) > int(edited[0]) for r in page["results"])
    assert len(page["results"]) == 5
    assert _search(client, limit=200).status_code == 200
    _assert_hubspot_error(_search(client, limit=201), 400, "VALIDATION_ERROR")
    two_sorts = _search(client, sorts=["a", "b"])
    assert two_sorts.status_code == 400


def test_search_skips_archived_and_caps_at_10000(clock: FakeClock) -> None:
    with _serve(clock, contacts=10_050, rate_limit_per_10s=10_000) as (sim, client):
        assert sim.search_result_cap == 10_000  # the default
        first = sorted(sim.records, key=int)[0]
        sim.delete_contact(first)
        last_ok = _search(client, limit=200, after="9800").json()
        assert last_ok["total"] == 10_049
        assert last_ok["paging"]["next"]["after"] == "10000"
        clock.advance(1)  # the search rate is per second
        _assert_hubspot_error(_search(client, limit=200, after="10000"), 400, "VALIDATION_ERROR")
        ids = {r["id"] for r in _search(client, limit=200).json()["results"]}
        assert first not in ids


def test_search_has_its_own_rate(clock: FakeClock) -> None:
    with _serve(clock, contacts=3) as (_, client):
        codes = [_search(client).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        limited = _search(client)
        assert limited.json()["policyName"] == "SECONDLY"
        clock.advance(1.0)
        assert _search(client).status_code == 200
        assert client.get(BASE).status_code == 200  # the general limit is not spent


def test_search_index_lags_writes(clock: FakeClock) -> None:
    with _serve(clock, search_rate_per_s=1000, indexing_lag_seconds=30) as (sim, client):
        new_id = client.post(BASE, json={"properties": {"email": "ada@example.org"}}).json()["id"]
        query = {"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "EQ", "value": "ada@example.org"}]}]}  # fmt: skip
        assert _search(client, **query).json()["total"] == 0
        assert client.get(f"{BASE}/{new_id}").status_code == 200  # reads are not lagged
        clock.advance(31)
        assert _search(client, **query).json()["total"] == 1
        sim.edit_contact(new_id, firstname="Ada")
        hit = _search(client, **query, properties=["firstname"]).json()["results"][0]
        assert hit["properties"]["firstname"] is None  # still the indexed version
        clock.advance(31)
        hit = _search(client, **query, properties=["firstname"]).json()["results"][0]
        assert hit["properties"]["firstname"] == "Ada"


def test_shared_lastmodifieddate_knob(clock: FakeClock) -> None:
    with _serve(clock, contacts=30, shared_lastmodified_count=20) as (sim, _):
        stamps = [r["properties"]["lastmodifieddate"] for r in sim.records.values()]
        assert max(stamps.count(s) for s in stamps) == 20


# --- writes -------------------------------------------------------------------------------


def test_batches_refuse_more_than_100_inputs(hub) -> None:
    _, client = hub
    inputs = [{"properties": {"email": f"p{i}@example.org"}} for i in range(101)]
    for kind in ("read", "create", "update", "upsert"):
        reply = client.post(f"{BASE}/batch/{kind}", json={"inputs": inputs})
        _assert_hubspot_error(reply, 400, "VALIDATION_ERROR")


def test_batch_create_201_and_409_on_duplicate_email(hub) -> None:
    sim, client = hub
    taken = next(iter(sim.records.values()))["properties"]["email"]
    created = client.post(
        f"{BASE}/batch/create",
        json={"inputs": [{"properties": {"email": "New@Example.org", "phone": 6175550100}}]},
    )
    assert created.status_code == 201
    result = created.json()["results"][0]
    assert result["properties"]["phone"] == "6175550100"  # values are strings
    assert result["properties"]["email"] == "new@example.org"
    before = len(sim.records)
    clash = client.post(
        f"{BASE}/batch/create",
        json={
            "inputs": [{"properties": {"email": "x@example.org"}}, {"properties": {"email": taken}}]
        },
    )
    body = _assert_hubspot_error(clash, 409, "CONFLICT")
    assert "Existing ID" in body["message"]
    assert len(sim.records) == before  # the batch failed as a whole
    single = client.post(BASE, json={"properties": {"email": taken.upper()}})
    _assert_hubspot_error(single, 409, "CONFLICT")


def test_batch_create_with_trace_ids_answers_207(hub) -> None:
    sim, client = hub
    taken = next(iter(sim.records.values()))["properties"]["email"]
    reply = client.post(
        f"{BASE}/batch/create",
        json={
            "inputs": [
                {"properties": {"email": "ok@example.org"}, "objectWriteTraceId": "t1"},
                {"properties": {"email": taken}, "objectWriteTraceId": "t2"},
            ]
        },
    )
    assert reply.status_code == 207
    body = reply.json()
    assert body["numErrors"] == 1 and len(body["results"]) == 1
    assert body["errors"][0]["category"] == "CONFLICT"
    assert body["errors"][0]["context"] == {"objectWriteTraceId": ["t2"]}


def test_batch_update_207_and_empty_string_clears(hub) -> None:
    sim, client = hub
    target = sorted(sim.records, key=int)[0]
    reply = client.post(
        f"{BASE}/batch/update",
        json={
            "inputs": [
                {"id": target, "properties": {"phone": "", "firstname": "Grace"}},
                {"id": "999999", "properties": {"firstname": "Nobody"}},
                {"id": target, "properties": {"nosuch": "x"}},
            ]
        },
    )
    assert reply.status_code == 207, reply.text
    body = reply.json()
    assert body["numErrors"] == 2
    categories = sorted(e["category"] for e in body["errors"])
    assert categories == ["OBJECT_NOT_FOUND", "VALIDATION_ERROR"]
    assert any(
        err.get("errors", [{}])[0].get("code") == "PROPERTY_DOESNT_EXIST" for err in body["errors"]
    )
    got = client.get(f"{BASE}/{target}", params={"properties": "phone,firstname"}).json()
    # what was asked for, plus the three properties HubSpot always returns
    assert got["properties"] == {
        "phone": None,
        "firstname": "Grace",
        "hs_object_id": target,
        "createdate": got["createdAt"],
        "lastmodifieddate": got["updatedAt"],
    }
    ok = client.post(
        f"{BASE}/batch/update",
        json={"inputs": [{"id": target, "properties": {"lastname": "Hopper"}}]},
    )
    assert ok.status_code == 200 and "errors" not in ok.json()
    read_only = client.patch(f"{BASE}/{target}", json={"properties": {"hs_object_id": "1"}})
    assert read_only.status_code == 400


def test_batch_upsert_and_read_by_email(hub) -> None:
    sim, client = hub
    existing = sorted(sim.records, key=int)[0]
    email = sim.records[existing]["properties"]["email"]
    reply = client.post(
        f"{BASE}/batch/upsert",
        json={
            "inputs": [
                {"idProperty": "email", "id": email, "properties": {"firstname": "Radia"}},
                {"idProperty": "email", "id": "fresh@example.org", "properties": {"lastname": "X"}},
            ]
        },
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["new"] for r in results] == [False, True]
    assert results[0]["id"] == existing
    read = client.post(
        f"{BASE}/batch/read",
        json={
            "idProperty": "email",
            "properties": ["firstname"],
            "inputs": [{"id": email}, {"id": "ghost@example.org"}],
        },
    )
    assert read.status_code == 207
    body = read.json()
    assert body["results"][0]["properties"]["firstname"] == "Radia"
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"] == {"ids": ["ghost@example.org"]}
    all_there = client.post(f"{BASE}/batch/read", json={"inputs": [{"id": existing}]})
    assert all_there.status_code == 200


def test_merge_lists_merged_ids(hub) -> None:
    sim, client = hub
    a, b, c = sorted(sim.records, key=int)[:3]
    sim.edit_contact(a, phone="")
    assert sim.merge(a, b) == a
    reply = client.post(f"{BASE}/merge", json={"primaryObjectId": a, "objectIdToMerge": c})
    assert reply.status_code == 200
    survivor = client.get(f"{BASE}/{a}", params={"properties": "hs_merged_object_ids,phone"})
    props = survivor.json()["properties"]
    assert props["hs_merged_object_ids"].split(";") == [b, c]
    assert props["phone"]  # filled from the merged record
    # A merged-away id reads as its survivor.
    assert client.get(f"{BASE}/{b}").json()["id"] == a


# --- properties, limits, reset --------------------------------------------------------------


def test_properties_api_with_custom_property(hub) -> None:
    sim, client = hub
    names = {p["name"] for p in client.get("/crm/v3/properties/contacts").json()["results"]}
    assert names >= {"firstname", "lastname", "email", "phone", "mobilephone", "hs_object_id",
                     "lastmodifieddate", "createdate"}  # fmt: skip
    definition = {
        "name": "external_id",
        "label": "External ID",
        "type": "string",
        "fieldType": "text",
        "groupName": "contactinformation",
        "hasUniqueValue": True,
    }
    created = client.post("/crm/v3/properties/contacts", json=definition)
    assert created.status_code == 201 and created.json()["hubspotDefined"] is False
    again = client.post("/crm/v3/properties/contacts", json=definition)
    _assert_hubspot_error(again, 409, "CONFLICT")
    assert client.get("/crm/v3/properties/contacts/external_id").status_code == 200
    upsert = client.post(
        f"{BASE}/batch/upsert",
        json={"inputs": [{"idProperty": "external_id", "id": "ext-1", "properties": {}}]},
    )
    assert upsert.status_code == 200 and upsert.json()["results"][0]["new"] is True
    assert upsert.json()["results"][0]["properties"]["external_id"] == "ext-1"
    sim.reset()
    assert "external_id" not in sim.catalogue


def test_ten_second_limit_429_with_headers(clock: FakeClock) -> None:
    with _serve(clock, rate_limit_per_10s=3, daily_limit=1000) as (_, client):
        first = client.get(BASE)
        assert first.headers["X-HubSpot-RateLimit-Max"] == "3"
        assert first.headers["X-HubSpot-RateLimit-Remaining"] == "2"
        assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert first.headers["X-HubSpot-RateLimit-Daily"] == "1000"
        assert first.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "999"
        client.get(BASE)
        client.get(BASE)
        limited = client.get(BASE)
        body = _assert_hubspot_error(limited, 429, "RATE_LIMITS")
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["errorType"] == "RATE_LIMIT"
        assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        clock.advance(10)
        assert client.get(BASE).status_code == 200


def test_daily_limit(clock: FakeClock) -> None:
    with _serve(clock, daily_limit=2) as (_, client):
        assert client.get(BASE).status_code == 200
        assert client.get(BASE).status_code == 200
        limited = client.get(BASE)
        assert limited.status_code == 429
        assert limited.json()["policyName"] == "DAILY"
        assert limited.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
        usage = client.get("/account-info/v3/api-usage/daily/private-apps")
        assert usage.status_code == 429
        clock.advance(24 * 3600)
        usage = client.get("/account-info/v3/api-usage/daily/private-apps").json()
        assert usage["results"][0]["usageLimit"] == 2


def test_reset_restores_the_seeded_state(hub) -> None:
    sim, client = hub
    before = client.get("/_sim/state").json()["contacts"]
    client.post(BASE, json={"properties": {"email": "later@example.org"}})
    sim.delete_contact(before[0]["id"])
    assert client.post("/_sim/reset").status_code == 200
    assert client.get("/_sim/state").json()["contacts"] == before


def test_runtime_knobs_and_kit_faults(hub) -> None:
    _, client = hub
    reply = client.post("/_sim/hubspot", json={"rate_limit_per_10s": 190})
    assert reply.json()["knobs"]["rate_limit_per_10s"] == 190
    assert client.post("/_sim/hubspot", json={"bogus": 1}).status_code == 400
    client.post("/_sim/faults", json={"next": "server_error"})
    assert client.get(BASE).status_code == 500
    assert client.get(BASE).status_code == 200


def test_registered_as_a_plugin() -> None:
    from daemon.engine.registry import Registry, get_plugin_manager

    factory = Registry.from_plugin_manager(get_plugin_manager()).simulator("hubspot")
    sim = factory(contacts=2, latency="150ms", error_rate=0.0, seed=7)
    assert isinstance(sim, HubSpotSimulator)
    assert sim.faults.latency == pytest.approx(0.15) and len(sim.records) == 2


def test_knob_options_name_every_constructor_knob() -> None:
    # The kit takes exactly the declared knobs as keywords (simkit.Simulator).
    with pytest.raises(TypeError):
        HubSpotSimulator(bogus_knob=1)
    sim = HubSpotSimulator()
    for knob, (_, default, _) in HubSpotSimulator.knob_options.items():
        assert getattr(sim, knob) == default


def test_simulate_exposes_the_hubspot_knobs_as_flags():
    from click.testing import CliRunner

    from daemon.cli import cli
    from daemon.cli.simulate import _knob_values
    from plugins.hubspot.simulator import HubSpotSimulator

    listed = CliRunner().invoke(cli, ["simulate", "hubspot", "--list-knobs"])
    assert listed.exit_code == 0 and "--rate-limit-per-10s INT" in listed.output
    knobs = HubSpotSimulator.knob_options
    assert _knob_values(
        ["--rate-limit-per-10s", "190", "--rotate-refresh-tokens", "--token-ttl-seconds=60"], knobs
    ) == {"rate_limit_per_10s": 190, "rotate_refresh_tokens": True, "token_ttl_seconds": 60.0}
    bogus = CliRunner().invoke(cli, ["simulate", "hubspot", "--bogus", "1"])
    assert bogus.exit_code == 2


def test_an_id_range_search_answers_as_a_full_search_would(hub, clock: FakeClock) -> None:
    """The keyset shortcut (id bounds, sorted by id) gives what filtering every record does."""
    sim, client = hub
    ids = sorted(int(i) for i in sim.records)
    sim.delete_contact(str(ids[3]))
    low, high = ids[1], ids[-4]

    def found(filters: list[dict], **extra: Any) -> list[int]:
        body = _search(client, filterGroups=[{"filters": filters}], limit=200, **extra).json()
        return [int(r["id"]) for r in body["results"]]

    keyset = [
        {"propertyName": "hs_object_id", "operator": "GT", "value": str(low)},
        {"propertyName": "hs_object_id", "operator": "LTE", "value": str(high)},
    ]
    by_id = [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    # A HAS_PROPERTY filter takes the general path: every record filtered, then sorted.
    general = found([*keyset, {"propertyName": "email", "operator": "HAS_PROPERTY"}], sorts=by_id)
    assert (
        found(keyset, sorts=by_id) == general == [i for i in ids if low < i <= high and i != ids[3]]
    )
    first = _search(client, filterGroups=[{"filters": keyset}], sorts=by_id, limit=5).json()
    assert [int(r["id"]) for r in first["results"]] == general[:5]
    assert first["paging"]["next"]["after"] == "5"
    assert first["total"] >= len(general)


def test_injected_faults_speak_hubspots_error_shape(hub) -> None:
    sim, client = hub
    sim.inject("rate_limit")
    limited = client.get(BASE, params={"limit": 1})
    body = _assert_hubspot_error(limited, 429, "RATE_LIMITS")
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert limited.headers["Retry-After"]
    sim.inject("server_error")
    _assert_hubspot_error(client.get(BASE, params={"limit": 1}), 500, "INTERNAL_ERROR")
