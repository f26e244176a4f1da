"""Change hints: what a platform's webhook or change stream tells the daemon, and the bounded
queue that coalesces them into targeted pulls.

Design note (the contract both shapes follow)
=============================================

A hint is never data. A webhook or a stream event only says *which records changed* (or that
something did); the daemon then reads those records through the connector's ordinary
:meth:`~daemon.kit.connector.Connector.read` and runs them through the same engine path as any
pull (incoming rules, conflict policy, links, echo suppression). So a hint can never bypass a
rule or loop an echo, and a lost, duplicated or out-of-order hint costs at most a read: the
scheduled pull still runs and catches whatever no hint announced.

Two shapes, one type (:class:`ChangeHint`):

- **Pushed (webhooks).** ``capabilities.webhooks``. The platform POSTs to
  ``/webhooks/{instance}``; the daemon hands a :class:`WebhookRequest` to the connector
  class's ``receive_webhook(settings, request)`` (a classmethod: no client is built per
  request), which verifies the signature and returns a :class:`WebhookDelivery`: the hints,
  the time the platform signed it and a key that identifies this very request. The daemon,
  not the connector, refuses what is older than ``webhook_max_age`` and what it has seen
  (:class:`ReplayGuard`), so every plugin gets the same freshness and replay rules. A bad
  signature or body is :class:`WebhookRefused`.
- **Held open (streams).** ``capabilities.streams``. The daemon calls the connector's
  ``stream(position, emit, stop)`` on a thread of its own and keeps it open; the connector
  calls ``emit(hint)`` for each event and returns when ``stop`` is set (or raises a
  ``ConnectorError``: the daemon reconnects after a back-off). Each hint carries the stream's
  ``position`` (a replay id) *after* that event. The daemon checkpoints a position in the hub
  only once every hint up to it has been served by a committed targeted pull, and hands the
  last checkpoint to the next ``stream`` call, so a restart (even ``kill -9``) resumes without
  a gap; at worst it re-reads a few records, which changes nothing.

The queue (:class:`HintQueue`) is bounded: past ``max_ids`` pending ids for one instance it
forgets that instance's ids and marks it *overflowed*, which the daemon serves with the
instance's ordinary incremental pull ("pull now"). Memory stays bounded and no change is lost,
because the pull from the checkpoint yields every record changed since.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from daemon.foundation.dictionary import Code

DEFAULT_MAX_AGE = timedelta(minutes=5)
"""How old a signed webhook may be (HubSpot's rule for its v3 signature)."""
DEFAULT_MAX_IDS = 5_000
"""Pending ids one instance may hold in the intake before it degrades to "pull now"."""


@dataclass(frozen=True, slots=True)
class ChangeHint:
    """Something changed on the platform; see the module's design note.

    - ``remote_ids``: the records that changed (created, edited, merged into, deleted);
    - ``everything``: the event names no record (or too many): run the instance's pull now;
    - ``deletes``: the event announced a deletion; a read does not show deletes on every
      platform, so the daemon also runs the instance's deletion scan, where it has one;
    - ``occurred_at``: when the platform says the change happened (for ``status``);
    - ``position``: a stream's checkpoint after this event (``None`` for webhooks).
    """

    remote_ids: tuple[str, ...] = ()
    everything: bool = False
    deletes: bool = False
    occurred_at: datetime | None = None
    position: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A platform's request to ``/webhooks/{instance}``, as the daemon received it.

    ``url`` is the full URL the request was made to as this process sees it (behind a proxy a
    connector may prefer the public URL of its settings); ``headers`` have lower-case names;
    ``body`` is the raw body (signatures cover the bytes, not a parsed form).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """What a verified webhook says: its hints, when it was signed (``None``: the platform
    signs no time) and ``key``, unique to this request (a signature or a delivery id), which
    the daemon refuses to accept twice."""

    hints: tuple[ChangeHint, ...]
    signed_at: datetime | None = None
    key: str | None = None


class WebhookRefused(Exception):
    """A webhook not to be trusted or not to be read: ``reason`` is ``signature``,
    ``stale``, ``replay``, ``malformed`` or ``not-enabled``. Its code is always
    ``webhook-refused``; the message says why, and never quotes a secret or the body."""

    code = Code.WEBHOOK_REFUSED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ReplayGuard:
    """Remembers the keys of accepted webhooks for ``window`` (the freshness limit: anything
    older is refused as stale anyway), at most ``capacity`` of them, and refuses a second."""

    def __init__(self, window: timedelta = DEFAULT_MAX_AGE, capacity: int = 100_000) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, delivery: WebhookDelivery, now: datetime, max_age: timedelta) -> None:
        """Raise :class:`WebhookRefused` if ``delivery`` is stale or a replay; otherwise
        remember it."""
        if delivery.signed_at is not None:
            age = now - delivery.signed_at
            if age > max_age:
                raise WebhookRefused(
                    "stale", f"signed {int(age.total_seconds())} s ago, over {max_age}"
                )
            if age < -max_age:  # a clock far ahead is as untrustworthy as one far behind
                raise WebhookRefused("stale", "signed in the future")
        if delivery.key is None:
            return
        with self._lock:
            while self._seen and (
                len(self._seen) >= self.capacity
                or next(iter(self._seen.values())) < now - self.window
            ):
                self._seen.popitem(last=False)
            if delivery.key in self._seen:
                raise WebhookRefused("replay", "this request was received before")
            self._seen[delivery.key] = now


