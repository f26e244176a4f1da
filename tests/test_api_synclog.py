"""The sync log, the error dictionary, the outbox and a contact's links over the HTTP API, on
SQLite and PostgreSQL: filters, keyset paging that neither repeats nor skips a row while rows
are written, retry and drop as ``contactsync outbox`` does them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from daemon.foundation.dictionary import ENTRIES
from daemon.hub import links, outbox
from daemon.hub.store import utcnow
from tests.apikit import CONNECTION, RunningApi, running_api
from tests.hubkit import ADA_E164, ADA_PHONE, OUTBOX, outbox_rows, seed
from tests.webkit import log_row, write_log

ADA = {"first_name": "Ada", "last_name": "Lovelace", "phone": ADA_PHONE, "crm_id": "S-1"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(engine) -> Iterator[RunningApi]:
    with running_api(engine) as served:
        yield served


def pages(client, path: str, **params: Any) -> list[list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    out, cursor = [], None
    while True:
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        out.append(body["rows"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_sync_log_filters_match_the_cli_query(api: RunningApi) -> None:
    ada = seed(api.engine, ADA)
    write_log(
        api,
        [
            log_row(T0, contact_id=ada),
            log_row(T0 + timedelta(minutes=1), code="duplicate-contact", direction="outgoing"),
            log_row(T0 + timedelta(minutes=2), integration="csv", instance=None, run_id="r2"),
            log_row(T0 + timedelta(days=2), instance="sis"),
        ],
    )
    reader = api.client("read")

    def codes(**params: Any) -> list[tuple[str, str]]:
        answer = reader.get("/api/v1/sync-log", params=params)
        assert answer.status_code == 200, answer.text
        return [(r["code"], r["timestamp"][:16]) for r in answer.json()["rows"]]

    assert len(codes()) == 4
    # Newest first, as the CLI shows it.
    assert codes()[0][1] == "2026-03-03T12:00"
    assert codes(code="duplicate-contact") == [("duplicate-contact", "2026-03-01T12:01")]
    assert [c for c, _ in codes(direction="outgoing")] == ["duplicate-contact"]
    assert len(codes(integration="csv")) == 1 and len(codes(instance="sis")) == 1
    assert len(codes(run="r2")) == 1
    # A contact by hub id, CRM id or phone.
    for key in (ada, "S-1", ADA_E164):
        assert len(codes(contact=key)) == 1, key
    assert codes(since="2026-03-01T12:01:00Z", until="2026-03-02T00:00:00Z") == [
        ("invalid-email", "2026-03-01T12:02"),
        ("duplicate-contact", "2026-03-01T12:01"),
    ]
    row = reader.get("/api/v1/sync-log", params={"contact": ada}).json()["rows"][0]
    assert set(row) >= {"id", "timestamp", "integration", "direction", "contact_id", "code"}
    assert row["details"] == {"field": "email"} and row["message"] == "email is not an address"
    bad = reader.get("/api/v1/sync-log", params={"since": "last tuesday"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "api-invalid-request"
    assert bad.json()["error"]["message"].startswith("since:")


def test_sync_log_keyset_pages_never_repeat_or_skip_while_rows_are_written(
    api: RunningApi,
) -> None:
    # Ties on the timestamp (the id breaks them) and rows written between the pages.
    write_log(api, [log_row(T0 + timedelta(seconds=i // 3), run_id=f"a{i}") for i in range(50)])
    reader = api.client("read")
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = reader.get("/api/v1/sync-log", params=params).json()
        seen += [r["id"] for r in body["rows"]]
        # Newer rows, and an older one committed late: neither shifts the pages.
        write_log(api, [log_row(utcnow(), run_id="new"), log_row(T0 - timedelta(days=1))])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row repeated"
    first_fifty = set(range(min(seen), min(seen) + 50))
    assert first_fifty <= set(seen), "a row that was there when paging began was skipped"
    for broken in ("nonsense", "eyJ2IjoxLCJhZnRlciI6MX0"):  # not base64 JSON; a bare int key
        answer = reader.get("/api/v1/sync-log", params={"cursor": broken})
        assert answer.status_code == 400, broken
        assert answer.json()["error"]["code"] == "api-invalid-request"


def test_errors_are_the_dictionary(api: RunningApi) -> None:
    reader = api.client("read")
    listed = reader.get("/api/v1/errors").json()
    assert [e["code"] for e in listed] == list(ENTRIES)
    one = reader.get("/api/v1/errors/duplicate-contact").json()
    entry = ENTRIES["duplicate-contact"]
    assert one == {
        "code": "duplicate-contact",
        "meaning": entry.meaning,
        "effect": entry.effect,
        "next_step": entry.next_step,
    }
    missing = reader.get("/api/v1/errors/no-such-code")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "api-not-found"


def park(api: RunningApi, contact_id: str, error: str) -> int:
    """Park the outbox row of ``contact_id`` as a push that failed for good would."""
    with api.engine.begin() as conn:
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.contact_id == contact_id)
            .values(state=outbox.PARKED, attempts=5, last_error=error)
        )
    (row,) = [r for r in outbox_rows(api.engine) if r["contact_id"] == contact_id]
    return int(row["id"])


def test_outbox_list_retry_and_drop(api: RunningApi) -> None:
    staff = api.client("staff")
    made = [
        staff.post("/api/v1/contacts", json={**ADA, "crm_id": f"S-{i}", "phone": phone}).json()
        for i, phone in enumerate(("2025550143", "2025550144", "2025550145"))
    ]
    ids = [m["contact_id"] for m in made]
    parked = park(api, ids[1], "HTTP 400: PROPERTY_DOESNT_EXIST")
    reader = api.client("read")
    listed = reader.get("/api/v1/outbox").json()["rows"]
    assert [r["contact_id"] for r in listed] == ids  # oldest first
    assert {r["connection"] for r in listed} == {CONNECTION}
    by_state = reader.get("/api/v1/outbox", params={"state": "parked"}).json()["rows"]
    assert [(r["id"], r["last_error"]) for r in by_state] == [
        (parked, "HTTP 400: PROPERTY_DOESNT_EXIST")
    ]
    # By instance (its connection), by contact (any key), and paged.
    assert len(reader.get("/api/v1/outbox", params={"instance": CONNECTION}).json()["rows"]) == 3
    assert reader.get("/api/v1/outbox", params={"instance": "nope"}).status_code == 404
    mine = reader.get("/api/v1/outbox", params={"contact": "S-1"}).json()["rows"]
    assert [r["contact_id"] for r in mine] == [ids[1]]
    paged = pages(reader, "/api/v1/outbox", limit=2)
    assert [len(p) for p in paged] == [2, 1]

    retried = staff.post(f"/api/v1/outbox/{parked}/retry")
    assert retried.status_code == 200 and retried.json() == {"ids": [parked]}
    (row,) = [r for r in outbox_rows(api.engine) if r["id"] == parked]
    assert (row["state"], row["attempts"]) == (outbox.PENDING, 0)

    park(api, ids[2], "HTTP 409: conflict")
    again = staff.post("/api/v1/outbox:retry-parked", json={"connection": CONNECTION})
    assert again.status_code == 200 and len(again.json()["ids"]) == 1

    dropped = staff.delete(f"/api/v1/outbox/{parked}")
    assert dropped.status_code == 200 and dropped.json() == {"ids": [parked]}
    assert parked not in {r["id"] for r in outbox_rows(api.engine)}
    for gone in (
        staff.delete(f"/api/v1/outbox/{parked}"),
        staff.post(f"/api/v1/outbox/{parked}/retry"),
    ):
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "api-not-found"


def test_links_of_a_contact(api: RunningApi) -> None:
    ada = seed(api.engine, ADA)
    with api.engine.begin() as conn:
        links.save(
            conn,
            [
                links.LinkRow(CONNECTION, "901", ada, links.ACTIVE, {"first_name": "Ada"}),
                links.LinkRow("sis", "S-1", ada, links.DELETED, {}),
            ],
            utcnow(),
        )
    reader = api.client("read")
    for key in (ada, "S-1", ADA_E164):
        got = reader.get(f"/api/v1/contacts/{key}/links")
        assert got.status_code == 200, got.text
        assert [(r["connection"], r["remote_id"], r["state"]) for r in got.json()] == [
            (CONNECTION, "901", "active"),
            ("sis", "S-1", "deleted"),
        ]
    assert got.json()[0]["values"] == {"first_name": "Ada"}
    missing = reader.get("/api/v1/contacts/nobody/links")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "api-not-found"
