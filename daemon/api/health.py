"""``/healthz``, ``/readyz`` and ``/metrics``: for supervisors, load balancers and Prometheus.

- ``GET /healthz``: the process answers HTTP. No token, no database: a liveness probe that
  restarts a daemon whose hub is down would only add restarts to the outage.
- ``GET /readyz``: the hub answers a query and, in ``contactsync run``, the scheduler is
  triggering cycles. No token. 503 with ``api-not-ready`` otherwise, saying which. Under
  ``contactsync serve`` (no scheduler by design) the hub alone decides.
- ``GET /metrics``: the Prometheus text format (:mod:`daemon.engine.metrics`). It needs a
  ``read`` token like any view: the labels name instances, connections and lease owners.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from daemon.api.auth import needs
from daemon.api.errors import error_json
from daemon.api.state import hub_of
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub.apitokens import Role
from daemon.hub.database import READ_ONLY

router = APIRouter(tags=["health"])
log = get_logger("contactsync.api")


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    """Alive: the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> JSONResponse:
    """Ready: the hub answers, and the scheduler runs (where there is one)."""
    hub = hub_of(request)
    checks: dict[str, Any] = {}
    failing: list[str] = []
    try:
        with hub.engine.connect().execution_options(**READ_ONLY) as conn:
            conn.execute(text("SELECT 1"))
        checks["hub"] = "ok"
    except Exception as exc:  # any failure to reach it: the node is not ready
        checks["hub"] = f"unreachable ({type(exc).__name__})"
        failing.append("hub")
    if hub.cycles is None:
        checks["scheduler"] = "none (contactsync serve)"
    elif hub.cycles.running:
        checks["scheduler"] = "running"
    else:
        checks["scheduler"] = "stopped"
        failing.append("scheduler")
    if failing:
        request.state.error_code = str(Code.API_NOT_READY)
        message = "; ".join(f"{k}: {checks[k]}" for k in failing)
        log.warning("api_not_ready", code=str(Code.API_NOT_READY), reason=message)
        return error_json(503, Code.API_NOT_READY, message, checks=checks)
    return JSONResponse({"status": "ready", "checks": checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    **needs(Role.READ),
)
def metrics(request: Request) -> Response:
    """The daemon's metrics in the Prometheus text format (names in the README, "Metrics")."""
    hub = hub_of(request)
    assert hub.metrics is not None  # create_app makes one
    return Response(hub.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
