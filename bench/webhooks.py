"""HubSpot edit → hub latency through webhooks, against polling at the default schedule.

What it measures
    A HubSpot simulator (``--latency``, default 150 ms on every request) sends its signed,
    batched webhooks to the real API app (uvicorn on loopback) with the real intake
    (:mod:`daemon.runtime.intake`) and the real engine and connector over an SQLite hub. After
    a first pull, ``--edits`` contacts (default 200) are edited in HubSpot one after the other;
    each edit's latency is the time until the hub holds the new value (polled every 5 ms).
    Reported: p50, p95, p99 and the requests the targeted pulls spent.

    Polling at the default schedule (``every 15m``) is not run for 200 x 15 minutes: an edit
    lands at a uniformly random moment of the interval, so its latency is the wait for the
    next pull plus that pull's own time (measured here: one idle-sized incremental cycle).
    The percentiles of that distribution are reported beside the measured ones.

    Idle cost per hour: one incremental pull cycle with nothing changed is measured (its
    requests); polling every 15 minutes spends four per hour, webhooks one (the scheduled
    pull slows to ``every 1h`` once hints flow) and no request while nothing changes.

How to run
    .venv/bin/python bench/webhooks.py                 # 200 edits at 150 ms
    .venv/bin/python bench/webhooks.py --edits 50 --latency 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from daemon.api.app import create_app
from daemon.api.server import ApiServer
from daemon.api.state import Hub
from daemon.config.instances import LoadResult, load_instance
from daemon.engine.cycle import SyncEngine
from daemon.foundation import log as logging_setup
from daemon.hub.database import make_engine
from daemon.hub.store import Contact
from daemon.runtime.intake import Intake
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator

INSTANCE = """
type = "hubspot"
owns_crm_id = true
[settings]
base_url = "{url}"
access_token = {{ env = "BENCH_HUBSPOT_TOKEN" }}
webhook_secret = {{ env = "BENCH_HUBSPOT_SECRET" }}
[[fields]]
hub = "first_name"
remote = "firstname"
[[fields]]
hub = "last_name"
remote = "lastname"
[[fields]]
hub = "email"
remote = "email"
[[fields]]
hub = "phone"
remote = "phone"
"""
DEFAULT_PULL_SECONDS = 15 * 60


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--latency", default="150ms")
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging_setup.configure(level="warning", stream=sys.stderr, json=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    engine = make_engine(f"sqlite:///{folder / 'hub.db'}")
    with HubSpotSimulator(contacts=args.contacts, seed=11, latency=args.latency) as sim:
        os.environ["BENCH_HUBSPOT_TOKEN"] = sim.private_app_token
        os.environ["BENCH_HUBSPOT_SECRET"] = sim.client_secret
        path = folder / "hs.toml"
        path.write_text(textwrap.dedent(INSTANCE.format(url=sim.url)))
        instance = load_instance(path, {"hubspot": HubSpotConnector})
        sync = SyncEngine(engine)
        assert sync.run(instance, "pull").outcome == "ok"
        # An idle incremental pull: what polling spends each time it finds nothing (in fresh
        # rate windows, as bench/hubspot.py measures it: no 429 inherited from the first pull).
        with sim.lock:
            sim._window.clear()
            sim._search_window.clear()
        before = sim.requests
        started = time.monotonic()
        assert sync.run(instance, "pull").outcome == "ok"
        idle_seconds = time.monotonic() - started
        idle_requests = sim.requests - before

        def run_cycle(inst, direction, ids):  # type: ignore[no-untyped-def]
            return sync.run(inst, direction, remote_ids=ids).outcome

        intake = Intake(engine, lambda: {"hs": instance}, run_cycle)
        intake.start()
        loaded = LoadResult({"hs": instance}, {})
        hub = Hub(engine, intake=intake)
        hub.instances = lambda: loaded
        server = ApiServer(create_app(hub), bind="127.0.0.1", port=0, grace_seconds=5)
        server.start()
        sim.set_knob("webhook_url", f"{server.url}/webhooks/hs")
        table = Contact.__table__
        ids = list(sim.records)
        latencies = []
        before = sim.requests
        try:
            for n in range(args.edits):
                remote_id = ids[n % len(ids)]
                wanted = f"Edit{n}"
                started = time.monotonic()
                sim.edit_contact(remote_id, firstname=wanted)
                query = select(table.c.first_name).where(table.c.crm_id == remote_id)
                while True:
                    with engine.connect() as conn:
                        if conn.execute(query).scalar() == wanted:
                            break
                    time.sleep(0.005)
                latencies.append(time.monotonic() - started)
        finally:
            spent = sim.requests - before
            intake.shutdown()
            server.request_stop()
            server.join(5)
    # Polling: uniform wait within the interval, plus the pull's own time.
    polled = [DEFAULT_PULL_SECONDS * q + idle_seconds for q in (0.5, 0.95, 0.99)]
    result = {
        "edits": args.edits,
        "latency": args.latency,
        "webhook_p50_s": round(percentile(latencies, 0.5), 3),
        "webhook_p95_s": round(percentile(latencies, 0.95), 3),
        "webhook_p99_s": round(percentile(latencies, 0.99), 3),
        "webhook_mean_s": round(statistics.mean(latencies), 3),
        "requests_per_edit": round(spent / args.edits, 2),
        "polling_15m_p50_s": round(polled[0], 1),
        "polling_15m_p95_s": round(polled[1], 1),
        "polling_15m_p99_s": round(polled[2], 1),
        "idle_pull_requests": idle_requests,
        "idle_requests_per_hour_polling_15m": idle_requests * 4,
        "idle_requests_per_hour_webhooks": idle_requests * 1,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
