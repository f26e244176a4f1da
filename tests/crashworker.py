"""A sync worker that kills itself mid-cycle, for the crash tests (tests/test_crash.py).

    python -m tests.crashworker HUB_DB ETC_DIR STEPS [--kill POINT]

It opens the SQLite hub ``HUB_DB``, loads ``ETC_DIR/instances/crash.toml`` (a memory
connector whose remote persists to a JSON file) and runs the cycles of ``STEPS``, a
comma-separated list of ``pull`` and ``push``. With ``--kill`` it sends itself SIGKILL at
``POINT``, with no chance to clean up, as the OOM killer or a power cut would:

``pull-precommit:K``
    page K (from 1) was handed to the engine and written to the hub; its transaction is
    about to commit.
``pull-between:K``
    page K committed; page K+1 was not asked for yet.
``push-item:N``
    the Nth item of the cycle reached the platform, which stored the ones before it only.
``push-after-remote:K``
    the platform stored batch K; the engine has not recorded the results.
``push-precommit:K``
    batch K's results (links, outbox) are written; their transaction is about to commit.

Each cycle's report is printed as a JSON line. The exit status is 1 when a cycle did not
end ``ok`` (a restart that finds the lease busy, say), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event

from daemon.config.instances import Instance, load_instance
from daemon.engine.cycle import CycleReport
from daemon.foundation.log import configure
from daemon.hub.database import make_engine
from daemon.kit.connector import Page, PushItem, PushResult
from tests.enginekit import sync_engine
from tests.memremote import MemoryConnector

INSTANCE = "crash"
KINDS = ("pull-precommit", "pull-between", "push-item", "push-after-remote", "push-precommit")


@dataclass(frozen=True)
class KillPoint:
    """Where to die: a kind of point and which page, batch or item."""

    kind: str
    number: int

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        """``KIND:N`` as given on the command line."""
        kind, _, number = text.partition(":")
        if kind not in KINDS or not number.isdigit() or int(number) < 1:
            raise ValueError(f"kill point must be KIND:N with KIND one of {', '.join(KINDS)}")
        return cls(kind, int(number))


class Killer:
    """Counts pages, batches and items as the cycle goes, and dies at the kill point."""

    def __init__(self, point: KillPoint | None) -> None:
        self.point = point
        self.items = 0
        self.batches = 0
        # The point to reach at the next commit: the transaction of the page or batch
        # that was just handed over.
        self.at_commit: tuple[str, int] | None = None

    def reached(self, kind: str, number: int) -> None:
        """Die if this is the kill point."""
        if self.point is not None and (kind, number) == (self.point.kind, self.point.number):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_commit(self, _conn: Any) -> None:
        """SQLAlchemy's ``commit`` event: fired before the COMMIT reaches the database."""
        if self.at_commit is not None:
            kind, number = self.at_commit
            self.at_commit = None
            self.reached(kind, number)


class CrashConnector(MemoryConnector):
    """The memory connector, reporting its progress to the :class:`Killer`."""

    killer: ClassVar[Killer] = Killer(None)

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """The memory connector's pages, with kill points around each."""
        for number, page in enumerate(super().pull(cursor), 1):
            self.killer.at_commit = ("pull-precommit", number)
            yield page
            # Resumed only when the engine wants the next page: page `number` committed.
            self.killer.reached("pull-between", number)

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """The memory connector's push, with kill points per item and after the batch."""
        killer = self.killer
        killer.batches += 1
        original = self.remote.reject

        def reject(item: PushItem) -> str | None:
            # Called for each item before the platform stores it.
            killer.items += 1
            killer.reached("push-item", killer.items)
            return original(item)

        self.remote.reject = reject
        try:
            results = super().push(batch)
        finally:
            self.remote.reject = original
        killer.reached("push-after-remote", killer.batches)
        killer.at_commit = ("push-precommit", killer.batches)
        return results


def load(etc: Path) -> Instance:
    """The crash instance, run through :class:`CrashConnector`."""
    return load_instance(etc / "instances" / f"{INSTANCE}.toml", {"memory": CrashConnector})


def run_steps(
    hub: Path,
    etc: Path,
    steps: Sequence[str],
    kill: str | None = None,
    on_report: Callable[[CycleReport], None] | None = None,
) -> list[CycleReport]:
    """Run the cycles of ``steps`` against the hub at ``hub``; die at ``kill`` if reached.
    ``on_report`` sees each report as its cycle ends (before a later cycle can die)."""
    killer = Killer(KillPoint.parse(kill) if kill else None)
    CrashConnector.killer = killer
    engine = make_engine(f"sqlite:///{hub}")
    event.listen(engine, "commit", killer.on_commit)
    reports = []
    try:
        instance = load(etc)
        sync = sync_engine(engine, instance)
        for step in steps:
            reports.append(sync.run(instance, step, respect_backoff=False))
            if on_report is not None:
                on_report(reports[-1])
    finally:
        engine.dispose()
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module's docstring."""
    parser = argparse.ArgumentParser(prog="python -m tests.crashworker")
    parser.add_argument("hub", type=Path)
    parser.add_argument("etc", type=Path)
    parser.add_argument("steps")
    parser.add_argument("--kill")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if any(step not in ("pull", "push") for step in steps):
        parser.error("steps are pull or push")
    configure(level="warning", stream=sys.stderr)  # stdout carries the reports only
    reports = run_steps(
        args.hub,
        args.etc,
        steps,
        args.kill,
        on_report=lambda report: print(json.dumps(report.as_dict(), default=str), flush=True),
    )
    return 0 if all(r.outcome == "ok" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
