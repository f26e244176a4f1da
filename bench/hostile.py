"""Benchmark: the daemon against a hostile platform or file (issue 16, §4). Peak RSS and time.

Cases, each measured in a fresh child process so its peak RSS is its own:

- ``body``: a 200 MB answer, sent chunked (no ``Content-Length`` to refuse it by);
- ``records``: 200,000 records when the HubSpot connector asked for 100;
- ``drip``: an answer whose body arrives one byte every ``--drip-interval`` seconds (5);
- ``headers``: an answer whose *headers* arrive one byte every ``--drip-interval`` seconds;
- ``gzip``: a gzip body of about 1 MB that inflates to 1 GiB (a compression bomb);
- ``csv``: ``contactsync import`` of a 150 MB CSV without a line break.

The hostile server (:class:`daemon.kit.simkit.HostileServer`) runs in a process of its own,
from this checkout; the measured child imports ``daemon`` from ``--code DIR`` (default: this
checkout), so the same script measures another branch: ``--code /work/main`` gives the
"before" figures. Each case prints its coded outcome (the dictionary code and message, or
what it returned), seconds and peak RSS::

    python bench/hostile.py                      # every case, this checkout
    python bench/hostile.py --code /work/main    # the same, against main
    python bench/hostile.py --cases body,csv --timeout 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
MB = 1000 * 1000


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(kind: str, params: dict[str, Any]) -> None:
    """Run a HostileServer until stdin closes; print its URL first."""
    from daemon.kit.simkit import HostileAnswer, HostileServer

    with HostileServer(HostileAnswer(kind, **params)) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def child(case: str, url: str, workdir: str) -> None:
    """The measured side: one request, pull or import, with the code under test."""
    started = time.monotonic()
    outcome: str
    try:
        outcome = _run(case, url, Path(workdir))
    except Exception as exc:  # the point: what the code under test turned the input into
        code = getattr(exc, "code", None)
        message = str(getattr(exc, "message", exc))[:160]
        outcome = f"{code or type(exc).__name__}: {message}"
    print(
        json.dumps(
            {
                "outcome": outcome,
                "seconds": round(time.monotonic() - started, 2),
                "peak_rss_mib": round(peak_rss_mib(), 1),
            }
        )
    )


def _run(case: str, url: str, workdir: Path) -> str:
    if case in ("body", "drip", "headers", "gzip"):
        from daemon.kit.http import HttpSession, json_body, make_client

        with HttpSession(make_client(url)) as http:
            body = json_body(http.get("/crm/v3/objects/contacts"))
        return f"returned a body of {len(json.dumps(body)):,} characters"
    if case == "records":
        from daemon.kit.connector import ConnectorContext
        from plugins.hubspot.connector import HubSpotConnector
        from tests.connectorkit import build, pull_all

        reports: list[Any] = []
        context = ConnectorContext("hs", reporter=lambda *r: reports.append(r))
        settings = {"base_url": url, "access_token": "pat-na1-bench", "pull_concurrency": 1}
        connector = build(HubSpotConnector, settings, {}, context, None)
        records, _ = pull_all(connector, None)
        return f"pulled {len(records):,} records"
    if case == "csv":
        from daemon.hub.contacts import load_schema
        from daemon.hub.csv_import import import_csv
        from daemon.hub.database import make_engine

        path = workdir / "one-line.csv"
        engine = make_engine(f"sqlite:///{workdir / 'hub.db'}")
        result = import_csv(engine, path, load_schema(engine))
        if result.ok:
            return f"imported: {dict(result.report.counts)}"
        return f"file-malformed: {result.file_error}"
    raise SystemExit(f"unknown case {case}")


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "body": ("huge", {"size": 200 * MB, "lie_length": True}),
    "records": ("records", {"count": 200_000}),
    "drip": ("drip", {"size": 1000, "interval": 5.0}),
    "headers": ("headers", {"size": 1000, "interval": 5.0}),
    "gzip": ("gzip", {"size": 1024 * 1024 * 1024}),
    "csv": ("", {}),
}


def measure(case: str, code: str, timeout: float, drip_interval: float) -> dict[str, Any]:
    """One case in fresh processes: the server from this checkout, the client from ``code``."""
    kind, params = CASES[case]
    if case in ("drip", "headers"):
        params = dict(params, interval=drip_interval)
    env = dict(os.environ, PYTHONPATH=code)
    with tempfile.TemporaryDirectory() as workdir:
        server = None
        url = ""
        if kind:
            server = subprocess.Popen(
                [sys.executable, __file__, "_serve", kind, json.dumps(params)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=HERE,
                env=dict(os.environ, PYTHONPATH=str(HERE)),
            )
            assert server.stdout is not None
            url = server.stdout.readline().strip()
        else:
            with (Path(workdir) / "one-line.csv").open("wb") as fh:
                fh.write(b"crm_id,first_name,last_name,phone\n")
                for _ in range(150):
                    fh.write(b"a" * MB)
        try:
            done = subprocess.run(
                [sys.executable, __file__, "_child", case, url, workdir],
                capture_output=True,
                text=True,
                cwd=code,
                env=env,
                timeout=timeout,
            )
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                return {"outcome": f"child failed: {tail[0][:160]}"}
            return json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            return {"outcome": f"still running after {timeout:g} s (killed)", "seconds": timeout}
        finally:
            if server is not None:
                server.kill()
                server.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], json.loads(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(HERE), help="checkout whose daemon is measured")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per case")
    parser.add_argument("--drip-interval", type=float, default=5.0, help="seconds per byte")
    args = parser.parse_args()
    print(f"code: {args.code}")
    for case in args.cases.split(","):
        figures = measure(case, args.code, args.timeout, args.drip_interval)
        print(
            f"{case:8} {figures.get('seconds', '?'):>7} s {figures.get('peak_rss_mib', '?'):>8} MiB"
            f"  {figures['outcome']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
