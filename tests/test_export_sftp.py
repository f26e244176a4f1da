"""The conversations export over a real OpenSSH server on loopback (tests/sshd.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from daemon.hub.runs import CycleKind
from daemon.kit.filetransport import TEMP_SUFFIX
from tests.exportkit import (
    all_rows,
    batches,
    contact,
    engine_for,
    export_instance,
    message,
    sync_log,
)
from tests.sshd import SshdServer


def sftp_transport(server: SshdServer, root: Path, **overrides: object) -> dict[str, object]:
    table = server.transport_settings(root, **overrides)
    # Secrets are references in instance files, never inline.
    table["private_key"] = {"file": str(server.private_key_path)}
    return table


def test_export_over_sftp_is_exactly_once_and_column_by_column(
    tmp_path: Path,
    sqlite_engine: Engine,
    sshd_server: SshdServer,
    sftp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada = contact(sqlite_engine, 1)
    message(sqlite_engine, ada, "hello from SMS")
    message(
        sqlite_engine,
        ada,
        "Welcome, Ada",
        direction="outgoing",
        campaign=("c1", "Fall"),
        message_type="campaign",
    )
    instance = export_instance(
        tmp_path / "etc",
        sftp_transport(sshd_server, sftp_root),
        folder="exports/conversations",
        file_prefix="mainstay_conversations",
        timezone="America/New_York",
        max_rows_per_file=1,
    )
    sync = engine_for(sqlite_engine, instance)

    report = sync.run(instance, CycleKind.EXPORT)

    assert report.outcome == "ok", report
    folder = sftp_root / "exports" / "conversations"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [b["file_name"] for b in batches(sqlite_engine)]
    assert not any(n.endswith(TEMP_SUFFIX) for n in names)  # no upload left half-way
    rows = all_rows(folder)
    assert [list(r.values()) for r in rows] == [
        ["CRM1", ada, "First1", "Last1", "twilio", "", "", "2026-03-01T09:30:05-05:00",
         "hello from SMS", ""],
        ["CRM1", ada, "First1", "Last1", "twilio", "c1", "Fall", "2026-03-01T09:30:05-05:00",
         "", "Welcome, Ada"],
    ]  # fmt: skip

    # The server goes away mid-cycle: the batch stays pending and the retry, once it is
    # back, writes it under the same name; nothing is written twice.
    message(sqlite_engine, ada, "third")
    down = export_instance(
        tmp_path / "etc",
        sftp_transport(sshd_server, sftp_root, port=1, timeout_seconds=2),
        folder="exports/conversations",
        file_prefix="mainstay_conversations",
        max_rows_per_file=1,
    )
    failed = engine_for(sqlite_engine, down).run(down, CycleKind.EXPORT)
    assert (failed.outcome, failed.code) == ("failed", "remote-unavailable")
    assert [r["code"] for r in sync_log(sqlite_engine)] == ["remote-unavailable"]
    retried = sync.run(instance, CycleKind.EXPORT, respect_backoff=False)
    assert retried.outcome == "ok" and retried.counts["retried"] == 1
    assert [r["incoming"] or r["outgoing"] for r in all_rows(folder)] == [
        "hello from SMS",
        "Welcome, Ada",
        "third",
    ]
    assert len(list(folder.iterdir())) == 3
