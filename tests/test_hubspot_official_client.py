"""The HubSpot simulator driven by hubspot-api-client, HubSpot's own Python client.

Our connector's client was written against the simulator, so the two could agree on a private
dialect. hubspot-api-client is generated from HubSpot's OpenAPI specs: its models must
deserialize what the simulator answers (list and search paging, batch results), and its
``ApiException`` must carry the simulator's error bodies and rate-limit headers. The client's
host is the simulator's loopback URL; nothing else of it is touched. The rate windows run on a
FakeClock, so no test waits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hubspot import Client
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectInputForCreate,
)
from urllib3.util.retry import Retry

from daemon.foundation.clock import FakeClock
from plugins.hubspot.simulator import HubSpotSimulator

CONTACTS = 25
ALWAYS = {"hs_object_id", "createdate", "lastmodifieddate"}


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[HubSpotSimulator]:
    # High limits: only the rate-limit test trips the limiter, and it lowers them itself.
    with HubSpotSimulator(
        contacts=CONTACTS, clock=clock, rate_limit_per_10s=10_000, search_rate_per_s=1000
    ) as simulator:
        yield simulator


@pytest.fixture
def hubspot(sim: HubSpotSimulator) -> Client:
    # Every key of Client.create() is set on the API's Configuration: host is the base URL.
    return Client.create(access_token=sim.private_app_token, host=sim.url)


def raw_search(sim: HubSpotSimulator, body: dict[str, Any]) -> httpx.Response:
    """A search as clients outside the official one send it (a plain JSON body)."""
    return httpx.post(
        f"{sim.url}/crm/v3/objects/contacts/search",
        json=body,
        headers={"Authorization": f"Bearer {sim.private_app_token}"},
    )


# --- list and search paging ---------------------------------------------------------------


def test_list_pages_with_after_and_always_returns_the_three_properties(
    hubspot: Client,
) -> None:
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"limit": 10, "properties": ["email"]}
        if after is not None:
            kwargs["after"] = after
        page = hubspot.crm.contacts.basic_api.get_page(**kwargs)
        pages += 1
        for contact in page.results:
            assert set(contact.properties) == {"email", *ALWAYS}
            assert contact.properties["hs_object_id"] == contact.id
            seen.append(contact.id)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert pages == 3
    assert len(set(seen)) == CONTACTS


def test_search_pages_with_after(hubspot: Client) -> None:
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name="email", operator="HAS_PROPERTY")])
        ],
        sorts=["hs_object_id"],
        properties=["firstname"],
        limit=10,
    )
    seen: list[str] = []
    while True:
        page = hubspot.crm.contacts.search_api.do_search(public_object_search_request=request)
        assert page.total == CONTACTS
        for contact in page.results:
            assert set(contact.properties) == {"firstname", *ALWAYS}
            seen.append(contact.id)
        if page.paging is None:
            break
        request.after = page.paging.next.after
    assert seen == sorted(seen, key=int) and len(set(seen)) == CONTACTS


def test_top_level_filters_are_one_more_and_group(sim: HubSpotSimulator) -> None:
    ids = sorted(sim.records, key=int)
    email = sim.records[ids[3]]["properties"]["email"]
    # alone: exactly the filter's match (the simulator used to ignore it and return everything)
    only = raw_search(
        sim, {"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}
    )
    assert only.status_code == 200, only.text
    assert [r["id"] for r in only.json()["results"]] == [ids[3]]
    # its filters are ANDed with each other …
    none = raw_search(
        sim,
        {
            "filters": [
                {"propertyName": "email", "operator": "EQ", "value": email},
                {"propertyName": "hs_object_id", "operator": "EQ", "value": ids[0]},
            ]
        },
    )
    assert none.json()["total"] == 0
    # … and the group is ORed with filterGroups
    both = raw_search(
        sim,
        {
            "filterGroups": [
                {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": ids[0]}]}
            ],
            "filters": [{"propertyName": "email", "operator": "EQ", "value": email}],
            "sorts": ["hs_object_id"],
        },
    )
    assert [r["id"] for r in both.json()["results"]] == [ids[0], ids[3]]
    # and it counts against the same limits (5 groups, 25 filters)
    many = [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 5
    too_many = raw_search(sim, {"filterGroups": many, "filters": many[0]["filters"]})
    assert too_many.status_code == 400 and too_many.json()["category"] == "VALIDATION_ERROR"


# --- batch writes -------------------------------------------------------------------------


def test_batch_create_then_update(hubspot: Client, sim: HubSpotSimulator) -> None:
    batch = hubspot.crm.contacts.batch_api
    created = batch.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                SimplePublicObjectBatchInputForCreate(
                    properties={"email": f"new{i}@example.org", "firstname": f"New{i}"},
                    associations=[],
                )
                for i in range(3)
            ]
        )
    )
    assert created.status == "COMPLETE" and len(created.results) == 3
    new_ids = sorted(c.id for c in created.results)
    for contact in created.results:
        assert set(contact.properties) >= ALWAYS
    updated = batch.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[
                SimplePublicObjectBatchInput(id=i, properties={"lastname": "Batch"})
                for i in new_ids
            ]
        )
    )
    assert sorted(c.id for c in updated.results) == new_ids
    assert {sim.records[i]["properties"]["lastname"] for i in new_ids} == {"Batch"}


# --- error bodies and rate-limit headers --------------------------------------------------


def test_a_conflict_is_an_api_exception_with_the_simulators_body(
    hubspot: Client, sim: HubSpotSimulator
) -> None:
    taken = next(iter(sim.records.values()))["properties"]["email"]
    with pytest.raises(ApiException) as conflict:
        hubspot.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": taken}, associations=[])
        )
    assert conflict.value.status == 409
    body = json.loads(conflict.value.body)
    assert body["status"] == "error" and body["category"] == "CONFLICT"
    assert body["correlationId"] and "Existing ID" in body["message"]


def test_a_validation_error_is_an_api_exception(hubspot: Client) -> None:
    with pytest.raises(ApiException) as invalid:
        hubspot.crm.contacts.basic_api.get_page(limit=500)
    assert invalid.value.status == 400
    assert json.loads(invalid.value.body)["category"] == "VALIDATION_ERROR"


def test_rate_limit_headers_and_the_429(sim: HubSpotSimulator) -> None:
    # By default urllib3 (under the client) honours a 429's Retry-After by sleeping and
    # retrying, three times: real seconds. The client's own ``retry`` setting turns that off,
    # so the 429 itself reaches the test at once.
    hubspot = Client.create(
        access_token=sim.private_app_token,
        host=sim.url,
        retry=Retry(total=0, respect_retry_after_header=False),
    )
    sim.set_knob("rate_limit_per_10s", 3)
    basic = hubspot.crm.contacts.basic_api
    _, status, headers = basic.get_page_with_http_info(limit=1)
    assert status == 200
    assert headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "2"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert headers["X-HubSpot-RateLimit-Daily"] == str(sim.daily_limit)
    basic.get_page(limit=1)
    basic.get_page(limit=1)
    with pytest.raises(ApiException) as limited:
        basic.get_page(limit=1)
    assert limited.value.status == 429
    assert limited.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert limited.value.headers["Retry-After"] == "1"
    body = json.loads(limited.value.body)
    assert (body["category"], body["policyName"]) == ("RATE_LIMITS", "TEN_SECONDLY_ROLLING")
    assert sim.counters["rate_limited"] == 1  # refused once: no retry behind the test's back
