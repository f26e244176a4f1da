"""The API's app factory: one FastAPI app, one router per resource, one error shape.

A later resource is one more module with an ``APIRouter`` whose routes each name their role
(:class:`~daemon.api.auth.Require`), added to :data:`ROUTERS`; the auth matrix test then
covers it without a change. The OpenAPI document is served, unauthenticated, at
``/openapi.json``; the interactive pages (``/docs``) are off, as they load scripts from a CDN.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine

from daemon import __version__
from daemon.api import (
    contacts,
    dictionary,
    errors,
    fields,
    health,
    instances,
    outbox,
    synclog,
    webhooks,
)
from daemon.api.limits import RequestLimits
from daemon.api.state import Cycles, Hub, Intake
from daemon.config.instances import LoadResult
from daemon.config.settings import Settings
from daemon.engine.metrics import Metrics
from daemon.foundation.log import get_logger

log = get_logger("contactsync.api")

ROUTERS: tuple[APIRouter, ...] = (
    contacts.router,
    fields.router,
    synclog.router,
    dictionary.router,
    instances.router,
    outbox.router,
    health.router,
    webhooks.router,
)
Site = Callable[[FastAPI], None]
"""Something served beside the API on its app (the staff's pages, :func:`daemon.web.mount`):
it adds its routes and handlers. The API knows no site; the layer above hands them in."""
UNROUTED_PATHS = frozenset({"/openapi.json"})
"""Paths without parameters that Starlette serves outside the routers: logged as they are."""


def app_for(
    engine: Engine,
    settings: Settings,
    *,
    instances: Callable[[], LoadResult] | None = None,
    cycles: Cycles | None = None,
    metrics: Metrics | None = None,
    sites: Iterable[Site] = (),
    intake: Intake | None = None,
) -> FastAPI:
    """The API over the hub ``engine``, with the hub settings of ``settings``; in the daemon,
    with its current instances, its scheduler, its metrics and its hint intake (see
    :class:`Hub`), and
    ``sites`` served beside it."""
    hub = Hub(
        engine,
        region=settings.hub.default_region,
        cycles=cycles,
        metrics=metrics,
        intake=intake,
    )
    if instances is not None:
        hub.instances = instances
    return create_app(hub, sites=sites)


def create_app(hub: Hub, *, sites: Iterable[Site] = ()) -> FastAPI:
    """The API over ``hub``, and ``sites`` beside it."""
    app = FastAPI(
        title="contactsync",
        version=__version__,
        description="The hub's contacts and custom fields, the sync log, the error "
        "dictionary, instances and the outbox; every refusal is "
        '`{"error": {"code", "message"}}` with a code of the error dictionary.',
        docs_url=None,
        redoc_url=None,
        responses=errors.ERROR_RESPONSES,
    )
    if hub.metrics is None:
        # Under `contactsync serve`: no cycles to count, the hub's gauges still read.
        hub.metrics = Metrics(hub.engine, hub.instances)
    app.state.hub = hub
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app)
    for site in sites:  # after the API's error handlers: a site may wrap them for its pages
        site(app)
    app.add_middleware(RequestLimits)  # inside the access log, so its refusals are logged
    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """One JSON log line per request, in the daemon's log schema.

    It names the route's *template* (``/api/v1/contacts/{contact}``), never the concrete path
    or the query string: either may hold a phone, an email or a search for a name. The
    caller is named by its token's name, never the token.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None and scope.get("path") in UNROUTED_PATHS:
                route = scope["path"]
            state = scope.get("state") or {}
            log.info(
                "http_request",
                method=scope.get("method"),
                route=route or "(no route)",
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=state.get("token_name"),
                code=state.get("error_code"),
            )
