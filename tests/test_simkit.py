"""The simulator kit: a loopback server, routes, the control endpoints and every fault knob,
seen from a real HTTP client as a connector would see them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.engine.registry import PluginError, Registry, get_plugin_manager
from daemon.foundation.clock import FakeClock
from daemon.hookspecs import hookimpl
from daemon.kit.simkit import (
    Faults,
    IssuedTokens,
    Reply,
    Request,
    Simulator,
    SimulatorError,
    json_reply,
    parse_duration,
)

TOKEN = "kit-token"


class CounterSimulator(Simulator):
    """A platform with one counter: enough to see state, routes, auth and faults."""

    name = "counter"

    def setup_routes(self) -> None:
        self.add_route("GET", "/count", self._get)
        self.add_route("POST", "/count", self._bump)
        self.add_route("GET", "/items/{item_id}", self._item)

    def reset_state(self) -> None:
        self.count = self.contacts

    def state(self) -> dict[str, Any]:
        return {"count": self.count}

    def credentials(self) -> dict[str, Any]:
        return {"token": TOKEN}

    def _get(self, request: Request) -> Reply:
        self.require_bearer(request, TOKEN)
        return json_reply({"count": self.count, "at": self.clock.now().isoformat()})

    def _bump(self, request: Request) -> Reply:
        self.require_bearer(request, TOKEN)
        self.count += int(request.json().get("by", 1))
        return json_reply({"count": self.count})

    def _item(self, request: Request) -> Reply:
        if request.params["item_id"] == "missing":
            raise SimulatorError(404, "no such item")
        return json_reply({"id": request.params["item_id"]})


@pytest.fixture
def sim() -> Iterator[CounterSimulator]:
    with CounterSimulator(contacts=5, seed=7, clock=FakeClock()) as simulator:
        yield simulator


@pytest.fixture
def client(sim: CounterSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=5) as c:
        yield c


def test_serves_on_loopback_and_describes_itself(sim: CounterSimulator) -> None:
    assert sim.url.startswith("http://127.0.0.1:")
    assert sim.describe() == {"name": "counter", "url": sim.url, "credentials": {"token": TOKEN}}
    json.dumps(sim.describe())  # the line `contactsync simulate` prints


def test_routes_placeholders_and_errors(client: httpx.Client) -> None:
    assert client.get("/count").json()["count"] == 5
    assert client.get("/items/abc").json() == {"id": "abc"}
    assert client.get("/items/missing").status_code == 404
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/count").status_code == 405


def test_bearer_auth(sim: CounterSimulator) -> None:
    with httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer wrong"}) as bad:
        response = bad.get("/count")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_injected_clock_drives_platform_time(sim: CounterSimulator, client: httpx.Client) -> None:
    assert isinstance(sim.clock, FakeClock)
    before = client.get("/count").json()["at"]
    sim.clock.advance(3600)
    assert client.get("/count").json()["at"] > before


def test_reset_endpoint_restores_initial_state(client: httpx.Client) -> None:
    client.post("/count", json={"by": 10})
    client.post("/_sim/faults", json={"error_rate": 0.5, "next": "drop"})
    assert client.get("/_sim/state").json()["count"] == 15
    assert client.post("/_sim/reset").json() == {"reset": True}
    state = client.get("/_sim/state").json()
    assert state["count"] == 5
    assert state["faults"]["error_rate"] == 0.0
    assert state["faults"]["next"] == []
    assert state["requests"] == 0


def test_latency_knob_still_answers(client: httpx.Client) -> None:
    # Only that the answer arrives: the suite never asserts on wall time.
    client.post("/_sim/faults", json={"latency": "20ms"})
    assert client.get("/_sim/state").json()["faults"]["latency"] == pytest.approx(0.02)
    assert client.get("/count").status_code == 200


def test_error_rate_one_answers_5xx(client: httpx.Client) -> None:
    client.post("/_sim/faults", json={"error_rate": 1.0})
    statuses = {client.get("/count").status_code for _ in range(5)}
    assert statuses <= {500, 502, 503}
    # The control endpoints are never faulted, so a test can always undo a knob.
    assert client.post("/_sim/faults", json={"error_rate": 0}).status_code == 200
    assert client.get("/count").status_code == 200


def test_drop_closes_the_connection(sim: CounterSimulator, client: httpx.Client) -> None:
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.get("/count")
    sim.set_faults(drop_rate=0.0)
    assert client.get("/count").status_code == 200


def test_malformed_body_is_not_json(client: httpx.Client) -> None:
    client.post("/_sim/faults", json={"malformed_rate": 1.0})
    response = client.get("/count")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_one_shot_rate_limit_then_normal(client: httpx.Client) -> None:
    client.post("/_sim/faults", json={"next": "rate_limit", "retry_after": 2})
    limited = client.get("/count")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert client.get("/count").status_code == 200


def test_one_shot_faults_are_spent_in_order(sim: CounterSimulator, client: httpx.Client) -> None:
    sim.inject("server_error")
    sim.inject("malformed")
    sim.inject("drop")
    assert client.get("/count").status_code == 500
    with pytest.raises(ValueError):
        client.get("/count").json()
    with pytest.raises(httpx.TransportError):
        client.get("/count")
    assert client.get("/count").json()["count"] == 5


def test_bad_fault_requests_are_400(client: httpx.Client) -> None:
    assert client.post("/_sim/faults", json={"next": "meteor"}).status_code == 400
    assert client.post("/_sim/faults", json={"error_rate": 2}).status_code == 400
    assert client.post("/_sim/faults", json={"colour": "red"}).status_code == 400
    assert client.post("/_sim/faults", content=b"not json").status_code == 400


def test_seeded_faults_repeat() -> None:
    def run() -> list[int]:
        with CounterSimulator(seed=3, error_rate=0.5) as simulator:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=simulator.url, headers=headers) as c:
                return [c.get("/count").status_code for _ in range(12)]

    first = run()
    assert first == run()
    assert 200 in first and set(first) - {200}


@pytest.mark.parametrize(
    ("text", "seconds"), [("150ms", 0.15), ("0.15", 0.15), ("1s", 1.0), ("2m", 120.0), (0.5, 0.5)]
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "-1s", "1h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_faults_as_dict_hides_internals() -> None:
    assert "_extra_one_shots" not in Faults().as_dict()


# --- the register_simulators hook -------------------------------------------------------------


class _Plugin:
    @hookimpl
    def register_simulators(self, register: Any) -> None:
        register("counter", CounterSimulator)


class _Clash:
    @hookimpl
    def register_simulators(self, register: Any) -> None:
        register("counter", lambda **options: CounterSimulator(**options))


def test_registry_collects_simulators() -> None:
    registry = Registry.from_plugin_manager(
        get_plugin_manager(entry_points=False, plugins=[_Plugin()])
    )
    assert registry.simulator("counter") is CounterSimulator
    with pytest.raises(PluginError, match="unknown simulator 'nope'"):
        registry.simulator("nope")


def test_two_simulators_of_one_name_clash() -> None:
    pm = get_plugin_manager(entry_points=False, plugins=[_Plugin(), _Clash()])
    with pytest.raises(PluginError, match="simulator 'counter' is registered twice"):
        Registry.from_plugin_manager(pm)


# --- IssuedTokens: the access tokens a simulator handed out ---------------------------------


@pytest.mark.parametrize("wall", [False, True])
def test_issued_tokens_live_their_ttl_on_the_simulators_clock(wall):
    clock = FakeClock()
    tokens = IssuedTokens(clock, wall=wall)
    expiry = tokens.issue("a", 60.0)
    assert expiry == tokens.now() + 60.0
    assert tokens.seconds_left("a") == 60.0
    assert tokens.seconds_left("never-issued") is None
    assert tokens.seconds_left(None) is None  # no bearer token at all
    clock.advance(59.5)
    assert tokens.seconds_left("a") == pytest.approx(0.5)
    clock.advance(1.0)
    assert tokens.seconds_left("a") == pytest.approx(-0.5)  # expired, and still known
    assert len(tokens) == 1


def test_issued_tokens_measure_wall_time_in_epoch_seconds_for_jwt_exp():
    clock = FakeClock()
    assert IssuedTokens(clock, wall=True).now() == clock.now().timestamp()
    assert IssuedTokens(clock).now() == clock.monotonic()


def test_expire_all_ends_every_token_but_later_ones_live():
    clock = FakeClock()
    tokens = IssuedTokens(clock)
    tokens.issue("old", 30.0)
    tokens.issue("older", 10.0)
    clock.advance(20.0)  # "older" expired 10 s ago already: it stays expired that long
    tokens.expire_all()
    assert tokens.seconds_left("old") == 0.0
    assert tokens.seconds_left("older") == -10.0
    tokens.issue("new", 30.0)
    assert tokens.seconds_left("new") == 30.0
