"""Colleague's short consume interval: the connector watches its notification queue with one
``HEAD /consume`` per interval (deleting nothing) and wakes the pull only when something waits;
an instance without the setting holds no such watch."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from daemon.foundation.clock import FakeClock
from daemon.kit.changes import ChangeHint
from daemon.sdk import ConnectorContext
from plugins.colleague.connector import ColleagueConfig, ColleagueConnector
from plugins.colleague.simulator import ColleagueSimulator
from tests.connectorkit import build


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[ColleagueSimulator]:
    with ColleagueSimulator(seed=9, clock=clock) as simulator:
        yield simulator


def test_an_idle_queue_costs_one_request_a_look_and_a_change_wakes_the_pull(
    sim: ColleagueSimulator, clock: FakeClock
) -> None:
    connector = build(
        ColleagueConnector,
        {"base_url": sim.url, "api_key": sim.api_key},
        {"consume_interval_seconds": 1},
        ConnectorContext("colleague"),
        clock,
    )
    assert ColleagueConnector.streams_for(connector.settings)
    # One look every 20 ms here, so the test takes no real second (the setting's floor is 1 s).
    connector.settings.consume_interval_seconds = 0.02
    hints: list[ChangeHint] = []
    looked = threading.Event()
    stop = threading.Event()
    heads: list[int] = []

    def emit(hint: ChangeHint) -> None:
        hints.append(hint)
        stop.set()

    original = connector.client.queue_remaining

    def counted() -> int | None:
        heads.append(1)
        looked.set()
        return original()

    connector.client.queue_remaining = counted  # type: ignore[method-assign]
    worker = threading.Thread(target=connector.stream, args=(None, emit, stop))
    requests0, grants0 = sim.requests, sim.counters["token_grants"]
    try:
        worker.start()
        assert looked.wait(5)
        gate = threading.Event()
        while len(heads) < 5:  # five idle looks
            gate.wait(0.01)
        assert not hints  # nothing waits: no pull woken
        sim.add_person("New", "Student", email="new@example.edu")  # a change notification
        assert stop.wait(5)
    finally:
        stop.set()
        worker.join(5)
        connector.close()
    # One request a look, besides the JWT grants: nothing else is spent while idle.
    grants = sim.counters["token_grants"] - grants0
    assert sim.requests - requests0 == len(heads) + grants
    assert grants <= 1
    assert hints and hints[0].everything  # the ordinary pull consumes from its checkpoint
    assert sim.counters["consumed"] == 0  # the look deleted nothing


def test_without_the_setting_there_is_no_watch() -> None:
    settings = ColleagueConfig.model_validate(
        {"base_url": "https://integrate.elluciancloud.com", "api_key": "k"}
    )
    assert not ColleagueConnector.streams_for(settings)
    with pytest.raises(ValueError):
        ColleagueConfig.model_validate(
            {"base_url": "https://x.example", "api_key": "k", "consume_interval_seconds": 0.1}
        )
