"""The Salesforce connector against its simulator: Bulk 2.0 backfill, incremental pull, pushes.

What it measures
    :class:`SalesforceSimulator` orgs serve loopback HTTP from this (parent) process. Each sync
    stage runs the real engine and the real connector in a fresh child process against an
    SQLite hub in a temp dir, and reports the child's peak RSS (``VmHWM``):

    * ``backfill``: the first pull of N contacts (default 200k), above the connector's
      ``bulk_pull_threshold``: one Bulk API 2.0 query job whose CSV results are read one
      ``Sforce-Locator`` page (``bulk_page_size``, 50k) at a time;
    * ``incremental``: ``--changes`` contacts (default 10k) edited in the org, then one
      incremental pull from the backfill's checkpoint (REST ``queryAll``, the
      ``(SystemModstamp, Id)`` keyset, pages of 2,000);
    * ``push``: a second org of M contacts (default 50k) is pulled into its own hub, every
      contact's last name is edited in the hub and queued (one ``INSERT … SELECT``), then one
      push cycle updates all M by Id through sObject Collections (200 a request);
    * ``initial-push``: the M contacts of that hub pushed to a third, empty org by a new
      instance: creates, upserted by the hub id through Bulk API 2.0 ingest jobs
      (``push_batch_size`` 10,000, above ``bulk_push_threshold``).

    Requests are the simulator's own count (every HTTP request, token grants included), read
    as deltas around each stage; "per record" divides them by the records the stage moved.
    Seeding stamps the org's records one second apart ending a day ago, as a real org's
    history would be, so the incremental pull's overlap window holds a few hundred of them,
    not all.

How to run
    .venv/bin/python bench/salesforce.py                                  # 200k / 10k / 50k
    .venv/bin/python bench/salesforce.py --contacts 20000 --push 5000     # quick
    .venv/bin/python bench/salesforce.py --latency 50ms --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
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
    print_table,
    rss_cell,
    run_child,
    run_sync,
)

from daemon.kit.simkit import parse_duration  # noqa: E402
from plugins.salesforce.simulator import SalesforceSimulator  # noqa: E402
from tests.instancekit import contact_fields  # noqa: E402

INSTANCE = """
type = "salesforce"
connection = "{connection}"
push_batch_size = {batch}

[settings]
login_url = "{url}"
client_id = "{client_id}"
client_secret = {{ env = "BENCH_SALESFORCE_SECRET" }}
bulk_poll_seconds = 0.05

""" + contact_fields("FirstName", "LastName", "Email", "Phone")


def make_org(contacts: int, seed: int) -> SalesforceSimulator:
    # One second apart (Salesforce stamps whole seconds; a real org's history is spread out).
    clock = SeedInThePast(contacts + 10, timedelta(seconds=1))
    started = time.perf_counter()
    sim = SalesforceSimulator(contacts=contacts, seed=seed, clock=clock, daily_limit=10_000_000)
    clock.seeding = False
    print(f"seeded {contacts} contacts in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return sim.start()


def child(
    stage: str, db: Path, name: str, url: str, client_id: str, secret: str, batch: int
) -> dict[str, Any]:
    """Run one stage in this (fresh) process and report its figures."""
    from plugins.salesforce.connector import SalesforceConnector

    instance = child_instance(
        db,
        name,
        INSTANCE.format(connection=name, batch=batch, url=url, client_id=client_id),
        {"salesforce": SalesforceConnector},
        {"BENCH_SALESFORCE_SECRET": secret},
    )
    engine, sync = open_hub(db, {instance.name: instance}, keep=_other_instances(db, name))
    if stage == "push":
        edit_and_queue_all(engine, instance.connection)
    if stage == "initial-push":
        # A new instance's first sync pulls (the org is empty) before it seeds its push.
        run_sync(sync, instance, f"{stage}: first pull", "pull", full=True)
    started = time.perf_counter()
    direction = direction_of(stage)
    report = run_sync(sync, instance, stage, direction, full=stage == "backfill")
    return figures(started, report.counts)


def _other_instances(db: Path, name: str) -> list[str]:
    # Keep the earlier stages' instance mirrored (enabled) when a new one joins the hub.
    from sqlalchemy import create_engine, inspect, text

    if not db.exists():
        return []
    engine = create_engine(f"sqlite:///{db}")
    try:
        if "instance" not in inspect(engine).get_table_names():
            return []
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name FROM instance")).scalars()
            return [n for n in rows if n != name]
    finally:
        engine.dispose()


def run_stage(
    sim: SalesforceSimulator, stage: str, db: Path, name: str, batch: int = 200
) -> dict[str, Any]:
    """One stage in a child process, with the simulator's request count around it."""
    with sim.lock:
        requests = sim.requests
    result = run_child(
        __file__, stage, str(db), name, sim.url, sim.client_id, sim.client_secret, str(batch)
    )
    with sim.lock:
        result["requests"] = sim.requests - requests
        result["bulk_jobs"] = sim.counters["bulk_jobs"]
    result["stage"] = stage
    # What the stage moved, by the engine's count (records pulled, or outbox rows pushed).
    result["records"] = result["counts"].get("read", 0)
    return result


