"""Who may call what: the auth matrix over every route of the served OpenAPI document, and
tokens that are shown once, stored as a hash and never logged."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.api.webhooks import SIGNED_BY_PLATFORM
from daemon.foundation import log as logging_setup
from daemon.hub.apitokens import ApiToken, Role, create_token, revoke_token
from daemon.hub.database import make_engine
from tests.apikit import RunningApi, running_api
from tests.clikit import Cli, isolated
from tests.hubkit import ADA_E164, seed

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def api(engine) -> Iterator[RunningApi]:
    with running_api(engine) as served:
        yield served


def operations(api: RunningApi) -> list[tuple[str, str, Role]]:
    """(method, path, role) of every operation the served OpenAPI document lists; a route
    added later is in it without a change here."""
    document = api.client(None).get("/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                role = item[method].get("x-role")
                assert role is not None, f"{method.upper()} {path} names no role"
                if role == SIGNED_BY_PLATFORM:
                    # No token: the platform signs the request (tests/test_webhooks.py
                    # refuses a bad signature); only the webhook route may say so.
                    assert (method, path) == ("post", "/webhooks/{instance}"), (method, path)
                    continue
                found.append((method, path, Role(role)))
    assert len(found) >= 8
    return found


STAFF_ACTS = ("/api/v1/contacts", "/api/v1/outbox", "/api/v1/instances/{name}/sync")
"""What staff act on besides viewing: contacts, the outbox behind the sync log (retry, drop),
and "sync now" of an instance."""


def policy(method: str, path: str) -> Role:
    """The roles as the README states them: reading (``/metrics`` included) is ``read``;
    editing contacts, retrying or dropping outbox rows and "sync now" is ``staff``;
    everything else (custom field definitions, later instance config and tokens) is
    ``admin``. A route whose declared role is lower fails the test below."""
    if method == "get":
        return Role.READ
    if path.startswith(STAFF_ACTS):
        return Role.STAFF
    return Role.ADMIN


def test_each_route_declares_the_role_the_policy_gives(api: RunningApi) -> None:
    for method, path, role in operations(api):
        assert role == policy(method, path), (method, path)


def refused(answer, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, (answer.request.method, answer.request.url, answer.text)
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["code"] == code


def test_every_route_refuses_missing_wrong_revoked_and_low_role_tokens(api: RunningApi) -> None:
    revoked = create_token(api.engine, "gone", Role.ADMIN)
    revoke_token(api.engine, "gone")
    callers = {
        "missing": api.client(None),
        "wrong": api.client(token="cst_" + "A" * 43),
        "malformed": api.client(token="not a token at all"),
        "revoked": api.client(token=revoked),
    }
    for method, template, role in operations(api):
        path = re.sub(r"\{[^}]+\}", "1", template)  # any value: the door comes first
        for caller in callers.values():
            refused(caller.request(method, path, json={}), 401, "api-unauthorized")
        for low in Role:
            if not low.allows(role):
                refused(api.client(str(low)).request(method, path, json={}), 403, "api-forbidden")
        # The role it needs gets past the door (to whatever the empty request deserves).
        answer = api.client(str(role)).request(method, path, json={})
        assert answer.status_code not in (401, 403), (method, path, answer.text)


def test_openapi_document_is_served(api: RunningApi) -> None:
    document = api.client(None).get("/openapi.json").json()
    assert document["info"]["title"] == "contactsync"
    assert "/api/v1/contacts:batch" in document["paths"]
    assert document["paths"]["/webhooks/{instance}"]["post"]["x-role"] == SIGNED_BY_PLATFORM
    schemes = document["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


def test_tokens_cli_shows_once_stores_a_hash_and_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with isolated(monkeypatch):
        run = Cli(tmp_path)
        created = run("tokens", "create", "portal", "--role", "staff")
        token = created.stdout.strip()
        assert token.startswith("cst_") and len(token) > 40
        assert "shown this once" in created.stderr
        again = run("tokens", "create", "portal", "--role", "read", expect=1)
        assert "exists" in again.stderr
        run("tokens", "create", "x", "--role", "root", expect=2)
        listed = run("tokens", "list", "--json")
        assert token not in listed.stdout
        rows = json.loads(listed.stdout)
        assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [
            ("portal", "staff", None)
        ]
        engine = make_engine(run.db_url)
        with engine.connect() as conn:
            (stored,) = conn.execute(select(ApiToken.__table__)).mappings().all()
        assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
        assert token not in json.dumps({k: str(v) for k, v in stored.items()})
        engine.dispose()
        # Not anywhere in the hub's files either (the WAL included).
        for path in tmp_path.glob("hub.db*"):
            assert token.encode() not in path.read_bytes()
        with_json = json.loads(run("tokens", "create", "ops", "--role", "admin", "--json").stdout)
        assert with_json["role"] == "admin" and with_json["token"].startswith("cst_")
        run("tokens", "revoke", "portal")
        rows = json.loads(run("tokens", "list", "--json").stdout)
        assert rows[1]["name"] == "portal" and rows[1]["revoked_at"] is not None
        run("tokens", "revoke", "nobody", expect=1)


def test_revoked_token_is_refused_at_once_and_tokens_never_logged(
    engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    with isolated(monkeypatch):
        logging_setup.configure(level="info", stream=stream, json=True)
        with running_api(engine) as api:
            seed(api.engine, {"first_name": "Ada", "last_name": "L", "phone": ADA_E164})
            staff = api.client("staff")
            assert staff.get(f"/api/v1/contacts/{ADA_E164}").status_code == 200
            assert staff.get("/api/v1/contacts", params={"search": "Ada"}).status_code == 200
            revoke_token(api.engine, "test-staff")
            refused(staff.get("/api/v1/contacts"), 401, "api-unauthorized")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["event"] == "http_request"]
    assert [(a["route"], a["status"]) for a in access] == [
        ("/api/v1/contacts/{contact}", 200),
        ("/api/v1/contacts", 200),
        ("/api/v1/contacts", 401),
    ]
    assert access[0]["client"] == "test-staff" and access[2]["code"] == "api-unauthorized"
    assert {"schema_version", "timestamp", "level"} <= set(access[0])
    text = stream.getvalue()
    for secret in api.tokens.values():
        assert secret not in text
    assert ADA_E164 not in text and "search" not in text and "Ada" not in text