@dataclass(slots=True)
class HintBatch:
    """What one targeted pull of an instance serves: ``remote_ids`` to read, or
    ``everything`` (an overflowed queue, or a hint naming no record) for its ordinary pull;
    ``deletes`` asks for its deletion scan too; ``position`` is the stream checkpoint to save
    once the pull committed (set only when the batch drains every hint before it)."""

    instance: str
    remote_ids: list[str] = field(default_factory=list)
    everything: bool = False
    deletes: bool = False
    position: str | None = None


@dataclass(slots=True)
class _Pending:
    ids: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    everything: bool = False
    deletes: bool = False
    position: str | None = None
    first: float = 0.0  # monotonic time of the oldest pending hint
    last: float = 0.0


class HintQueue:
    """Pending hints per instance, coalesced: each id once, whatever the number of events
    about it; thread-safe. Bounded per instance by ``max_ids`` (see the design note).

    :meth:`take` hands over a batch once an instance's hints have been quiet for ``quiet``
    seconds, or ``longest`` seconds into a burst that does not stop, so a burst of events is
    a few batch reads, not one per event.
    """

    def __init__(
        self, *, max_ids: int = DEFAULT_MAX_IDS, quiet: float = 0.2, longest: float = 1.0
    ) -> None:
        self.max_ids = max_ids
        self.quiet = quiet
        self.longest = max(longest, quiet)
        self._pending: dict[str, _Pending] = {}
        self._cond = threading.Condition()
        self.overflows = 0

    def offer(self, instance: str, hints: Iterable[ChangeHint], now: float) -> None:
        """Queue ``hints`` of ``instance`` (``now``: a monotonic reading)."""
        with self._cond:
            entry = self._pending.get(instance)
            if entry is None:
                entry = self._pending[instance] = _Pending(first=now)
            entry.last = now
            for hint in hints:
                entry.everything |= hint.everything
                entry.deletes |= hint.deletes
                if hint.position is not None:
                    entry.position = hint.position
                if entry.everything:
                    continue
                for remote_id in hint.remote_ids:
                    entry.ids[remote_id] = None
                if len(entry.ids) > self.max_ids:
                    # Forget the ids, keep the fact: the incremental pull reads them all.
                    entry.ids.clear()
                    entry.everything = True
                    self.overflows += 1
            if entry.everything:
                entry.ids.clear()
            self._cond.notify_all()

    def pending(self, instance: str) -> int:
        """How many ids ``instance`` has waiting (0 also when it overflowed)."""
        with self._cond:
            entry = self._pending.get(instance)
            return len(entry.ids) if entry else 0

    def empty(self) -> bool:
        """Whether no instance has anything queued."""
        with self._cond:
            return not self._pending

    def wait(self, now: float, default: float) -> float:
        """Seconds until some instance's batch is due, at most ``default``."""
        with self._cond:
            due = [self._due(e) for e in self._pending.values()]
        return max(0.0, min([default, *(d - now for d in due)]))

    def sleep(self, timeout: float) -> None:
        """Block until a hint is offered or ``timeout`` passes."""
        with self._cond:
            self._cond.wait(timeout)

    def take(self, now: float, limit: int) -> list[HintBatch]:
        """The due batches, at most ``limit`` ids each (the rest stays queued, due at once)."""
        out: list[HintBatch] = []
        with self._cond:
            for name, entry in list(self._pending.items()):
                if now < self._due(entry):
                    continue
                batch = HintBatch(name, everything=entry.everything, deletes=entry.deletes)
                if not entry.everything:
                    ids = list(entry.ids)
                    batch.remote_ids = ids[:limit]
                    for remote_id in batch.remote_ids:
                        del entry.ids[remote_id]
                entry.deletes = False
                if entry.everything or not entry.ids:
                    batch.position = entry.position
                    del self._pending[name]
                out.append(batch)
        return out

    def put_back(self, batch: HintBatch, now: float) -> None:
        """A batch that could not run (its connection was busy, the cycle failed): queue it
        again, so its hints are served by a later pull rather than lost."""
        hint = ChangeHint(
            tuple(batch.remote_ids),
            everything=batch.everything,
            deletes=batch.deletes,
            position=batch.position,
        )
        with self._cond:
            entry = self._pending.get(batch.instance)
            # A newer position queued since wins over the batch's older one.
            keep = entry.position if entry is not None else None
        self.offer(batch.instance, [hint], now)
        if keep is not None:
            with self._cond:
                self._pending[batch.instance].position = keep

    def _due(self, entry: _Pending) -> float:
        return min(entry.last + self.quiet, entry.first + self.longest)
