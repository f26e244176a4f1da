"""Salesforce Change Data Capture over the Pub/Sub API, end to end on loopback gRPC.

The simulated org publishes a change event for every change it stores; the client
(:class:`SalesforceChangeStream`) subscribes with flow control, decodes the Avro payloads with
the schemas from ``GetSchema`` and resumes from a replay id. Nothing here sleeps: each wait is
a blocking read with a deadline, and retention is aged with the fake clock.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from daemon.foundation import log as logging_setup
from daemon.foundation.clock import FakeClock
from daemon.sdk import AuthFailed, ConnectorContext
from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.pubsub import (
    RESYNC,
    ChangeEvent,
    ClientAuth,
    ReplayCheckpoint,
    SalesforceChangeStream,
    StaticAuth,
    changeevent,
)
from plugins.salesforce.pubsub import eventbus_pb2 as pb
from plugins.salesforce.pubsub import eventbus_pb2_grpc as pb_grpc
from plugins.salesforce.pubsub.service import AUTH_ERROR, REPLAY_CORRUPTED
from plugins.salesforce.simulator import SalesforceSimulator
from tests.connectorkit import build

CONTACTS = "/data/ContactChangeEvent"
LEADS = "/data/LeadChangeEvent"
WAIT = 10.0  # seconds a blocking read may take before the test fails (never reached when green)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(contacts=5, clock=clock, cdc_keepalive_seconds=0.3) as simulator:
        simulator.start_pubsub()
        yield simulator


def session(sim: SalesforceSimulator) -> StaticAuth:
    """A session from the org's client-credentials grant, as the connector gets one."""
    body = httpx.post(
        f"{sim.url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
    ).json()
    tenant = body["id"].split("/")[-2]
    return StaticAuth(body["access_token"], body["instance_url"], tenant)


def stream(
    sim: SalesforceSimulator, topic: str = CONTACTS, **options: object
) -> SalesforceChangeStream:
    options.setdefault("start", "EARLIEST")
    options.setdefault("backoff_seconds", 0.01)
    return SalesforceChangeStream(
        options.pop("auth", None) or session(sim),  # type: ignore[arg-type]
        topic,
        target=sim.pubsub_address,
        secure=False,
        **options,  # type: ignore[arg-type]
    )


