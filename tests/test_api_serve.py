"""The server's life: ``contactsync serve`` and ``contactsync run`` with ``[http] enabled``
start, answer and stop cleanly on SIGTERM; a request in flight is drained, not cut."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from daemon.api.app import create_app
from daemon.api.server import ApiServer
from daemon.api.state import Hub
from daemon.hub.apitokens import Role, create_token
from daemon.hub.database import make_engine
from tests.hubkit import ADA_E164, seed

STARTUP_SECONDS = 30


def read_until(stream: IO[str], event: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON log lines from ``stream`` until one with ``event``; the others go to ``seen``."""
    for line in stream:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        seen.append(record)
        if record.get("event") == event:
            return record
    raise AssertionError(f"the process ended before logging {event}: {seen}")


@pytest.fixture
def config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    yield etc, url


def start(args: list[str], etc: Path, url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "--etc", str(etc), "--database-url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=STARTUP_SECONDS)
    return process.returncode, out


def test_serve_answers_and_stops_on_sigterm_without_logging_personal_data(config) -> None:
    etc, url = config
    engine = make_engine(url)
    seed(engine, {"first_name": "Ada", "last_name": "Lovelace", "phone": ADA_E164})
    token = create_token(engine, "portal", Role.READ)
    engine.dispose()
    process = start(["serve", "--port", "0"], etc, url)
    seen: list[dict[str, Any]] = []
    try:
        serving = read_until(process.stdout, "api_serving", seen)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=serving["url"], headers=headers, timeout=10) as client:
            assert client.get(f"/api/v1/contacts/{ADA_E164}").json()["first_name"] == "Ada"
            assert client.get("/api/v1/contacts", params={"search": "Lovelace"}).status_code == 200
            assert client.get("/openapi.json").status_code == 200
    finally:
        code, out = stop(process)
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    routes = [line["route"] for line in lines if line.get("event") == "http_request"]
    assert routes == ["/api/v1/contacts/{contact}", "/api/v1/contacts", "/openapi.json"]
    assert any(line.get("event") == "api_stopped" for line in lines)
    everything = out + json.dumps(seen)
    for private in (ADA_E164, "Lovelace", token):
        assert private not in everything


def test_run_serves_the_api_when_enabled(config) -> None:
    etc, url = config
    (etc / "contactsync.toml").write_text("[http]\nenabled = true\nport = 0\n")
    process = start(["run"], etc, url)
    seen: list[dict[str, Any]] = []
    try:
        serving = read_until(process.stdout, "api_serving", seen)  # type: ignore[arg-type]
        read_until(process.stdout, "daemon_started", seen)  # type: ignore[arg-type]
        answer = httpx.get(serving["url"] + "/api/v1/contacts", timeout=10)
        assert answer.status_code == 401
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert '"api_stopped"' in out and '"daemon_stopped"' in out


def test_http_settings_are_strict(config) -> None:
    etc, url = config
    (etc / "contactsync.toml").write_text('[http]\nenabled = "yes"\n')
    process = start(["serve"], etc, url)
    out, _ = process.communicate(timeout=STARTUP_SECONDS)
    assert process.returncode == 2
    assert "http.enabled" in out


def test_a_request_in_flight_is_drained(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    app = create_app(Hub(engine))
    entered, release = threading.Event(), threading.Event()

    def slow() -> dict[str, str]:
        entered.set()
        release.wait(10)
        return {"done": "yes"}

    app.add_api_route("/slow", slow)
    server = ApiServer(app, bind="127.0.0.1", port=0, grace_seconds=10)
    server.start()
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(httpx.get(server.url + "/slow")))
    caller.start()
    assert entered.wait(10)
    server.request_stop()
    release.set()
    assert server.join(10), "the drain did not finish"
    caller.join(10)
    assert [a.json() for a in answers] == [{"done": "yes"}]
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/slow", timeout=2)
    engine.dispose()
