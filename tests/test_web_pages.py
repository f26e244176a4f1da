"""The staff pages over real HTTP without a browser, on SQLite and PostgreSQL: sign-in and the
session (signed, HttpOnly, SameSite, re-checked per request), form tokens (a forged post is
``web-csrf-refused`` and writes nothing), roles (read sees, staff changes), the Sync Log's
filters, counts by code, keyset pages and CSV export, the search kept out of addresses and
logs, the contact edit through the incoming rules, retry now and sync now.

The browser tests (Chromium, axe-core, screenshots) are in tests/test_web_browser.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from daemon.config.instances import LoadResult
from daemon.foundation import log as logging_setup
from daemon.foundation.dictionary import ENTRIES
from daemon.hub import outbox
from daemon.hub.apitokens import revoke_token
from daemon.hub.store import utcnow
from daemon.web import synclog as synclog_page
from daemon.web.session import COOKIE
from tests.apikit import CONNECTION, RunningApi, running_api
from tests.clikit import isolated
from tests.daemonkit import instance_toml
from tests.hubkit import (
    ADA_E164,
    ADA_PHONE,
    OUTBOX,
    contact,
    log_rows,
    outbox_rows,
    seed,
    snapshot,
)
from tests.test_api_instances import FakeCycles, loaded_from
from tests.webkit import browser, form_token, log_row, sign_in, signed_in, write_log

ADA = {"first_name": "Ada", "last_name": "Lovelace", "phone": ADA_PHONE, "crm_id": "S-1"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAGES = ("/sync-log", "/errors", "/instances")


@pytest.fixture
def api(engine) -> Iterator[RunningApi]:
    with running_api(engine) as served:
        yield served


def refused(answer, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, answer.text
    assert f'href="/errors#{code}"' in answer.text, answer.text


def counted(html: str) -> dict[str, int]:
    """The page's counts by code ("412 \u00d7 code")."""
    found = re.findall(r'class="n">([\d,]+)</span> \S <a href="/errors#([a-zA-Z-]+)"', html)
    return {code: int(n.replace(",", "")) for n, code in found}


# --- sign-in and the session --------------------------------------------------------------------


def test_every_page_needs_a_session_and_the_sign_in_sets_a_strict_cookie(api) -> None:
    cid = seed(api.engine, ADA)
    with browser(api) as client:
        for path in (*PAGES, f"/contacts/{cid}", "/sync-log.csv"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == f"/sign-in?next={path}"
        # Changes without a session are sent to the form too, and nothing is written.
        assert client.post(f"/contacts/{cid}", data={"first_name": "X"}).status_code == 303
        assert contact(api.engine, cid)["first_name"] == "Ada"

        wrong = sign_in(client, "cst_not-a-token")
        assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
        assert COOKIE not in client.cookies
        # No form token: the sign-in form did not come from this server's page.
        forged = client.post("/sign-in", data={"token": api.tokens["read"]})
        refused(forged, 403, "web-csrf-refused")

        ok = sign_in(client, api.tokens["read"], next_path="//evil.example/x")
        assert ok.status_code == 303 and ok.headers["location"] == "/sync-log"  # no open redirect
        cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith(COOKIE))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert api.tokens["read"] not in cookie  # the session names the token, never holds it
        page = client.get("/sync-log")
        assert page.status_code == 200 and 'lang="en"' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        # A page asks nothing of any other host: no CDN, it works without a network.
        assert not re.search(r'(src|href)="(https?:)?//', page.text)

        # A tampered cookie is no session.
        value = client.cookies[COOKIE]
        client.cookies.set(COOKIE, value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1])
        assert client.get("/sync-log").status_code == 303


def test_a_revoked_tokens_session_ends_on_its_next_request(api) -> None:
    with signed_in(api, "staff") as client:
        assert client.get("/sync-log").status_code == 200
        revoke_token(api.engine, "test-staff")
        assert client.get("/sync-log").status_code == 303


