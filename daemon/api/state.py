"""What every route reads from the app: the hub, its settings, and the daemon around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from fastapi import Request
from sqlalchemy import Engine

from daemon.config.instances import LoadResult
from daemon.kit.changes import WebhookDelivery

if TYPE_CHECKING:
    from daemon.engine.metrics import Metrics

API_PREFIX = "/api/v1"
"""Where the versioned resources live; each router module carries it itself, so the route
templates it logs are whole."""


class Cycles(Protocol):
    """The daemon's scheduler, as the API may touch it (the runtime layer implements it;
    the API layer sits below the runtime and never imports it)."""

    @property
    def running(self) -> bool:
        """Whether cycles are being triggered."""
        ...

    def run_now(self, name: str) -> list[str]:
        """Run every job of instance ``name`` now; the job ids, or none when it has none."""
        ...


class Intake(Protocol):
    """The daemon's hint intake, as the webhook route hands it a verified delivery (the
    runtime layer implements it: :class:`daemon.runtime.intake.Intake`)."""

    def accept(
        self, instance: str, delivery: WebhookDelivery, now: datetime, max_age: timedelta
    ) -> None:
        """Queue the delivery's hints; raise ``WebhookRefused`` if stale or a replay."""
        ...


def _no_instances() -> LoadResult:
    return LoadResult({}, {})


@dataclass(slots=True)
class Hub:
    """The hub the API serves, with the settings its writes follow. An edit's outbox rows
    wake the daemon's pusher as any hub write does (LISTEN/NOTIFY, or SQLite polling).

    ``instances`` gives the instance files as loaded now (the daemon's current good
    config; under ``contactsync serve``, the folder as read at start). ``cycles`` is the
    daemon's scheduler, ``None`` under ``contactsync serve``. ``metrics`` holds the
    process's counters; ``None``: the hub-derived gauges only. ``intake`` takes verified
    webhooks (``POST /webhooks/{instance}``); ``None`` under ``contactsync serve``.
    """

    engine: Engine
    region: str = "US"
    instances: Callable[[], LoadResult] = field(default=_no_instances)
    cycles: Cycles | None = None
    metrics: Metrics | None = None
    intake: Intake | None = None  # None under contactsync serve: webhooks answer 503


def hub_of(request: Request) -> Hub:
    """The :class:`Hub` of the app serving ``request``."""
    return request.app.state.hub  # type: ignore[no-any-return]
