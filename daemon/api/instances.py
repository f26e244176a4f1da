"""``/api/v1/instances``: each instance's state, and "sync now".

The state is what ``contactsync status --json`` shows
(:func:`~daemon.engine.status.status_rows`): config, last runs, back-off, lease, outbox and
links, from the hub's tables, so every node answers alike.

``POST /api/v1/instances/{name}/sync`` wakes the daemon's scheduler: every cycle of the
instance (pull, push, or its export) runs now on the daemon's workers, under the same lease
and rules as a scheduled one, and the answer (202) comes at once; the runs appear in
``last_runs`` and the sync log. A cycle already running runs again as soon as it ends.
Under ``contactsync serve`` there is no scheduler, and running a cycle inline would tie an
HTTP request to a cycle that may take an hour: the answer is 409 ``api-no-scheduler``.
Staff may do it (the issue's "sync now" button is theirs); changing instances stays admin's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from daemon.api.auth import needs
from daemon.api.errors import ApiError
from daemon.api.state import API_PREFIX, Hub, hub_of
from daemon.engine.status import status_rows
from daemon.foundation.dictionary import Code
from daemon.hub.apitokens import Role

router = APIRouter(prefix=API_PREFIX, tags=["instances"])
NO_INSTANCE = "no such instance; GET /api/v1/instances lists them"


class InstancesOut(BaseModel):
    """Every instance, by name, as ``contactsync status --json`` lists them."""

    instances: list[dict[str, Any]]


class SyncNowOut(BaseModel):
    """The cycles woken: job ids such as ``crm:pull``."""

    instance: str
    jobs: list[str]


def _rows(hub: Hub) -> list[dict[str, Any]]:
    return status_rows(hub.engine, hub.instances())


@router.get("/instances", response_model=InstancesOut, **needs(Role.READ))
def list_instances(request: Request) -> JSONResponse:
    """Every configured instance: state, last runs, back-off, lease, outbox, links."""
    rows = _rows(hub_of(request))
    return JSONResponse(jsonable_encoder({"instances": rows}))


@router.get("/instances/{name}", response_model=dict[str, Any], **needs(Role.READ))
def get_instance(request: Request, name: str) -> JSONResponse:
    """One instance, as in the list."""
    for row in _rows(hub_of(request)):
        if row["name"] == name:
            return JSONResponse(jsonable_encoder(row))
    raise ApiError(404, Code.API_NOT_FOUND, NO_INSTANCE)


@router.post(
    "/instances/{name}/sync",
    response_model=SyncNowOut,
    status_code=202,
    responses={409: {"description": "api-no-scheduler, or the instance is disabled"}},
    **needs(Role.STAFF),
)
def sync_now(request: Request, name: str) -> JSONResponse:
    """Run the instance's cycles now (202: woken, not finished; see ``last_runs``)."""
    jobs = wake(hub_of(request), name)
    return JSONResponse(SyncNowOut(instance=name, jobs=jobs).model_dump(), status_code=202)


def wake(hub: Hub, name: str) -> list[str]:
    """Wake every cycle of instance ``name`` on the daemon's scheduler; the job ids. The
    API's route and the staff page's "sync now" button both come here."""
    loaded = hub.instances()
    if name not in loaded.instances and name not in loaded.errors:
        raise ApiError(404, Code.API_NOT_FOUND, NO_INSTANCE)
    if hub.cycles is None:
        raise ApiError(
            409,
            Code.API_NO_SCHEDULER,
            "this process serves the API without syncing (contactsync serve); send it to a "
            "node running contactsync run",
        )
    jobs = hub.cycles.run_now(name)
    if not jobs:
        raise ApiError(
            409,
            Code.API_INVALID_REQUEST,
            "the instance has no cycles to run: it is disabled, or its file never loaded",
        )
    return jobs
