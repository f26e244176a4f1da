"""The HTTP API under load while the daemon syncs, and an API edit's trip to HubSpot.

What it measures
    A real ``contactsync run`` with ``[http] enabled`` and one HubSpot instance on the
    simulator (in this process, over loopback HTTP; pull every 5 s, pushes woken by the
    outbox), so the API shares the daemon's process and cores with the cycles it serves:

    * ``batch``: ``POST /api/v1/contacts:batch`` of 1,000 new contacts, ``--batches`` times
      (the hub is seeded this way), then as many batches of 1,000 updates: records/s, and
      p50/p99 of the request.
    * ``get``: ``GET /api/v1/contacts/{id}`` by hub id, ``--reads`` requests from
      ``--clients`` threads (keep-alive connections): requests/s, p50, p99.
    * ``search``: ``GET /api/v1/contacts?search=…&limit=20`` for a name part, the same way.
    * ``patch``: ``PATCH /api/v1/contacts/{id}`` (a first name), ``--edits`` requests; each
      queues the outbox, so the daemon pushes to HubSpot meanwhile.
    * ``edit to HubSpot``: a PATCH of a contact linked in HubSpot until the simulator holds
      the new value, ``--trips`` times one after the other: median and worst.

    Run on SQLite, and on PostgreSQL too when ``CONTACTSYNC_TEST_PG_URL`` names a server.
    The daemon runs with ``poll_interval_ms`` 100 and ``wake_debounce_ms`` 20 on SQLite
    (``--poll-ms``, ``--debounce-ms``); PostgreSQL wakes by LISTEN/NOTIFY.

How to run
    .venv/bin/python bench/api.py [--batches 5] [--reads 2000] [--clients 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.daemon_latency import hubs  # noqa: E402
from daemon.hub.apitokens import Role, create_token  # noqa: E402
from daemon.hub.database import make_engine  # noqa: E402
from plugins.hubspot.simulator import HubSpotSimulator  # noqa: E402
from tests.daemonkit import DaemonProcess, daemon_settings, wait_until  # noqa: E402
from tests.instancekit import contact_fields  # noqa: E402

INSTANCE = """
type = "hubspot"
[schedule]
pull = "every 5s"
push = "every 1h"
[settings]
base_url = "{url}"
access_token = {{ env = "BENCH_HUBSPOT_TOKEN" }}
""" + contact_fields("firstname", "lastname", "email", "phone")
BATCH = 1000
NAMES = ("Ada", "Grace", "Alan", "Kate", "Edsger", "Barbara", "Donald", "Frances")


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` percentile (nearest rank) of ``values``, in milliseconds."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return ordered[index] * 1000


def load(
    client_for: Callable[[], httpx.Client],
    requests: Sequence[Callable[[httpx.Client], httpx.Response]],
    clients: int,
) -> dict[str, Any]:
    """Send ``requests`` from ``clients`` threads (each its own keep-alive client); the rate
    over the wall time, and p50/p99 of each request."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    chunks = [requests[i::clients] for i in range(clients)]

    def worker(chunk: Sequence[Callable[[httpx.Client], httpx.Response]]) -> None:
        with client_for() as client:
            for send in chunk:
                started = time.perf_counter()
                answer = send(client)
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    if answer.status_code >= 400:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks if c]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} request(s) failed, first: {failures[0]}")
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
    }


def phone(i: int) -> str:
    return f"+1202{5550000 + i:07d}"


