"""``POST /webhooks/{instance}``: a platform's signed change notifications.

No bearer token: the platform signs each request with the app's secret, and the instance's
connector checks that signature (``Connector.receive_webhook``); the daemon then refuses what
is stale or replayed (:class:`daemon.kit.changes.ReplayGuard`). A verified webhook is only a
hint: its records are queued for a targeted pull through the engine (never written from the
body), so a forged or replayed one could at worst cost a read, and it is refused before that.

Every refusal answers ``webhook-refused`` (401; 404 for an unknown instance), is counted in
``/metrics`` (``contactsync_webhooks``) and writes a coded sync-log row, at most one per
instance and reason a minute, so a flood of forged requests cannot flood the sync log. The
body is never logged or stored: it holds personal data (HubSpot sends changed values).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from daemon.api.errors import error_json
from daemon.api.state import hub_of
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub.store import utcnow
from daemon.hub.synclog import SyncContext, new_run_id, record
from daemon.kit.changes import WebhookRefused, WebhookRequest

router = APIRouter(tags=["webhooks"])
log = get_logger("contactsync.api")

SIGNED_BY_PLATFORM = "platform"
"""The ``x-role`` of the webhook route: no token, the platform's signature is the check (the
auth matrix test treats it so)."""
MAX_BODY = 1 << 20
"""Bytes a webhook may carry (HubSpot's 100 events are a few tens of KiB)."""
LOG_EVERY = 60.0
"""Seconds between sync-log rows for one instance and refusal reason (all are counted)."""
UNKNOWN = "(unknown)"


@router.post(
    "/webhooks/{instance}",
    status_code=204,
    responses={
        401: {"description": "webhook-refused: signature, stale, replay, malformed"},
        404: {"description": "webhook-refused: no such instance taking webhooks"},
        503: {"description": "api-no-scheduler: this process does not sync"},
    },
    openapi_extra={"x-role": SIGNED_BY_PLATFORM, "security": []},
)
async def receive(instance: str, request: Request) -> Response:
    """Take a platform's webhook for ``instance``: verify it and queue a targeted pull."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _refuse(request, instance, "malformed", f"body over {MAX_BODY} bytes", 413)
    hook = WebhookRequest(
        method=request.method,
        url=str(request.url),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        received_at=utcnow(),
    )
    return await run_in_threadpool(_receive, request, instance, hook)


def _receive(request: Request, name: str, hook: WebhookRequest) -> Response:
    hub = hub_of(request)
    instance = hub.instances().instances.get(name)
    if instance is None or not instance.connector_class.capabilities.webhooks:
        return _refuse(request, name, "not-enabled", "no instance here takes webhooks", 404)
    if hub.intake is None:
        request.state.error_code = str(Code.API_NO_SCHEDULER)
        return error_json(503, Code.API_NO_SCHEDULER, "this process serves the API without syncing")
    try:
        delivery = instance.connector_class.receive_webhook(instance.settings, hook)
        hub.intake.accept(
            name, delivery, hook.received_at, instance.connector_class.webhook_max_age
        )
    except WebhookRefused as exc:
        return _refuse(
            request, name, exc.reason, exc.message, 401, integration=instance.config.type
        )
    if hub.metrics is not None:
        hub.metrics.webhooks.labels(name, "accepted").inc()
    return Response(status_code=204)


def _refuse(
    request: Request,
    name: str,
    reason: str,
    message: str,
    status: int,
    *,
    integration: str | None = None,
) -> JSONResponse:
    """Count, log (rate-limited, for a known instance) and answer one refusal."""
    hub = hub_of(request)
    label = name if integration is not None else UNKNOWN  # unknown names are not labels
    if hub.metrics is not None:
        hub.metrics.webhooks.labels(label, reason).inc()
    request.state.error_code = str(Code.WEBHOOK_REFUSED)
    log.warning("webhook_refused", instance=label, reason=reason, code=str(Code.WEBHOOK_REFUSED))
    if integration is not None and _due(request, name, reason):
        context = SyncContext(integration, "incoming", new_run_id(), name)
        record(hub.engine, context, Code.WEBHOOK_REFUSED, message, reason=reason)
    return error_json(status, Code.WEBHOOK_REFUSED, message)


def _due(request: Request, name: str, reason: str) -> bool:
    """Whether this refusal gets a sync-log row (one per instance and reason a minute)."""
    state = request.app.state
    last: dict[tuple[str, str], float] | None = getattr(state, "webhook_logged", None)
    if last is None:
        last = state.webhook_logged = {}
    now = time.monotonic()
    if now - last.get((name, reason), -LOG_EVERY) < LOG_EVERY:
        return False
    last[(name, reason)] = now
    return True
