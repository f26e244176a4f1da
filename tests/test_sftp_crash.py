"""A pull of an SFTP file killed with SIGKILL mid-file, then restarted: every row lands once.

The worker is this very file run as a script (``python tests/test_sftp_crash.py HUB ETC
POINT``): it pulls the ``banner`` instance and kills itself at ``POINT``, as in
tests/crashworker.py: ``pull-precommit:K`` (page K is written, its COMMIT not yet sent) or
``pull-between:K`` (page K committed, the next not asked for: after the last page, that is
before the file moved to processed/ and entered the ledger).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = 23
PAGE = 4  # 23 rows, one bad: 22 records in pages of 4, 4, 4, 4, 4, 2 (+ the finishing page)


def _killing_connector(killer: Any) -> type:
    """The sftp connector with crashworker's kill points around each page."""
    from plugins.sftp.connector import SftpConnector

    class KillingConnector(SftpConnector):
        the_killer: ClassVar[Any] = killer  # a tests.crashworker.Killer

        def pull(self, cursor: str | None) -> Iterator:
            for number, page in enumerate(super().pull(cursor), 1):
                self.the_killer.at_commit = ("pull-precommit", number)
                yield page
                self.the_killer.reached("pull-between", number)

    return KillingConnector


def worker(hub: str, etc: str, point: str) -> int:
    """Pull once, dying at ``point``."""
    from enginekit import sync_engine
    from sqlalchemy import event

    from daemon.config.instances import load_instance
    from daemon.hub.database import make_engine
    from tests.crashworker import Killer, KillPoint

    killer = Killer(KillPoint.parse(point))
    engine = make_engine(f"sqlite:///{hub}")
    event.listen(engine, "commit", killer.on_commit)
    instance = load_instance(
        Path(etc) / "instances" / "banner.toml", {"sftp": _killing_connector(killer)}
    )
    report = sync_engine(engine, instance).run(instance, "pull")
    print(report.outcome, flush=True)
    return 0


# --- the tests ------------------------------------------------------------------------------


# Two points, each a child process (~2 s of start-up): mid-file with a page in flight, and
# after the last page committed but before the file moved (the ledger's gap).
@pytest.mark.parametrize(("point", "imported"), [("pull-precommit:3", 8), ("pull-between:6", 22)])
def test_killed_mid_file_and_restarted_imports_every_row_once(
    tmp_path, sshd_server, sftp_root, point, imported
):
    from enginekit import sync_engine
    from hubkit import contact_count, log_rows
    from sftpkit import csv_text, transport_table, write_instance

    from daemon.hub.database import make_engine

    header = "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER"
    rows = [f"B{i:03},First{i},Last{i},202555{i:04}" for i in range(1, ROWS)]
    rows.insert(2, "B999,Broken")  # row 4, in the first page: committed before any kill
    (sftp_root / "incoming").mkdir()
    (sftp_root / "incoming" / "big.csv").write_bytes(csv_text(header, *rows))
    etc = tmp_path / "etc"
    instance = write_instance(
        etc,
        "banner",
        transport_table(sshd_server, sftp_root),
        settings={"preset": "banner", "page_size": PAGE},
        top='direction = "incoming"',
    )
    hub = tmp_path / "hub.db"
    engine = make_engine(f"sqlite:///{hub}")
    sync = sync_engine(engine, instance)

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    killed = subprocess.run(
        [sys.executable, __file__, str(hub), str(etc), point],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    before = contact_count(engine)
    assert before == imported
    assert (sftp_root / "incoming" / "big.csv").exists()

    report = sync.run(instance, "pull")
    assert report.outcome == "ok", report
    assert contact_count(engine) == ROWS - 1  # B001..B022
    assert report.counts.get("created", 0) == ROWS - 1 - before
    bad = [r for r in log_rows(engine) if r["code"] == "file-malformed"]
    assert [(r["details"]["file"], r["details"]["row"]) for r in bad] == [("big.csv", 4)]
    assert not (sftp_root / "incoming" / "big.csv").exists()
    assert (sftp_root / "incoming" / "processed" / "big.csv").exists()
    # The ledger holds it: the same file dropped again is not imported again.
    (sftp_root / "incoming" / "big.csv").write_bytes(csv_text(header, *rows))
    again = sync.run(instance, "pull")
    assert again.counts.get("read", 0) == 0
    engine.dispose()


if __name__ == "__main__":
    sys.exit(worker(*sys.argv[1:4]))
