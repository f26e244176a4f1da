"""Webhooks end to end, over real HTTP on loopback: the HubSpot simulator sends signed,
batched webhooks to the daemon's API (``POST /webhooks/{instance}``), the intake coalesces
them and the engine pulls the named records through its ordinary path.

Each test has the simulator, the API, a real :class:`~daemon.runtime.intake.Intake` and the
engine; only the scheduler is left out (a test runs "the scheduled pull" itself)."""

from __future__ import annotations

import io
import json
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubspot.utils.signature import Signature
from sqlalchemy import Engine, func, select

from daemon.config.instances import Instance, LoadResult
from daemon.engine.cycle import SyncEngine
from daemon.engine.metrics import Metrics
from daemon.foundation import log as logging_setup
from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.mirror import mirror_instances
from daemon.hub.store import Contact, Outbox, SyncLog
from daemon.kit.changes import HintQueue
from daemon.kit.simkit import Request
from daemon.runtime.intake import Intake
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from tests.apikit import PushingInstance, RunningApi, running_api
from tests.enginekit import sync_engine
from tests.instancekit import contact_fields, load_written

NAME = "hs"
INSTANCE = """
type = "hubspot"
owns_crm_id = true

[settings]
base_url = "{url}"
access_token = {{ env = "TEST_HUBSPOT_TOKEN" }}
webhook_secret = {{ env = "TEST_HUBSPOT_SECRET" }}

""" + contact_fields("firstname", "lastname", "email", "phone")


class CountingSimulator(HubSpotSimulator):
    """The HubSpot simulator, counting the requests it serves by method and path."""

    def handle(self, request: Request):  # type: ignore[no-untyped-def]
        if not request.path.startswith("/_sim"):
            with self.lock:
                self.paths[f"{request.method} {request.path}"] += 1
        return super().handle(request)

    def reset_state(self) -> None:
        self.paths: Counter[str] = Counter()
        super().reset_state()


@dataclass
class Setup:
    engine: Engine
    sim: CountingSimulator
    instance: Instance
    sync: SyncEngine
    intake: Intake
    api: RunningApi
    runs: list[tuple[str, list[str] | None, str]]

    @property
    def url(self) -> str:
        return f"{self.api.url}/webhooks/{NAME}"

    def post(self, events: list[dict[str, Any]], *, stamp: int | None = None, secret=None):  # type: ignore[no-untyped-def]
        """POST ``events`` signed as HubSpot signs (its own client's code computes it)."""
        body = json.dumps(events)
        stamp_text = str(stamp if stamp is not None else int(time.time() * 1000))
        signature = Signature.get_signature(
            secret or self.sim.client_secret, body, "v3", self.url, "POST", stamp_text
        )
        return self.send(body.encode(), signature, stamp_text)

    def send(self, body: bytes, signature: str, stamp: str) -> httpx.Response:
        headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp}
        return httpx.post(self.url, content=body, headers=headers, timeout=10)


