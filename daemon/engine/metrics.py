"""The daemon's Prometheus metrics: counters the process keeps, gauges read from the hub.

Two kinds, so that each number comes from where it is true:

- **Counters and histograms of this process** (reset by a restart, as Prometheus expects):
  cycles by kind and outcome, records by outcome, cycle durations, fed by the engine's own
  observer hooks (``sync_finished``); platform requests, 429s and retries, and the daily
  quota in use, fed by the kit's request seam (:mod:`daemon.kit.httpobserve`). A request is
  put down to the instance whose cycle made it (the engine binds ``instance`` to the
  cycle's log context) and to that instance's platform type.
- **Gauges read from the hub at scrape time** (:class:`HubCollector`): outbox depth per state
  and its oldest row's age, seconds since the last successful pull and push, back-off, the
  lease holder. Every node reading one PostgreSQL hub shows the same values, and nothing is
  threaded through the engine to keep them: the tables already hold the facts.

Names and labels are listed in the README ("Metrics"); the example alert rules in
``etc/prometheus/contactsync-alerts.yml`` read them. The instance's name is the label
``sync_instance``, not ``instance``: Prometheus gives every scraped series an ``instance``
label of its own (the target's host and port) and would rename ours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from daemon.config.instances import LoadResult, interval_seconds
from daemon.engine.status import status_rows
from daemon.hookspecs import hookimpl
from daemon.hub import outbox
from daemon.hub.database import READ_ONLY
from daemon.hub.runs import CycleKind
from daemon.hub.store import Outbox, SyncRun, utcnow
from daemon.kit.httpobserve import observe_http
from daemon.kit.ratelimit import DailyQuota

_OUTBOX = Outbox.__table__
_RUN = SyncRun.__table__

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
"""Cycle durations: a push of a few records takes well under a second, a first full pull of a
big platform an hour."""
NO_INSTANCE = ""
"""The ``instance`` label of a request made outside any cycle (``contactsync check``…)."""


class Metrics:
    """One process's metrics, in a registry of its own (two daemons in one test process never
    mix counts). Register :meth:`hooks` with the plugin manager and call :meth:`start` to
    count; :meth:`exposition` renders the text format."""

    def __init__(self, engine: Engine, instances: Callable[[], LoadResult]) -> None:
        self.engine = engine
        self.instances = instances
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycles = Counter(
            "contactsync_cycles",
            "Cycles that ran, by instance, kind (pull, push, deletes, export) and outcome "
            "(ok, failed, interrupted).",
            ("sync_instance", "kind", "outcome"),
            registry=r,
        )
        self.records = Counter(
            "contactsync_records",
            "Records handled by cycles, by instance, kind and outcome (created, updated, "
            "skipped, sent, failed …, as the cycle's counts name them).",
            ("sync_instance", "kind", "outcome"),
            registry=r,
        )
        self.duration = Histogram(
            "contactsync_cycle_duration_seconds",
            "Wall time of each cycle, by instance and kind.",
            ("sync_instance", "kind"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "contactsync_platform_requests",
            "Requests to a platform, each attempt once, by platform, instance and status "
            "(the HTTP status, or 'error' when no answer came).",
            ("platform", "sync_instance", "status"),
            registry=r,
        )
        self.rate_limited = Counter(
            "contactsync_platform_rate_limited",
            "Answers of HTTP 429 (rate limited) from a platform.",
            ("platform", "sync_instance"),
            registry=r,
        )
        self.retries = Counter(
            "contactsync_platform_retries",
            "Requests retried after a transient failure (429, 5xx, a connection error).",
            ("platform", "sync_instance"),
            registry=r,
        )
        self.quota_used = Gauge(
            "contactsync_platform_quota_used",
            "Calls of the platform's daily quota used, as last known (HubSpot, Salesforce).",
            ("platform", "sync_instance"),
            registry=r,
        )
        self.quota_limit = Gauge(
            "contactsync_platform_quota_limit",
            "The platform's daily quota, as last known.",
            ("platform", "sync_instance"),
            registry=r,
        )
        self.webhooks = Counter(
            "contactsync_webhooks",
            "Webhooks received at /webhooks/{instance}, by instance and outcome: accepted, or "
            "the reason it was refused (signature, stale, replay, malformed, not-enabled).",
            ("sync_instance", "outcome"),
            registry=r,
        )
        r.register(HubCollector(engine, instances))
        self.hooks = _CycleHooks(self)
        self._types: dict[str, str] = {}
        self._types_lock = threading.Lock()
        self._remove_observer: Callable[[], None] | None = None

    def start(self) -> None:
        """Count the platform requests of this process (until :meth:`stop`)."""
        if self._remove_observer is None:
            self._remove_observer = observe_http(self._on_request)

    def stop(self) -> None:
        if self._remove_observer is not None:
            self._remove_observer()
            self._remove_observer = None

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (0.0.4)."""
        return generate_latest(self.registry)

    def _platform(self, instance: str) -> str:
        """The platform type of ``instance`` (remembered: read on a request's thread)."""
        with self._types_lock:
            known = self._types.get(instance)
        if known is None:
            loaded = self.instances().instances.get(instance)
            known = loaded.config.type if loaded is not None else "unknown"
            with self._types_lock:
                self._types[instance] = known
        return known

    def _on_request(self, event: str, status: int | None, quota: DailyQuota | None) -> None:
        instance = str(structlog.contextvars.get_contextvars().get("instance") or NO_INSTANCE)
        platform = self._platform(instance) if instance else "unknown"
        if event == "retry":
            self.retries.labels(platform, instance).inc()
        else:
            label = str(status) if status is not None else "error"
            self.requests.labels(platform, instance, label).inc()
            if status == 429:
                self.rate_limited.labels(platform, instance).inc()
        if quota is not None and quota.limit is not None:
            self.quota_used.labels(platform, instance).set(quota.used)
            self.quota_limit.labels(platform, instance).set(quota.limit)

    def cycle_finished(
        self,
        instance: str,
        kind: str,
        counts: Mapping[str, int],
        duration_seconds: float,
        outcome: str,
    ) -> None:
        """Count one cycle (the engine's ``sync_finished``)."""
        self.cycles.labels(instance, kind, outcome).inc()
        self.duration.labels(instance, kind).observe(max(0.0, duration_seconds))
        for name, count in counts.items():
            if count > 0:
                self.records.labels(instance, kind, name).inc(count)


