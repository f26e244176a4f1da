"""The Salesforce simulator over real HTTP on loopback: its wire protocol and its rules.

Sessions and the rolling 24 h allowance run on a FakeClock, so no test waits and none asserts
on wall time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from plugins.salesforce.client import jwt_assertion
from plugins.salesforce.simulator import SalesforceSimulator

V = "/services/data/v62.0"


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(contacts=30, clock=clock) as simulator:
        yield simulator


def grant(sim: SalesforceSimulator, **form: str) -> httpx.Response:
    return httpx.post(f"{sim.url}/services/oauth2/token", data=form)


def client_credentials(sim: SalesforceSimulator) -> httpx.Response:
    """The connected app's client-credentials grant, with the right key and secret."""
    return grant(
        sim,
        grant_type="client_credentials",
        client_id=sim.client_id,
        client_secret=sim.client_secret,
    )


@pytest.fixture
def api(sim: SalesforceSimulator) -> Iterator[httpx.Client]:
    token = client_credentials(sim).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=sim.url + V, headers=headers, timeout=10) as client:
        yield client


def soql(api: httpx.Client, q: str, endpoint: str = "query", **headers: str) -> httpx.Response:
    return api.get(f"/{endpoint}", params={"q": q}, headers=headers)


def error(response: httpx.Response, status: int, code: str) -> str:
    """Salesforce's shape: a JSON array of {message, errorCode}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, list) and body[0]["errorCode"] == code
    return str(body[0]["message"])


# --- OAuth ------------------------------------------------------------------------------------


def test_token_answers_carry_instance_url_and_no_expiry(sim: SalesforceSimulator) -> None:
    body = client_credentials(sim).json()
    assert body["instance_url"] == sim.url and body["token_type"] == "Bearer"
    assert "expires_in" not in body and "refresh_token" not in body
    refused = grant(sim, grant_type="client_credentials", client_id=sim.client_id)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client"
    unknown = grant(sim, grant_type="password")
    assert unknown.json()["error"] == "unsupported_grant_type"


def test_client_credentials_by_basic_auth_and_rotating_refresh_tokens(
    sim: SalesforceSimulator,
) -> None:
    basic = httpx.post(
        f"{sim.url}/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(sim.client_id, sim.client_secret),
    )
    assert basic.status_code == 200
    sim.rotate_refresh_tokens = True
    old = sim.refresh_token
    form = {"grant_type": "refresh_token", "client_id": sim.client_id}
    first = grant(sim, **form, client_secret=sim.client_secret, refresh_token=old).json()
    assert first["refresh_token"] != old
    again = grant(sim, **form, client_secret=sim.client_secret, refresh_token=old)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_jwt_bearer_checks_signature_issuer_subject_and_expiry(
    sim: SalesforceSimulator, clock: FakeClock
) -> None:
    def assertion(**claims: Any) -> str:
        values = {"issuer": sim.client_id, "subject": sim.username, "audience": sim.url}
        values.update(claims)
        return jwt_assertion(sim.private_key_pem, now=clock.now().timestamp(), **values)

    bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant(sim, grant_type=bearer, assertion=assertion()).status_code == 200
    wrong_issuer = grant(sim, grant_type=bearer, assertion=assertion(issuer="other"))
    assert wrong_issuer.json()["error"] == "invalid_client_id"
    head, body, signature = assertion().split(".")
    tampered = grant(sim, grant_type=bearer, assertion=f"{head}.{body}x.{signature}")
    assert tampered.json()["error_description"] == "invalid assertion"
    stale = assertion()
    clock.advance(600)
    assert grant(sim, grant_type=bearer, assertion=stale).json()["error"] == "invalid_grant"


def test_an_expired_session_is_a_401_invalid_session_id(
    sim: SalesforceSimulator, api: httpx.Client, clock: FakeClock
) -> None:
    assert soql(api, "SELECT Id FROM Contact LIMIT 1").status_code == 200
    clock.advance(sim.session_timeout_seconds + 1)
    error(soql(api, "SELECT Id FROM Contact LIMIT 1"), 401, "INVALID_SESSION_ID")


# --- query ------------------------------------------------------------------------------------


def test_query_pages_by_next_records_url(sim: SalesforceSimulator, api: httpx.Client) -> None:
    sim.add_contact(LastName="Extra")
    first = soql(
        api, "SELECT Id, LastName FROM Contact", **{"Sforce-Query-Options": "batchSize=200"}
    )
    assert first.status_code == 200
    # 31 records fit one page of 200; shrink the org's page to prove nextRecordsUrl.
    body = first.json()
    assert body["done"] is True and body["totalSize"] == 31 and "nextRecordsUrl" not in body
    record = body["records"][0]
    assert record["attributes"] == {
        "type": "Contact",
        "url": f"{V}/sobjects/Contact/{record['Id']}",
    }
    for i in range(400):
        sim.add_contact(LastName=f"More{i}")
    sim.query_batch_size = 200
    page = soql(api, "SELECT Id FROM Contact").json()
    seen = len(page["records"])
    while not page["done"]:
        page = api.get(page["nextRecordsUrl"].removeprefix(V)).json()
        seen += len(page["records"])
    assert seen == page["totalSize"] == 431
    error(api.get("/query/01gBOGUS-200"), 400, "INVALID_QUERY_LOCATOR")


def test_soql_where_order_limit_and_keyset(sim: SalesforceSimulator, api: httpx.Client) -> None:
    ids = [sim.add_contact(LastName=f"K{i}", Title="T") for i in range(6)]
    stamp = sim.share_modstamp(ids).strftime("%Y-%m-%dT%H:%M:%SZ")
    keyset = (
        f"SELECT Id FROM Contact WHERE ((SystemModstamp > {stamp}) OR (SystemModstamp = {stamp} "
        f"AND Id > '{ids[2]}')) AND Title = 't' ORDER BY SystemModstamp ASC, Id ASC LIMIT 2"
    )
    body = soql(api, keyset).json()
    assert [r["Id"] for r in body["records"]] == ids[3:5]  # = on strings ignores case
    desc = soql(api, "select Id from contact where LastName like 'k_' order by Id desc").json()
    assert [r["Id"] for r in desc["records"]] == ids[::-1]
    inlist = soql(api, f"SELECT Id FROM Contact WHERE Id IN ('{ids[0]}', '{ids[1]}')").json()
    assert inlist["totalSize"] == 2
    count = soql(api, "SELECT COUNT() FROM Contact WHERE Title != null").json()
    assert count == {"totalSize": 6, "done": True, "records": []}


@pytest.mark.parametrize(
    ("q", "code"),
    [
        ("SELECT Nope__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Widget", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact GROUP BY Id", "MALFORMED_QUERY"),
        ("SELECT Id, FROM Contact", "MALFORMED_QUERY"),
        ("", "MALFORMED_QUERY"),
    ],
)
def test_what_the_subset_refuses(api: httpx.Client, q: str, code: str) -> None:
    error(soql(api, q), 400, code)


def test_query_all_shows_deleted_rows(sim: SalesforceSimulator, api: httpx.Client) -> None:
    record_id = sim.add_contact(LastName="Gone")
    sim.delete_record(record_id)
    q = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{record_id}'"
    assert soql(api, q).json()["totalSize"] == 0
    rows = soql(api, q, endpoint="queryAll").json()["records"]
    assert rows[0]["IsDeleted"] is True


def test_describe_lists_custom_and_external_id_fields(api: httpx.Client) -> None:
    fields = {f["name"]: f for f in api.get("/sobjects/Contact/describe").json()["fields"]}
    assert fields["Mainstay_ID__c"]["externalId"] and fields["Mainstay_ID__c"]["custom"]
    assert not fields["LastName"]["nillable"] and not fields["SystemModstamp"]["updateable"]
    lead = {f["name"] for f in api.get("/sobjects/lead/describe").json()["fields"]}
    assert "Company" in lead
    error(api.get("/sobjects/Widget/describe"), 404, "NOT_FOUND")


# --- sObject Collections ----------------------------------------------------------------------


def _rec(**values: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, **values}


def test_upsert_by_external_id_creates_then_updates(
    sim: SalesforceSimulator, api: httpx.Client
) -> None:
    url = "/composite/sobjects/Contact/Mainstay_ID__c"
    body = {"allOrNone": False, "records": [_rec(Mainstay_ID__c="m1", LastName="One")]}
    [created] = api.patch(url, json=body).json()
    assert created["success"] and created["created"] is True
    body["records"][0]["Email"] = None
    [updated] = api.patch(url, json=body).json()
    assert updated == {"id": created["id"], "success": True, "errors": [], "created": False}
    msg = error(api.patch("/composite/sobjects/Contact/LastName", json=body), 400, "INVALID_FIELD")
    assert "not an External ID" in msg


def test_all_or_none_rolls_every_record_back(sim: SalesforceSimulator, api: httpx.Client) -> None:
    records = [_rec(LastName="Fine"), _rec(FirstName="No last name")]
    results = api.post("/composite/sobjects", json={"allOrNone": True, "records": records}).json()
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sim.find(LastName="Fine") == []
    partial = api.post("/composite/sobjects", json={"allOrNone": False, "records": records})
    assert partial.status_code == 200 and [r["success"] for r in partial.json()] == [True, False]


def test_updates_by_id_check_ids_and_read_only_fields(
    sim: SalesforceSimulator, api: httpx.Client
) -> None:
    record_id = sim.add_contact(LastName="Before")
    records = [
        _rec(id=record_id, LastName="After"),
        _rec(id="003SIM999999999999", LastName="X"),
        _rec(id=record_id, SystemModstamp="2020-01-01T00:00:00Z"),
        _rec(id=record_id, Class_Year__c="soon"),
        _rec(id=record_id, FirstName="Again"),
    ]
    results = api.patch("/composite/sobjects", json={"records": records}).json()
    codes = [r["errors"][0]["statusCode"] if r["errors"] else "OK" for r in results]
    assert codes == [
        "OK",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "DUPLICATE_VALUE",  # the same id twice in one request
    ]
    assert sim.record(record_id)["LastName"] == "After"


def test_more_than_200_records_is_refused_whole(api: httpx.Client) -> None:
    records = [_rec(LastName=f"N{i}") for i in range(201)]
    error(api.post("/composite/sobjects", json={"records": records}), 400, "EXCEEDED_ID_LIMIT")


# --- limits -----------------------------------------------------------------------------------


def test_limit_info_header_and_request_limit_exceeded(
    sim: SalesforceSimulator, api: httpx.Client, clock: FakeClock
) -> None:
    sim.daily_limit = 3
    for used in (1, 2, 3):
        response = soql(api, "SELECT Id FROM Contact LIMIT 1")
        assert response.headers["Sforce-Limit-Info"] == f"api-usage={used}/3"
    refused = soql(api, "SELECT Id FROM Contact LIMIT 1")
    error(refused, 403, "REQUEST_LIMIT_EXCEEDED")
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    sim.session_timeout_seconds = 2 * 86_400
    fresh = client_credentials(sim).json()["access_token"]
    clock.advance(86_401)  # a rolling 24 h: the calls age out
    headers = {"Authorization": f"Bearer {fresh}"}
    assert api.get("/query", params={"q": "SELECT Id FROM Contact"}, headers=headers).is_success
    assert api.get("/limits", headers=headers).json()["DailyApiRequests"]["Max"] == 3


# --- Bulk API 2.0 -----------------------------------------------------------------------------


def test_bulk_query_job_lifecycle_and_locator_paging(
    sim: SalesforceSimulator, api: httpx.Client
) -> None:
    sim.bulk_poll_steps = 1
    spec = {"operation": "query", "query": "SELECT Id, Phone FROM Contact"}
    job = api.post("/jobs/query", json=spec).json()
    assert job["state"] == "UploadComplete" and job["jobType"] == "V2Query"
    error(api.get(f"/jobs/query/{job['id']}/results"), 400, "INVALIDJOBSTATE")
    assert api.get(f"/jobs/query/{job['id']}").json()["state"] == "InProgress"
    assert api.get(f"/jobs/query/{job['id']}").json()["state"] == "JobComplete"
    rows: list[dict[str, str]] = []
    locator = ""
    while True:
        params = {"maxRecords": 12, **({"locator": locator} if locator else {})}
        page = api.get(f"/jobs/query/{job['id']}/results", params=params)
        assert page.headers["Content-Type"] == "text/csv"
        got = list(csv.DictReader(io.StringIO(page.text)))
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(got)
        rows += got
        locator = page.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert len(rows) == 30 and set(rows[0]) == {"Id", "Phone"}
    assert api.delete(f"/jobs/query/{job['id']}").status_code == 204


def test_bulk_ingest_upsert_with_results(sim: SalesforceSimulator, api: httpx.Client) -> None:
    existing = sim.add_contact(LastName="Old", Mainstay_ID__c="m1", Phone="+16175550100")
    spec = {"object": "Contact", "operation": "upsert", "externalIdFieldName": "Mainstay_ID__c"}
    job = api.post("/jobs/ingest", json=spec).json()
    assert job["state"] == "Open" and job["contentUrl"].endswith(f"{job['id']}/batches")
    data = "Mainstay_ID__c,LastName,Phone,Email\nm1,New,#N/A,\nm2,Fresh,,\nm3,,,bad\n"
    where = f"/jobs/ingest/{job['id']}"
    csv_type = {"Content-Type": "text/csv"}
    upload = api.put(f"{where}/batches", content=data, headers=csv_type)
    assert upload.status_code == 201
    api.patch(f"/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    while api.get(f"/jobs/ingest/{job['id']}").json()["state"] != "JobComplete":
        pass
    ok = list(csv.DictReader(io.StringIO(api.get(f"{where}/successfulResults/").text)))
    bad = list(csv.DictReader(io.StringIO(api.get(f"{where}/failedResults/").text)))
    created = [(r["sf__Id"] == existing, r["sf__Created"]) for r in ok]
    assert created == [(True, "false"), (False, "true")]
    assert bad[0]["Mainstay_ID__c"] == "m3"
    assert bad[0]["sf__Error"].startswith("INVALID_EMAIL_ADDRESS")
    stored = sim.record(existing)
    assert stored["LastName"] == "New" and stored["Phone"] is None  # "#N/A" nulls; "" keeps


# --- standalone -------------------------------------------------------------------------------


def test_simulate_exposes_every_knob_as_a_flag() -> None:
    from daemon.cli.simulate import _knob_values
    from tests.clikit import listed_knobs

    listed_knobs("salesforce", SalesforceSimulator)
    assert _knob_values(
        ["--daily-limit", "15000", "--rotate-refresh-tokens", "--late-commit-seconds=30"],
        SalesforceSimulator.knob_options,
    ) == {"daily_limit": 15000, "rotate_refresh_tokens": True, "late_commit_seconds": 30.0}
    sim = SalesforceSimulator(shared_modstamp_count=5, contacts=8, leads=2)
    stamps = {r["SystemModstamp"] for r in sim.find()}
    assert len(sim.find()) == 8 and len(sim.find("Lead")) == 2 and len(stamps) <= 4
