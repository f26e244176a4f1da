"""The daemon (``contactsync run``) runs an export instance on its ``schedule.export``."""

from __future__ import annotations

from pathlib import Path

from daemon.hub.database import make_engine
from tests.daemonkit import DaemonProcess, daemon_settings, wait_until
from tests.exportkit import NAME, all_rows, contact, exported_files, message


def test_the_daemon_exports_on_schedule_and_each_message_once(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "contactsync.toml").write_text(
        daemon_settings(reload_debounce_ms=100, shutdown_grace_seconds=5), encoding="utf-8"
    )
    out = tmp_path / "out"
    out.mkdir()
    (etc / "instances" / f"{NAME}.toml").write_text(
        f"""
type = "conversations_export"
[schedule]
export = "every 1s"
[settings]
file_prefix = "conv_"
[settings.transport]
kind = "local"
path = "{out}"
""",
        encoding="utf-8",
    )
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = make_engine(hub_url)
    ada = contact(hub, 1)
    message(hub, ada, "before the daemon")
    daemon = DaemonProcess(etc, tmp_path, database_url=hub_url).start()
    try:
        wait_until(lambda: exported_files(out), what="the first export file")
        # Written while the daemon runs, by another process: the next export takes it.
        message(hub, ada, "while it runs")
        wait_until(lambda: len(exported_files(out)) == 2, what="the second export file")
        daemon.wait_log("sync_cycle", direction="export", outcome="ok")
    finally:
        daemon.stop()
    assert [r["incoming"] for r in all_rows(out)] == ["before the daemon", "while it runs"]
    hub.dispose()
