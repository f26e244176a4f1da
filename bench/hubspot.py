"""The HubSpot connector against its simulator: pull, push and an idle cycle, under the limit.

What it measures
    A :class:`HubSpotSimulator` seeded with N contacts (default 100k) serves loopback HTTP from
    this (parent) process, with its default rate limit (100 requests per rolling 10 s). Each
    sync stage runs the real engine and the real connector in a fresh child process against
    an SQLite hub in a temp dir, and reports the child's peak RSS (``VmHWM``):

    * ``pull``: the first full pull of N contacts, once per ``--latency`` (each into its own
      empty hub): records/s, requests, 429s and peak RSS;
    * ``idle``: one incremental cycle with nothing changed (a pull from the first pull's
      cursor, then a push with an empty outbox): its requests and wall time;
    * ``push``: every contact's last name is edited in the hub and queued in the outbox (one
      ``INSERT … SELECT``, as ``bench/engine.py`` does), then one push cycle sends all N:
      achieved requests per 10 s as a share of the limit, 429s, contacts per request.

    ``limit`` names the limit that binds a stage and ``used`` the share of it achieved: a
    pull's first read is a scan of keyset searches, bound by HubSpot's 5 searches per
    second; a push counts against the 100 requests per rolling 10 s.

    Requests and 429s are the simulator's own counts (``requests``; ``counters
    ["rate_limited"]``), read as deltas around each stage. Between stages the simulator's
    rolling 10 s window is emptied, so a stage does not inherit the previous one's requests
    (as if it started 10 s later).

    Goals: a pull that is never the bottleneck (at 150 ms latency it should use concurrency
    within the limit, not one page at a time); a push at >= 90% of the limit with no 429
    storm; peak RSS that does not grow with N (run ``--contacts 20000,100000``).

How to run
    .venv/bin/python bench/hubspot.py                              # 100k, latency 0 and 150ms
    .venv/bin/python bench/hubspot.py --contacts 10000 --latency 0  # quick
    .venv/bin/python bench/hubspot.py --contacts 20000,100000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import (  # noqa: E402
    SeedInThePast,
    child_instance,
    edit_and_queue_all,
    figures,
    latency_cell,
    open_hub,
    peak_rss_mib,
    print_table,
    rss_cell,
    run_child,
    run_sync,
)

from daemon.kit.simkit import parse_duration  # noqa: E402
from plugins.hubspot.simulator import HubSpotSimulator  # noqa: E402
from tests.instancekit import contact_fields  # noqa: E402

INSTANCE = """
type = "hubspot"
push_batch_size = 100

[settings]
base_url = "{url}"
access_token = {{ env = "BENCH_HUBSPOT_TOKEN" }}
page_size = 200

""" + contact_fields("firstname", "lastname", "email", "phone")


def child(stage: str, db: Path, url: str, token: str) -> dict[str, Any]:
    """Run one stage in this (fresh) process and report its figures."""
    from plugins.hubspot.connector import HubSpotConnector

    instance = child_instance(
        db,
        "hubspot",
        INSTANCE.format(url=url),
        {"hubspot": HubSpotConnector},
        {"BENCH_HUBSPOT_TOKEN": token},
    )
    engine, sync = open_hub(db, {instance.name: instance})
    if stage == "push":
        edit_and_queue_all(engine, instance.connection)
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    counts: dict[str, int] = {}
    runs = {"pull": [("pull", True)], "idle": [("pull", False), ("push", False)]}
    for direction, full in runs.get(stage, [("push", False)]):
        report = run_sync(sync, instance, f"{stage}/{direction}", direction, full=full)
        for key, value in report.counts.items():
            counts[f"{direction}.{key}"] = counts.get(f"{direction}.{key}", 0) + value
    return figures(started, counts, rss_before)


def run_stage(sim: HubSpotSimulator, stage: str, db: Path, latency: float) -> dict[str, Any]:
    """One stage in a child process, with the simulator's counts around it."""
    with sim.lock:
        sim.set_faults(latency=latency)
        sim._window.clear()  # a fresh rolling 10 s window: no requests inherited
        requests, limited = sim.requests, sim.counters["rate_limited"]
        searches = sim.counters["search"]
    result = run_child(__file__, stage, str(db), sim.url, sim.private_app_token)
    with sim.lock:
        result["requests"] = sim.requests - requests
        result["searches"] = sim.counters["search"] - searches
        result["http_429"] = sim.counters["rate_limited"] - limited
    result.update(stage=stage, latency_ms=round(latency * 1000))
    return result