def direction_of(stage: str) -> str:
    return "pull" if stage in ("backfill", "incremental") else "push"


def bench(total: int, changes: int, pushed: int, latency: float) -> list[dict[str, Any]]:
    """Every stage: backfill and incremental on one org, the pushes on two others."""
    results = []
    with tempfile.TemporaryDirectory(prefix="contactsync-bench-salesforce-") as tmp:
        big = make_org(total, seed=1)
        big.set_faults(latency=latency)
        try:
            db = Path(tmp) / "hub-big.db"
            print(f"backfill {total} …", file=sys.stderr, flush=True)
            results.append(run_stage(big, "backfill", db, "salesforce"))
            with big.lock:
                ids = sorted(big.records["Contact"])[:: max(1, total // changes)][:changes]
            for record_id in ids:
                big.edit_record(record_id, FirstName="Changed")
            print(f"incremental {len(ids)} …", file=sys.stderr, flush=True)
            results.append(run_stage(big, "incremental", db, "salesforce"))
        finally:
            big.stop()

        small = make_org(pushed, seed=2)
        empty = SalesforceSimulator(seed=3, daily_limit=10_000_000).start()
        small.set_faults(latency=latency)
        empty.set_faults(latency=latency)
        try:
            db = Path(tmp) / "hub-small.db"
            run_stage(small, "backfill", db, "salesforce")
            print(f"push {pushed} updates …", file=sys.stderr, flush=True)
            results.append(run_stage(small, "push", db, "salesforce"))
            print(f"initial push {pushed} creates …", file=sys.stderr, flush=True)
            stage = run_stage(empty, "initial-push", db, "salesforce-new", batch=10_000)
            results.append(stage)
            # The hub skips the org's few records that share a random phone (its duplicate
            # rule), so the org gets every hub contact, which is a few less than were seeded.
            created = len(empty.find())
            if created != stage["records"]:
                raise SystemExit(f"initial push created {created} of {stage['records']}")
        finally:
            small.stop()
            empty.stop()
    for r in results:
        r["latency_ms"] = round(latency * 1000)
        r["records_per_s"] = round(r["records"] / r["seconds"]) if r["seconds"] else None
        r["requests_per_record"] = round(r["requests"] / r["records"], 4) if r["records"] else None
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200_000, help="org size for the backfill")
    parser.add_argument("--changes", type=int, default=10_000, help="edits the incremental reads")
    parser.add_argument("--push", type=int, default=50_000, help="contacts each push sends")
    parser.add_argument("--latency", default="0", help="added to every request: 0, 50ms")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = bench(args.contacts, args.changes, args.push, parse_duration(args.latency))
    print_table(
        results,
        [
            ("stage", "<13", lambda r: r["stage"]),
            ("latency", ">7", latency_cell),
            ("records", ">8", lambda r: r["records"]),
            ("seconds", ">8", lambda r: r["seconds"]),
            ("records/s", ">9", lambda r: r["records_per_s"]),
            ("requests", ">8", lambda r: r["requests"]),
            ("req/record", ">10", lambda r: r["requests_per_record"]),
            ("peak RSS", ">9", rss_cell),
        ],
        as_json=args.json,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        stage, db, name, url, client_id, secret, batch = sys.argv[2:9]
        print(json.dumps(child(stage, Path(db), name, url, client_id, secret, int(batch))))
    else:
        main()
