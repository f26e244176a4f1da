"""What the benchmarks share: a stage in a fresh child process and its figures (seconds,
peak RSS), the instance file a child loads, a clock that seeds a simulator's history in the
past, and queueing every contact for a push.

A bench script runs each stage as ``python <script> _child <stage> <args…>``: the child
prints its figures as JSON on its last line, so its peak RSS is the stage's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, insert, literal, select, update

from daemon.foundation.clock import SystemClock

if TYPE_CHECKING:
    from daemon.config.instances import Instance
    from daemon.engine.cycle import SyncEngine


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def edit_and_queue_all(engine: Engine, connection: str) -> None:
    """Change every contact's last name and queue them all for ``connection``, in three
    statements, as a burst of hub edits would.

    What a pull queued already (such as Salesforce's hub-id write-back) is replaced, as the
    daemon's own queueing replaces a queued row's fields."""
    from daemon.hub.outbox import PENDING
    from daemon.hub.store import Contact, Outbox, utcnow

    contact, outbox = Contact.__table__, Outbox.__table__
    now = utcnow()
    columns = {
        "fields": literal('["last_name"]'),
        "origin": literal("bench"),
        "version": literal(1),
        "attempts": literal(0),
        "state": literal(PENDING),
        "next_attempt_at": literal(now),
        "created_at": literal(now),
        "updated_at": literal(now),
    }
    with engine.begin() as conn:
        conn.execute(update(contact).values(last_name=contact.c.last_name + "X"))
        conn.execute(delete(outbox).where(outbox.c.connection == connection))
        conn.execute(
            insert(outbox).from_select(
                ["connection", "contact_id", *columns],
                select(literal(connection), contact.c.id, *columns.values()),
            )
        )


def run_child(script: str, stage: str, *args: str) -> dict[str, Any]:
    """Run ``script _child stage *args`` in a fresh process; return the JSON figures it
    prints last. A failed child ends the benchmark with the tail of its output."""
    out = subprocess.run(
        [sys.executable, script, "_child", stage, *args],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{out.stderr[-3000:]}{out.stdout[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_instance(
    db: Path,
    name: str,
    text: str,
    connectors: Mapping[str, type[Any]],
    env: Mapping[str, str],
) -> Instance:
    """In a child: quiet logs, the secrets in the environment (instance files name them by
    ``env``), and ``text`` written as ``<name>.toml`` beside the hub ``db`` and loaded."""
    from daemon.foundation import log
    from tests.instancekit import load_written

    log.configure(level="error")
    os.environ.update(env)
    return load_written(db.parent / f"instances-{db.stem}", name, text, connectors)


def open_hub(
    db: Path, instances: Mapping[str, Instance], keep: Iterable[str] = ()
) -> tuple[Engine, SyncEngine]:
    """The SQLite hub at ``db`` with ``instances`` mirrored (and ``keep`` left enabled), and
    an engine to sync it."""
    from daemon.engine.cycle import SyncEngine
    from daemon.hub.database import make_engine
    from daemon.hub.mirror import mirror_instances

    engine = make_engine(f"sqlite:///{db}")
    mirror_instances(engine, instances, keep=keep)
    return engine, SyncEngine(engine)


def run_sync(
    sync: SyncEngine, instance: Instance, label: str, direction: str, *, full: bool = False
) -> Any:
    """One engine run of ``direction``, ignoring backoff; a failed run ends the child with
    ``label`` and the run's outcome."""
    report = sync.run(instance, direction, full=full, respect_backoff=False)
    if report.outcome != "ok":
        raise SystemExit(f"{label}: {report.outcome}: {report.error}")
    return report


def figures(
    started: float, counts: Mapping[str, int], rss_before: float | None = None
) -> dict[str, Any]:
    """A child's figures: seconds since ``started`` (``perf_counter``), its peak RSS, and the
    peak before the stage when given."""
    out: dict[str, Any] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    if rss_before is not None:
        out["rss_before_mib"] = round(rss_before, 1)
    out["counts"] = dict(counts)
    return out


def print_table(
    results: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, Callable[[Mapping[str, Any]], Any]]],
    *,
    as_json: bool = False,
) -> None:
    """A header line and a line per result. Each column is its header, a format spec for
    header and cells alike (``"<11"``, ``">8"``) and the cell of one result. With
    ``as_json`` (a bench's ``--json``), the results as one JSON document instead."""
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(" ".join(f"{header:{spec}}" for header, spec, _ in columns))
    for r in results:
        print(" ".join(f"{cell(r):{spec}}" for _, spec, cell in columns))


def latency_cell(r: Mapping[str, Any]) -> str:
    """A result's added latency: ``150ms``."""
    return f"{r['latency_ms']}ms"


def rss_cell(r: Mapping[str, Any]) -> str:
    """A result's peak RSS: ``81.2Mi``."""
    return f"{r['peak_rss_mib']:.1f}Mi"


class SeedInThePast(SystemClock):
    """The system clock, except while a simulator seeds: then one ``step`` per reading,
    ending a day ago.

    Seeded records would otherwise all be modified "just now", within a connector's lookback
    of each other, and an idle cycle would re-read every one; a real platform's history is
    spread out. Set ``seeding = False`` once the simulator is built.
    """

    def __init__(self, readings: int, step: timedelta = timedelta(minutes=1)) -> None:
        self.seeding = True
        self.step = step
        self.next = datetime.now(UTC) - timedelta(days=1) - step * readings

    def now(self) -> datetime:
        if not self.seeding:
            return super().now()
        self.next += self.step
        return self.next
