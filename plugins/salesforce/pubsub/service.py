"""The simulated org's side of the Pub/Sub API: an event bus with retention, served over gRPC.

:class:`EventBus` keeps every change event the simulator publishes, each with a replay id
(eight bytes, big-endian, increasing; opaque to clients, as Salesforce's are), and drops those
older than the retention (72 hours on Salesforce; the ``cdc_retention_seconds`` knob here).
:class:`PubSubService` serves ``Subscribe``, ``GetSchema`` and ``GetTopic`` from it:

- every call carries ``accesstoken``, ``instanceurl`` and ``tenantid`` metadata; a call whose
  token is not a live session of the org, or whose instance or tenant is another org's, ends
  ``UNAUTHENTICATED`` with the trailer ``error-code`` :data:`AUTH_ERROR`;
- ``Subscribe`` honours the first request's topic and replay preset (``LATEST``, ``EARLIEST``
  or ``CUSTOM`` after ``replay_id``) and ignores the preset of later ones; each request adds
  its ``num_requested`` (at most 100, Salesforce's cap) to what may be sent, and the server
  never sends more events than that (flow control). A ``CUSTOM`` replay id that is outside
  retention, or was never issued, ends the call ``INVALID_ARGUMENT`` with the trailer
  ``error-code`` :data:`REPLAY_CORRUPTED`;
- with nothing to send for ``keepalive_seconds``, it sends an answer without events whose
  ``latest_replay_id`` is the newest event's, as Salesforce does (every 270 s there).

Invariant: events are sent in replay-id order, none skipped, each at most once per call.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from plugins.salesforce.pubsub import eventbus_pb2 as pb
from plugins.salesforce.pubsub import eventbus_pb2_grpc as pb_grpc

MAX_REQUESTED = 100  # Salesforce's cap on num_requested per FetchRequest
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.service.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.not.found"


def encode_replay(position: int) -> bytes:
    """The wire form of a replay id."""
    return position.to_bytes(8, "big")


def decode_replay(raw: bytes) -> int | None:
    """A replay id's position, or None if it is no id this bus issued (wrong length)."""
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


@dataclass(frozen=True)
class BusEvent:
    """One retained event."""

    position: int
    topic: str
    schema_id: str
    payload: bytes
    published: float  # the simulator clock's epoch seconds


class EventBus:
    """The retained events of every topic, in one sequence (replay ids are org-wide)."""

    def __init__(self, now: Callable[[], float], retention_seconds: float) -> None:
        self._now = now
        self.retention_seconds = retention_seconds
        self.changed = threading.Condition()  # notified on every publish and every request
        self._events: deque[BusEvent] = deque()
        self._last = 0  # position of the newest event ever published (0: none yet)
        self._purged_to = 0  # position of the newest event dropped by retention

    def publish(self, topic: str, schema_id: str, payload: bytes) -> int:
        """Append one event; return its position."""
        with self.changed:
            self._last += 1
            self._events.append(BusEvent(self._last, topic, schema_id, payload, self._now()))
            self._purge()
            self.changed.notify_all()
            return self._last

    def _purge(self) -> None:
        horizon = self._now() - self.retention_seconds
        while self._events and self._events[0].published < horizon:
            self._purged_to = self._events.popleft().position

    @property
    def last(self) -> int:
        """The newest position (0 before any event)."""
        return self._last

    def start_after(self, preset: int, replay_id: bytes) -> int | None:
        """The position a subscription starts after, or None for a replay id outside
        retention or never issued."""
        with self.changed:
            self._purge()
            if preset == pb.LATEST:
                return self._last
            if preset == pb.EARLIEST:
                return self._purged_to
            position = decode_replay(replay_id)
            if position is None or position < self._purged_to or position > self._last:
                return None
            return position

    def after(self, topic: str, position: int, limit: int) -> tuple[list[BusEvent], int]:
        """Up to ``limit`` events of ``topic`` after ``position``, and the position read to:
        events of other topics are passed over up to the first of ``topic`` left unsent, so
        with ``limit`` 0 this says how far a subscriber can move without missing one."""
        with self.changed:
            self._purge()
            out: list[BusEvent] = []
            scanned = position
            for event in self._events:
                if event.position <= position:
                    continue
                if event.topic == topic:
                    if len(out) >= limit:
                        break
                    out.append(event)
                scanned = event.position
            return out, scanned


@dataclass
class _Subscription:
    """One Subscribe call's flow-control state (guarded by the bus's condition)."""

    pending: int = 0
    closed: bool = False