def test_sign_out_needs_the_form_token_then_ends_the_session(api) -> None:
    with signed_in(api, "read") as client:
        token = form_token(client.get("/errors").text)
        refused(client.post("/sign-out", data={}), 403, "web-csrf-refused")
        assert client.get("/errors").status_code == 200
        assert client.post("/sign-out", data={"csrf": token}).status_code == 303
        assert client.get("/errors").status_code == 303


# --- forged forms and roles ---------------------------------------------------------------------


def test_forged_posts_are_refused_and_write_nothing(api) -> None:
    cid = seed(api.engine, ADA)
    before = (snapshot(api.engine), outbox_rows(api.engine), log_rows(api.engine))
    with signed_in(api, "staff") as client, signed_in(api, "staff") as other:
        theirs = form_token(other.get(f"/contacts/{cid}").text)
        for data in ({"first_name": "Eve"}, {"first_name": "Eve", "csrf": theirs}):
            refused(client.post(f"/contacts/{cid}", data=data), 403, "web-csrf-refused")
        refused(client.post("/instances/crm/sync", data={}), 403, "web-csrf-refused")
    assert (snapshot(api.engine), outbox_rows(api.engine), log_rows(api.engine)) == before


def test_a_read_only_token_sees_everything_and_changes_nothing(api) -> None:
    cid = seed(api.engine, ADA)
    parked = park(api, cid)
    with signed_in(api, "read") as client:
        page = client.get(f"/contacts/{cid}")
        assert page.status_code == 200
        assert "Lovelace" in page.text and "Retry now" not in page.text and "Save" not in page.text
        token = form_token(page.text)  # the sign-out form's: a valid form token
        refused(
            client.post(f"/contacts/{cid}", data={"csrf": token, "first_name": "Eve"}),
            403,
            "api-forbidden",
        )
        refused(
            client.post(f"/contacts/{cid}/outbox/{parked}/retry", data={"csrf": token}),
            403,
            "api-forbidden",
        )
        refused(client.post("/instances/crm/sync", data={"csrf": token}), 403, "api-forbidden")
    assert contact(api.engine, cid)["first_name"] == "Ada"
    assert [r["state"] for r in outbox_rows(api.engine) if r["id"] == parked] == [outbox.PARKED]


# --- the Sync Log -------------------------------------------------------------------------------


def test_sync_log_filters_counts_by_code_and_keyset_pages(api, monkeypatch) -> None:
    monkeypatch.setattr(synclog_page, "PAGE", 20)
    cid = seed(api.engine, ADA)
    rows = [log_row(T0 + timedelta(seconds=i), contact_id=cid) for i in range(45)]
    rows += [
        log_row(T0 + timedelta(seconds=i), code="duplicate-contact", direction="outgoing")
        for i in range(7)
    ]
    rows += [log_row(T0, integration="csv", instance=None, code="blank-required-data-in-record")]
    write_log(api, rows)
    with signed_in(api, "read") as client:
        everything = client.get("/sync-log").text
        assert counted(everything) == {
            "invalid-email": 45,
            "duplicate-contact": 7,
            "blank-required-data-in-record": 1,
        }
        assert f'href="/contacts/{cid}">Ada Lovelace</a>' in everything  # as staff know her

        # One code, paged by its cursor: every row once, newest first, then no more pages.
        seen: list[int] = []
        path = "/sync-log?code=invalid-email"
        while path:
            page = client.get(path)
            assert page.status_code == 200
            assert re.findall(r'data-label="Code"><a class="code" href="/errors#([a-z-]+)"',
                              page.text) == ["invalid-email"] * len(
                                  re.findall(r'data-label="Id">(\d+)<', page.text))  # fmt: skip
            seen += [int(i) for i in re.findall(r'data-label="Id">(\d+)<', page.text)]
            found = re.search(r'rel="next" href="([^"]+)"', page.text)
            path = found.group(1).replace("&amp;", "&") if found else ""
        assert len(seen) == 45 and len(set(seen)) == 45 and seen == sorted(seen, reverse=True)

        outgoing = client.get("/sync-log", params={"direction": "outgoing"}).text
        assert counted(outgoing) == {"duplicate-contact": 7}
        csv_rows = client.get("/sync-log", params={"integration": "csv"}).text
        assert counted(csv_rows) == {"blank-required-data-in-record": 1}
        recent = client.get("/sync-log", params={"since": "2026-03-01T12:00:30+00:00"}).text
        assert counted(recent) == {"invalid-email": 15}
        refused(client.get("/sync-log", params={"since": "last tuesday"}), 422,
                "api-invalid-request")  # fmt: skip
        refused(client.get("/sync-log", params={"cursor": "bm9wZQ"}), 400, "api-invalid-request")


