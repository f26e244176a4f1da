"""Salesforce Change Data Capture wired into the change-hint contract, end to end on loopback:
the simulated org serves the Pub/Sub API (gRPC), the connector's ``stream`` follows the
object's change events, the daemon's :class:`~daemon.runtime.intake.Intake` coalesces the hints
and the engine pulls the named records through its ordinary path; the replay id is checkpointed
once that pull committed, so a restarted daemon resumes without losing a change.

No sleeps: each wait polls a condition with a deadline; the simulator answers a quiet
subscription every 0.3 s (its keepalive), so a stopped stream ends at once.
"""

from __future__ import annotations

import io
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select

from daemon.config.instances import Instance
from daemon.engine.cycle import SyncEngine
from daemon.engine.status import CHANGES_STREAM, instance_status
from daemon.foundation import log as logging_setup
from daemon.hub import runs
from daemon.hub.store import Contact
from daemon.kit.changes import ChangeHint, HintQueue
from daemon.runtime.intake import Intake
from daemon.sdk import ConnectorContext
from plugins.salesforce.connector import SalesforceConfig, SalesforceConnector
from plugins.salesforce.simulator import SalesforceSimulator
from tests.enginekit import sync_engine
from tests.instancekit import contact_fields, load_written

NAME = "sf"
INSTANCE = """
type = "salesforce"
owns_crm_id = true

[settings]
login_url = "{url}"
client_id = "{client_id}"
client_secret = {{ env = "TEST_SF_SECRET" }}
bulk_pull_threshold = 0
bulk_push_threshold = 0
cdc = true
pubsub_url = "http://{pubsub}"

""" + contact_fields("FirstName", "LastName", "Email", "Phone")


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for work done on other threads (the stream, the intake's pump)."""
    deadline = time.monotonic() + timeout
    gate = threading.Event()
    while not check():
        assert time.monotonic() < deadline, "timed out"
        gate.wait(0.02)


@dataclass
class Setup:
    engine: Engine
    sim: SalesforceSimulator
    instance: Instance
    sync: SyncEngine
    runs: list[tuple[str, list[str] | None, str]] = field(default_factory=list)

    def intake(self) -> Intake:
        """A daemon's intake (as after a start), following this instance's stream."""

        def run_cycle(inst: Instance, direction: str, ids: list[str] | None) -> str:
            outcome = self.sync.run(inst, direction, remote_ids=ids).outcome
            self.runs.append((direction, ids, outcome))
            return outcome

        intake = Intake(
            self.engine, lambda: {NAME: self.instance}, run_cycle, queue=HintQueue(quiet=0.05)
        )
        intake.start()
        subscribed = self.sim.counters["pubsub_subscribes"]
        intake.follow([self.instance])
        # An edit made before the subscription is live is the scheduled pull's (LATEST).
        wait_for(lambda: self.sim.counters["pubsub_subscribes"] > subscribed)
        return intake

    def first_names(self) -> dict[str, str]:
        """The hub's first names by CRM id (the Salesforce Id: the instance owns it)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Contact.__table__)).mappings().all()
        return {r["crm_id"]: r["first_name"] for r in rows if r["crm_id"]}

    def position(self) -> str | None:
        with self.engine.connect() as conn:
            return runs.get_cursor(conn, NAME, CHANGES_STREAM)


@pytest.fixture
def setup(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with SalesforceSimulator(contacts=5, seed=3, cdc_keepalive_seconds=0.3) as sim:
        pubsub = sim.start_pubsub()
        monkeypatch.setenv("TEST_SF_SECRET", sim.client_secret)
        text = textwrap.dedent(INSTANCE.format(url=sim.url, client_id=sim.client_id, pubsub=pubsub))
        instance = load_written(
            tmp_path / "instances", NAME, text, {"salesforce": SalesforceConnector}
        )
        s = Setup(engine, sim, instance, sync_engine(engine, instance))
        assert s.sync.run(instance, "pull").outcome == "ok"  # the first full pull
        yield s


def test_an_edit_in_salesforce_reaches_the_hub_through_the_stream(setup: Setup) -> None:
    s = setup
    some = next(iter(s.first_names()))
    logs = io.StringIO()
    logging_setup.configure(level="debug", stream=logs, json=True)
    intake = s.intake()
    try:
        assert instance_status(s.engine, {NAME: NAME})[NAME]["events"]["stream_connected"]
        s.sim.edit_record(some, FirstName="Streamed")
        wait_for(lambda: s.first_names().get(some) == "Streamed")
        # The replay id of the event is checkpointed once that pull committed (after the
        # runner returned: only then is the run recorded here).
        wait_for(lambda: s.position() is not None)
        assert bytes.fromhex(s.position() or "")
        # A targeted pull of that one record, not the scheduled pull.
        assert ("pull", [some], "ok") in s.runs
        assert all(ids is not None for _, ids, _ in s.runs)
    finally:
        intake.shutdown()
    # The stream logged (its subscription), but no secret and no personal data.
    text = logs.getvalue()
    assert "cdc_subscribed" in text
    assert s.sim.client_secret not in text and "Streamed" not in text
    issued = list(s.sim.sessions._expiry)  # the access tokens the org handed out
    assert issued and not any(token in text for token in issued)


def test_a_restart_resumes_from_the_saved_position_and_loses_no_change(setup: Setup) -> None:
    s = setup
    first, second, third = list(s.first_names())[:3]
    intake = s.intake()
    try:
        s.sim.edit_record(first, FirstName="BeforeStop")
        wait_for(lambda: s.first_names().get(first) == "BeforeStop")
        wait_for(lambda: s.position() is not None)
    finally:
        intake.shutdown()
    saved = s.position()
    # While the daemon is down: two edits no scheduled pull will read for this test.
    s.sim.edit_record(second, FirstName="WhileDown")
    s.sim.delete_record(third)
    s.runs.clear()
    intake = s.intake()  # resumes after `saved`, not at LATEST
    try:
        wait_for(lambda: s.first_names().get(second) == "WhileDown")
        wait_for(lambda: s.position() != saved)
    finally:
        intake.shutdown()
    served = {i for _, ids, _ in s.runs for i in ids or ()}
    assert {second, third} <= served  # by targeted pulls: the events were replayed
    assert all(ids is not None for direction, ids, _ in s.runs if direction == "pull")
    assert first not in served  # the event before the checkpoint is not replayed


def _connector(sim: SalesforceSimulator, **settings: Any) -> SalesforceConnector:
    config = SalesforceConfig.model_validate(
        {
            "login_url": sim.url,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "cdc": True,
            "pubsub_url": f"http://{sim.pubsub_address}",
            **settings,
        }
    )
    return SalesforceConnector(config, ConnectorContext(NAME))


def _hints(connector: SalesforceConnector, position: str | None, count: int) -> list[ChangeHint]:
    """The first ``count`` hints of ``connector.stream(position)``; the stream then stops."""
    hints: list[ChangeHint] = []
    stop = threading.Event()

    def emit(hint: ChangeHint) -> None:
        hints.append(hint)
        if len(hints) >= count:
            stop.set()

    worker = threading.Thread(target=connector.stream, args=(position, emit, stop), daemon=True)
    worker.start()
    try:
        assert stop.wait(10), f"only {len(hints)} hints of {count}"
    finally:
        stop.set()
        worker.join(10)
        connector.close()
    assert not worker.is_alive(), "the stream did not end on stop"
    return hints


def test_leads_follow_the_object_setting_and_a_lost_position_asks_for_a_full_pull() -> None:
    with SalesforceSimulator(contacts=1, cdc_keepalive_seconds=0.3) as sim:
        sim.start_pubsub()
        contact = sim.add_contact(LastName="Not", FirstName="Seen")
        lead = sim.add_record("Lead", LastName="Lead", Company="Acme")
        sim.delete_record(lead)
        # From the very first event (a position before both): only the Lead topic's events.
        hints = _hints(_connector(sim, object="Lead"), "0000000000000000", 2)
        assert [h.remote_ids for h in hints] == [(lead,), (lead,)]
        assert [h.deletes for h in hints] == [False, True]
        assert all(h.position and h.occurred_at for h in hints)
        assert contact not in {i for h in hints for i in h.remote_ids}
        # A replay id Salesforce never issued: one "everything" hint, then events again.
        (resync,) = _hints(_connector(sim), "ffffffffffffffff", 1)
        assert resync.everything and not resync.remote_ids and resync.position is None


def test_settings_turn_the_stream_on_and_refuse_plain_text_to_a_remote_host() -> None:
    base = {"login_url": "https://acme.my.salesforce.com", "client_id": "c", "client_secret": "s"}
    assert not SalesforceConnector.streams_for(SalesforceConfig.model_validate(base))
    on = SalesforceConfig.model_validate({**base, "cdc": True})
    assert SalesforceConnector.streams_for(on) and SalesforceConnector.capabilities.streams
    with pytest.raises(ValidationError):
        SalesforceConfig.model_validate({**base, "cdc": "yes"})  # strict, as every bool
    with pytest.raises(ValidationError):
        SalesforceConfig.model_validate({**base, "pubsub_url": "http://pubsub.example.com:7443"})