def event(object_id: str, kind: str = "contact.propertyChange", **more: Any) -> dict[str, Any]:
    return {
        "eventId": 1,
        "subscriptionType": kind,
        "objectId": int(object_id),
        "occurredAt": int(time.time() * 1000),
        "attemptNumber": 0,
        **more,
    }


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for work done on other threads (the sender, the API, the intake's pump)."""
    deadline = time.monotonic() + timeout
    gate = threading.Event()
    while not check():
        assert time.monotonic() < deadline, "timed out"
        gate.wait(0.02)


@pytest.fixture
def setup(engine, tmp_path: Path, monkeypatch) -> Iterator[Setup]:
    with CountingSimulator(contacts=20, seed=5, webhook_retry_seconds=0.05) as sim:
        monkeypatch.setenv("TEST_HUBSPOT_TOKEN", sim.private_app_token)
        monkeypatch.setenv("TEST_HUBSPOT_SECRET", sim.client_secret)
        text = textwrap.dedent(INSTANCE.format(url=sim.url))
        instance = load_written(tmp_path / "instances", NAME, text, {"hubspot": HubSpotConnector})
        sync = sync_engine(engine, instance)
        ran: list[tuple[str, list[str] | None, str]] = []

        def run_cycle(inst: Instance, direction: str, ids: list[str] | None) -> str:
            outcome = sync.run(inst, direction, remote_ids=ids).outcome
            ran.append((direction, ids, outcome))
            return outcome

        intake = Intake(engine, lambda: {NAME: instance}, run_cycle)
        intake.start()
        loaded = LoadResult({NAME: instance}, {})
        metrics = Metrics(engine, lambda: loaded)
        with running_api(engine, instances=lambda: loaded, intake=intake, metrics=metrics) as api:
            # Mirrored as the daemon does, so hub edits queue this connection's outbox.
            mirror_instances(engine, {"crm": PushingInstance(), NAME: instance})
            try:
                yield Setup(engine, sim, instance, sync, intake, api, ran)
            finally:
                intake.shutdown()


def refusals(engine: Engine) -> list[str]:
    table = SyncLog.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.details).where(table.c.code == "webhook-refused"))
        return [(d or {}).get("reason") for d in rows.scalars()]


def log_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(SyncLog.__table__)).scalar_one()


def outbox_rows(engine: Engine) -> int:
    """Outbox rows of this instance's connection (running_api mirrors one of its own)."""
    table = Outbox.__table__
    with engine.connect() as conn:
        query = select(func.count()).select_from(table).where(table.c.connection == NAME)
        return conn.execute(query).scalar_one()


def contacts_by_crm_id(engine: Engine) -> dict[str, dict[str, Any]]:
    """The hub's contacts by CRM id: the HubSpot id, as the instance owns the CRM id."""
    with engine.connect() as conn:
        rows = conn.execute(select(Contact.__table__)).mappings().all()
    return {r["crm_id"]: dict(r) for r in rows if r["crm_id"]}


def first_pull(s: Setup) -> None:
    assert s.sync.run(s.instance, "pull").outcome == "ok"
    s.sim.paths.clear()


def test_signed_webhooks_are_accepted_and_bad_stale_and_replayed_ones_refused(setup: Setup):
    s = setup
    first_pull(s)
    some = next(iter(s.sim.records))
    stream = io.StringIO()
    logging_setup.configure(level="info", stream=stream, json=True)
    good = s.post([event(some)])
    assert good.status_code == 204, good.text
    # The very same request again (same signature and timestamp): a replay.
    body = json.dumps([event(some)]).encode()
    stamp = str(int(time.time() * 1000))
    signature = Signature.get_signature(
        s.sim.client_secret, body.decode(), "v3", s.url, "POST", stamp
    )
    assert s.send(body, signature, stamp).status_code == 204
    replay = s.send(body, signature, stamp)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "webhook-refused"
    # Signed with another secret, or over another URL.
    assert s.post([event(some)], secret="someone-else").status_code == 401
    assert (
        s.send(
            body, signature.replace(signature[3], "A" if signature[3] != "A" else "B"), stamp
        ).status_code
        == 401
    )
    # Signed right, but six minutes ago: stale.
    old = int(time.time() * 1000) - 6 * 60 * 1000
    assert s.post([event(some)], stamp=old).status_code == 401
    # Not HubSpot's format at all, signed right.
    assert s.post({"not": "a list"}).status_code == 401  # type: ignore[arg-type]
    # An instance that is not there.
    assert httpx.post(f"{s.api.url}/webhooks/nope", content=b"[]").status_code == 404
    # One sync-log row per reason (rate-limited per minute), every refusal counted.
    assert sorted(refusals(s.engine)) == ["malformed", "replay", "signature", "stale"]
    metrics = s.api.client("read").get("/metrics").text
    assert 'contactsync_webhooks_total{outcome="accepted",sync_instance="hs"} 2.0' in metrics
    assert 'contactsync_webhooks_total{outcome="signature",sync_instance="hs"} 2.0' in metrics
    assert 'contactsync_webhooks_total{outcome="replay",sync_instance="hs"} 1.0' in metrics
    assert 'contactsync_webhooks_total{outcome="stale",sync_instance="hs"} 1.0' in metrics
    assert 'outcome="not-enabled",sync_instance="(unknown)"' in metrics
    # The accepted ones woke a targeted pull of that record: one batch read.
    wait_for(lambda: s.intake.served >= 1)
    assert s.runs[0][:2] == ("pull", [some])
    assert s.sim.paths["POST /crm/v3/objects/contacts/batch/read"] >= 1
    # The app's secret never reaches a log line.
    assert s.sim.client_secret not in stream.getvalue()


