"""The Colleague connector against its Ethos simulator: the initial pull and a consume cycle.

What it measures
    A :class:`ColleagueSimulator` seeded with N persons (default 100k, all students or
    prospective students) serves loopback HTTP from this (parent) process. Each stage runs the
    real engine and the real connector in a fresh child process against an SQLite hub in a
    temp dir, with the instance's default scope (two roles: two criteria walks), and reports
    the child's peak RSS (``VmHWM``):

    * ``pull``: the first pull of N persons into an empty hub, once per ``--latency`` (each
      into its own hub): the notification checkpoint, the offset walk (500 a page, four pages
      in flight) and the empty consume after it. Records/s, requests, peak RSS;
    * ``consume``: ``--changes`` persons (default 10k) get a new last name in Colleague, which
      publishes as many change notifications carrying the whole person; one incremental pull
      consumes them from the first pull's checkpoint (one request per ~900 messages: Ethos's
      1 MB payload cap) and applies them to the hub. Records/s is changes per second;
    * ``consume-ids`` (with ``--ids-only``): the same number of changes published with only
      the person's id, as some publishers send them, so the connector fetches each person
      (``concurrency`` at a time).

    Requests are the simulator's own count, read as a delta around each stage.

How to run
    .venv/bin/python bench/colleague.py                                 # 100k, 0 and 150ms
    .venv/bin/python bench/colleague.py --contacts 10000 --changes 2000 --latency 0  # quick
    .venv/bin/python bench/colleague.py --ids-only --latency 0      # also id-only messages
    .venv/bin/python bench/colleague.py --json
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
    child_instance,
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
from plugins.colleague.simulator import ColleagueSimulator  # noqa: E402
from tests.instancekit import contact_fields  # noqa: E402

INSTANCE = """
type = "colleague"
owns_crm_id = true

[settings]
base_url = "{url}"
api_key = {{ env = "BENCH_ETHOS_API_KEY" }}

""" + contact_fields("firstName", "lastName", "email", "phone")


def child(stage: str, db: Path, url: str, api_key: str) -> dict[str, Any]:
    """Run one stage in this (fresh) process and report its figures."""
    from plugins.colleague.connector import ColleagueConnector

    instance = child_instance(
        db,
        "colleague",
        INSTANCE.format(url=url),
        {"colleague": ColleagueConnector},
        {"BENCH_ETHOS_API_KEY": api_key},
    )
    _, sync = open_hub(db, {instance.name: instance})
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    report = run_sync(sync, instance, stage, "pull", full=stage == "pull")
    return figures(started, report.counts, rss_before)


def run_stage(sim: ColleagueSimulator, stage: str, db: Path, latency: float) -> dict[str, Any]:
    """One stage in a child process, with the simulator's request count around it."""
    with sim.lock:
        sim.set_faults(latency=latency)
        requests = sim.requests
    result = run_child(__file__, stage, str(db), sim.url, sim.api_key)
    with sim.lock:
        result["requests"] = sim.requests - requests
    result.update(stage=stage, latency_ms=round(latency * 1000))
    return result


def bench(
    total: int, changes: int, latencies: list[float], ids_only: bool = False
) -> list[dict[str, Any]]:
    """Both stages for ``total`` persons against one simulator."""
    started = time.perf_counter()
    sim = ColleagueSimulator(contacts=total, seed=1, staff_share=0.0)
    print(f"seeded {total} persons in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    results = []
    with sim, tempfile.TemporaryDirectory(prefix="contactsync-bench-colleague-") as tmp:
        dbs = []
        for latency in latencies:
            db = Path(tmp) / f"hub-{round(latency * 1000)}ms.db"
            dbs.append((db, latency))
            print(f"pull {total} @ {latency * 1000:g}ms …", file=sys.stderr, flush=True)
            result = run_stage(sim, "pull", db, latency)
            result["records"] = total
            results.append(result)
        # The consume runs from the first hub's checkpoint; the other hubs' pulls drained
        # nothing it needs (every pull's checkpoint is the queue's end, and it was empty).
        db, latency = dbs[0]
        started = time.perf_counter()
        with sim.lock:
            ids = list(sim.by_colleague_id)[:changes]
        for n, colleague_id in enumerate(ids):
            sim.edit_person(colleague_id, last_name=f"Changed{n}")
        print(
            f"published {len(ids)} changes in {time.perf_counter() - started:.1f}s; "
            f"consume @ {latency * 1000:g}ms …",
            file=sys.stderr,
            flush=True,
        )
        result = run_stage(sim, "consume", db, latency)
        result["records"] = len(ids)
        results.append(result)
        if ids_only:
            # The same changes again, published as ids only: each person is then fetched.
            with sim.lock:
                sim.full_notifications = False
            for n, colleague_id in enumerate(ids):
                sim.edit_person(colleague_id, last_name=f"Again{n}")
            print(f"consume-ids @ {latency * 1000:g}ms …", file=sys.stderr, flush=True)
            result = run_stage(sim, "consume-ids", db, latency)
            result["records"] = len(ids)
            results.append(result)
    for r in results:
        r["persons"] = total
        r["records_per_s"] = round(r["records"] / r["seconds"])
        r["records_per_request"] = round(r["records"] / r["requests"], 1) if r["requests"] else None
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="persons to seed")
    parser.add_argument("--changes", type=int, default=10_000, help="changes to consume")
    parser.add_argument("--latency", default="0,150ms", help="comma-separated latencies")
    parser.add_argument(
        "--ids-only", action="store_true", help="also consume changes published as ids only"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    latencies = [parse_duration(x) for x in args.latency.split(",")]
    results = bench(args.contacts, args.changes, latencies, args.ids_only)
    print_table(
        results,
        [
            ("stage", "<11", lambda r: r["stage"]),
            ("latency", ">7", latency_cell),
            ("persons", ">8", lambda r: r["persons"]),
            ("records", ">8", lambda r: r["records"]),
            ("seconds", ">8", lambda r: r["seconds"]),
            ("records/s", ">9", lambda r: r["records_per_s"]),
            ("requests", ">8", lambda r: r["requests"]),
            ("per req", ">7", lambda r: r["records_per_request"] or "-"),
            ("peak RSS", ">9", rss_cell),
        ],
        as_json=args.json,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5])))
    else:
        main()