def test_search_goes_by_post_and_never_into_an_address_or_the_log(
    engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    with isolated(monkeypatch):
        logging_setup.configure(level="info", stream=stream, json=True)
        with running_api(engine) as api:
            ada = seed(api.engine, {**ADA, "email": "ada@example.edu"})
            other = seed(api.engine, {"first_name": "G", "last_name": "H", "phone": "2025550144"})
            write_log(api, [log_row(T0, contact_id=ada), log_row(T0, contact_id=other)])
            with signed_in(api, "read") as client:
                for search in (ADA_PHONE, "ada@example.edu", "S-1"):
                    page = client.post("/sync-log", data={"search": search})
                    assert page.status_code == 200
                    assert f'href="/contacts/{ada}"' in page.text
                    assert f'href="/contacts/{other}"' not in page.text
                    # Every address in the page (links, forms) is free of the search.
                    for address in re.findall(r'(?:href|action)="([^"]*)"', page.text):
                        assert "ada@" not in address and "555" not in address, address
                nobody = client.post("/sync-log", data={"search": "nobody@example.edu"})
                assert "No rows match." in nobody.text
                export = client.post("/sync-log.csv", data={"search": "ada@example.edu"})
                assert export.text.count("\r\n") == 2  # the header and Ada's row
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    routes = {line["route"] for line in lines if line["event"] == "http_request"}
    assert {"/sync-log", "/sync-log.csv", "/sign-in"} <= routes
    for secret in (ADA_E164, "555", "ada@example.edu", "S-1", "nobody", *api.tokens.values()):
        assert secret not in text, secret


def test_csv_export_streams_every_filtered_row_formula_escaped(api, monkeypatch) -> None:
    monkeypatch.setattr(synclog_page, "EXPORT_BATCH", 7)  # several keyset batches
    rows = [log_row(T0 + timedelta(seconds=i)) for i in range(20)]
    rows.append(log_row(T0, message='=HYPERLINK("http://x")', code="remote-rejected"))
    write_log(api, rows)
    with signed_in(api, "read") as client:
        answer = client.get("/sync-log.csv", params={"code": "invalid-email"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        read = list(csv.DictReader(io.StringIO(answer.text)))
        assert len(read) == 20 and len({r["id"] for r in read}) == 20
        assert read[0]["integration"] == "hubspot" and read[0]["instance"] == "crm"
        rejected = client.get("/sync-log.csv", params={"code": "remote-rejected"}).text
        (row,) = csv.DictReader(io.StringIO(rejected))
        assert row["message"].startswith("'=")  # a spreadsheet shows it, never runs it


# --- the dictionary -----------------------------------------------------------------------------


def test_the_dictionary_page_has_every_code_with_its_anchor(api) -> None:
    with signed_in(api, "read") as client:
        page = client.get("/errors").text
    for code, entry in ENTRIES.items():
        assert f'id="{code}"' in page
        assert entry.next_step.replace("'", "&#39;").replace('"', "&#34;")[:40] in page


# --- the contact --------------------------------------------------------------------------------


def park(api: RunningApi, contact_id: str) -> int:
    """Park the contact's outbox row (the seed queued it), as a push that gave up does."""
    now = utcnow()
    with api.engine.begin() as conn:
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.contact_id == contact_id)
            .values(
                attempts=8, state=outbox.PARKED, next_attempt_at=now + timedelta(days=1),
                last_error="remote-rejected: no", updated_at=now,
            )
        )  # fmt: skip
        return int(
            conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.contact_id == contact_id)).scalar_one()
        )


