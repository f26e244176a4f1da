"""Keyset paging over 10,000 contacts, on SQLite and PostgreSQL, while edits, creations and
archivings land between the pages: every contact that existed at the start is listed exactly
once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import insert

from daemon.hub.store import Contact, utcnow
from tests.apikit import RunningApi, running_api

TOTAL = 10_000


@pytest.fixture
def api(engine) -> Iterator[RunningApi]:
    with running_api(engine) as served:
        yield served


def bulk_contacts(api: RunningApi, count: int) -> list[str]:
    """``count`` contacts inserted in one statement (the API is what is under test here)."""
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4().hex,
            "first_name": "Bulk",
            "last_name": f"N{i}",
            "phone": f"+1202{i:07d}",
            "archived": False,
            "test_user": False,
            "invalid_phone": False,
            "created_at": now,
            "updated_at": now,
            "changed_at": {},
        }
        for i in range(count)
    ]
    with api.engine.begin() as conn:
        conn.execute(insert(Contact.__table__), rows)
    return [r["id"] for r in rows]


def test_keyset_paging_has_no_gap_or_repeat_under_writes(api: RunningApi) -> None:
    ids = bulk_contacts(api, TOTAL)
    reader, staff = api.client("read"), api.client("staff")
    seen: list[str] = []
    cursor = None
    page = 0
    while True:
        params: dict[str, object] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        answer = reader.get("/api/v1/contacts", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [c["id"] for c in body["contacts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Writes between pages: edits (which change updated_at), an archive, new contacts.
        page += 1
        batch = [{"id": ids[(page * 997 + k) % TOTAL], "last_name": f"E{page}"} for k in range(20)]
        batch += [
            {"first_name": "New", "last_name": f"P{page}", "phone": f"+1303555{page:02d}{k:02d}"}
            for k in range(5)
        ]
        written = staff.post("/api/v1/contacts:batch", json={"records": batch})
        assert written.json()["summary"]["skipped"] == 0, written.text
        archived = staff.post(f"/api/v1/contacts/{ids[page * 13]}:archive")
        assert archived.status_code == 200
    assert page >= 9
    assert len(seen) == len(set(seen)), "a contact was listed twice"
    assert set(ids) <= set(seen), f"{len(set(ids) - set(seen))} contacts were never listed"


def test_a_cursor_is_opaque_and_checked(api: RunningApi) -> None:
    bulk_contacts(api, 3)
    reader = api.client("read")
    first = reader.get("/api/v1/contacts", params={"limit": 2}).json()
    assert len(first["contacts"]) == 2 and first["next_cursor"]
    rest = reader.get("/api/v1/contacts", params={"limit": 2, "cursor": first["next_cursor"]})
    assert len(rest.json()["contacts"]) == 1 and rest.json()["next_cursor"] is None
    for bad in ("not-base64!", "eyJ2IjoyfQ", "W10"):
        answer = reader.get("/api/v1/contacts", params={"cursor": bad})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "api-invalid-request"
