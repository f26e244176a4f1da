"""Salesforce Change Data Capture as a stream of change hints, over the Pub/Sub API (gRPC).

:class:`SalesforceChangeStream` holds one ``Subscribe`` call open and yields a
:class:`ChangeEvent` (replay id, object, record ids, changed fields, change type) for each
event. The invariants a caller relies on:

- **at least once, never a gap.** The stream's :attr:`~SalesforceChangeStream.replay_id`
  moves past an event only when the caller asks for the next one, so after a crash the
  checkpointed id replays the event being handled. A dropped call is resubscribed from that id
  (``CUSTOM``), with exponential back-off; a killed process resumes from the checkpoint;
- **a lost position is said, never hidden.** When Salesforce refuses the replay id (outside
  the 72 h retention, or unknown: ``…replayid.corrupted``), the stream yields one
  :data:`RESYNC` event (no ids: "anything may have changed, pull everything since the
  cursor") and resubscribes at ``fallback`` (``EARLIEST`` by default: every event still
  retained, so nothing after the gap is skipped). An event that cannot be decoded is a
  ``RESYNC`` too;
- **flow control:** at most ``batch`` events (≤ 100, Salesforce's cap) are requested ahead of
  the caller; more are asked for when half are consumed;
- events are hints: the caller reads the records they name through the ordinary pull path.

Schemas come from ``GetSchema`` by the event's schema id and are cached by id (a new field in
the org gives a new id, fetched once). The session token goes in the call's metadata
(``accesstoken``, ``instanceurl``, ``tenantid``) and is never logged; a refused token is
renewed once through :meth:`PubSubAuth.invalidate`, then the stream raises ``AuthFailed``.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import fastavro
import grpc

from daemon.sdk import (
    SYSTEM_CLOCK,
    AuthFailed,
    Clock,
    Code,
    get_logger,
    register_secret,
)
from plugins.salesforce.pubsub import changeevent
from plugins.salesforce.pubsub import eventbus_pb2 as pb
from plugins.salesforce.pubsub import eventbus_pb2_grpc as pb_grpc
from plugins.salesforce.pubsub.service import AUTH_ERROR, MAX_REQUESTED, REPLAY_CORRUPTED

log = get_logger("contactsync.salesforce.cdc")

PUBSUB_ENDPOINT = "api.pubsub.salesforce.com:7443"
RESYNC = "RESYNC"  # change type of the marker: ids unknown, pull everything changed
PRESETS = {"LATEST": pb.LATEST, "EARLIEST": pb.EARLIEST}
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class ChangeEvent:
    """One change hint. ``record_ids`` empty means "ids unknown": pull everything changed
    since the cursor (a :data:`RESYNC`, or Salesforce's ``GAP_OVERFLOW``)."""

    replay_id: bytes
    entity: str
    record_ids: tuple[str, ...]
    changed_fields: tuple[str, ...]
    change_type: str
    commit_timestamp: datetime | None = None

    @property
    def everything(self) -> bool:
        """True when the event names no record: the caller pulls everything changed."""
        return not self.record_ids


class PubSubAuth(Protocol):
    """Where the stream gets its session: the three metadata entries of every call."""

    def metadata(self) -> Sequence[tuple[str, str]]:
        """``(("accesstoken", …), ("instanceurl", …), ("tenantid", …))``."""
        ...

    def invalidate(self) -> None:
        """Drop the current session: the next :meth:`metadata` gets a new one."""
        ...


@dataclass
class StaticAuth:
    """A fixed session (tests, or a token obtained elsewhere): cannot be renewed."""

    access_token: str
    instance_url: str
    tenant_id: str

    def __post_init__(self) -> None:
        register_secret(self.access_token)

    def metadata(self) -> Sequence[tuple[str, str]]:
        return (
            ("accesstoken", self.access_token),
            ("instanceurl", self.instance_url),
            ("tenantid", self.tenant_id),
        )

    def invalidate(self) -> None:
        """Nothing to renew: the next refusal ends the stream."""


@dataclass
class ClientAuth:
    """The session of a :class:`plugins.salesforce.client.SalesforceClient`: its token cache
    (renewed on refusal like any 401), its ``instance_url`` and the org id of its grant."""

    client: Any

    def metadata(self) -> Sequence[tuple[str, str]]:
        token = self.client.tokens.get()  # grants first if needed: sets instance_url, org_id
        return (
            ("accesstoken", token),
            ("instanceurl", self.client.instance_url or ""),
            ("tenantid", self.client.org_id or ""),
        )

    def invalidate(self) -> None:
        self.client.tokens.invalidate()


def error_code(exc: grpc.RpcError) -> str | None:
    """Pub/Sub's own error code, from the call's trailers (``error-code``)."""
    trailers = getattr(exc, "trailing_metadata", lambda: None)() or ()
    return next((str(v) for k, v in trailers if k == "error-code"), None)


@dataclass
class _Schemas:
    """Parsed Avro schemas by schema id, fetched once each with ``GetSchema``."""

    fetch: Callable[[str], str]
    parsed: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    def get(self, schema_id: str) -> tuple[Any, dict[str, Any]]:
        found = self.parsed.get(schema_id)
        if found is None:
            import json

            raw = json.loads(self.fetch(schema_id))
            found = self.parsed[schema_id] = (fastavro.parse_schema(raw), raw)
        return found


class SalesforceChangeStream:
    """Iterate to receive :class:`ChangeEvent`s of ``topic`` (``/data/ContactChangeEvent``)
    until ``stop`` is set. ``replay_id`` (bytes, from the checkpoint) resumes after that
    event; ``None`` starts at ``start`` (``LATEST``: only what happens from now on).
    ``secure=False`` (no TLS) is allowed to a loopback target only (the simulator). A stream
    is iterated once: its channel closes when the iteration ends."""

    def __init__(
        self,
        auth: PubSubAuth,
        topic: str,
        replay_id: bytes | None = None,
        *,
        target: str = PUBSUB_ENDPOINT,
        secure: bool = True,
        stop: threading.Event | None = None,
        batch: int = MAX_REQUESTED,
        start: str = "LATEST",
        fallback: str = "EARLIEST",
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 60.0,
        max_auth_refusals: int = 2,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        host = target.rsplit(":", 1)[0]
        if not secure and host not in _LOOPBACK:
            raise ValueError(f"a Pub/Sub target without TLS must be loopback, not {host!r}")
        if start not in PRESETS or fallback not in PRESETS:
            raise ValueError(f"start and fallback must be one of {sorted(PRESETS)}")
        self.auth = auth
        self.topic = topic
        self.entity = changeevent.entity_of(topic) or topic
        self.replay_id = replay_id or None
        self.batch = max(1, min(MAX_REQUESTED, batch))
        self.stop = stop or threading.Event()
        self._start = PRESETS[start]
        self._fallback = PRESETS[fallback]
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._max_auth_refusals = max_auth_refusals
        self._clock = clock
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials())
            if secure
            else grpc.insecure_channel(target)
        )
        self._stub = pb_grpc.PubSubStub(self._channel)
        self._schemas = _Schemas(self._fetch_schema)
        self._call: Any = None
        self._lock = threading.Lock()
        self.connected = False
        self.last_event_at: datetime | None = None
        self.reconnects = 0

    # --- the caller's side ------------------------------------------------------------------

    def __iter__(self) -> Iterator[ChangeEvent]:
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_stop, args=(done,), daemon=True)
        watcher.start()
        failures = refusals = 0
        try:
            while not self.stop.is_set():
                status, pubsub_code = grpc.StatusCode.OK, None
                try:
                    for event in self._subscribe_once():
                        failures = refusals = 0
                        yield event
                except grpc.RpcError as exc:
                    status, pubsub_code = exc.code(), error_code(exc)
                if self.stop.is_set():
                    return
                if pubsub_code == REPLAY_CORRUPTED:
                    yield self._replay_lost()
                    continue
                if status == grpc.StatusCode.UNAUTHENTICATED or pubsub_code == AUTH_ERROR:
                    refusals += 1
                    log.warning(
                        "cdc_auth_refused", topic=self.topic, code=str(Code.REMOTE_AUTH_FAILED)
                    )
                    if refusals > self._max_auth_refusals:
                        raise AuthFailed("Salesforce refused the session for the Pub/Sub API")
                    self.auth.invalidate()
                    continue  # a renewed session is tried at once
                # Dropped (or ended cleanly by the server): resubscribe from the replay id
                # after a back-off, so that a server ending every call at once is not hammered.
                failures += 1
                delay = min(self._max_backoff, self._backoff * 2 ** (failures - 1))
                log.warning(
                    "cdc_stream_dropped",
                    topic=self.topic,
                    code=str(Code.REMOTE_UNAVAILABLE),
                    status=status.name,
                    retry_in=delay,
                )
                self.reconnects += 1
                if self.stop.wait(delay):
                    return
        finally:
            self.connected = False
            done.set()
            self._channel.close()

    def close(self) -> None:
        """End the stream (from any thread): the iteration returns."""
        self.stop.set()
        self._cancel()

    # --- one Subscribe call -----------------------------------------------------------------

    def _first_request(self) -> pb.FetchRequest:
        if self.replay_id:
            return pb.FetchRequest(
                topic_name=self.topic,
                replay_preset=pb.CUSTOM,
                replay_id=self.replay_id,
                num_requested=self.batch,
            )
        return pb.FetchRequest(
            topic_name=self.topic, replay_preset=self._start, num_requested=self.batch
        )

    def _subscribe_once(self) -> Iterator[ChangeEvent]:
        requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        requests.put(self._first_request())

        def outgoing() -> Iterator[pb.FetchRequest]:
            while (item := requests.get()) is not None:
                yield item

        call = self._stub.Subscribe(outgoing(), metadata=self.auth.metadata())
        with self._lock:
            self._call = call
        if self.stop.is_set():
            call.cancel()
        outstanding = self.batch
        try:
            for response in call:
                if not self.connected:
                    self.connected = True
                    log.info("cdc_subscribed", topic=self.topic, resumed=bool(self.replay_id))
                outstanding -= len(response.events)
                for consumer_event in response.events:
                    event = self._decode(consumer_event)
                    self.last_event_at = self._clock.now()
                    yield event
                    # The caller came back for more: it has handled this one.
                    self.replay_id = consumer_event.replay_id
                if not response.events and response.latest_replay_id:
                    # A keepalive: every event before this position has been delivered.
                    self.replay_id = response.latest_replay_id
                if outstanding <= self.batch // 2:
                    requests.put(
                        pb.FetchRequest(
                            topic_name=self.topic, num_requested=self.batch - outstanding
                        )
                    )
                    outstanding = self.batch
        finally:
            self.connected = False
            requests.put(None)
            call.cancel()
            with self._lock:
                self._call = None

    def _decode(self, consumer_event: pb.ConsumerEvent) -> ChangeEvent:
        """The hint in one event; an event that cannot be read is a RESYNC (never dropped)."""
        replay = consumer_event.replay_id
        try:
            parsed, raw = self._schemas.get(consumer_event.event.schema_id)
            datum = fastavro.schemaless_reader(io.BytesIO(consumer_event.event.payload), parsed)
            header = datum["ChangeEventHeader"]
            fields = changeevent.field_names(raw, list(header.get("changedFields") or ()))
            stamp = header.get("commitTimestamp")
            return ChangeEvent(
                replay_id=replay,
                entity=str(header.get("entityName") or self.entity),
                record_ids=tuple(str(i) for i in header.get("recordIds") or ()),
                changed_fields=tuple(fields),
                change_type=str(header.get("changeType")),
                commit_timestamp=(
                    datetime.fromtimestamp(stamp / 1000, UTC) if isinstance(stamp, int) else None
                ),
            )
        except grpc.RpcError:
            raise  # GetSchema failed: the call is retried like any dropped stream
        except Exception as exc:  # hostile or corrupt bytes: the hint is "anything changed"
            log.warning(
                "cdc_event_unreadable",
                topic=self.topic,
                code=str(Code.REMOTE_MALFORMED),
                error=type(exc).__name__,
            )
            return ChangeEvent(replay, self.entity, (), (), RESYNC)

    def _replay_lost(self) -> ChangeEvent:
        log.warning(
            "cdc_replay_lost",
            topic=self.topic,
            code=str(Code.REMOTE_UNAVAILABLE),
            fallback=pb.ReplayPreset.Name(self._fallback),
        )
        self.replay_id = None
        self._start = self._fallback
        return ChangeEvent(b"", self.entity, (), (), RESYNC)

    def _fetch_schema(self, schema_id: str) -> str:
        info = self._stub.GetSchema(
            pb.SchemaRequest(schema_id=schema_id), metadata=self.auth.metadata(), timeout=30
        )
        return str(info.schema_json)

    # --- stopping ---------------------------------------------------------------------------

    def _cancel(self) -> None:
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def _watch_stop(self, done: threading.Event) -> None:
        # A blocked read of the call wakes only when the call ends: cancel it on stop. The stop
        # event may be the daemon's own (shared), so it is watched, never set, from here.
        while not done.is_set():
            if self.stop.wait(0.25):
                self._cancel()
                return