class Consumer:
    """Iterates a stream on a thread; the test reads the events with deadlines."""

    def __init__(self, change_stream: SalesforceChangeStream) -> None:
        self.stream = change_stream
        self.events: queue.Queue[ChangeEvent | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except BaseException as exc:
            self.events.put(exc)

    def take(self, count: int) -> list[ChangeEvent]:
        out = []
        for _ in range(count):
            item = self.events.get(timeout=WAIT)
            if isinstance(item, BaseException):
                raise item
            out.append(item)
        return out

    def close(self) -> None:
        self.stream.close()
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "the stream did not end on stop"


@pytest.fixture
def consume() -> Iterator[object]:
    consumers: list[Consumer] = []

    def start(change_stream: SalesforceChangeStream) -> Consumer:
        consumers.append(Consumer(change_stream))
        return consumers[-1]

    yield start
    for consumer in consumers:
        consumer.close()


# --- the events -------------------------------------------------------------------------------


def test_create_update_delete_undelete_arrive_as_change_events(sim, consume) -> None:
    contacts = consume(stream(sim))
    record = sim.add_contact(FirstName="Ada", LastName="Lovelace", Email="ada@example.org")
    sim.edit_record(record, FirstName="Augusta", Email=None)
    sim.delete_record(record)
    sim.undelete_record(record)
    created, updated, deleted, undeleted = contacts.take(4)

    assert [e.change_type for e in (created, updated, deleted, undeleted)] == [
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
    ]
    assert {e.record_ids for e in (created, updated, deleted, undeleted)} == {(record,)}
    assert all(e.entity == "Contact" for e in (created, updated, deleted, undeleted))
    # Only an update names its changed fields (the compound Name's part comes out as its
    # API name, FirstName); the bitmaps were decoded with the schema from GetSchema.
    assert set(updated.changed_fields) == {
        "FirstName",
        "Email",
        "LastModifiedDate",
        "SystemModstamp",
    }
    assert created.changed_fields == deleted.changed_fields == ()
    assert created.commit_timestamp is not None
    replays = [e.replay_id for e in (created, updated, deleted, undeleted)]
    assert len(set(replays)) == 4
    # One GetSchema for four events: the schema is cached by its id.
    assert sim.counters["pubsub_schema_reads"] == 1


def test_writes_through_the_rest_api_are_published_and_topics_are_separate(sim, consume) -> None:
    contacts = consume(stream(sim))
    leads = consume(stream(sim, LEADS))
    auth = session(sim)
    answer = httpx.post(
        f"{sim.url}/services/data/v62.0/sobjects/Lead",
        json={"LastName": "Hopper", "Company": "Navy"},
        headers={"Authorization": f"Bearer {auth.access_token}"},
    )
    assert answer.status_code == 201, answer.text
    contact = sim.add_contact(LastName="Turing")
    (lead_event,) = leads.take(1)
    (contact_event,) = contacts.take(1)
    assert lead_event.entity == "Lead" and lead_event.record_ids == (answer.json()["id"],)
    assert contact_event.record_ids == (contact,)


def test_seeded_records_are_no_events_and_latest_skips_the_past(sim, consume) -> None:
    before = sim.add_contact(LastName="Before")
    contacts = consume(stream(sim, start="LATEST"))
    # LATEST starts when the call is served: wait until the stream is connected (a keepalive
    # answer at the latest), then change a record.
    connected = threading.Event()
    _wait_connected(contacts.stream, connected)
    after = sim.add_contact(LastName="After")
    (event,) = contacts.take(1)
    assert event.record_ids == (after,) != (before,)


def _wait_connected(change_stream: SalesforceChangeStream, _event: threading.Event) -> None:
    # The stream sets `connected` on the first answer; the simulator's keepalive (0.3 s)
    # guarantees one. A bounded spin on a flag, not a sleep of a guessed length.
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if change_stream.connected:
            return
        deadline.wait(0.01)
    raise AssertionError("the stream never connected")


# --- flow control -----------------------------------------------------------------------------


def _raw_subscribe(sim: SalesforceSimulator, first: pb.FetchRequest, metadata=None):
    """A Subscribe call driven by hand: the test decides every FetchRequest."""
    channel = grpc.insecure_channel(sim.pubsub_address)
    requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
    requests.put(first)

    def outgoing():
        while (item := requests.get()) is not None:
            yield item

    call = pb_grpc.PubSubStub(channel).Subscribe(
        outgoing(), metadata=metadata or session(sim).metadata()
    )
    return channel, requests, call


def test_the_server_sends_no_more_events_than_requested(sim) -> None:
    ids = [sim.add_contact(LastName=f"Flow{i}") for i in range(5)]
    first = pb.FetchRequest(topic_name=CONTACTS, replay_preset=pb.EARLIEST, num_requested=2)
    channel, requests, call = _raw_subscribe(sim, first)
    try:
        answers = iter(call)
        got: list[pb.ConsumerEvent] = []
        while len(got) < 2:
            got += next(answers).events
        assert len(got) == 2
        # With nothing more allowed, the next answer is a keepalive: no events, nothing
        # pending, and a latest replay id that does not pass the events still unsent.
        keepalive = next(answers)
        assert list(keepalive.events) == [] and keepalive.pending_num_requested == 0
        assert keepalive.latest_replay_id == got[-1].replay_id
        # Asking for more (a later preset is ignored, as Salesforce does) sends the rest.
        requests.put(pb.FetchRequest(num_requested=10, replay_preset=pb.LATEST))
        while len(got) < 5:
            answer = next(answers)
            got += answer.events
        assert len(got) == 5 and answer.pending_num_requested == 10 - 3
        assert sim.counters["pubsub_events_sent"] == 5
        assert len(ids) == len({e.replay_id for e in got})
    finally:
        requests.put(None)
        call.cancel()
        channel.close()


def test_num_requested_is_capped_at_100(sim) -> None:
    for i in range(120):
        sim.add_contact(LastName=f"Cap{i}")
    first = pb.FetchRequest(topic_name=CONTACTS, replay_preset=pb.EARLIEST, num_requested=1000)
    channel, requests, call = _raw_subscribe(sim, first)
    try:
        answers = iter(call)
        got = 0
        while True:
            answer = next(answers)
            if not answer.events:
                break
            got += len(answer.events)
        assert got == 100
    finally:
        requests.put(None)
        call.cancel()
        channel.close()


def test_the_client_stream_keeps_within_its_batch(sim, consume) -> None:
    for i in range(12):
        sim.add_contact(LastName=f"Batch{i}")
    contacts = consume(stream(sim, batch=4))
    events = contacts.take(12)
    assert len({e.record_ids for e in events}) == 12
    # 12 events in windows of 4, topped up at half: never more requested than 4 ahead.
    assert sim.counters["pubsub_events_sent"] == 12


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spoil", ["accesstoken", "tenantid", "instanceurl"])
def test_a_bad_session_is_refused(sim, spoil: str) -> None:
    metadata = [(k, "00DWRONG!token" if k == spoil else v) for k, v in session(sim).metadata()]
    first = pb.FetchRequest(topic_name=CONTACTS, num_requested=1)
    channel, requests, call = _raw_subscribe(sim, first, metadata)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert ("error-code", AUTH_ERROR) in refused.value.trailing_metadata()
        with pytest.raises(grpc.RpcError) as schema_refused:
            pb_grpc.PubSubStub(channel).GetSchema(
                pb.SchemaRequest(schema_id="x"), metadata=metadata
            )
        assert schema_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        requests.put(None)
        channel.close()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line, structlog's and the standard library's, as JSON at DEBUG."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    lines = io.StringIO()
    logging_setup.configure(level="debug", stream=lines, json=True)
    yield lines
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()


def test_the_stream_renews_a_refused_session_then_gives_up(sim, captured_logs, capfd) -> None:
    secret = "00DSIM000000000!expired-token-value"
    bad = StaticAuth(secret, sim.url, sim.tenant_id)
    change_stream = stream(sim, auth=bad, max_auth_refusals=2)
    with pytest.raises(AuthFailed) as failed:
        for _ in change_stream:
            pass
    assert sim.counters["pubsub_auth_refused"] == 3  # the first try and two renewals
    logged = captured_logs.getvalue()
    assert logged.count('"cdc_auth_refused"') == 3 and "remote-auth-failed" in logged
    out = capfd.readouterr()  # gRPC's own C core writes to the process's stderr
    for text in (logged, out.out, out.err, str(failed.value)):
        assert secret not in text  # the token is never logged nor put in a message


def test_the_replay_id_moves_only_when_the_caller_asks_for_more(sim) -> None:
    first, second = sim.add_contact(LastName="One"), sim.add_contact(LastName="Two")
    change_stream = stream(sim)
    events = iter(change_stream)
    try:
        one = next(events)
        # Handling the first: a crash now must replay it, so the position is still before it.
        assert one.record_ids == (first,) and change_stream.replay_id is None
        two = next(events)
        assert two.record_ids == (second,) and change_stream.replay_id == one.replay_id
    finally:
        change_stream.close()
        events.close()


def test_the_connectors_own_session_is_used_and_renewed(sim, clock, consume) -> None:
    """ClientAuth: the token, instance URL and org id come from the connector's client (its
    grant); a session that expires mid-stream is renewed like a REST 401."""
    connector = build(
        SalesforceConnector,
        {"login_url": sim.url, "client_id": sim.client_id, "client_secret": sim.client_secret},
        {},
        ConnectorContext("sf"),
        clock,
    )
    client = connector.client
    contacts = consume(stream(sim, auth=ClientAuth(client)))
    first = sim.add_contact(LastName="Before")
    assert contacts.take(1)[0].record_ids == (first,)
    assert client.org_id == sim.tenant_id
    port = int(sim.pubsub_address.rsplit(":", 1)[1])
    sim.expire_sessions()
    sim.stop_pubsub()  # the call is dropped; the resubscribe finds the session expired
    sim.start_pubsub(port)
    second = sim.add_contact(LastName="After")
    assert contacts.take(1)[0].record_ids == (second,)
    assert sim.counters["pubsub_auth_refused"] == 1 and sim.counters["token_grants"] == 2
    connector.close()


def test_an_unknown_topic_is_not_found(sim) -> None:
    channel, requests, call = _raw_subscribe(
        sim, pb.FetchRequest(topic_name="/data/AccountChangeEvent", num_requested=1)
    )
    try:
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        requests.put(None)
        channel.close()


def test_plain_text_grpc_is_for_loopback_only() -> None:
    auth = StaticAuth("t", "https://x.my.salesforce.com", "00D")
    with pytest.raises(ValueError, match="loopback"):
        SalesforceChangeStream(
            auth, CONTACTS, target="api.pubsub.salesforce.com:7443", secure=False
        )


# --- resuming ---------------------------------------------------------------------------------


def test_a_dropped_stream_resumes_from_its_replay_id(sim, consume) -> None:
    contacts = consume(stream(sim))
    first = [sim.add_contact(LastName=f"Drop{i}") for i in range(3)]
    assert [e.record_ids[0] for e in contacts.take(3)] == first
    port = int(sim.pubsub_address.rsplit(":", 1)[1])
    sim.stop_pubsub()  # the server goes away with the call open
    later = [sim.add_contact(LastName=f"Gone{i}") for i in range(3)]
    sim.start_pubsub(port)
    # Resubscribed after the last handled event: the three made while down, none twice.
    assert [e.record_ids[0] for e in contacts.take(3)] == later
    assert contacts.stream.reconnects >= 1
    assert contacts.events.empty()


CHILD = r"""
import json, sys
from pathlib import Path
from plugins.salesforce.pubsub import ReplayCheckpoint, SalesforceChangeStream, StaticAuth
from daemon.foundation.clock import SYSTEM_CLOCK

address, token, instance, tenant, folder = sys.argv[1:]
folder = Path(folder)
sys.stdin.readline()  # imports done (they cost seconds): start when told
state_file = folder / "connector_state.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {}
checkpoint = ReplayCheckpoint(state, "/data/ContactChangeEvent")
stream = SalesforceChangeStream(
    StaticAuth(token, instance, tenant), "/data/ContactChangeEvent", checkpoint.load(),
    target=address, secure=False, start="EARLIEST", batch=5, backoff_seconds=0.01,
)
with (folder / "handled.txt").open("a") as handled:
    for event in stream:
        # "Handle" the hint (the targeted pull), then checkpoint: a kill in between replays it.
        handled.write(event.record_ids[0] + "\n")
        handled.flush()
        __import__("os").fsync(handled.fileno())
        checkpoint.save(event.replay_id, SYSTEM_CLOCK.now())
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_file)  # atomic, as the hub's transaction is
"""


def _handled(folder: Path) -> list[str]:
    path = folder / "handled.txt"
    return path.read_text().split() if path.exists() else []


def _wait_handled(folder: Path, count: int, child: subprocess.Popen) -> None:
    pause = threading.Event()
    for _ in range(int(30 / 0.02)):
        if len(_handled(folder)) >= count:
            return
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        pause.wait(0.02)
    raise AssertionError(f"the child handled {len(_handled(folder))} of {count}")


def test_a_subscriber_killed_with_sigkill_resumes_without_losing_a_change(sim) -> None:
    auth = session(sim)
    made = [sim.add_contact(LastName=f"Kill{i}") for i in range(20)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv = [sys.executable, "-c", CHILD, sim.pubsub_address, auth.access_token]
        argv += [auth.instance_url, auth.tenant_id, tmp]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        def spawn() -> subprocess.Popen:
            return subprocess.Popen(
                argv, env=env, cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

        # Both started now: the second imports while the first works, and waits to be told.
        first, second = spawn(), spawn()
        try:
            first.stdin.write("go\n")
            first.stdin.flush()
            _wait_handled(folder, 7, first)
        finally:
            first.kill()  # SIGKILL: no cleanup, no last checkpoint
            first.wait(WAIT)
        made += [sim.add_contact(LastName=f"After{i}") for i in range(10)]
        try:
            second.stdin.write("go\n")
            second.stdin.flush()
            _wait_handled(folder, len(made), second)
        finally:
            second.kill()
            second.wait(WAIT)
        assert first.returncode == -signal.SIGKILL
        handled = _handled(folder)
    assert set(handled) == set(made)  # nothing lost
    # At least once: only the event in flight at the kill may come twice.
    assert len(handled) - len(set(handled)) <= 1
    assert sorted(set(handled), key=made.index) == made


def test_a_replay_id_outside_retention_falls_back_to_a_resync(sim, clock, consume) -> None:
    old = sim.add_contact(LastName="Old")
    contacts = consume(stream(sim))
    (seen,) = contacts.take(1)
    contacts.close()
    sim.add_contact(LastName="Missed")
    clock.advance(3 * 86_400 + 60)  # past the 72 hours: both events are purged
    kept = sim.add_contact(LastName="Kept")

    channel, requests, call = _raw_subscribe(
        sim,
        pb.FetchRequest(
            topic_name=CONTACTS,
            replay_preset=pb.CUSTOM,
            replay_id=seen.replay_id,
            num_requested=1,
        ),
    )
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(call))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("error-code", REPLAY_CORRUPTED) in refused.value.trailing_metadata()
    requests.put(None)
    channel.close()

    resumed = consume(stream(sim, replay_id=seen.replay_id))
    resync, after = resumed.take(2)
    # The documented fallback: one RESYNC (pull everything changed since the cursor, which
    # covers "Missed"), then every event still retained (EARLIEST), so none after the gap.
    assert resync.change_type == RESYNC and resync.everything and resync.replay_id == b""
    assert after.record_ids == (kept,) and old not in after.record_ids
    assert resumed.stream.replay_id == after.replay_id or resumed.events.empty()


def test_a_replay_id_never_issued_is_refused_too(sim, consume) -> None:
    contacts = consume(stream(sim, replay_id=(10**9).to_bytes(8, "big")))
    (resync,) = contacts.take(1)
    assert resync.change_type == RESYNC
    record = sim.add_contact(LastName="Next")
    (event,) = contacts.take(1)
    assert event.record_ids == (record,)


def test_a_keepalive_moves_a_quiet_subscriber_past_other_topics(sim, consume) -> None:
    contacts = consume(stream(sim, start="LATEST"))
    _wait_connected(contacts.stream, threading.Event())
    sim.add_record("Lead", LastName="Elsewhere", Company="X")
    last = sim.bus.last
    pause = threading.Event()
    for _ in range(int(WAIT / 0.02)):
        if contacts.stream.replay_id == last.to_bytes(8, "big"):
            break
        pause.wait(0.02)
    assert contacts.stream.replay_id == last.to_bytes(8, "big")
    assert contacts.events.empty()


# --- the pieces -------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_damaged_state() -> None:
    state: dict[str, object] = {}
    checkpoint = ReplayCheckpoint(state, CONTACTS)
    assert checkpoint.load() is None
    from datetime import UTC, datetime

    checkpoint.save(b"\x00\x01\xff", datetime(2026, 1, 1, tzinfo=UTC))
    assert json.loads(json.dumps(state)) == state  # the engine stores it as JSON
    assert ReplayCheckpoint(state, CONTACTS).load() == b"\x00\x01\xff"
    assert ReplayCheckpoint(state, LEADS).load() is None
    state["salesforce_cdc"][CONTACTS]["replay_id"] = "not hex"  # type: ignore[index]
    assert checkpoint.load() is None
    checkpoint.save(b"", datetime(2026, 1, 1, tzinfo=UTC))  # a RESYNC voids it
    assert checkpoint.load() is None
    assert ReplayCheckpoint({"salesforce_cdc": "junk"}, CONTACTS).load() is None


def test_an_undecodable_event_is_a_resync_not_a_crash(sim, consume) -> None:
    schema_id = sim._cdc_schemas[CONTACTS][0]
    sim.bus.publish(CONTACTS, schema_id, b"\xff\xff\xff\xff not avro")
    record = sim.add_contact(LastName="Fine")
    contacts = consume(stream(sim))
    broken, fine = contacts.take(2)
    assert broken.change_type == RESYNC and broken.everything and broken.replay_id
    assert fine.record_ids == (record,)


FIELDS = {
    "Id": "id",
    "FirstName": "string",
    "LastName": "string",
    "Email": "email",
    "Class_Year__c": "double",
    "LastModifiedDate": "datetime",
    "Title": "string",
}
SCHEMA = changeevent.change_event_schema("Contact", FIELDS)
NAMES = [n for n in FIELDS if n != "Id"]


@given(st.sets(st.sampled_from(NAMES)))
def test_field_bitmaps_round_trip(names: set[str]) -> None:
    bitmaps = changeevent.field_bitmaps(SCHEMA, names)
    assert set(changeevent.field_names(SCHEMA, bitmaps)) == names
    assert all(b.startswith("0x") or "-0x" in b for b in bitmaps)


def test_bitmaps_as_salesforce_writes_them() -> None:
    # Fields: 0 header, 1 Name{Salutation, FirstName, LastName}, 2 Email, 3 Class_Year__c...
    assert changeevent.field_bitmaps(SCHEMA, ["Email", "LastName"]) == ["0x06", "1-0x04"]
    # A compound field marked without its nested bitmap stands for all of its parts; bits
    # past the schema (a newer schema than ours) are ignored; names pass through.
    assert changeevent.field_names(SCHEMA, ["0x102"]) == ["Salutation", "FirstName", "LastName"]
    assert changeevent.field_names(SCHEMA, ["Email"]) == ["Email"]


def test_the_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """eventbus_pb2.py is generated and committed (see regenerate.py): it must describe
    exactly what eventbus.proto says."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from google.protobuf import descriptor_pb2

    folder = ROOT / "plugins" / "salesforce" / "pubsub"
    out = tmp_path / "set.pb"
    code = protoc.main(
        ["protoc", f"-I{folder}", f"--descriptor_set_out={out}", str(folder / "eventbus.proto")]
    )
    assert code == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in fresh.message_type:  # protoc adds JSON names; the embedded copy has none
        for message_field in message.field:
            message_field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "run: python -m plugins.salesforce.pubsub.regenerate"