class PubSubService(pb_grpc.PubSubServicer):
    """The gRPC servicer. ``authorize(metadata)`` says whether a call's metadata is a live
    session of this org; ``schemas`` maps topic -> (schema id, schema JSON text) and is read
    at every call (the simulator may rebuild it on reset)."""

    def __init__(
        self,
        bus: Callable[[], EventBus],
        schemas: Callable[[], Mapping[str, tuple[str, str]]],
        authorize: Callable[[Mapping[str, str]], bool],
        *,
        tenant: str,
        keepalive_seconds: Callable[[], float],
        latency: Callable[[], float],
        sleep: Callable[[float], None],
        counters: Callable[[], dict[str, int]],
    ) -> None:
        self._bus = bus
        self._schemas = schemas
        self._authorize = authorize
        self._tenant = tenant
        self._keepalive = keepalive_seconds
        self._latency = latency
        self._sleep = sleep
        self._counters = counters

    # --- helpers ----------------------------------------------------------------------------

    def _check_auth(self, context: grpc.ServicerContext) -> None:
        if not self._authorize(metadata_dict(context.invocation_metadata())):
            self._counters()["pubsub_auth_refused"] += 1
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, "auth error")

    def _wait_latency(self) -> None:
        latency = self._latency()
        if latency > 0:
            self._sleep(latency)

    # --- unary calls ------------------------------------------------------------------------

    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:
        self._check_auth(context)
        self._wait_latency()
        found = self._schemas().get(request.topic_name)
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, "topic not found")
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self._tenant,
            can_publish=False,
            can_subscribe=True,
            schema_id=found[0],
            rpc_id=str(uuid.uuid4()),
        )

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:
        self._check_auth(context)
        self._wait_latency()
        self._counters()["pubsub_schema_reads"] += 1
        for schema_id, text in self._schemas().values():
            if schema_id == request.schema_id:
                return pb.SchemaInfo(schema_json=text, schema_id=schema_id, rpc_id="")
        _abort(context, grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND, "schema not found")
        raise AssertionError("unreachable")  # abort raises

    # --- Subscribe --------------------------------------------------------------------------

    def Subscribe(
        self, request_iterator: Iterator[pb.FetchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.FetchResponse]:
        self._check_auth(context)
        bus = self._bus()
        first = next(request_iterator, None)
        if first is None:
            return
        topic = first.topic_name
        if topic not in self._schemas():
            _abort(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, f"no topic {topic}")
        position = bus.start_after(first.replay_preset, first.replay_id)
        if position is None:
            self._counters()["pubsub_replay_refused"] += 1
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                REPLAY_CORRUPTED,
                "The Replay ID validation failed: it is outside retention or unknown",
            )
        assert position is not None
        self._counters()["pubsub_subscribes"] += 1
        sub = _Subscription(pending=_requested(first))

        def on_done() -> None:
            with bus.changed:
                sub.closed = True
                bus.changed.notify_all()

        context.add_callback(on_done)
        # Later requests only add to the allowance (their preset is ignored, as Salesforce
        # does); they arrive while this generator is blocked, so a thread reads them.
        reader = threading.Thread(
            target=self._read_requests,
            args=(request_iterator, topic, sub, bus, context),
            name="pubsub-requests",
            daemon=True,
        )
        reader.start()
        while True:
            with bus.changed:
                events: list[BusEvent] = []
                # Real time, not the simulator clock: this thread serves the network.
                deadline = time.monotonic() + self._keepalive()
                while not sub.closed:
                    if sub.pending > 0:
                        events, position = bus.after(topic, position, sub.pending)
                        if events:
                            sub.pending -= len(events)
                            break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    bus.changed.wait(timeout=left)
                if sub.closed:
                    return
                pending = sub.pending
            if not events:
                # A keepalive passes the events of other topics published meanwhile.
                position = bus.after(topic, position, 0)[1]
            self._wait_latency()
            if events:
                self._counters()["pubsub_events_sent"] += len(events)
            yield pb.FetchResponse(
                events=[
                    pb.ConsumerEvent(
                        event=pb.ProducerEvent(
                            id=str(e.position), schema_id=e.schema_id, payload=e.payload
                        ),
                        replay_id=encode_replay(e.position),
                    )
                    for e in events
                ],
                # The newest position this subscriber has passed: after a keepalive, a quiet
                # subscriber moves its checkpoint forward and never ages out of retention.
                latest_replay_id=encode_replay(position),
                rpc_id="",
                pending_num_requested=pending,
            )

    def _read_requests(
        self,
        requests: Iterator[pb.FetchRequest],
        topic: str,
        sub: _Subscription,
        bus: EventBus,
        context: grpc.ServicerContext,
    ) -> None:
        try:
            for request in requests:
                if request.topic_name and request.topic_name != topic:
                    with bus.changed:
                        sub.closed = True
                        bus.changed.notify_all()
                    context.cancel()
                    return
                with bus.changed:
                    sub.pending += _requested(request)
                    bus.changed.notify_all()
        except grpc.RpcError:
            pass  # the call ended; on_done has closed the subscription
        finally:
            with bus.changed:
                bus.changed.notify_all()


def _requested(request: pb.FetchRequest) -> int:
    return max(0, min(MAX_REQUESTED, request.num_requested))


def _abort(
    context: grpc.ServicerContext, status: grpc.StatusCode, error_code: str, message: str
) -> None:
    """End the call as Pub/Sub does: a status, and its own error code in the trailers."""
    rpc_id = str(uuid.uuid4())
    context.set_trailing_metadata((("error-code", error_code), ("rpc-id", rpc_id)))
    context.abort(status, f"[{error_code}] {message} rpcId: {rpc_id}")


def serve(service: PubSubService, port: int = 0) -> tuple[grpc.Server, str]:
    """Start a gRPC server on ``127.0.0.1:port``; return it and its ``host:port``."""
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="pubsub"))
    pb_grpc.add_PubSubServicer_to_server(service, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, f"127.0.0.1:{bound}"


def metadata_dict(metadata: Any) -> dict[str, str]:
    """Call metadata as a dict (the last value of a repeated key wins)."""
    return {k: v for k, v in metadata if isinstance(v, str)}
