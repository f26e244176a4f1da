"""Benchmark of the conversations export: rows/s writing a 200k-message export.

What it measures
    A fresh SQLite hub (a temp dir) gets 2,000 contacts (1% test users) and N messages
    (default 200k; mixed channels, directions, campaigns, bodies of 20-200 characters). Then
    one export cycle of a ``conversations_export`` instance runs through the real engine
    (:meth:`daemon.engine.cycle.SyncEngine.run`, direction ``export``): batches recorded in the
    ledger, rows streamed from the hub in chunks, CSV rendered and written atomically.

    It runs twice per destination with ``max_rows_per_file`` 50k (4 files) and 200k (one
    file): to a local folder, and over SFTP to a real OpenSSH server on loopback (the test
    suite's fixture, tests/sshd.py; skipped with a note when /usr/sbin/sshd is missing).
    Each run exports the same messages (the export's watermark is reset between runs).

    The messages go in as a real user's would: a generated CSV imported with
    :func:`daemon.hub.messages.import_messages` (``contactsync messages import``), whose rows/s
    are printed first.

    Printed per run: messages exported, files, MiB written, wall seconds, rows/s, and the
    growth of peak RSS during the export (the rows are streamed, so it should not grow with N).

How to run
    .venv/bin/python bench/export.py                 # 200k messages, local and SFTP
    .venv/bin/python bench/export.py --messages 50k --no-sftp
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.benchkit import peak_rss_mib  # noqa: E402
from daemon.engine.cycle import SyncEngine  # noqa: E402
from daemon.foundation.log import configure  # noqa: E402
from daemon.hub.database import make_engine  # noqa: E402
from daemon.hub.messages import import_messages  # noqa: E402
from daemon.hub.mirror import mirror_instances  # noqa: E402
from daemon.hub.runs import CycleKind  # noqa: E402
from daemon.hub.store import Contact, ExportBatch, SyncCursor, utcnow  # noqa: E402
from tests.exportkit import CONNECTORS, NAME, export_instance  # noqa: E402

CONTACTS = 2000
HEADER = (
    *("contact_id", "channel", "direction", "body", "campaign_id", "campaign_name"),
    *("type", "sent_at", "external_id"),
)
CHUNK = 5000
WORDS = ("hello", "when", "is", "the", "deadline", "for", "my", "application", "thanks", "ok")


def parse_count(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def seed(engine: Engine, messages: int, rng: random.Random, folder: Path) -> None:
    """The contacts straight into the hub; the messages through ``contactsync messages
    import`` (:func:`daemon.hub.messages.import_messages`) of a generated CSV, timed."""
    now = utcnow()
    contacts = [
        {
            "id": f"c{n:06d}",
            "crm_id": f"S{n:06d}",
            "first_name": f"First{n}",
            "last_name": f"Last{n}",
            "phone": f"+1202555{n:04d}",
            "test_user": n % 100 == 0,
            "created_at": now,
            "updated_at": now,
            "changed_at": {},
        }
        for n in range(CONTACTS)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Contact.__table__), contacts)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    path = folder / "messages.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for n in range(messages):
            outgoing = rng.random() < 0.5
            campaign = outgoing and rng.random() < 0.6
            writer.writerow(
                [
                    f"c{rng.randrange(CONTACTS):06d}",
                    rng.choice(("twilio", "twilio", "web", "facebook")),
                    "outgoing" if outgoing else "incoming",
                    " ".join(rng.choices(WORDS, k=rng.randint(4, 36))),
                    f"camp{n % 40}" if campaign else "",
                    f"Campaign {n % 40}, fall" if campaign else "",
                    ("campaign" if campaign else "ai") if outgoing else "",
                    (start + timedelta(seconds=n * 7)).isoformat(),
                    f"src-{n}",
                ]
            )
    before = peak_rss_mib()
    started = time.perf_counter()
    report = import_messages(engine, path, batch_size=CHUNK)
    seconds = time.perf_counter() - started
    if report.added != messages:
        raise SystemExit(f"import added {report.added} of {messages}: {report.problems[:3]}")
    print(
        f"messages import: {messages} rows in {seconds:.2f} s = {messages / seconds:.0f} rows/s, "
        f"peak RSS +{peak_rss_mib() - before:.1f} MiB"
    )


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(ExportBatch.__table__))
        conn.execute(delete(SyncCursor.__table__))


def run_once(
    engine: Engine, folder: Path, transport: dict[str, Any], per_file: int, label: str
) -> None:
    instance = export_instance(
        folder / f"etc-{label}-{per_file}",
        transport,
        max_rows_per_file=per_file,
        timezone="America/New_York",
        file_prefix=f"bench_{label}_",
    )
    assert instance.connector_class is CONNECTORS["conversations_export"]
    mirror_instances(engine, {NAME: instance})
    reset(engine)
    before = peak_rss_mib()
    started = time.perf_counter()
    report = SyncEngine(engine).run(instance, CycleKind.EXPORT)
    seconds = time.perf_counter() - started
    if report.outcome != "ok":
        raise SystemExit(f"export failed: {report}")
    counts = report.counts
    written = sum(b["bytes"] or 0 for b in _batches(engine))
    print(
        f"{label:6} {per_file:>8} {counts['messages']:>9} {counts['files']:>6} "
        f"{written / 2**20:>8.1f} {seconds:>8.2f} {counts['messages'] / seconds:>9.0f} "
        f"{peak_rss_mib() - before:>10.1f}",
        flush=True,
    )


def _batches(engine: Engine) -> list[dict[str, Any]]:
    from daemon.engine.export_cycle import list_batches

    return list_batches(engine, NAME, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", default="200k")
    parser.add_argument("--no-sftp", action="store_true")
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    configure(level="error")
    messages = parse_count(args.messages)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        engine = make_engine(f"sqlite:///{folder / 'hub.db'}")
        started = time.perf_counter()
        seed(engine, messages, random.Random(args.seed), folder)
        print(
            f"seeded {messages} messages, {CONTACTS} contacts in "
            f"{time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mib():.0f} MiB",
            file=sys.stderr,
        )
        print(
            f"{'dest':6} {'per file':>8} {'messages':>9} {'files':>6} {'MiB':>8} "
            f"{'seconds':>8} {'rows/s':>9} {'RSS +MiB':>10}"
        )
        local = folder / "out"
        local.mkdir()
        for per_file in (50_000, 200_000):
            run_once(engine, folder, {"kind": "local", "path": str(local)}, per_file, "local")
        if args.no_sftp:
            return
        try:
            from tests.sshd import SSHD, start_sshd, stop_sshd
        except ImportError as exc:
            print(f"sftp skipped: {exc}", file=sys.stderr)
            return
        if not Path(SSHD).exists():
            print(f"sftp skipped: {SSHD} not found", file=sys.stderr)
            return
        server, process = start_sshd(folder / "sshd")
        try:
            transport = server.transport_settings(server.root)
            transport["private_key"] = {"file": str(server.private_key_path)}
            for per_file in (50_000, 200_000):
                run_once(engine, folder, transport, per_file, "sftp")
        finally:
            stop_sshd(process)
        engine.dispose()


if __name__ == "__main__":
    main()