def bench(
    total: int, latencies: list[float], push_latency: float | None = None
) -> list[dict[str, Any]]:
    """Every stage for ``total`` contacts against one simulator."""
    started = time.perf_counter()
    # One minute apart: else every contact sits within the connector's search lookback
    # (300 s) of the others, and the idle cycle would re-read them all.
    clock = SeedInThePast(2 * total)
    sim = HubSpotSimulator(contacts=total, seed=1, clock=clock)
    clock.seeding = False
    print(f"seeded {total} contacts in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    limit = sim.rate_limit_per_10s
    search_rate = sim.search_rate_per_s
    results = []
    with sim, tempfile.TemporaryDirectory(prefix="contactsync-bench-hubspot-") as tmp:
        dbs = []
        for latency in latencies:
            db = Path(tmp) / f"hub-{round(latency * 1000)}ms.db"
            dbs.append((db, latency))
            print(f"pull {total} @ {latency * 1000:g}ms …", file=sys.stderr, flush=True)
            results.append(run_stage(sim, "pull", db, latency))
        db, latency = dbs[0]
        if push_latency is not None:
            latency = push_latency
        for stage in ("idle", "push"):
            print(f"{stage} {total} @ {latency * 1000:g}ms …", file=sys.stderr, flush=True)
            results.append(run_stage(sim, stage, db, latency))
    for r in results:
        r["contacts"] = total
        r["rate_limit_per_10s"] = limit
        r["records_per_s"] = round(total / r["seconds"]) if r["stage"] != "idle" else None
        r["requests_per_10s"] = round(r["requests"] / r["seconds"] * 10, 1)
        # The limit that binds: searches have their own (5 per second); the rest counts
        # against the burst limit.
        if r["searches"] * 2 > r["requests"]:
            r["binding_limit"] = "search"
            r["share_of_limit"] = round(r["searches"] / r["seconds"] / search_rate, 3)
        else:
            r["binding_limit"] = "burst"
            r["share_of_limit"] = round(r["requests_per_10s"] / limit, 3)
        r["contacts_per_request"] = (
            round(total / r["requests"], 1) if r["stage"] != "idle" and r["requests"] else None
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", default="100000", help="comma-separated sizes")
    parser.add_argument("--latency", default="0,150ms", help="comma-separated latencies")
    parser.add_argument(
        "--push-latency",
        default=None,
        help="latency of the idle and push stages (default: the first)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    latencies = [parse_duration(x) for x in args.latency.split(",")]
    results = []
    for total in (int(x) for x in args.contacts.split(",")):
        push_latency = parse_duration(args.push_latency) if args.push_latency else None
        results += bench(total, latencies, push_latency)
    print_table(
        results,
        [
            ("stage", "<6", lambda r: r["stage"]),
            ("latency", ">7", latency_cell),
            ("contacts", ">9", lambda r: r["contacts"]),
            ("seconds", ">8", lambda r: r["seconds"]),
            ("records/s", ">9", lambda r: r["records_per_s"] or "-"),
            ("requests", ">8", lambda r: r["requests"]),
            ("req/10s", ">7", lambda r: r["requests_per_10s"]),
            ("limit", ">6", lambda r: r["binding_limit"]),
            ("used", ">5", lambda r: f"{r['share_of_limit']:.0%}"),
            ("429s", ">5", lambda r: r["http_429"]),
            ("per req", ">7", lambda r: r["contacts_per_request"] or "-"),
            ("peak RSS", ">9", rss_cell),
        ],
        as_json=args.json,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5])))
    else:
        main()
