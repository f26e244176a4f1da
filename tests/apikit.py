"""The HTTP API under test: the real app on uvicorn on a loopback port, and httpx clients.

Not a fixture module: :func:`running_api` is a context manager the API test files wrap in
their own fixtures, so each picks its backends (SQLite, PostgreSQL) through ``engine``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine

from daemon import web
from daemon.api.app import create_app
from daemon.api.server import ApiServer
from daemon.api.state import Hub
from daemon.hub.apitokens import Role, create_token
from daemon.hub.mirror import mirror_instances

CONNECTION = "crm"


@dataclass(frozen=True)
class PushingInstance:
    """An outgoing instance as the mirror sees it, so hub writes queue outbox rows."""

    name: str = CONNECTION

    def hub_row(self) -> dict[str, Any]:
        return {"type": "hubspot", "connection": CONNECTION, "direction": "both", "enabled": True}


@dataclass
class RunningApi:
    """A served API: its URL, its hub, and a token per role."""

    engine: Engine
    server: ApiServer
    tokens: dict[str, str] = field(default_factory=dict)
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None = "admin", token: str | None = None) -> httpx.Client:
        """A client sending ``token`` (default: the token of ``role``; ``None``: none)."""
        headers = {}
        secret = token if token is not None else (self.tokens[role] if role else None)
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self._clients.append(client)
        return client


@contextmanager
def running_api(engine: Engine, *, region: str = "US", **hub: Any) -> Iterator[RunningApi]:
    """The API over ``engine`` on 127.0.0.1, a free port; one token per role; an outgoing
    connection mirrored, so edits queue the outbox. ``hub``: more :class:`Hub` fields
    (``instances``, ``cycles``, ``metrics``)."""
    mirror_instances(engine, {CONNECTION: PushingInstance()})
    server = ApiServer(
        create_app(Hub(engine, region=region, **hub), sites=(web.mount,)),
        bind="127.0.0.1",
        port=0,
        grace_seconds=5,
    )
    server.start()
    api = RunningApi(engine, server)
    for role in Role:
        api.tokens[str(role)] = create_token(engine, f"test-{role}", role)
    try:
        yield api
    finally:
        for client in api._clients:
            client.close()
        assert server.stop(5), "the API did not stop within its grace time"
