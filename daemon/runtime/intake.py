"""Change hints from webhooks and streams → coalesced → targeted pulls.

The invariant: a hint is served by a committed pull or it stays queued; it is never written to
the hub and never dropped. A batch whose pull could not run (the connection was busy with the
scheduled pull, the platform failed, the instance backs off) goes back to the queue and is
tried again; an instance whose queue overflows is served by its ordinary incremental pull,
which reads every change since its checkpoint. See :mod:`daemon.kit.changes` for the
contract and the queue.

One thread (the *pump*) serves every instance's batches, one at a time: the targeted pull takes
the connection's lease like any cycle, so it excludes the scheduled pull and push of its
connection and a daemon on another node. Each instance whose connector holds a stream open
(``capabilities.streams``) gets a thread of its own that keeps calling ``stream`` with the last
checkpointed position, reconnecting after a back-off.

What ``contactsync status`` shows (the last event received, whether a stream is connected) is
written to the hub's ``sync_cursor`` table under the ``events`` stream, at most once a second per
instance, so the CLI in another process reads it like every other fact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from daemon.config.instances import Instance
from daemon.engine.status import CHANGES_STREAM, EVENTS_STREAM
from daemon.foundation.log import get_logger
from daemon.hub import runs
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.changes import ChangeHint, HintBatch, HintQueue, ReplayGuard, WebhookDelivery
from daemon.kit.connector import ConnectorContext, ConnectorError

log = get_logger("contactsync.intake")

BATCH_IDS = 1_000
"""Ids one targeted pull reads at most (ten HubSpot batch reads); the rest follow at once."""
RETRY_DELAY = 1.0
"""Seconds before a batch that could not run (busy, failed, backing off) is tried again."""
EVENT_WRITE_EVERY = 1.0
STREAM_BACKOFF = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
_STATE = InstanceState.__table__

CycleRunner = Callable[[Instance, str, list[str] | None], str | None]
"""Runs one cycle now: ``(instance, "pull" | "deletes", remote ids or None) -> outcome``."""


class Intake:
    """The daemon's hint intake: :meth:`accept` (webhooks), :meth:`deliver` (streams), and
    the pump thread that turns queued hints into targeted pulls."""

    def __init__(
        self,
        engine: Engine,
        instances: Callable[[], dict[str, Instance]],
        run_cycle: CycleRunner,
        *,
        queue: HintQueue | None = None,
        guard: ReplayGuard | None = None,
        has_deletion_scan: Callable[[Instance], bool] = lambda _i: False,
        on_hints: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.instances = instances
        self.run_cycle = run_cycle
        self.queue = queue or HintQueue()
        self.guard = guard or ReplayGuard()
        self.has_deletion_scan = has_deletion_scan
        # Told the first time each instance gets a hint (the scheduler slows its pull).
        self.on_hints = on_hints
        self._heard: set[str] = set()
        self.stop = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="hint-pump", daemon=True)
        self._streams: dict[str, _StreamRunner] = {}
        self._written: dict[str, float] = {}  # instance -> monotonic time of the last write
        self._lock = threading.Lock()
        self.served = 0  # batches served by a pull that ended well (tests read it)
        self._serving = False

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._pump.start()

    @property
    def running(self) -> bool:
        return self._pump.is_alive()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being served."""
        return not self._serving and self.queue.empty()

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop the pump and every stream (a batch in flight finishes its pull)."""
        self.stop.set()
        self.queue.sleep(0)  # nothing to wait for; the pump notices stop within its wait
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for runner in streams:
            runner.halt()
        if self._pump.is_alive():
            self._pump.join(timeout)

    # --- webhooks and streams --------------------------------------------------------------

    def accept(
        self, instance: str, delivery: WebhookDelivery, now: datetime, max_age: timedelta
    ) -> None:
        """Queue a verified webhook's hints; :class:`~daemon.kit.changes.WebhookRefused` if
        it is stale or a replay (nothing queued then)."""
        self.guard.check(delivery, now, max_age)
        self.deliver(instance, delivery.hints, source="webhook")

    def deliver(self, instance: str, hints: Iterable[ChangeHint], *, source: str) -> None:
        """Queue hints (a stream's, or a verified webhook's)."""
        hints = list(hints)
        self.queue.offer(instance, hints, time.monotonic())
        if instance not in self._heard:
            self._heard.add(instance)
            if self.on_hints is not None:
                try:
                    self.on_hints(instance)
                except Exception:  # a schedule not slowed is only rate limit spent
                    log.exception("hints_flow_not_noted", instance=instance)
        self._note(instance, source=source, occurred=[h.occurred_at for h in hints])

    # --- streams -----------------------------------------------------------------------------

    def follow(self, instances: Iterable[Instance]) -> None:
        """Hold a stream open for each enabled pulling instance whose connector streams, and
        close the streams of the others (removed, disabled, changed: a changed one reopens)."""
        wanted = {
            i.name: i
            for i in instances
            if i.config.enabled
            and i.direction.pulls
            and i.connector_class.capabilities.streams
            and i.connector_class.streams_for(i.settings)
        }
        with self._lock:
            for name, runner in list(self._streams.items()):
                if wanted.get(name) is not runner.instance:
                    runner.halt()
                    del self._streams[name]
            for name, instance in wanted.items():
                if name not in self._streams and not self.stop.is_set():
                    runner = _StreamRunner(self, instance)
                    self._streams[name] = runner
                    runner.start()

    def stream_status(self, instance: str, *, connected: bool) -> None:
        self._note(instance, source="stream", connected=connected, force=True)

    # --- the pump ------------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self.stop.is_set():
            try:
                self._serving = True
                batches = self.queue.take(time.monotonic(), BATCH_IDS)
                for index, batch in enumerate(batches):
                    if self.stop.is_set():
                        for left in batches[index:]:
                            self.queue.put_back(left, time.monotonic())
                        break
                    self._serve(batch)
                self._serving = False
                if not batches:
                    self.queue.sleep(self.queue.wait(time.monotonic(), 0.5))
            except Exception:  # never silently: a dead pump means hints wait for the schedule
                self._serving = False
                log.exception("hint_pump_failed")
                self.stop.wait(RETRY_DELAY)

    def _serve(self, batch: HintBatch) -> None:
        """Run the batch's pull (and deletion scan); put it back unless it ended well."""
        instance = self.instances().get(batch.instance)
        if instance is None or not instance.config.enabled or not instance.direction.pulls:
            return  # removed or switched off: its hints go with it
        ids = None if batch.everything else batch.remote_ids
        outcome = self.run_cycle(instance, "pull", ids) if (ids or ids is None) else "ok"
        if outcome == "ok" and batch.deletes and self.has_deletion_scan(instance):
            outcome = self.run_cycle(instance, "deletes", None)
        if outcome != "ok":
            # Busy, failed, backing off or stopped: served later, never dropped.
            log.info("hints_deferred", instance=batch.instance, outcome=outcome)
            self.queue.put_back(batch, time.monotonic() + RETRY_DELAY)
            self.stop.wait(RETRY_DELAY)
            return
        self.served += 1
        if batch.position is not None:
            with self.engine.begin() as conn:
                runs.set_cursor(conn, batch.instance, batch.position, utcnow(), CHANGES_STREAM)

    # --- status --------------------------------------------------------------------------------

    def _note(
        self,
        instance: str,
        *,
        source: str,
        occurred: list[datetime | None] | None = None,
        connected: bool | None = None,
        force: bool = False,
    ) -> None:
        """Record the last event (and a stream's connection) for ``contactsync status``, at
        most once a second per instance: a burst of webhooks is not a burst of writes."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._written.get(instance, -1e9) < EVENT_WRITE_EVERY:
                return
            self._written[instance] = now
        try:
            with self.engine.begin() as conn:
                previous = runs.get_cursor(conn, instance, EVENTS_STREAM)
                value = json.loads(previous) if previous else {}
                at = utcnow()
                if occurred is not None:
                    value["last_event_at"] = at.isoformat()
                    value["source"] = source
                if connected is not None:
                    value["stream_connected"] = connected
                runs.set_cursor(conn, instance, json.dumps(value), at, EVENTS_STREAM)
        except Exception as exc:  # a status line is not worth failing an intake for
            log.warning("event_status_not_recorded", instance=instance, error=type(exc).__name__)


class _StreamRunner(threading.Thread):
    """One instance's change stream, held open until halted; reconnects after a back-off."""

    def __init__(self, intake: Intake, instance: Instance) -> None:
        super().__init__(name=f"stream-{instance.name}", daemon=True)
        self.intake = intake
        self.instance = instance
        self.stop = threading.Event()

    def halt(self) -> None:
        self.stop.set()

    def run(self) -> None:
        failures = 0
        name = self.instance.name
        while not self.stop.is_set() and not self.intake.stop.is_set():
            with self.intake.engine.connect() as conn:
                position = runs.get_cursor(conn, name, CHANGES_STREAM)
                # The instance's state as its cycles left it (a rotated refresh token), as a
                # copy: a stream holds no lease, so what it changes there is not saved.
                state = conn.execute(
                    select(_STATE.c.connector_state).where(_STATE.c.instance == name)
                ).scalar()
            connector = None
            try:
                connector = self.instance.connector_class(
                    self.instance.settings, ConnectorContext(name, dict(state or {}))
                )
                self.intake.stream_status(name, connected=True)
                connector.stream(
                    position,
                    lambda hint: self.intake.deliver(name, [hint], source="stream"),
                    self.stop,
                )
                failures = 0
            except ConnectorError as exc:
                failures += 1
                log.warning("stream_lost", instance=name, code=str(exc.code), error=exc.message)
            except Exception:  # a plugin's bug ends this attempt, not the daemon
                failures += 1
                log.exception("stream_crashed", instance=name)
            finally:
                if connector is not None:
                    try:
                        connector.close()
                    except Exception:
                        log.exception("connector_close_failed", instance=name)
                self.intake.stream_status(name, connected=False)
            # A stream that ended without being stopped is opened again, after a pause
            # even when it ended well: a connector returning at once must not spin.
            self.stop.wait(STREAM_BACKOFF[min(max(failures, 1), len(STREAM_BACKOFF)) - 1])
