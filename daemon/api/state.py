"""What every route reads from the app: the hub and its settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

API_PREFIX = "/api/v1"
"""Where the versioned resources live; each router module carries it itself, so the route
templates it logs are whole."""


@dataclass(slots=True)
class Hub:
    """The hub the API serves, with the settings its writes follow. An edit's outbox rows
    wake the daemon's pusher as any hub write does (LISTEN/NOTIFY, or SQLite polling)."""

    engine: Engine
    region: str = "US"


def hub_of(request: Request) -> Hub:
    """The :class:`Hub` of the app serving ``request``."""
    return request.app.state.hub  # type: ignore[no-any-return]