class _CycleHooks:
    """The observer hookimpls that feed :class:`Metrics` (a dry run counts too: it ran)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    @hookimpl
    def sync_finished(
        self,
        instance: str,
        direction: CycleKind,
        counts: Mapping[str, int],
        duration_seconds: float,
        outcome: str,
    ) -> None:
        self._metrics.cycle_finished(instance, str(direction), counts, duration_seconds, outcome)


class HubCollector(Collector):
    """The gauges read from the hub at each scrape, for the instances configured now.

    The reads are :func:`~daemon.engine.status.status_rows` (what ``contactsync status``
    shows) and two grouped queries (the oldest pending outbox row per connection, the last
    successful run per instance and kind); a scrape costs a handful of queries whatever the
    number of instances. A hub that does not answer yields no hub gauges and
    ``contactsync_hub_up 0``, so the process's counters are still scraped.
    """

    def __init__(self, engine: Engine, instances: Callable[[], LoadResult]) -> None:
        self.engine = engine
        self.instances = instances

    def describe(self) -> list[Metric]:
        # Described empty: the registry must not scrape the hub when it is registered.
        return []

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        up = GaugeMetricFamily(
            "contactsync_hub_up", "1 when the hub answered this scrape's queries, else 0."
        )
        try:
            families = self._families(now)
        except Exception:  # a scrape reports the hub down, never a 500
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, now: datetime) -> list[Metric]:
        loaded = self.instances()
        rows = status_rows(self.engine, loaded, now)
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            oldest = _oldest_pending(conn)
            succeeded = _last_success(conn, [r["name"] for r in rows])

        def family(name: str, doc: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        info = family(
            "contactsync_instance_info",
            "1 per configured instance, with its type, connection, direction and state "
            "(ok, disabled, backing-off, config-invalid …).",
            ("sync_instance", "type", "connection", "direction", "state"),
        )
        depth = family(
            "contactsync_outbox_rows",
            "Outbox rows of the instance's connection, by state (pending, parked).",
            ("sync_instance", "connection", "state"),
        )
        age = family(
            "contactsync_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox row of the instance's connection (0: none).",
            ("sync_instance", "connection"),
        )
        since = family(
            "contactsync_seconds_since_last_success",
            "Seconds since the last cycle of this kind that ended ok (absent: never).",
            ("sync_instance", "kind"),
        )
        last = family(
            "contactsync_last_success_timestamp_seconds",
            "When the last cycle of this kind that ended ok finished (Unix time).",
            ("sync_instance", "kind"),
        )
        interval = family(
            "contactsync_schedule_interval_seconds",
            "The instance's schedule for this kind, when it is 'every N<unit>' (absent for "
            "a crontab line).",
            ("sync_instance", "kind"),
        )
        backoff = family(
            "contactsync_backoff_remaining_seconds",
            "Seconds until the instance's back-off ends (a quota spent, a platform down); "
            "0 when it is not backing off.",
            ("sync_instance",),
        )
        leased = family(
            "contactsync_lease_held",
            "1 while a process holds the lease of the instance's connection (owner: host, "
            "pid and run).",
            ("sync_instance", "connection", "owner"),
        )
        for row in rows:
            name, connection = row["name"], row["connection"] or ""
            info.add_metric(
                [
                    name,
                    row["type"] or "",
                    connection,
                    row["direction"] or "",
                    row["state"],
                ],
                1,
            )
            for state, count in row["outbox"].items():
                depth.add_metric([name, connection, state], count)
            started = oldest.get(connection)
            age.add_metric(
                [name, connection], max(0.0, (now - started).total_seconds()) if started else 0
            )
            for kind in (CycleKind.PULL, CycleKind.PUSH, CycleKind.EXPORT):
                at = succeeded.get((name, str(kind)))
                if at is not None:
                    since.add_metric([name, str(kind)], max(0.0, (now - at).total_seconds()))
                    last.add_metric([name, str(kind)], at.timestamp())
            instance = loaded.instances.get(name)
            if instance is not None:
                for kind in (CycleKind.PULL, CycleKind.PUSH):
                    seconds = interval_seconds(getattr(instance.config.schedule, kind))
                    if seconds is not None:
                        interval.add_metric([name, str(kind)], seconds)
            until = row["backoff_until"]
            backoff.add_metric([name], max(0.0, (until - now).total_seconds()) if until else 0)
            if row["lease"]:
                leased.add_metric([name, connection, row["lease"]["owner"]], 1)
        return [info, depth, age, since, last, interval, backoff, leased]


def _oldest_pending(conn: Connection) -> dict[str, datetime]:
    """When the oldest pending outbox row of each connection was queued (a coalesced row
    keeps its first ``created_at``: the change that has waited longest)."""
    query = (
        select(_OUTBOX.c.connection, func.min(_OUTBOX.c.created_at))
        .where(_OUTBOX.c.state == outbox.PENDING)
        .group_by(_OUTBOX.c.connection)
    )
    return {connection: _utc(at) for connection, at in conn.execute(query)}


def _last_success(conn: Connection, names: list[str]) -> dict[tuple[str, str], datetime]:
    """When the last ``ok`` run of each (instance, kind) finished."""
    if not names:
        return {}
    query = (
        select(_RUN.c.instance, _RUN.c.direction, func.max(_RUN.c.finished_at))
        .where(_RUN.c.instance.in_(names), _RUN.c.outcome == "ok")
        .group_by(_RUN.c.instance, _RUN.c.direction)
    )
    return {(i, d): _utc(at) for i, d, at in conn.execute(query) if at is not None}


def _utc(value: Any) -> datetime:
    # SQLite hands back naive datetimes from an aggregate (the column type is not applied).
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value  # type: ignore[no-any-return]
