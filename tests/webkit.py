"""The staff pages under test: a browser-like httpx client that signs in with a token, keeps
the session cookie and reads the form token of the page it is on.

Not a fixture module: the web test files wrap :func:`tests.apikit.running_api` (the real app
on uvicorn, on SQLite or PostgreSQL) and use :func:`signed_in` for each role.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import insert

from tests.apikit import RunningApi
from tests.hubkit import SYNC_LOG

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def form_token(html: str) -> str:
    """The form token in a page (every form of a page carries the same one)."""
    found = _CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


@contextmanager
def browser(api: RunningApi) -> Iterator[httpx.Client]:
    """A cookie-keeping client of the pages that does not follow redirects (tests read them)."""
    with httpx.Client(base_url=api.url, timeout=30, follow_redirects=False) as client:
        yield client


def sign_in(client: httpx.Client, token: str, next_path: str = "/sync-log") -> httpx.Response:
    """Sign ``client`` in with ``token`` through the form, as a browser does."""
    form = client.get("/sign-in")
    assert form.status_code == 200, form.text
    return client.post(
        "/sign-in", data={"token": token, "csrf": form_token(form.text), "next": next_path}
    )


@contextmanager
def signed_in(api: RunningApi, role: str) -> Iterator[httpx.Client]:
    """A client signed in with the test token of ``role``."""
    with browser(api) as client:
        answer = sign_in(client, api.tokens[role])
        assert answer.status_code == 303, answer.text
        yield client


def log_row(at: datetime, **values: Any) -> dict[str, Any]:
    """A sync-log row as the engine writes one (override any column)."""
    row = {
        "timestamp": at,
        "integration": "hubspot",
        "direction": "incoming",
        "contact_id": None,
        "code": "invalid-email",
        "instance": "crm",
        "run_id": "r1",
        "remote_id": None,
        "message": "email is not an address",
        "details": {"field": "email"},
    }
    return {**row, **values}


def write_log(api: RunningApi, rows: list[dict[str, Any]]) -> None:
    """Insert sync-log rows directly (fast, any timestamps)."""
    with api.engine.begin() as conn:
        conn.execute(insert(SYNC_LOG), rows)