def test_an_edit_goes_through_the_incoming_rules(api) -> None:
    cid = seed(api.engine, {**ADA, "preferred_name": "Addie"})
    with signed_in(api, "staff") as client:
        page = client.get(f"/contacts/{cid}")
        token = form_token(page.text)
        edit = {
            "csrf": token,
            "first_name": "Augusta",
            "preferred_name": "UNSET",
            "phone": "(202) 555-0199",
            "email": "not-an-email",
            "last_name": "",  # blank keeps the hub's value
        }
        answer = client.post(f"/contacts/{cid}", data=edit)
        assert answer.status_code == 200, answer.text
        assert "<strong>updated</strong>" in answer.text
        assert 'href="/errors#invalid-email"' in answer.text
    after = contact(api.engine, cid)
    assert after["first_name"] == "Augusta" and after["last_name"] == "Lovelace"
    assert after["preferred_name"] is None
    assert after["phone"] == "+12025550199" and after["previous_phone"] == ADA_E164
    assert after["email"] is None
    ((code, integration),) = {(r["code"], r["integration"]) for r in log_rows(api.engine)}
    assert (code, integration) == ("invalid-email", "api")
    assert [r["connection"] for r in outbox_rows(api.engine)] == [CONNECTION]


def test_retry_now_rearms_the_contacts_parked_change(api) -> None:
    cid = seed(api.engine, ADA)
    other = seed(api.engine, {"first_name": "G", "last_name": "H", "phone": "2025550144"})
    row = park(api, cid)
    with signed_in(api, "staff") as client:
        page = client.get(f"/contacts/{cid}")
        assert "parked" in page.text and "Retry now" in page.text
        token = form_token(page.text)
        # Another contact's page cannot retry this contact's row.
        refused(client.post(f"/contacts/{other}/outbox/{row}/retry", data={"csrf": token}), 404,
                "api-not-found")  # fmt: skip
        answer = client.post(f"/contacts/{cid}/outbox/{row}/retry", data={"csrf": token})
        assert answer.status_code == 303
        assert "queued again" in client.get(answer.headers["location"]).text
    (queued,) = [r for r in outbox_rows(api.engine) if r["id"] == row]
    assert (queued["state"], queued["attempts"]) == (outbox.PENDING, 0)


def test_an_unknown_contact_is_a_coded_not_found_page(api) -> None:
    with signed_in(api, "read") as client:
        refused(client.get("/contacts/nobody"), 404, "api-not-found")


# --- instances ----------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadResult:
    monkeypatch.setenv("MEM_KEY", "k-123")
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "instances" / "crm.toml").write_text(instance_toml(tmp_path / "crm.json"))
    return loaded_from(etc)


def test_instances_page_and_sync_now(sqlite_engine, loaded: LoadResult) -> None:
    cycles = FakeCycles()
    with running_api(sqlite_engine, instances=lambda: loaded, cycles=cycles) as api:
        with signed_in(api, "staff") as client:
            page = client.get("/instances")
            assert page.status_code == 200 and "Sync now" in page.text
            assert 'href="/sync-log?integration=crm"' in page.text
            token = form_token(page.text)
            answer = client.post("/instances/crm/sync", data={"csrf": token})
            assert answer.status_code == 303 and cycles.asked == ["crm"]
            assert "its cycles run now" in client.get(answer.headers["location"]).text
            refused(client.post("/instances/nope/sync", data={"csrf": token}), 404,
                    "api-not-found")  # fmt: skip
        with signed_in(api, "read") as client:
            assert "Sync now" not in client.get("/instances").text


def test_sync_now_without_a_scheduler_is_refused(sqlite_engine, loaded: LoadResult) -> None:
    with running_api(sqlite_engine, instances=lambda: loaded) as api, signed_in(api, "staff") as c:
        page = c.get("/instances")
        assert "does not sync" in page.text
        refused(c.post("/instances/crm/sync", data={"csrf": form_token(page.text)}), 409,
                "api-no-scheduler")  # fmt: skip
