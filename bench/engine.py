"""The sync engine's own cost: pull and push with nothing but the engine in the way.

What it measures
    A connector that makes records up as it pages (no platform, no network, no storage)
    stands in for a platform, so the figures are the engine's: mapping, the incoming rules,
    links, the outbox, checkpoints, SQL. For N contacts (default 100k) it runs, each in a
    fresh child process against one SQLite hub in a temp dir:

    * ``pull``: a first full pull of N remote records (pages of 200): every record creates a
      contact and a link, and every page commits with its checkpoint.
    * ``pull-again``: a second full pull of the same N records: every record matches its link
      and nothing changes (the cost of "apply only what changed").
    * ``push``: every contact's last name is edited in the hub and queued in the outbox, then
      one push cycle sends all N (batches of 100) to a connector that accepts them.

    For each it prints records, seconds, records/s and the child's peak RSS (``VmHWM``).
    Peak RSS should not grow with N: run ``--contacts 20000,100000`` to see it.

How to run
    .venv/bin/python bench/engine.py                       # 100k contacts
    .venv/bin/python bench/engine.py --contacts 20000,100000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import (  # noqa: E402
    child_instance,
    edit_and_queue_all,
    open_hub,
    peak_rss_mib,
    run_child,
    run_sync,
)

from daemon.kit.connector import (  # noqa: E402
    Capabilities,
    Connector,
    ConnectorConfig,
    Page,
    PushItem,
    PushResult,
    PushStatus,
    RemoteField,
    RemoteRecord,
)
from tests.instancekit import memory_fields  # noqa: E402

AREAS = ("202", "212", "312", "415", "617", "713")
PAGE_SIZE = 200
MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCE = (
    'type = "bench"\npush_batch_size = 100\n\n[settings]\ntotal = {total}\n\n' + memory_fields()
)


def phone(i: int) -> str:
    """A valid, unique US number for record ``i``."""
    rest = i // len(AREAS)
    return f"{AREAS[i % len(AREAS)]}{200 + (rest // 10_000) % 800}{rest % 10_000:04d}"


class BenchConfig(ConnectorConfig):
    """How many records the made-up platform has."""

    total: int = 100_000


class GeneratedConnector(Connector):
    """Pages of made-up records; accepts every push."""

    type = "bench"
    Config = BenchConfig
    capabilities = Capabilities()
    calls = 0

    def describe(self) -> list[RemoteField]:
        return [RemoteField(n) for n in ("FirstName", "LastName", "Phone", "Email", "StudentId")]

    def pull(self, cursor: str | None) -> Iterator[Page]:
        total = self.config.total  # type: ignore[attr-defined]
        for start in range(int(cursor or 0), total, PAGE_SIZE):
            stop = min(start + PAGE_SIZE, total)
            records = [
                RemoteRecord(
                    f"B{i:07d}",
                    {
                        "FirstName": f"First{i}",
                        "LastName": f"Last{i}",
                        "Phone": phone(i),
                        "Email": f"student{i}@example.edu",
                        "StudentId": f"S{i:07d}",
                    },
                    MODIFIED,
                )
                for i in range(start, stop)
            ]
            yield Page(records, str(stop))

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        GeneratedConnector.calls += 1
        return [
            PushResult(item.contact_id, PushStatus.OK, remote_id=item.remote_id or item.contact_id)
            for item in batch
        ]


def child(stage: str, folder: Path, total: int) -> dict[str, Any]:
    """Run one stage in this (fresh) process and report its figures."""
    db = folder / "hub.db"
    text = INSTANCE.format(total=total)
    instance = child_instance(db, "bench", text, {"bench": GeneratedConnector}, {})
    engine, sync = open_hub(db, {instance.name: instance})
    if stage == "push":
        edit_and_queue_all(engine, "bench")
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    direction = "pull" if stage.startswith("pull") else "push"
    report = run_sync(sync, instance, stage, direction, full=True)
    seconds = time.perf_counter() - started
    return {
        "stage": stage,
        "contacts": total,
        "seconds": round(seconds, 2),
        "records_per_s": round(total / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_mib": round(rss_before, 1),
        "counts": report.counts,
        "push_calls": GeneratedConnector.calls,
    }


def run_stage(stage: str, folder: Path, total: int) -> dict[str, Any]:
    return run_child(__file__, stage, str(folder), str(total))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", default="100000", help="comma-separated sizes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for total in (int(x) for x in args.contacts.split(",")):
        with tempfile.TemporaryDirectory(prefix="contactsync-bench-") as tmp:
            for stage in ("pull", "pull-again", "push"):
                print(f"{stage} {total} …", file=sys.stderr, flush=True)
                results.append(run_stage(stage, Path(tmp), total))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'stage':<11} {'contacts':>9} {'seconds':>8} {'records/s':>10} {'peak RSS':>9}  counts")
    for r in results:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(r["counts"].items()) if v)
        print(
            f"{r['stage']:<11} {r['contacts']:>9} {r['seconds']:>8} {r['records_per_s']:>10}"
            f" {r['peak_rss_mib']:>7.1f}Mi  {counts}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
