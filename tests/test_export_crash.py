"""A killed export neither duplicates nor loses a message (design §4).

The worker (this module run as ``python -m tests.test_export_crash HUB ETC [--kill POINT]``)
runs one export cycle of ``etc/instances/convo.toml`` against the SQLite hub ``HUB`` and
sends itself SIGKILL at ``POINT``, with no chance to clean up:

``recorded:N``
    batch N is committed in the ledger; its upload has not started.
``writing:N``
    batch N's upload is half-way through its rows (a temporary file on the far side).
``uploaded:N``
    batch N's file is in place; the ledger does not know yet.

A second worker, not killed, finishes the job. The files must then hold every message once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine

from daemon.config.instances import load_instance
from daemon.engine import export_cycle as exports
from daemon.engine.cycle import SyncEngine
from daemon.hub.database import make_engine
from daemon.hub.mirror import mirror_instances
from daemon.hub.runs import CycleKind
from tests.exportkit import (
    CONNECTORS,
    NAME,
    all_rows,
    batches,
    contact,
    export_instance,
    exported_files,
    message,
)

REPO = Path(__file__).resolve().parent.parent
MESSAGES = 7
PER_FILE = 3


def worker(argv: list[str]) -> int:
    """Run one export cycle, dying at ``--kill`` if given."""
    parser = argparse.ArgumentParser()
    parser.add_argument("hub")
    parser.add_argument("etc")
    parser.add_argument("--kill")
    args = parser.parse_args(argv)
    point, _, number = (args.kill or ":0").partition(":")

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def hook(where: str, batch: exports.BatchInfo) -> None:
        if where == point and batch.id == int(number):
            die()

    real_rows = exports.iter_rows

    def rows(
        engine: Engine, batch: exports.BatchInfo, chunk: int = exports.CHUNK
    ) -> Iterator[exports.ExportRow]:
        for index, row in enumerate(real_rows(engine, batch, chunk=1)):
            if point == "writing" and batch.id == int(number) and index == 2:
                die()
            yield row

    exports.FAULT_HOOK = hook
    exports.iter_rows = rows
    hub = make_engine(f"sqlite:///{args.hub}")
    instance = load_instance(Path(args.etc) / "instances" / f"{NAME}.toml", CONNECTORS)
    # No plugin manager: an export needs no transforms, and loading every plugin would
    # cost each worker a second.
    mirror_instances(hub, {instance.name: instance})
    report = SyncEngine(hub).run(instance, CycleKind.EXPORT)
    print(report.outcome, dict(report.counts))
    return 0 if report.outcome == "ok" else 1


def run_worker(hub: Path, etc: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.test_export_crash", str(hub), str(etc)]
    if kill:
        command += ["--kill", kill]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_killed_export_neither_duplicates_nor_loses_a_message(tmp_path: Path) -> None:
    """Killed mid-write of batch 2, then the restart killed after writing batch 3 (before
    the ledger knew), then a run to the end. Killed before an upload starts is the
    in-process test of tests/test_export.py."""
    hub_path = tmp_path / "hub.db"
    hub = make_engine(f"sqlite:///{hub_path}")
    ada = contact(hub, 1)
    for n in range(MESSAGES):
        message(hub, ada, f"m{n}", minutes=n)
    out = tmp_path / "out"
    out.mkdir()
    export_instance(tmp_path / "etc", out, max_rows_per_file=PER_FILE)

    killed = run_worker(hub_path, tmp_path / "etc", "writing:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [b["state"] for b in batches(hub)] == ["uploaded", "pending"]
    assert len(exported_files(out)) == 1
    # The half-written file is a hidden temporary one, never a visible half file.
    assert [p.name.startswith(".") for p in out.iterdir() if p.suffix != ".csv"] == [True]

    killed = run_worker(hub_path, tmp_path / "etc", "uploaded:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = batches(hub)
    assert [b["state"] for b in before] == ["uploaded", "uploaded", "pending"]
    assert len(exported_files(out)) == 3  # batch 3 is on the far side; the ledger lags

    again = run_worker(hub_path, tmp_path / "etc")
    assert again.returncode == 0, again.stdout + again.stderr

    ledger = batches(hub)
    assert [b["state"] for b in ledger] == ["uploaded"] * 3
    assert [b["file_name"] for b in ledger] == [b["file_name"] for b in before]
    assert [f.name for f in exported_files(out)] == [b["file_name"] for b in ledger]
    assert [r["incoming"] for r in all_rows(out)] == [f"m{n}" for n in range(MESSAGES)]
    hub.dispose()


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
