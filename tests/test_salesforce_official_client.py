"""The Salesforce simulator driven by simple-salesforce, the most-used Python client.

Our connector's own client was written against the simulator, so the two could agree on a
private dialect. simple-salesforce was written against Salesforce: whatever it sends (the
trailing slash of ``query/?q=``, the single-record ``sobjects/`` resource, its way of reading
errors and the ``Sforce-Limit-Info`` header) the simulator must answer as Salesforce does.

simple-salesforce writes every URL as ``https://<instance>``; the simulator serves plain HTTP on
loopback, so the client's ``requests`` session carries an adapter that sends those URLs over
HTTP. Nothing else of the client is touched. Sessions run on a FakeClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import Usage

from daemon.foundation.clock import FakeClock
from plugins.salesforce.simulator import SalesforceSimulator

CONTACTS = 450  # three query pages of 200, Salesforce's smallest batchSize


class _PlainLoopback(HTTPAdapter):
    """Sends simple-salesforce's ``https://`` URLs to the loopback simulator over HTTP."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        request.url = "http://" + str(request.url).removeprefix("https://")
        return super().send(request, *args, **kwargs)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(contacts=CONTACTS, clock=clock) as simulator:
        simulator.set_knob("query_batch_size", 200)
        yield simulator


def session_for(sim: SalesforceSimulator) -> tuple[str, str]:
    """``(access_token, instance_url)`` from the org's client-credentials grant."""
    answer = httpx.post(
        f"{sim.url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["access_token"], body["instance_url"]


@pytest.fixture
def sf(sim: SalesforceSimulator) -> Iterator[Salesforce]:
    token, instance_url = session_for(sim)
    http = requests.Session()
    http.mount("https://" + instance_url.removeprefix("http://"), _PlainLoopback())
    # The client's default API version (59.0), not ours: the simulator serves any version.
    yield Salesforce(session_id=token, instance_url=instance_url, session=http)
    http.close()


# --- query and its paging -----------------------------------------------------------------


def test_query_pages_through_next_records_url(sf: Salesforce) -> None:
    first = sf.query("SELECT Id, Email FROM Contact ORDER BY Id")
    assert first["totalSize"] == CONTACTS and first["done"] is False
    assert len(first["records"]) == 200
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == 200 and second["done"] is False
    # query_more also takes the bare locator, which it puts after ``query/``
    locator = second["nextRecordsUrl"].rsplit("/", 1)[1]
    third = sf.query_more(locator)
    assert len(third["records"]) == CONTACTS - 400 and third["done"] is True
    ids = [r["Id"] for page in (first, second, third) for r in page["records"]]
    assert len(set(ids)) == CONTACTS and ids == sorted(ids)


def test_query_all_follows_every_page_and_sees_deleted_rows(
    sf: Salesforce, sim: SalesforceSimulator
) -> None:
    everything = sf.query_all("SELECT Id, LastName FROM Contact")
    assert everything["totalSize"] == CONTACTS and len(everything["records"]) == CONTACTS
    gone = everything["records"][0]["Id"]
    assert sf.Contact.delete(gone) == 204
    deleted = sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert [r["Id"] for r in deleted["records"]] == [gone]
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == CONTACTS - 1
    lazy = list(sf.query_all_iter("SELECT Id FROM Contact"))
    assert len(lazy) == CONTACTS - 1


# --- writes -------------------------------------------------------------------------------


def test_upsert_by_external_id_creates_then_updates(
    sf: Salesforce, sim: SalesforceSimulator
) -> None:
    values = {"LastName": "Hopper", "Email": "grace@example.org"}
    assert sf.Contact.upsert("Mainstay_ID__c/ms-1", values) == 201
    assert sf.Contact.upsert("Mainstay_ID__c/ms-1", {"Title": "Admiral"}) == 200
    [record] = sim.find(Mainstay_ID__c="ms-1")
    assert (record["LastName"], record["Title"]) == ("Hopper", "Admiral")
    read = sf.Contact.get_by_custom_id("Mainstay_ID__c", "ms-1")
    assert read["Id"] == record["Id"] and read["attributes"]["type"] == "Contact"


def test_create_get_update_by_id(sf: Salesforce, sim: SalesforceSimulator) -> None:
    made = sf.Contact.create({"LastName": "Liskov", "Email": "barbara@example.org"})
    assert made["success"] is True and made["id"].startswith("003")
    assert sf.Contact.update(made["id"], {"Title": "Professor", "Id": "ignored"}) == 204
    assert sim.record(made["id"])["Title"] == "Professor"
    got = sf.Contact.get(made["id"])
    assert (got["Email"], got["Title"]) == ("barbara@example.org", "Professor")
    assert sf.Contact.describe()["fields"]


def test_composite_collections_through_restful(sf: Salesforce, sim: SalesforceSimulator) -> None:
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": "Knuth"},
                {"attributes": {"type": "Contact"}, "Email": "no-last-name@example.org"},
            ],
        },
    )
    assert created[0]["success"] is True
    assert created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    upserted = sf.restful(
        "composite/sobjects/Contact/Mainstay_ID__c/",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Contact"}, "LastName": "Ritchie",
                           "Mainstay_ID__c": "ms-9"}]},
    )  # fmt: skip
    assert upserted[0]["created"] is True
    assert sim.find(Mainstay_ID__c="ms-9")[0]["LastName"] == "Ritchie"


