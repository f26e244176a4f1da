"""The sftp plugin over a real OpenSSH server on loopback: a 200k-row file in, a file out.

What it measures
    A throw-away ``sshd`` (tests/sshd.py: generated host and user keys, key auth) serves a
    temp folder. Three stages, each timed on its own:

    * ``upload``: one CSV of N Banner-style rows (default 200k, deterministic from ``--seed``)
      written through the transport's ``write_atomic`` (a temporary name, then a rename):
      rows/s and MB/s of the SFTP write path;
    * ``check``: the connector's whole-file pass over SFTP (read, SHA-256, UTF-8 and CSV
      structure, header): rows/s of the read path alone;
    * ``import``: one pull cycle of the real engine and the real connector into a fresh SQLite
      hub: the file is checked, streamed in pages of ``--page-size`` through the incoming
      rules (every row creates a contact), then moved to processed/. Rows/s end to end, and
      the process's peak RSS (which should not grow with N: the file is never held whole);
    * then, unless ``--no-export``, ``bench/export.py`` with as many messages: the
      conversations export of them to a local folder and over SFTP to a real sshd (rows/s of
      writing the export files).

How to run
    .venv/bin/python bench/sftp.py                      # 200k rows
    .venv/bin/python bench/sftp.py --rows 20000 --json  # quick
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchkit import peak_rss_mib  # noqa: E402
from sshd import start_sshd, stop_sshd  # noqa: E402

HEADER = (
    "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,GOREMAL_EMAIL_ADDRESS"
)


def rows(count: int, seed: int) -> Iterator[bytes]:
    """The file's bytes, a few thousand rows at a time."""
    rng = random.Random(seed)
    first = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
    last = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
    chunk = [HEADER]
    for i in range(count):
        # Unique, valid US numbers (the hub keeps one phone per contact): 40 exchanges of
        # 10,000 lines in one area code.
        phone = f"617{230 + i // 10_000 % 40}{i % 10_000:04d}"
        chunk.append(f"B{i:08d},{rng.choice(first)},{rng.choice(last)},{phone},s{i}@example.edu")
        if len(chunk) >= 5000:
            yield ("\r\n".join(chunk) + "\r\n").encode()
            chunk = []
    if chunk:
        yield ("\r\n".join(chunk) + "\r\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/sftp.py")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20_261_128)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-export", action="store_true", help="skip the export stage")
    args = parser.parse_args()

    from enginekit import sync_engine
    from sftpkit import transport_table, write_instance

    from daemon.foundation.log import configure
    from daemon.hub.database import make_engine
    from daemon.kit.connector import ConnectorContext
    from daemon.kit.filetransport import TransportSettings, open_transport
    from plugins.sftp.connector import SftpConfig, SftpConnector

    configure(level="error", stream=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sftp-") as temp:
        server, process = start_sshd(Path(temp) / "sshd")
        try:
            table = transport_table(server, server.root)
            settings = TransportSettings.model_validate(
                {**table, "private_key": server.private_key}
            )
            path = "incoming/bench.csv"
            with open_transport(settings) as transport:
                transport.makedirs("incoming")
                start = time.perf_counter()
                size = transport.write_atomic(path, rows(args.rows, args.seed))
                seconds = time.perf_counter() - start
            results["upload"] = {
                "rows": args.rows,
                "seconds": seconds,
                "rows_per_s": args.rows / seconds,
                "mb_per_s": size / seconds / 1e6,
            }

            config = SftpConfig.model_validate(
                {"preset": "banner", "transport": {**table, "private_key": server.private_key}}
            )
            connector = SftpConnector(config, ConnectorContext("bench"))
            listed = connector.transport().list("incoming")
            start = time.perf_counter()
            checked = connector._check(connector.transport(), listed[0])
            seconds = time.perf_counter() - start
            connector.close()
            assert checked is not None
            results["check"] = {
                "rows": args.rows,
                "seconds": seconds,
                "rows_per_s": args.rows / seconds,
                "mb_per_s": size / seconds / 1e6,
            }

            instance = write_instance(
                Path(temp) / "etc",
                "bench",
                table,
                settings={"preset": "banner", "page_size": args.page_size},
                top='direction = "incoming"',
            )
            hub = make_engine(f"sqlite:///{Path(temp) / 'hub.db'}")
            sync = sync_engine(hub, instance)
            start = time.perf_counter()
            report = sync.run(instance, "pull")
            seconds = time.perf_counter() - start
            assert report.outcome == "ok", report
            assert report.counts.get("created") == args.rows, report.counts
            assert (server.root / "incoming/processed/bench.csv").exists()
            results["import"] = {
                "rows": args.rows,
                "seconds": seconds,
                "rows_per_s": args.rows / seconds,
                "peak_rss_mib": peak_rss_mib(),
            }
            hub.dispose()
        finally:
            stop_sshd(process)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"sftp over loopback sshd, {args.rows} rows ({size / 1e6:.1f} MB)")
    print(f"{'stage':<8} {'seconds':>8} {'rows/s':>10}  other")
    for stage, figures in results.items():
        extra = (
            f"{figures['mb_per_s']:.1f} MB/s"
            if "mb_per_s" in figures
            else f"peak RSS {figures['peak_rss_mib']:.0f} MiB"
        )
        print(f"{stage:<8} {figures['seconds']:>8.2f} {figures['rows_per_s']:>10,.0f}  {extra}")
    if not args.no_export:
        print(f"\nconversations export of {args.rows} messages (bench/export.py)", flush=True)
        export = [sys.executable, str(ROOT / "bench" / "export.py"), "--messages", str(args.rows)]
        return subprocess.run(export, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