def test_an_edit_in_hubspot_reaches_the_hub_through_its_webhook(setup: Setup):
    s = setup
    first_pull(s)
    s.sim.set_knob("webhook_url", s.url)
    some = next(iter(s.sim.records))
    s.sim.edit_contact(some, firstname="Webhooked")
    wait_for(lambda: contacts_by_crm_id(s.engine).get(some, {}).get("first_name") == "Webhooked")
    # One read of one record; no search, no list: the scheduled pull did not run.
    assert s.sim.paths["POST /crm/v3/objects/contacts/batch/read"] == 1
    assert s.sim.paths["POST /crm/v3/objects/contacts/search"] == 0
    # Status shows the last event received.
    from daemon.engine.status import instance_status

    events = instance_status(s.engine, {NAME: NAME})[NAME]["events"]
    assert events["source"] == "webhook" and events["last_event_at"]


def test_duplicate_and_out_of_order_events_are_harmless(setup: Setup):
    s = setup
    first_pull(s)
    s.sim.set_knob("webhook_url", s.url)
    s.sim.set_knob("webhook_duplicate_rate", 1.0)  # every event sent twice
    ids = list(s.sim.records)[:3]
    for n in range(3):
        for remote_id in ids:
            s.sim.edit_contact(remote_id, lastname=f"Round{n}")
    before = log_rows(s.engine)
    # An old event arriving last (out of order) names the record; the read gets it as it is now.
    stale_first = [event(ids[0], occurredAt=1), event(ids[0], occurredAt=2)]
    assert s.post(list(reversed(stale_first))).status_code == 204
    wait_for(lambda: s.sim.webhooks.idle())
    wait_for(
        lambda: all(
            contacts_by_crm_id(s.engine).get(i, {}).get("last_name") == "Round2" for i in ids
        )
    )
    wait_for(lambda: s.intake.idle and s.intake.served >= 1)
    assert s.sim.webhooks.counters["events"] > 9  # duplicates were delivered
    assert log_rows(s.engine) == before  # nothing went wrong, nothing to report
    assert outbox_rows(s.engine) == 0  # a pulled change is never queued back