# --- errors and limits --------------------------------------------------------------------


def test_error_bodies_reach_the_clients_exceptions(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as bad_query:
        sf.query("SELEC Id FRM Contact")
    assert bad_query.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as bad_field:
        sf.Contact.update(sf.query("SELECT Id FROM Contact")["records"][0]["Id"], {"Nope": 1})
    assert bad_field.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        sf.Contact.create({"LastName": "A", "Mainstay_ID__c": "dup"})
        sf.Contact.create({"LastName": "B", "Mainstay_ID__c": "dup"})
    assert duplicate.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.Contact.get("003SIM999999999999")
    assert missing.value.content[0]["errorCode"] == "NOT_FOUND"


def test_an_expired_session_is_the_clients_expired_session(
    sf: Salesforce, sim: SalesforceSimulator
) -> None:
    sim.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as expired:
        sf.query("SELECT Id FROM Contact")
    assert expired.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_limit_header_feeds_api_usage_and_a_spent_allowance_is_refused(
    sf: Salesforce, sim: SalesforceSimulator
) -> None:
    sim.set_knob("daily_limit", 5)
    sf.query("SELECT Id FROM Contact LIMIT 1")
    assert sf.api_usage["api-usage"] == Usage(used=1, total=5)
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 5, "Remaining": 3}
    assert sf.api_usage["api-usage"] == Usage(used=2, total=5)
    for _ in range(3):
        sf.query("SELECT Id FROM Contact LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


# --- the trailing slash, on the wire --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "query?q=SELECT+Id+FROM+Contact+LIMIT+1", None),
        ("GET", "queryAll?q=SELECT+Id+FROM+Contact+LIMIT+1", None),
        ("GET", "limits", None),
        ("GET", "sobjects/Contact/describe", None),
        ("POST", "sobjects/Contact", {"LastName": "Slash"}),
        ("POST", "composite/sobjects", {"records": []}),
    ],
)
def test_every_resource_answers_with_and_without_a_trailing_slash(
    sim: SalesforceSimulator, method: str, path: str, body: Any
) -> None:
    token, instance_url = session_for(sim)
    resource, _, query = path.partition("?")
    with httpx.Client(
        base_url=f"{instance_url}/services/data/v59.0/",
        headers={"Authorization": f"Bearer {token}"},
    ) as api:
        for form in (resource, resource + "/"):
            url = form + (f"?{query}" if query else "")
            answer = api.request(method, url, json=body)
            assert answer.status_code < 300, (url, answer.status_code, answer.text)
