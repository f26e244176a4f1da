"""Metrics: the hub's gauges read at scrape time, and the daemon end to end.

The end-to-end test runs ``contactsync run`` with ``[http] enabled`` and a HubSpot instance on
the simulator (real HTTP on loopback both ways): it scrapes ``/metrics`` while the daemon
syncs and finds the counters moving, asks for "sync now" and sees the cycle run, and times an
edit made through the API until the simulator holds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from daemon.config.instances import load_instances
from daemon.engine.metrics import Metrics
from daemon.hub import outbox
from daemon.hub.apitokens import Role, create_token
from daemon.hub.database import make_engine
from daemon.hub.lease import acquire
from daemon.hub.runs import finish, start
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.http import HttpSession, RetryPolicy
from daemon.kit.httpobserve import observe_http
from daemon.kit.ratelimit import DailyQuota
from plugins.hubspot.simulator import HubSpotSimulator
from tests.apikit import running_api
from tests.daemonkit import DaemonProcess, daemon_settings, instance_toml, wait_until
from tests.hubkit import ADA_PHONE, GRACE_PHONE, KATE_PHONE, OUTBOX, seed
from tests.instancekit import contact_fields
from tests.memremote import MemoryConnector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (n, have), value in found.items()
        if n == name and set(labels.items()) <= set(have)
    )


# --- the hub's gauges ---------------------------------------------------------------------------


def test_hub_gauges_read_the_outbox_runs_backoff_and_lease(sqlite_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("MEM_KEY", "k")
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "instances" / "crm.toml").write_text(instance_toml(tmp_path / "r.json", pull="every 5m"))
    loaded = load_instances(etc, {"memory": MemoryConnector}, secrets=False)
    c1, c2, c3 = (
        seed(sqlite_engine, {"first_name": "A", "last_name": "B", "phone": phone})
        for phone in (ADA_PHONE, GRACE_PHONE, KATE_PHONE)
    )
    now = utcnow()
    base = {"connection": "crm", "fields": [], "origin": "api", "version": 1, "attempts": 0}
    with sqlite_engine.begin() as conn:
        conn.execute(
            insert(OUTBOX),
            [
                {**base, "contact_id": c1, "state": outbox.PENDING, "next_attempt_at": now,
                 "created_at": now - timedelta(minutes=10), "updated_at": now},
                {**base, "contact_id": c2, "state": outbox.PENDING, "next_attempt_at": now,
                 "created_at": now - timedelta(minutes=1), "updated_at": now},
                {**base, "contact_id": c3, "state": outbox.PARKED, "next_attempt_at": now,
                 "created_at": now - timedelta(days=1), "updated_at": now},
            ],
        )  # fmt: skip
        conn.execute(
            insert(InstanceState.__table__),
            {"instance": "crm", "backoff_until": now + timedelta(minutes=30)},
        )
    start(sqlite_engine, "run-1", "crm", "pull", now - timedelta(minutes=3))
    finish(sqlite_engine, "run-1", "ok", {"created": 2}, now - timedelta(minutes=2))
    assert acquire(sqlite_engine, "crm", "host-1/abc", now)
    found = samples(Metrics(sqlite_engine, lambda: loaded).exposition().decode())
    crm = {"sync_instance": "crm"}
    assert total(found, "contactsync_hub_up") == 1
    assert total(found, "contactsync_outbox_rows", state="pending", **crm) == 2
    assert total(found, "contactsync_outbox_rows", state="parked", **crm) == 1
    # The oldest *pending* row: a parked one no longer waits for a push.
    assert 590 <= total(found, "contactsync_outbox_oldest_age_seconds", **crm) <= 700
    assert 115 <= total(found, "contactsync_seconds_since_last_success", kind="pull", **crm) < 200
    assert not total(found, "contactsync_seconds_since_last_success", kind="push", **crm)
    assert total(found, "contactsync_schedule_interval_seconds", kind="pull", **crm) == 300
    assert 1700 <= total(found, "contactsync_backoff_remaining_seconds", **crm) <= 1800
    assert total(found, "contactsync_lease_held", owner="host-1/abc", **crm) == 1
    assert total(found, "contactsync_instance_info", state="backing-off", **crm) == 1


def test_a_hub_that_does_not_answer_is_hub_up_0_not_an_error(tmp_path):
    gone = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    gone.dispose()
    (tmp_path / "hub.db").unlink()
    (tmp_path / "hub.db").mkdir()  # a folder where the file was: every query fails
    metrics = Metrics(gone, lambda: load_instances(tmp_path, {}))
    found = samples(metrics.exposition().decode())
    assert total(found, "contactsync_hub_up") == 0


def test_platform_requests_429s_retries_and_quota_are_counted(sqlite_engine):
    """Through the kit's seam: every request a connector makes, counted for its cycle's
    instance (bound in the log context, as the engine does)."""

    metrics = Metrics(sqlite_engine, lambda: load_instances(Path("/nonexistent"), {}))
    answers = iter([429, 200, 503, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {})

    session = HttpSession(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://sim"),
        retry=RetryPolicy(attempts=3, backoff_base=0, jitter=False),
        quota=DailyQuota(limit=1000),
    )
    hs = {"sync_instance": "hs", "platform": "unknown"}  # an instance not configured here
    metrics.start()
    try:
        with structlog.contextvars.bound_contextvars(instance="hs"):
            session.get("/a")  # 429, then 200
            session.get("/b")  # 503, then 200
    finally:
        metrics.stop()
    found = samples(metrics.exposition().decode())
    assert total(found, "contactsync_platform_requests_total", **hs) == 4
    assert total(found, "contactsync_platform_requests_total", status="200", **hs) == 2
    assert total(found, "contactsync_platform_rate_limited_total", **hs) == 1
    assert total(found, "contactsync_platform_retries_total", **hs) == 2
    assert total(found, "contactsync_platform_quota_used", **hs) == 4
    assert total(found, "contactsync_platform_quota_limit", **hs) == 1000
    # Stopped, it no longer counts; an observer that raises never fails the request.
    remove = observe_http(lambda *_: 1 / 0)
    try:
        assert session.get("/c").status_code == 200
    finally:
        remove()
    again = samples(metrics.exposition().decode())
    assert total(again, "contactsync_platform_requests_total", **hs) == 4


def test_metrics_route_needs_a_read_token(sqlite_engine):
    with running_api(sqlite_engine) as api:
        assert api.client(None).get("/metrics").status_code == 401
        answer = api.client("read").get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert "contactsync_hub_up 1.0" in answer.text


# --- the daemon end to end ----------------------------------------------------------------------

HUBSPOT = """
type = "hubspot"
[schedule]
pull = "every 2s"
push = "every 1h"
[settings]
base_url = "{url}"
access_token = {{ env = "TEST_HUBSPOT_TOKEN" }}
""" + contact_fields("firstname", "lastname", "email", "phone")


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(seed=5, contacts=20) as simulator:
        yield simulator


def test_the_daemon_syncs_hubspot_while_metrics_move_and_an_api_edit_reaches_it(
    tmp_path: Path, sim: HubSpotSimulator
) -> None:
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "contactsync.toml").write_text(
        daemon_settings(poll_interval_ms=100, wake_debounce_ms=20)
        + "[http]\nenabled = true\nport = 0\n"
    )
    (etc / "instances" / "hs.toml").write_text(HUBSPOT.format(url=sim.url))
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(url)
    token = create_token(engine, "ops", Role.STAFF)
    engine.dispose()
    daemon = DaemonProcess(
        etc, tmp_path, database_url=url, env={"TEST_HUBSPOT_TOKEN": sim.private_app_token}
    ).start()
    try:
        serving = daemon.wait_log("api_serving", timeout=30)[0]
        daemon.wait_log("daemon_started", timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=serving["url"], headers=headers, timeout=10) as api:

            def scrape() -> Samples:
                answer = api.get("/metrics")
                assert answer.status_code == 200, answer.text
                return samples(answer.text)

            # The first pull brings the 20 seeded contacts: counters move while it syncs.
            first = wait_until(
                lambda: (
                    (s := scrape())
                    and total(s, "contactsync_records_total", sync_instance="hs", outcome="created")
                    >= 20
                    and s
                ),
                30,
                what="the first pull counted",
            )
            hs = {"sync_instance": "hs"}
            assert total(first, "contactsync_platform_requests_total", platform="hubspot", **hs)
            assert total(first, "contactsync_cycle_duration_seconds_count", kind="pull", **hs)
            pulls = total(first, "contactsync_cycles_total", kind="pull", outcome="ok", **hs)
            requests = total(first, "contactsync_platform_requests_total", **hs)
            assert pulls >= 1 and total(first, "contactsync_hub_up") == 1
            later = wait_until(
                lambda: (
                    (s := scrape())
                    and total(s, "contactsync_cycles_total", kind="pull", outcome="ok", **hs)
                    > pulls
                    and s
                ),
                30,
                what="another pull",
            )
            assert total(later, "contactsync_platform_requests_total", **hs) > requests
            assert total(later, "contactsync_seconds_since_last_success", kind="pull", **hs) < 30

            # The instance as `status --json` shows it, and "sync now" through the scheduler.
            (row,) = api.get("/api/v1/instances").json()["instances"]
            assert (row["name"], row["type"], row["state"]) == ("hs", "hubspot", "ok")
            assert api.get("/readyz").json()["checks"] == {"hub": "ok", "scheduler": "running"}
            woken = api.post("/api/v1/instances/hs/sync")
            assert woken.status_code == 202, woken.text
            assert set(woken.json()["jobs"]) == {"hs:pull", "hs:push"}
            pushes = total(scrape(), "contactsync_cycles_total", kind="push", **hs)
            wait_until(
                lambda: total(scrape(), "contactsync_cycles_total", kind="push", **hs) > pushes,
                30,
                what="the woken push",
            )

            # An edit through the API reaches HubSpot through the running daemon.
            made = api.post(
                "/api/v1/contacts",
                json={
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "phone": "(202) 555-0143",
                    "email": "ada@example.edu",
                },
            )
            assert made.status_code == 201, made.text

            def in_hubspot(first_name: str) -> bool:
                return any(
                    c["properties"].get("email") == "ada@example.edu"
                    and c["properties"].get("firstname") == first_name
                    for c in sim.state()["contacts"]
                )

            wait_until(lambda: in_hubspot("Ada"), 30, what="the new contact in HubSpot")
            started = time.monotonic()
            edited = api.patch(
                f"/api/v1/contacts/{made.json()['contact_id']}", json={"first_name": "Augusta"}
            )
            assert edited.status_code == 200 and edited.json()["outcome"] == "updated"
            wait_until(lambda: in_hubspot("Augusta"), 30, what="the edit in HubSpot")
            latency = time.monotonic() - started
            print(f"edit-to-HubSpot latency through the API: {latency * 1000:.0f} ms")
            assert latency < 10, latency
        daemon.send(15)
        assert daemon.wait(30) == 0
    finally:
        daemon.stop()
    # No token, phone, name or email in the daemon's log.
    text = daemon.output()
    for secret in (token, sim.private_app_token, "Lovelace", "ada@example.edu", "555-0143"):
        assert secret not in text, secret
