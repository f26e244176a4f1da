"""The daemon's wake-up latency and its idle cost, measured on a real ``contactsync run``.

What it measures
    * ``latency``: a contact saved in the hub by another process (this one) until the
      daemon's push hands it to the connector. The push schedule is hourly, so only the
      waker can make it happen: outbox polling on SQLite, LISTEN/NOTIFY on PostgreSQL. The
      write's time is taken when ``save_contact`` returns (it has committed); the push's is
      the time the memory remote stamps on the record it stores, both on this host's wall
      clock. Writes are spaced by a random 0.2-1.2 s so that they land at every phase of the
      SQLite poll. Median and worst of ``--writes`` (20).
    * ``idle``: 50 instances of the memory connector (pull and push every 15m) configured,
      once their first cycles are done: the daemon's CPU over ``--idle-seconds`` (30), from
      utime + stime in ``/proc/<pid>/stat``, and its resident memory (``VmRSS``).

    Both run with the daemon's default settings (``wake_debounce_ms`` and
    ``poll_interval_ms`` 500) unless ``--debounce-ms`` / ``--poll-ms`` say otherwise, on
    SQLite, and on PostgreSQL too when ``CONTACTSYNC_TEST_PG_URL`` names a server (a
    throw-away database is created on it and dropped afterwards).

How to run
    .venv/bin/python bench/daemon_latency.py
    source .ci/services.sh && start_postgres && .venv/bin/python bench/daemon_latency.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from daemon.hub.contacts import save_contact  # noqa: E402
from daemon.hub.database import READ_ONLY, make_engine, normalise_url  # noqa: E402
from daemon.hub.store import InstanceState, SyncRun, utcnow  # noqa: E402
from tests.daemonkit import (  # noqa: E402
    DaemonProcess,
    NotifySocket,
    daemon_settings,
    instance_toml,
    remote_rows,
    wait_until,
)

PG_ENV = "CONTACTSYNC_TEST_PG_URL"
IDLE_INSTANCES = 50
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- databases ----------------------------------------------------------------------------


@contextmanager
def sqlite_hub(folder: Path) -> Iterator[str]:
    """An SQLite hub file in ``folder``."""
    yield f"sqlite:///{folder / 'hub.db'}"


@contextmanager
def postgres_hub(admin_url: str) -> Iterator[str]:
    """A throw-away database on the PostgreSQL server at ``admin_url``."""
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"contactsync_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(normalise_url(admin_url)).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def hubs(folder: Path) -> list[tuple[str, Any]]:
    """The backends to measure: SQLite always, PostgreSQL when a server is named."""
    found: list[tuple[str, Any]] = [("sqlite", lambda: sqlite_hub(folder))]
    admin_url = os.environ.get(PG_ENV)
    if admin_url:
        found.append(("postgresql", lambda: postgres_hub(admin_url)))
    return found


# --- the daemon ---------------------------------------------------------------------------


def prepare_etc(folder: Path, settings: dict[str, Any]) -> Path:
    etc = folder / "etc"
    (etc / "instances").mkdir(parents=True, exist_ok=True)
    (etc / "contactsync.toml").write_text(daemon_settings(**settings), encoding="utf-8")
    return etc


def start(etc: Path, folder: Path, url: str, notify: NotifySocket) -> DaemonProcess:
    daemon = DaemonProcess(
        etc, folder, database_url=url, env={"NOTIFY_SOCKET": str(notify.path), "MEM_KEY": "k3y!"}
    ).start()
    notify.wait_for("READY", timeout=60)
    return daemon


def next_push_at(engine: Any, name: str) -> datetime | None:
    table = InstanceState.__table__
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return conn.execute(select(table.c.next_push_at).where(table.c.instance == name)).scalar()


def pushed_at(remote_file: Path, contact_id: str) -> datetime | None:
    for row in remote_rows(remote_file):
        if row["created_for"] == contact_id:
            return datetime.fromisoformat(row["modified"])
    return None


def measure_latency(
    folder: Path, url: str, writes: int, settings: dict[str, Any], seed: int
) -> list[float]:
    """Seconds from each hub write (committed by this process) to its push."""
    etc = prepare_etc(folder, settings)
    remote_file = folder / "latency.json"
    (etc / "instances" / "latency.toml").write_text(
        instance_toml(remote_file, pull="every 1h", push="every 1h"), encoding="utf-8"
    )
    engine = make_engine(url)
    notify = NotifySocket()
    daemon = start(etc, folder, url, notify)
    try:
        daemon.wait_log("sync_cycle", instance="latency", direction="push", outcome="ok")
        later = utcnow() + timedelta(minutes=30)
        wait_until(lambda: (next_push_at(engine, "latency") or later) > later, timeout=30)
        rng = random.Random(seed)
        latencies = []
        for n in range(writes):
            time.sleep(rng.uniform(0.2, 1.2))
            person = {
                "first_name": f"Bench{n}",
                "last_name": "Latency",
                "phone": f"+1202555{n:04d}",
            }
            contact_id = save_contact(engine, person)
            committed = datetime.now(UTC)
            pushed = wait_until(lambda c=contact_id: pushed_at(remote_file, c), timeout=30)
            latencies.append((pushed - committed).total_seconds())
        assert (next_push_at(engine, "latency") or later) >= later, "a scheduled push ran"
        return latencies
    finally:
        daemon.stop()
        notify.close()
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def measure_idle(folder: Path, url: str, seconds: float, settings: dict[str, Any]) -> dict:
    """CPU % and memory of a daemon with 50 instances and nothing to do."""
    etc = prepare_etc(folder, settings)
    for n in range(IDLE_INSTANCES):
        (etc / "instances" / f"idle{n:02d}.toml").write_text(
            instance_toml(folder / f"idle{n:02d}.json", pull="every 15m", push="every 15m"),
            encoding="utf-8",
        )
    engine = make_engine(url)
    notify = NotifySocket()
    daemon = start(etc, folder, url, notify)
    runs = SyncRun.__table__
    try:
        # Settled: every instance's first pull and push have run.
        def settled() -> bool:
            with engine.connect().execution_options(**READ_ONLY) as conn:
                done = conn.execute(
                    select(runs.c.instance, runs.c.direction).where(runs.c.outcome == "ok")
                ).all()
            return len(set(done)) >= 2 * IDLE_INSTANCES

        wait_until(settled, timeout=120, interval=0.2)
        time.sleep(2)  # let the last cycles' bookkeeping finish
        before = cpu_seconds(daemon.pid)
        started = time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(daemon.pid) - before
        elapsed = time.monotonic() - started
        memory = memory_kib(daemon.pid)
        return {
            "instances": IDLE_INSTANCES,
            "seconds": round(elapsed, 1),
            "cpu_percent": round(100 * used / elapsed, 3),
            "rss_mib": round(memory["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        }
    finally:
        daemon.stop()
        notify.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20, help="hub writes to time (20)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle window (30)")
    parser.add_argument("--debounce-ms", type=int, help="wake_debounce_ms (default 500)")
    parser.add_argument("--poll-ms", type=int, help="poll_interval_ms (default 500)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {}
    if args.debounce_ms is not None:
        settings["wake_debounce_ms"] = args.debounce_ms
    if args.poll_ms is not None:
        settings["poll_interval_ms"] = args.poll_ms
    results: dict[str, Any] = {"settings": settings or "defaults"}
    with tempfile.TemporaryDirectory(prefix="csbench-") as tmp:
        for backend, hub in hubs(Path(tmp)):
            entry: dict[str, Any] = {}
            folder = Path(tmp) / backend / "latency"
            folder.mkdir(parents=True)
            with hub() as url:
                latencies = measure_latency(folder, url, args.writes, settings, args.seed)
            entry["latency"] = {
                "writes": len(latencies),
                "median_s": round(statistics.median(latencies), 3),
                "worst_s": round(max(latencies), 3),
                "best_s": round(min(latencies), 3),
            }
            if not args.skip_idle:
                folder = Path(tmp) / backend / "idle"
                folder.mkdir(parents=True)
                with hub() as url:
                    entry["idle"] = measure_idle(folder, url, args.idle_seconds, settings)
            results[backend] = entry
            if not args.json:
                print_entry(backend, entry)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def print_entry(backend: str, entry: dict[str, Any]) -> None:
    lat = entry["latency"]
    print(
        f"{backend:<10} hub write -> push: median {lat['median_s']:.3f} s, "
        f"worst {lat['worst_s']:.3f} s, best {lat['best_s']:.3f} s ({lat['writes']} writes)"
    )
    idle = entry.get("idle")
    if idle:
        print(
            f"{'':<10} idle, {idle['instances']} instances: CPU {idle['cpu_percent']:.2f} % "
            f"over {idle['seconds']} s, RSS {idle['rss_mib']} MiB "
            f"(peak {idle['peak_rss_mib']} MiB)"
        )


if __name__ == "__main__":
    sys.exit(main())
