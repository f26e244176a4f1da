"""Instances over the HTTP API: their status exactly as ``contactsync status --json`` shows it,
"sync now" (woken in the daemon, 409 ``api-no-scheduler`` under ``contactsync serve``), and
the health routes that need no token. The daemon end to end is in tests/test_metrics.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.encoders import jsonable_encoder
from sqlalchemy import create_engine

from daemon.api.app import create_app
from daemon.api.server import ApiServer
from daemon.api.state import Hub
from daemon.cli.app import App
from daemon.config.instances import LoadResult, load_instances
from daemon.engine.registry import get_plugin_manager
from daemon.engine.status import status_rows
from daemon.hub.lease import acquire
from daemon.hub.store import utcnow
from tests import memplugin
from tests.apikit import RunningApi, running_api
from tests.clikit import Cli, isolated
from tests.daemonkit import instance_toml
from tests.memremote import MemoryConnector


@dataclass
class FakeCycles:
    """The scheduler as the API sees it (a small unit case: the real one is driven by the
    daemon test); records what it was asked to run."""

    running: bool = True
    jobs: list[str] = field(default_factory=lambda: ["crm:pull", "crm:push"])
    asked: list[str] = field(default_factory=list)

    def run_now(self, name: str) -> list[str]:
        self.asked.append(name)
        return list(self.jobs)


@pytest.fixture
def etc(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEM_KEY", "k-123")
    folder = tmp_path / "etc"
    (folder / "instances").mkdir(parents=True)
    (folder / "instances" / "crm.toml").write_text(instance_toml(tmp_path / "crm.json"))
    (folder / "instances" / "broken.toml").write_text('type = "memory"\nenabled = "yes"\n')
    return folder


def loaded_from(etc: Path) -> LoadResult:
    return load_instances(etc, {"memory": MemoryConnector}, secrets=False)


@pytest.fixture
def api(engine, etc: Path) -> Iterator[RunningApi]:
    loaded = loaded_from(etc)
    with running_api(engine, instances=lambda: loaded) as served:
        yield served


def test_instances_are_shown_as_status_json_shows_them(engine, api: RunningApi, etc) -> None:
    assert acquire(engine, "crm", "host-1/run", utcnow())
    answer = api.client("read").get("/api/v1/instances")
    assert answer.status_code == 200, answer.text
    rows = answer.json()["instances"]
    assert rows == json.loads(json.dumps(jsonable_encoder(status_rows(engine, loaded_from(etc)))))
    by_name = {r["name"]: r for r in rows}
    assert by_name["crm"]["state"] == "ok" and by_name["crm"]["lease"]["owner"] == "host-1/run"
    assert by_name["crm"]["outbox"] == {"pending": 0, "parked": 0}
    assert by_name["broken"]["state"] == "config-invalid"
    assert by_name["broken"]["config_error"]["key"] == "enabled"
    one = api.client("read").get("/api/v1/instances/crm")
    assert one.status_code == 200 and one.json() == by_name["crm"]
    missing = api.client("read").get("/api/v1/instances/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "api-not-found"


class MemoryCli(Cli):
    """The CLI with the memory connector registered."""

    def obj(self) -> App:
        return App(pm=get_plugin_manager(plugins=[memplugin]))


def test_status_json_of_the_cli_lists_the_same_instances(
    sqlite_engine, etc: Path, tmp_path: Path, monkeypatch
) -> None:
    """The CLI and the API share one implementation (engine.status.status_rows)."""
    loaded = loaded_from(etc)
    with running_api(sqlite_engine, instances=lambda: loaded) as api:
        served = api.client("read").get("/api/v1/instances").json()["instances"]
    with isolated(monkeypatch):
        cli = MemoryCli(tmp_path / "cli")
        cli.etc, cli.db_url = etc, str(sqlite_engine.url)
        printed = cli.json("status")["instances"]
    keys = ("name", "type", "state", "connection", "direction", "outbox", "links", "lease")
    assert [{k: r[k] for k in keys} for r in printed] == [{k: r[k] for k in keys} for r in served]


def test_sync_now_under_serve_is_refused_with_a_code(api: RunningApi) -> None:
    answer = api.client("staff").post("/api/v1/instances/crm/sync")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "api-no-scheduler"
    unknown = api.client("staff").post("/api/v1/instances/nope/sync")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "api-not-found"


def test_sync_now_wakes_the_scheduler(sqlite_engine, etc) -> None:
    cycles = FakeCycles()
    loaded = loaded_from(etc)
    with running_api(sqlite_engine, instances=lambda: loaded, cycles=cycles) as api:
        answer = api.client("staff").post("/api/v1/instances/crm/sync")
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"instance": "crm", "jobs": ["crm:pull", "crm:push"]}
        assert cycles.asked == ["crm"]
        cycles.jobs = []  # disabled: no jobs
        idle = api.client("staff").post("/api/v1/instances/crm/sync")
        assert idle.status_code == 409 and idle.json()["error"]["code"] == "api-invalid-request"


def test_health_needs_no_token_and_readiness_names_what_fails(sqlite_engine, etc) -> None:
    cycles = FakeCycles()
    with running_api(sqlite_engine, cycles=cycles) as api:
        anonymous = api.client(None)
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"hub": "ok", "scheduler": "running"}
        cycles.running = False
        stopped = anonymous.get("/readyz")
        assert stopped.status_code == 503
        assert stopped.json()["error"]["code"] == "api-not-ready"
        assert "scheduler" in stopped.json()["error"]["message"]
        document = anonymous.get("/openapi.json").json()
        assert "/healthz" not in document["paths"] and "/metrics" in document["paths"]


def test_readiness_fails_when_the_hub_does_not_answer(tmp_path: Path) -> None:
    gone = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'hub.db'}")
    server = ApiServer(create_app(Hub(gone)), bind="127.0.0.1", port=0, grace_seconds=5)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200  # alive all the same
            answer = client.get("/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"]["code"] == "api-not-ready"
        assert body["checks"]["hub"].startswith("unreachable")
        assert body["checks"]["scheduler"] == "none (contactsync serve)"
    finally:
        assert server.stop(5)