def run_backend(backend: str, url: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One daemon on the hub at ``url``; every figure of the module docstring."""
    with HubSpotSimulator(seed=11, contacts=args.remote_contacts) as sim:
        etc = folder / backend / "etc"
        (etc / "instances").mkdir(parents=True)
        (etc / "contactsync.toml").write_text(
            daemon_settings(poll_interval_ms=args.poll_ms, wake_debounce_ms=args.debounce_ms)
            + "[http]\nenabled = true\nport = 0\n"
        )
        (etc / "instances" / "hs.toml").write_text(INSTANCE.format(url=sim.url))
        engine = make_engine(url)
        token = create_token(engine, "bench", Role.STAFF)
        engine.dispose()
        daemon = DaemonProcess(
            etc,
            folder / backend,
            database_url=url,
            env={"BENCH_HUBSPOT_TOKEN": sim.private_app_token},
        ).start()
        try:
            return measure(daemon, sim, token, args)
        finally:
            daemon.stop()


def measure(
    daemon: DaemonProcess, sim: HubSpotSimulator, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    url = daemon.wait_log("api_serving", timeout=60)[0]["url"]
    headers = {"Authorization": f"Bearer {token}"}

    def client_for() -> httpx.Client:
        return httpx.Client(base_url=url, headers=headers, timeout=120)

    out: dict[str, Any] = {}
    # Seed through the API: batches of 1,000 new contacts (pushed to HubSpot meanwhile).
    creations = [
        lambda c, b=b: c.post(
            "/api/v1/contacts:batch",
            json={
                "records": [
                    {
                        "first_name": NAMES[i % len(NAMES)],
                        "last_name": f"Bench{i}",
                        "phone": phone(i),
                        "email": f"bench{i}@example.edu",
                    }
                    for i in range(b * BATCH, (b + 1) * BATCH)
                ]
            },
        )
        for b in range(args.batches)
    ]
    ids: list[str] = []

    def create(c: httpx.Client, send: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        answer = send(c)
        ids.extend(r["contact_id"] for r in answer.json()["results"])
        return answer

    created = load(client_for, [lambda c, s=s: create(c, s) for s in creations], 1)
    out["batch_create"] = {**created, "records_per_second": round(created["per_second"] * BATCH)}
    updates = [
        lambda c, b=b: c.post(
            "/api/v1/contacts:batch",
            json={
                "records": [
                    {"id": contact_id, "preferred_name": f"P{b}"}
                    for contact_id in ids[b * BATCH : (b + 1) * BATCH]
                ]
            },
        )
        for b in range(args.batches)
    ]
    updated = load(client_for, updates, 1)
    out["batch_update"] = {**updated, "records_per_second": round(updated["per_second"] * BATCH)}

    reads = [
        lambda c, i=i: c.get(f"/api/v1/contacts/{ids[(i * 7919) % len(ids)]}")
        for i in range(args.reads)
    ]
    out["get"] = load(client_for, reads, args.clients)
    searches = [
        lambda c, i=i: c.get("/api/v1/contacts", params={"search": f"bench{i % 997}", "limit": 20})
        for i in range(args.reads // 4)
    ]
    out["search"] = load(client_for, searches, args.clients)
    edits = [
        lambda c, i=i: c.patch(
            f"/api/v1/contacts/{ids[(i * 104729) % len(ids)]}", json={"first_name": f"E{i}"}
        )
        for i in range(args.edits)
    ]
    out["patch"] = load(client_for, edits, args.clients)

    # The edit-to-HubSpot trip, on a contact the daemon has created in HubSpot.
    def hubspot_first_names() -> dict[str, str]:
        return {
            str(c["properties"].get("email")): str(c["properties"].get("firstname"))
            for c in sim.state()["contacts"]
        }

    with client_for() as api:
        probe = api.post(
            "/api/v1/contacts",
            json={
                "first_name": "Probe",
                "last_name": "Trip",
                "phone": phone(999_999),
                "email": "probe@example.edu",
            },
        ).json()["contact_id"]
        wait_until(
            lambda: hubspot_first_names().get("probe@example.edu") == "Probe",
            300,
            what="the probe contact in HubSpot",
        )
        trips = []
        for n in range(args.trips):
            value = f"Trip{n}"
            started = time.perf_counter()
            answer = api.patch(f"/api/v1/contacts/{probe}", json={"first_name": value})
            assert answer.status_code == 200, answer.text
            wait_until(
                lambda v=value: hubspot_first_names().get("probe@example.edu") == v,
                120,
                interval=0.005,
                what="the edit in HubSpot",
            )
            trips.append(time.perf_counter() - started)
        out["edit_to_hubspot"] = {
            "trips": len(trips),
            "median_ms": round(statistics.median(trips) * 1000),
            "worst_ms": round(max(trips) * 1000),
        }
        instances = api.get("/api/v1/instances").json()["instances"]
        out["daemon_runs"] = {
            kind: (run or {}).get("outcome") for kind, run in instances[0]["last_runs"].items()
        }
        out["hubspot_contacts"] = len(sim.state()["contacts"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5, help="Batches of 1,000 (create, update).")
    parser.add_argument("--reads", type=int, default=2000, help="GETs by id (searches: a quarter).")
    parser.add_argument("--edits", type=int, default=1000, help="PATCH requests.")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent client threads.")
    parser.add_argument("--trips", type=int, default=20, help="Edits timed to HubSpot.")
    parser.add_argument("--remote-contacts", type=int, default=1000, help="Seeded in HubSpot.")
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--debounce-ms", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="The figures as JSON.")
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="contactsync-bench-api-") as tmp:
        for backend, hub in hubs(Path(tmp)):
            with hub() as url:
                results[backend] = run_backend(backend, url, args, Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"cpus: {results['cpus']}")
    for backend, figures in results.items():
        if backend == "cpus":
            continue
        print(f"\n{backend}")
        for name in ("batch_create", "batch_update", "get", "search", "patch"):
            f = figures[name]
            rate = f"{f['per_second']:>8.1f} req/s"
            if "records_per_second" in f:
                rate += f" ({f['records_per_second']} records/s)"
            print(f"  {name:<13} {rate:<36} p50 {f['p50_ms']:>7.1f} ms  p99 {f['p99_ms']:>7.1f} ms")
        trip = figures["edit_to_hubspot"]
        print(
            f"  edit to HubSpot: median {trip['median_ms']} ms, worst {trip['worst_ms']} ms "
            f"({trip['trips']} trips); last runs {figures['daemon_runs']}"
        )


if __name__ == "__main__":
    main()
