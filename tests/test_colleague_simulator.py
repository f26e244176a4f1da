"""The Colleague (Ethos) simulator behaves as Ethos and Colleague do, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from plugins.colleague.simulator import (
    CHANGE_NOTIFICATIONS_V2,
    NIL_GUID,
    PERSONS_V12,
    ColleagueSimulator,
)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[ColleagueSimulator]:
    with ColleagueSimulator(seed=3, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def http(sim: ColleagueSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url) as client:
        yield client


def token(http: httpx.Client, sim: ColleagueSimulator, **params: str) -> str:
    answer = http.post("/auth", headers={"Authorization": f"Bearer {sim.api_key}"}, params=params)
    assert answer.status_code == 200, answer.text
    return answer.text


def auth(jwt: str, media: str = PERSONS_V12) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt}", "Accept": media, "Content-Type": media}


def consume(http: httpx.Client, jwt: str, **params: int) -> tuple[list[dict], int]:
    answer = http.get("/consume", params=params, headers=auth(jwt, CHANGE_NOTIFICATIONS_V2))
    assert answer.status_code == 200, answer.text
    return answer.json(), int(answer.headers["x-remaining"])


def test_auth_gives_a_jwt_that_expires(
    sim: ColleagueSimulator, http: httpx.Client, clock: FakeClock
) -> None:
    refused = http.post("/auth", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["message"] == "Invalid API key"
    jwt = token(http, sim)
    assert jwt.count(".") == 2
    assert http.get("/api/persons", headers=auth(jwt)).status_code == 200
    clock.advance(sim.token_ttl_seconds)
    expired = http.get("/api/persons", headers=auth(jwt))
    assert expired.status_code == 401
    assert set(expired.json()["errors"][0]) == {"code", "description", "message"}
    longer = token(http, sim, expirationMinutes="60")
    clock.advance(3000)
    assert http.get("/api/persons", headers=auth(longer)).status_code == 200


def test_persons_page_by_offset_with_headers_and_criteria(clock: FakeClock) -> None:
    with (
        ColleagueSimulator(contacts=50, seed=5, clock=clock, max_page_size=20) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        jwt = token(http, sim)
        page = http.get("/api/persons", params={"offset": 40, "limit": 100}, headers=auth(jwt))
        assert page.headers["x-total-count"] == "50"
        assert page.headers["x-max-page-size"] == "20"
        assert page.headers["X-Media-Type"] == PERSONS_V12
        assert len(page.json()) == 10  # the last 10 of 50: the limit is clamped to 20
        person = page.json()[0]
        assert {"id", "names", "emails", "phones", "credentials", "roles"} <= set(person)
        assert person["credentials"][0]["type"] == "colleaguePersonId"
        criteria = json.dumps({"roles": [{"role": "vendor"}, {"role": "employee"}]})
        staff = http.get("/api/persons", params={"criteria": criteria}, headers=auth(jwt))
        roles = {r["role"] for p in staff.json() for r in p["roles"]}
        assert roles and roles <= {"vendor", "employee"}
        address = person["emails"][0]["address"].upper()
        by_email = json.dumps({"emails": [{"address": address}]})
        found = http.get("/api/persons", params={"criteria": by_email}, headers=auth(jwt))
        assert [p["id"] for p in found.json()] == [person["id"]]
        wrong = http.get("/api/persons", headers=auth(jwt, PERSONS_V12.replace("v12", "v6")))
        assert wrong.status_code == 406


def test_put_keeps_omitted_properties_and_replaces_sent_arrays(
    sim: ColleagueSimulator, http: httpx.Client
) -> None:
    person = sim.add_person("Ada", "Lovelace", email="ada@example.edu", phone="6175550100")
    guid = person["id"]
    jwt = token(http, sim)
    home = {"type": {"phoneType": "home"}, "number": "2125550100"}
    answer = http.put(f"/api/persons/{guid}", json={"phones": [home]}, headers=auth(jwt))
    assert answer.status_code == 200
    stored = sim.person(guid)
    assert stored["phones"] == [home]  # the mobile is gone: the array was replaced whole
    assert stored["emails"] == person["emails"]  # omitted: kept
    assert sim.last_put == {"phones": [home]}
    mismatch = http.put(f"/api/persons/{guid}", json={"id": NIL_GUID[:-1] + "1"}, headers=auth(jwt))
    assert mismatch.status_code == 400
    assert "GUID not the same" in mismatch.json()["errors"][0]["message"]
    nil = http.put(f"/api/persons/{NIL_GUID}", json={}, headers=auth(jwt))
    assert nil.status_code == 400
    bad = http.put(
        f"/api/persons/{guid}", json={"emails": [{"address": "no-at-sign"}]}, headers=auth(jwt)
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "Validation.Exception"
    assert http.get(f"/api/persons/{NIL_GUID[:-1]}9", headers=auth(jwt)).status_code == 404
    created = http.post(
        "/api/persons",
        json={"names": [{"type": {"category": "legal"}, "lastName": "New"}]},
        headers=auth(jwt),
    )
    assert created.status_code == 201
    assert created.json()["credentials"][0]["value"] == "0000002"


def test_consume_deletes_for_good_what_it_is_told_was_processed(
    sim: ColleagueSimulator, http: httpx.Client
) -> None:
    ids = [sim.add_person(f"P{i}", "Q")["id"] for i in range(5)]
    jwt = token(http, sim)
    first, remaining = consume(http, jwt, lastProcessedID=0, limit=2)
    assert [m["id"] for m in first] == [1, 2] and remaining == 3
    message = first[0]
    assert message["resource"] == {
        "name": "persons",
        "id": ids[0],
        "domain": "core",
        "version": PERSONS_V12,
    }
    assert message["operation"] == "created"
    assert message["content"]["names"][0]["firstName"] == "P0"
    # Not acknowledged yet: asking from 0 again gives the same messages.
    again, _ = consume(http, jwt, lastProcessedID=0, limit=2)
    assert [m["id"] for m in again] == [1, 2]
    # Acknowledging 2 deletes 1-2 for good: asking from 0 afterwards starts at 3.
    after, remaining = consume(http, jwt, lastProcessedID=2, limit=2)
    assert [m["id"] for m in after] == [3, 4] and remaining == 1
    gone, _ = consume(http, jwt, lastProcessedID=0, limit=10)
    assert [m["id"] for m in gone] == [3, 4, 5]
    # Without lastProcessedID, Ethos deletes what the previous call returned.
    implicit, remaining = consume(http, jwt, limit=10)
    assert implicit == [] and remaining == 0
    head = http.head("/consume", headers=auth(jwt, CHANGE_NOTIFICATIONS_V2))
    assert head.headers["x-remaining"] == "0"
    too_many = http.get(
        "/consume", params={"limit": 1001}, headers=auth(jwt, CHANGE_NOTIFICATIONS_V2)
    )
    assert too_many.status_code == 400


def test_consume_caps_the_payload_and_can_send_ids_only(clock: FakeClock) -> None:
    with (
        ColleagueSimulator(seed=1, clock=clock, consume_max_bytes=3000) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        for i in range(10):
            sim.add_person(f"P{i}", "Q")
        jwt = token(http, sim)
        messages, remaining = consume(http, jwt, lastProcessedID=0, limit=1000)
        assert 1 <= len(messages) < 10 and remaining == 10 - len(messages)
        sim.full_notifications = False
        person = sim.add_person("Only", "Id")
        sim.delete_person(person["id"])
        tail, _ = consume(http, jwt, lastProcessedID=10, limit=1000)
        assert tail[0]["content"] == {"id": person["id"]}
        assert tail[1]["operation"] == "deleted" and "content" not in tail[1]
        assert tail[1]["contentType"] == "empty"


def test_simulate_exposes_the_colleague_knobs_as_flags() -> None:
    from daemon.cli.simulate import _knob_values
    from tests.clikit import listed_knobs

    listed_knobs("colleague", ColleagueSimulator)
    assert _knob_values(
        ["--token-ttl-seconds", "60", "--no-full-notifications", "--max-page-size=100"],
        ColleagueSimulator.knob_options,
    ) == {"token_ttl_seconds": 60.0, "full_notifications": False, "max_page_size": 100}
    sim = ColleagueSimulator(
        **_knob_values(["--staff-share", "0.5"], ColleagueSimulator.knob_options), contacts=4
    )
    assert sim.staff_share == 0.5 and len(sim.persons) == 4