def test_a_burst_of_10000_events_is_coalesced_into_few_batch_reads(engine, tmp_path, monkeypatch):
    with CountingSimulator(contacts=500, seed=9) as sim:
        monkeypatch.setenv("TEST_HUBSPOT_TOKEN", sim.private_app_token)
        monkeypatch.setenv("TEST_HUBSPOT_SECRET", sim.client_secret)
        text = textwrap.dedent(INSTANCE.format(url=sim.url))
        instance = load_written(tmp_path / "instances", NAME, text, {"hubspot": HubSpotConnector})
        sync = sync_engine(engine, instance)
        assert sync.run(instance, "pull").outcome == "ok"
        sim.paths.clear()
        outcomes: list[str] = []

        def run_cycle(inst: Instance, direction: str, ids: list[str] | None) -> str:
            outcome = sync.run(inst, direction, remote_ids=ids).outcome
            outcomes.append(outcome)
            return outcome

        intake = Intake(engine, lambda: {NAME: instance}, run_cycle, queue=HintQueue(quiet=0.3))
        intake.start()
        loaded = LoadResult({NAME: instance}, {})
        with running_api(engine, instances=lambda: loaded, intake=intake) as api:
            sim.set_knob("webhook_url", f"{api.url}/webhooks/{NAME}")
            ids = list(sim.records)
            # 500 contacts x 4 properties x 5 rounds: 10,000 propertyChange events.
            for n in range(5):
                for remote_id in ids:
                    sim.edit_contact(
                        remote_id,
                        firstname=f"F{n}",
                        lastname=f"L{n}",
                        email=f"{remote_id}.{n}@x.edu",
                        phone=f"+1202555{n:01d}{int(remote_id) % 1000:03d}",
                    )
            wait_for(lambda: sim.webhooks.idle(), timeout=60)
            wait_for(lambda: intake.idle, timeout=60)
            intake.shutdown()
        assert sim.webhooks.counters["events"] == 10_000
        # Batches of at most 100 events (a batch may close early as the burst is gathered).
        assert 100 <= sim.webhooks.counters["requests"] <= 120
        assert sim.webhooks.counters["failed"] == 0
        reads = sim.paths["POST /crm/v3/objects/contacts/batch/read"]
        assert 5 <= reads <= 25, reads  # 500 ids, 100 a read, a few coalesced pulls
        assert sim.counters["rate_limited"] == 0
        # Served by reads of the ids, not degraded to a pull (the queue never overflowed).
        assert intake.queue.overflows == 0
        assert sim.paths["POST /crm/v3/objects/contacts/search"] == 0
        assert set(outcomes) == {"ok"}
        hub = contacts_by_crm_id(engine)
        assert all(hub[i]["first_name"] == "F4" and hub[i]["last_name"] == "L4" for i in ids)


def test_a_lost_webhook_is_caught_by_the_scheduled_pull(setup: Setup):
    s = setup
    first_pull(s)
    s.sim.set_knob("webhook_url", s.url)
    s.sim.set_knob("webhook_bad_signature_rate", 1.0)  # every attempt refused: it is lost
    some = next(iter(s.sim.records))
    s.sim.edit_contact(some, firstname="Lost")
    wait_for(lambda: s.sim.webhooks.counters["failed"] >= 3)
    s.sim.set_knob("webhook_url", "")  # HubSpot gives up
    assert contacts_by_crm_id(s.engine)[some]["first_name"] != "Lost"
    assert refusals(s.engine) == ["signature"]
    assert s.sync.run(s.instance, "pull").outcome == "ok"  # the schedule comes round
    assert contacts_by_crm_id(s.engine)[some]["first_name"] == "Lost"


def test_a_hub_edit_pushed_to_hubspot_comes_back_as_a_webhook_and_changes_nothing(setup: Setup):
    s = setup
    first_pull(s)
    assert s.sync.run(s.instance, "push").outcome == "ok"
    s.sim.set_knob("webhook_url", s.url)
    some = next(iter(s.sim.records))
    contact = contacts_by_crm_id(s.engine)[some]
    save_contact(s.engine, {"first_name": "FromHub"}, contact_id=contact["id"])
    before_log = log_rows(s.engine)
    assert outbox_rows(s.engine) == 1
    assert s.sync.run(s.instance, "push").outcome == "ok"
    assert s.sim.records[some]["properties"]["firstname"] == "FromHub"
    assert outbox_rows(s.engine) == 0
    # HubSpot tells us of our own write: a webhook, a targeted pull, and nothing changes.
    wait_for(lambda: s.sim.webhooks.idle() and s.sim.webhooks.counters["events"] >= 1)
    wait_for(lambda: s.intake.served >= 1)
    assert s.runs[-1][0] == "pull" and s.runs[-1][1] == [some] and s.runs[-1][2] == "ok"
    assert outbox_rows(s.engine) == 0  # no echo queued back to HubSpot
    assert log_rows(s.engine) == before_log  # and no sync-log row
    assert get_contact(s.engine, contact["id"]).row["first_name"] == "FromHub"
