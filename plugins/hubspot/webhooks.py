"""The HubSpot simulator's webhook sender: what HubSpot does after each contact change.

- Events (``contact.creation``, ``contact.propertyChange`` per changed property,
  ``contact.deletion``, ``contact.merge``) are queued as the simulator stores a change, made
  through the API (the daemon's own pushes: ``changeSource`` ``INTEGRATION``) or by a user.
- They are sent in batches of at most 100 per request (a JSON array), POSTed to the
  configured target URL, signed v3 (``X-HubSpot-Signature-v3`` over method, URL, body and
  ``X-HubSpot-Request-Timestamp``, keyed with the app's client secret), each attempt signed
  afresh with its own timestamp.
- An answer other than 2xx, or none within 5 s, is retried later with ``attemptNumber`` one
  higher, up to 10 retries (HubSpot spreads them over about a day; here ``retry_seconds``
  doubled each time).
- Faults: ``bad_signature_rate`` signs an attempt with a wrong secret; ``duplicate_rate``
  sends an event again in a later batch (same ``eventId``), as HubSpot may.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from plugins.hubspot.connector import MAX_WEBHOOK_EVENTS, webhook_signature

SUBSCRIPTION_IDS = {
    "contact.creation": 1001,
    "contact.propertyChange": 1002,
    "contact.deletion": 1003,
    "contact.merge": 1004,
}
TIMEOUT_SECONDS = 5.0
MAX_RETRIES = 10


@dataclass
class _Delivery:
    events: list[dict[str, Any]]
    attempt: int = 0
    due: float = 0.0
    sent_events: list[dict[str, Any]] = field(default_factory=list)


class WebhookSender:
    """Batches, signs, sends and retries the simulator's webhooks on a thread of its own."""

    def __init__(self, secret: str, *, seed: int = 0) -> None:
        self.secret = secret
        self.url = ""
        self.bad_signature_rate = 0.0
        self.duplicate_rate = 0.0
        self.retry_seconds = 1.0
        self.flush_seconds = 0.05  # HubSpot gathers events a moment before sending a batch
        self.portal_id = 62515
        self.app_id = 54321
        self._rng = random.Random(seed + 2)
        self._queue: list[dict[str, Any]] = []
        self._retries: list[_Delivery] = []
        self._cond = threading.Condition()
        self._stop = False
        self._next_event = 1
        self._duplicated: set[int] = set()
        self.counters = {"requests": 0, "failed": 0, "events": 0, "dropped": 0}
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=TIMEOUT_SECONDS)

    # --- what the simulator calls ------------------------------------------------------------

    def event(self, kind: str, object_id: str, source: str, **more: Any) -> None:
        """Queue one event (nothing when no target URL is set)."""
        if not self.url:
            return
        with self._cond:
            self._queue.append(self.make_event(kind, object_id, source, **more))
            self._start()
            self._cond.notify_all()

    def make_event(self, kind: str, object_id: str, source: str, **more: Any) -> dict[str, Any]:
        """One event as HubSpot writes it, with the next ``eventId``."""
        with self._cond:
            event = {
                "eventId": self._next_event,
                "subscriptionId": SUBSCRIPTION_IDS.get(kind, 1000),
                "portalId": self.portal_id,
                "appId": self.app_id,
                "occurredAt": int(time.time() * 1000),
                "subscriptionType": kind,
                "attemptNumber": 0,
                "objectId": int(object_id),
                "changeSource": source,
                **more,
            }
            self._next_event += 1
            return event

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT_SECONDS + 1)
        self._client.close()

    def idle(self) -> bool:
        """Nothing queued or waiting for a retry (tests wait for it)."""
        with self._cond:
            return not self._queue and not self._retries and not self._busy

    # --- the thread ---------------------------------------------------------------------------

    _busy = False

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hubspot-webhooks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._queue and not self._due():
                    self._cond.wait(self._wait())
                if self._stop:
                    return
                self._busy = True
            time.sleep(self.flush_seconds)  # let a burst gather into full batches
            with self._cond:
                batches = []
                while self._queue:
                    batches.append(_Delivery(self._queue[:MAX_WEBHOOK_EVENTS]))
                    del self._queue[:MAX_WEBHOOK_EVENTS]
                now = time.monotonic()
                due = [d for d in self._retries if d.due <= now]
                self._retries = [d for d in self._retries if d.due > now]
            for delivery in [*due, *batches]:
                self._send(delivery)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _due(self) -> bool:
        now = time.monotonic()
        return any(d.due <= now for d in self._retries)

    def _wait(self) -> float | None:
        if not self._retries:
            return None
        return max(0.0, min(d.due for d in self._retries) - time.monotonic())

    def signed(
        self, events: list[dict[str, Any]], url: str, *, forged: bool = False
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one webhook request of ``events`` to ``url``, signed v3
        now (``forged``: with a wrong secret)."""
        body = json.dumps(events).encode()
        stamp = str(int(time.time() * 1000))
        secret = "not-" + self.secret if forged else self.secret
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": webhook_signature(secret, "POST", url, body, stamp),
            "X-HubSpot-Request-Timestamp": stamp,
            "X-HubSpot-Signature-Version": "v3",
        }
        return body, headers

    def _send(self, delivery: _Delivery) -> None:
        events = [{**e, "attemptNumber": delivery.attempt} for e in delivery.events]
        forged = self._rng.random() < self.bad_signature_rate
        body, headers = self.signed(events, self.url, forged=forged)
        self.counters["requests"] += 1
        try:
            ok = self._client.post(self.url, content=body, headers=headers).is_success
        except httpx.HTTPError:
            ok = False
        if ok:
            self.counters["events"] += len(events)
            if self.duplicate_rate:
                # Each event at most once more: a duplicate is not duplicated again.
                again = [
                    e
                    for e in delivery.events
                    if e["eventId"] not in self._duplicated
                    and self._rng.random() < self.duplicate_rate
                ]
                self._duplicated.update(e["eventId"] for e in again)
                if again:
                    with self._cond:
                        self._queue.extend(again)
            return
        self.counters["failed"] += 1
        if delivery.attempt >= MAX_RETRIES:
            self.counters["dropped"] += len(events)  # HubSpot gives up too: the pull catches it
            return
        delivery.attempt += 1
        delivery.due = time.monotonic() + self.retry_seconds * 2 ** (delivery.attempt - 1)
        with self._cond:
            self._retries.append(delivery)
