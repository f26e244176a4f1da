"""Contacts over the HTTP API, on SQLite and PostgreSQL: each incoming rule, as a CSV row or
a pull meets it, reached through real HTTP on loopback; reads by id, CRM id and phone;
custom fields; the bulk endpoint with good and bad records mixed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apikit import CONNECTION, RunningApi, running_api
from tests.hubkit import (
    ADA_E164,
    ADA_PHONE,
    ALAN_E164,
    GRACE_E164,
    GRACE_PHONE,
    KATE_PHONE,
    contact,
    define_custom_fields,
    log_rows,
    outbox_rows,
    seed,
    snapshot,
)

ADA = {"first_name": "Ada", "last_name": "Lovelace", "phone": ADA_PHONE}


@pytest.fixture
def api(engine) -> Iterator[RunningApi]:
    define_custom_fields(engine)
    with running_api(engine) as served:
        yield served


def api_rows(api: RunningApi) -> list[tuple[str, str | None]]:
    """(code, field) of the sync-log rows the API wrote."""
    return [
        (r["code"], (r["details"] or {}).get("field"))
        for r in log_rows(api.engine)
        if r["integration"] == "api"
    ]


def test_create_then_read_by_id_crm_id_and_phone(api: RunningApi) -> None:
    staff = api.client("staff")
    answer = staff.post("/api/v1/contacts", json={**ADA, "crm_id": "S-1", "email": "A@X.edu"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["outcome"] == "created"
    made = body["contact"]
    assert (made["phone"], made["email"], made["crm_id"]) == (ADA_E164, "a@x.edu", "S-1")
    reader = api.client("read")
    for key in (made["id"], "S-1", ADA_E164, "(202) 555-0143"):
        got = reader.get(f"/api/v1/contacts/{key}")
        assert got.status_code == 200, key
        assert got.json()["id"] == made["id"]
    missing = reader.get("/api/v1/contacts/nobody")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "api-not-found", "message": "no contact has this id, CRM id or phone"}
    }


def test_an_edit_queues_the_outbox(api: RunningApi) -> None:
    contact_id = seed(api.engine, ADA)
    before = {r["contact_id"]: r for r in outbox_rows(api.engine)}
    assert contact_id not in before or before[contact_id]["connection"] == CONNECTION
    answer = api.client("staff").patch(
        f"/api/v1/contacts/{contact_id}", json={"first_name": "Augusta"}
    )
    assert answer.status_code == 200 and answer.json()["outcome"] == "updated"
    rows = [r for r in outbox_rows(api.engine) if r["contact_id"] == contact_id]
    assert [r["connection"] for r in rows] == [CONNECTION]
    assert "first_name" in rows[0]["fields"]
    assert rows[0]["origin"] == "api"


def test_create_without_required_fields_is_refused_and_logged(api: RunningApi) -> None:
    answer = api.client("staff").post("/api/v1/contacts", json={"first_name": "Ada"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"]["code"] == "blank-required-data-in-record"
    assert body["result"]["outcome"] == "skipped"
    assert api_rows(api) == [("blank-required-data-in-record", "last_name")]


def test_blank_and_null_skip_unset_clears(api: RunningApi) -> None:
    contact_id = seed(
        api.engine,
        {**ADA, "preferred_name": "Countess", "email": "ada@x.edu", "custom:Class Year": "2027"},
    )
    staff = api.client("staff")
    answer = staff.patch(
        f"/api/v1/contacts/{contact_id}",
        json={
            "first_name": "",  # blank: skipped
            "last_name": None,  # null: skipped
            "preferred_name": "UNSET",  # cleared
            "custom": {"Class Year": "UNSET"},
            "email": "UNSET",  # not allowed: that field only
            "enrollment_id": "E-9",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["outcome"] == "updated"
    assert [(p["code"], p["field"]) for p in body["problems"]] == [("unset-not-allowed", "email")]
    now = contact(api.engine, contact_id)
    assert (now["first_name"], now["last_name"], now["preferred_name"]) == (
        "Ada",
        "Lovelace",
        None,
    )
    assert now["custom"] == {}
    assert (now["email"], now["enrollment_id"]) == ("ada@x.edu", "E-9")
    assert api_rows(api) == [("unset-not-allowed", "email")]


def test_bad_values_are_refused_field_by_field(api: RunningApi) -> None:
    contact_id = seed(api.engine, ADA)
    answer = api.client("staff").patch(
        f"/api/v1/contacts/{contact_id}",
        json={
            "email": "not-an-email",
            "first_name": "x" * 65,
            "custom": {"Class Year": "soon", "Nope": "1", "First Gen": True},
            "last_name": "Byron",
        },
    )
    assert answer.status_code == 200
    codes = sorted((p["code"], p["field"]) for p in answer.json()["problems"])
    assert codes == [
        ("invalid-custom-field-value", "custom:Class Year"),
        ("invalid-email", "email"),
        ("unknown-custom-field", "custom:Nope"),
        ("value-too-long", "first_name"),
    ]
    now = contact(api.engine, contact_id)
    assert (now["last_name"], now["first_name"]) == ("Byron", "Ada")
    assert now["custom"] == {"First Gen": "true"}
    assert sorted(api_rows(api)) == codes


def test_a_taken_phone_or_crm_id_skips_the_record(api: RunningApi) -> None:
    ada = seed(api.engine, {**ADA, "crm_id": "S-1"})
    grace = seed(api.engine, {"first_name": "Grace", "last_name": "Hopper", "phone": GRACE_PHONE})
    before = snapshot(api.engine)
    staff = api.client("staff")
    taken_phone = staff.patch(
        f"/api/v1/contacts/{grace}", json={"phone": ADA_PHONE, "last_name": "H"}
    )
    assert taken_phone.status_code == 409
    assert taken_phone.json()["error"]["code"] == "duplicate-contact"
    taken_crm = staff.patch(f"/api/v1/contacts/{grace}", json={"crm_id": "S-1"})
    assert taken_crm.status_code == 409
    assert taken_crm.json()["error"]["code"] == "duplicate-unique-id-crmId"
    new_with_taken_phone = staff.post(
        "/api/v1/contacts", json={"first_name": "A", "last_name": "B", "phone": ADA_PHONE}
    )
    assert new_with_taken_phone.status_code == 409
    assert snapshot(api.engine) == before, "a skipped record writes nothing"
    assert [c for c, _ in api_rows(api)] == [
        "duplicate-contact",
        "duplicate-unique-id-crmId",
        "duplicate-contact",
    ]
    assert ada != grace


def test_a_crm_id_the_hub_knows_makes_a_create_an_edit(api: RunningApi) -> None:
    ada = seed(api.engine, {**ADA, "crm_id": "S-1"})
    answer = api.client("staff").post(
        "/api/v1/contacts", json={"crm_id": "S-1", "preferred_name": "Countess"}
    )
    assert answer.status_code == 200
    assert (answer.json()["outcome"], answer.json()["contact_id"]) == ("updated", ada)


def test_a_phone_change_keeps_the_previous_phone_and_cannot_be_undone(api: RunningApi) -> None:
    contact_id = seed(api.engine, ADA)
    staff = api.client("staff")
    moved = staff.patch(f"/api/v1/contacts/{contact_id}", json={"phone": GRACE_PHONE})
    assert moved.status_code == 200
    assert moved.json()["contact"]["phone"] == GRACE_E164
    assert moved.json()["contact"]["previous_phone"] == ADA_E164
    # A stale value (the old phone) is kept out, the other fields still apply (rule 6).
    stale = staff.patch(
        f"/api/v1/contacts/{contact_id}", json={"phone": ADA_PHONE, "last_name": "King"}
    )
    assert stale.status_code == 200
    body = stale.json()
    assert [p["code"] for p in body["problems"]] == ["contact-out-of-sync"]
    assert (body["contact"]["phone"], body["contact"]["last_name"]) == (GRACE_E164, "King")
    assert api_rows(api) == [("contact-out-of-sync", "phone")]


def test_test_users_are_left_alone(api: RunningApi) -> None:
    contact_id = seed(api.engine, ADA, test_user=True)
    before = snapshot(api.engine)
    answer = api.client("staff").patch(
        f"/api/v1/contacts/{contact_id}", json={"first_name": "Bob", "email": "bad"}
    )
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "ignored"
    archived = api.client("staff").post(f"/api/v1/contacts/{contact_id}:archive")
    assert archived.json()["outcome"] == "ignored"
    assert snapshot(api.engine) == before
    assert api_rows(api) == []


def test_archive_unarchive_and_an_edit_unarchives(api: RunningApi) -> None:
    contact_id = seed(api.engine, ADA)
    staff = api.client("staff")
    archived = staff.post(f"/api/v1/contacts/{contact_id}:archive")
    assert archived.status_code == 200 and archived.json()["contact"]["archived"] is True
    # An edit of an archived contact un-archives it (rule 8)...
    edited = staff.patch(f"/api/v1/contacts/{contact_id}", json={"last_name": "King"})
    assert edited.json()["contact"]["archived"] is False
    # ... unless it says otherwise.
    staff.post(f"/api/v1/contacts/{ADA_E164}:archive")
    kept = staff.patch(f"/api/v1/contacts/{contact_id}", json={"last_name": "L", "active": False})
    assert kept.json()["contact"]["archived"] is True
    back = staff.post(f"/api/v1/contacts/{contact_id}:unarchive")
    assert back.json()["contact"]["archived"] is False
    listed = api.client("read").get("/api/v1/contacts", params={"archived": "true"})
    assert listed.json()["contacts"] == []


def test_request_validation_is_the_coded_shape(api: RunningApi) -> None:
    staff = api.client("staff")
    unknown_key = staff.post("/api/v1/contacts", json={**ADA, "phone_number": "1"})
    assert unknown_key.status_code == 422
    error = unknown_key.json()["error"]
    assert error["code"] == "api-invalid-request"
    assert "phone_number" in error["message"]
    wrong_type = staff.post("/api/v1/contacts", json={**ADA, "active": "yes"})
    assert wrong_type.json()["error"]["code"] == "api-invalid-request"
    not_json = staff.post(
        "/api/v1/contacts", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["error"]["code"] == "api-invalid-request"
    # The value sent (a phone, an email) is never echoed back in the message.
    assert ADA_PHONE not in unknown_key.text
    bad_limit = api.client("read").get("/api/v1/contacts", params={"limit": 0})
    assert bad_limit.json()["error"]["code"] == "api-invalid-request"


def test_search_and_filters(api: RunningApi) -> None:
    ada = seed(api.engine, {**ADA, "email": "ada@x.edu", "crm_id": "S-1"})
    alan = seed(api.engine, {"first_name": "Alan", "last_name": "Turing", "phone": ALAN_E164})
    kate = seed(
        api.engine, {"first_name": "Kate", "last_name": "Love", "phone": KATE_PHONE}, test_user=True
    )
    reader = api.client("read")

    def ids(**params: object) -> set[str]:
        answer = reader.get("/api/v1/contacts", params=params)
        assert answer.status_code == 200, answer.text
        return {c["id"] for c in answer.json()["contacts"]}

    assert ids(search="LOVE") == {ada, kate}
    assert ids(search="555-0199") == set()  # phones are searched in their stored form
    assert ids(search="5550199") == {alan}
    assert ids(search="S-1") == {ada}
    assert ids(search="%") == set(), "a LIKE wildcard is a plain character"
    assert ids(test_user="true") == {kate}
    assert ids(email="ADA@x.edu") == {ada}
    assert ids(crm_id="S-1") == {ada}


def test_fields(api: RunningApi) -> None:
    listed = api.client("read").get("/api/v1/fields").json()
    assert {"name": "Class Year", "type": "number"} in listed["custom"]
    email = next(f for f in listed["default"] if f["name"] == "email")
    assert email["unset_allowed"] is False
    made = api.client("admin").post("/api/v1/fields", json={"name": "Major", "type": "text"})
    assert made.status_code == 201 and made.json() == {"name": "Major", "type": "text"}
    again = api.client("admin").post("/api/v1/fields", json={"name": "major"})
    assert again.status_code == 422 and again.json()["error"]["code"] == "invalid-value"
    contact_id = seed(api.engine, ADA)
    edited = api.client("staff").patch(
        f"/api/v1/contacts/{contact_id}", json={"custom": {"Major": "Maths", "Class Year": 2027}}
    )
    assert edited.json()["contact"]["custom"] == {"Class Year": "2027", "Major": "Maths"}


def test_batch_mixed_good_and_bad_records(api: RunningApi) -> None:
    existing = seed(api.engine, {**ADA, "crm_id": "S-1"})
    records = [
        {"first_name": "Grace", "last_name": "Hopper", "phone": GRACE_PHONE, "crm_id": "S-2"},
        {"first_name": "Alan", "last_name": "Turing", "phone": "12"},  # invalid phone
        {"first_name": "Dup", "last_name": "Crm", "phone": KATE_PHONE, "crm_id": "S-2"},
        {"id": existing, "preferred_name": "Countess"},
        {"id": "no-such-id", "first_name": "X"},
        {"first_name": 5},  # not the documented JSON: that record alone is refused
        {"crm_id": "S-1", "email": "UNSET"},
        {"first_name": "Nobody"},
    ]
    answer = api.client("staff").post("/api/v1/contacts:batch", json={"records": records})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(records)))
    assert [r["outcome"] for r in results] == [
        "created",
        "skipped",
        "skipped",
        "updated",
        "skipped",
        "skipped",
        "unchanged",
        "skipped",
    ]
    assert [[p["code"] for p in r["problems"]] for r in results] == [
        [],
        ["invalid-phone", "blank-required-data-in-record"],
        ["duplicate-unique-id-crmId"],
        [],
        ["unknown-contact-id"],
        ["api-invalid-request"],
        ["unset-not-allowed"],
        ["blank-required-data-in-record"],
    ]
    assert results[3]["contact_id"] == existing
    assert body["summary"]["created"] == 1 and body["summary"]["skipped"] == 5
    logged = sorted(c for c, _ in api_rows(api))
    expected = sorted(p["code"] for r in results for p in r["problems"])
    assert logged == expected, "every problem is a sync-log row"
    assert contact(api.engine, GRACE_E164)["crm_id"] == "S-2"


def test_batch_limits(api: RunningApi) -> None:
    staff = api.client("staff")
    too_many = staff.post("/api/v1/contacts:batch", json={"records": [{}] * 1001})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "api-invalid-request"
    empty = staff.post("/api/v1/contacts:batch", json={"records": []})
    assert empty.json()["error"]["code"] == "api-invalid-request"
    records = [
        {"first_name": "N", "last_name": str(i), "phone": f"+1202555{i:04d}"} for i in range(1000)
    ]
    full = staff.post("/api/v1/contacts:batch", json={"records": records})
    assert full.status_code == 200
    assert full.json()["summary"]["created"] == 1000
