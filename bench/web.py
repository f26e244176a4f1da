"""The staff's Sync Log page at a million sync-log rows: server time, p50 and p99.

What it measures
    A hub with ``--rows`` sync-log rows (bulk-inserted: 40 codes with a long tail, 6
    instances, a year of timestamps, one contact in a thousand rows) behind the real app on
    uvicorn on loopback, signed in as a read token. For each view, ``--requests`` GETs of the
    page one after another; the figure is the server's time (the access line's
    ``duration_ms`` is the same clock; here measured at the client on a keep-alive
    connection, so it includes loopback and parsing, which are small):

    * ``unfiltered``: the newest page of everything, with the counts by code;
    * ``code (common)`` / ``code (rare)``: one code's newest page and its count;
    * ``instance``: one instance's rows;
    * ``code, 30 days``: a code within a time range;
    * ``page 20``: the 20th page of a common code by its keyset cursor;
    * ``search``: the POSTed search for one contact (by hub id).

    It prints the query plans (SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN``)
    of the rows and counts queries, so a missing index shows.

    Run on SQLite, and on PostgreSQL too when ``CONTACTSYNC_TEST_PG_URL`` names a server.

How to run
    .venv/bin/python bench/web.py [--rows 1000000] [--requests 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import web
from daemon.api.app import create_app
from daemon.api.server import ApiServer
from daemon.api.state import Hub
from daemon.foundation.dictionary import ENTRIES
from daemon.hub.apitokens import Role, create_token
from daemon.hub.database import make_engine
from daemon.hub.schema import ensure_schema
from daemon.hub.store import SyncLog

SYNC_LOG = SyncLog.__table__
INSTANCES = ("recruit", "banner", "crm", "slate", "colleague", "hs")
CODES = sorted(ENTRIES)[:40]
BATCH = 50_000


def fill(engine: Engine, rows: int, seed: int = 18) -> dict[str, Any]:
    """Bulk-insert ``rows`` sync-log rows; return the names the views filter on."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.3 for i in range(len(CODES))]  # a long tail of codes
    contacts = [uuid.uuid4().hex for _ in range(max(1, rows // 1000))]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / rows
    made = 0
    while made < rows:
        n = min(BATCH, rows - made)
        codes = rng.choices(CODES, weights, k=n)
        batch = [
            {
                "timestamp": start + step * (made + i),
                "integration": "hubspot",
                "direction": "incoming" if i % 3 else "outgoing",
                "contact_id": rng.choice(contacts),
                "code": codes[i],
                "instance": INSTANCES[i % len(INSTANCES)],
                "run_id": f"run{(made + i) // 500}",
                "remote_id": None,
                "message": "a message staff read",
                "details": {},
            }
            for i in range(n)
        ]
        with engine.begin() as conn:
            conn.execute(insert(SYNC_LOG), batch)
        made += n
    return {"common": CODES[0], "rare": CODES[-1], "contact": contacts[0]}


def plans(engine: Engine, code: str) -> dict[str, list[str]]:
    """The query plans of the page's two queries, filtered by ``code``."""
    rows_sql = "SELECT * FROM sync_log WHERE code = :code ORDER BY timestamp DESC, id DESC LIMIT 51"
    counts_sql = (
        "SELECT code, count(*) FROM sync_log WHERE instance = 'banner' GROUP BY code "
        "ORDER BY 2 DESC LIMIT 50"
    )
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    out = {}
    with engine.connect() as conn:
        for name, sql in (("rows by code", rows_sql), ("counts of an instance", counts_sql)):
            found = conn.execute(text(explain + sql), {"code": code}).all()
            out[name] = [" ".join(str(c) for c in r) for r in found]
    return out


def measure(client: httpx.Client, requests: int, call: Any) -> dict[str, float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = call(client)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text[:300]
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
    }


def run(url: str, rows: int, requests: int) -> dict[str, Any]:
    engine = make_engine(url)
    ensure_schema(engine)
    started = time.perf_counter()
    names = fill(engine, rows)
    filled = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE sync_log"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    token = create_token(engine, "bench", Role.READ)
    server = ApiServer(
        create_app(Hub(engine), sites=(web.mount,)), bind="127.0.0.1", port=0, grace_seconds=5
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            form = client.get("/sign-in").text
            nonce = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            client.post("/sign-in", data={"token": token, "csrf": nonce})
            # The 20th page's cursor, found by walking the pages once.
            path = f"/sync-log?code={names['common']}"
            for _ in range(19):
                page = client.get(path).text
                path = re.search(r'rel="next" href="([^"]+)"', page).group(1)  # type: ignore[union-attr]
                path = path.replace("&amp;", "&")
            views = {
                "unfiltered": lambda c: c.get("/sync-log"),
                "code (common)": lambda c: c.get("/sync-log", params={"code": names["common"]}),
                "code (rare)": lambda c: c.get("/sync-log", params={"code": names["rare"]}),
                "instance": lambda c: c.get("/sync-log", params={"integration": "banner"}),
                "code, 30 days": lambda c: c.get(
                    "/sync-log",
                    params={
                        "code": names["common"],
                        "since": "2026-06-01T00:00:00",
                        "until": "2026-07-01T00:00:00",
                    },
                ),
                "page 20": lambda c: c.get(path),
                "search": lambda c: c.post("/sync-log", data={"search": names["contact"]}),
            }
            figures = {name: measure(client, requests, call) for name, call in views.items()}
    finally:
        server.stop(5)
    result = {
        "backend": engine.dialect.name,
        "rows": rows,
        "fill_seconds": round(filled, 1),
        "views": figures,
        "plans": plans(engine, names["common"]),
    }
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run(f"sqlite:///{Path(tmp) / 'hub.db'}", args.rows, args.requests))
    pg = os.environ.get("CONTACTSYNC_TEST_PG_URL")
    if pg:
        from daemon_latency import postgres_hub  # a throw-away database, dropped after

        with postgres_hub(pg) as url:
            results.append(run(url, args.rows, args.requests))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\n{r['backend']}: {r['rows']:,} sync-log rows (filled in {r['fill_seconds']} s)")
        for name, f in r["views"].items():
            print(f"  {name:<15} p50 {f['p50_ms']:>8.1f} ms   p99 {f['p99_ms']:>8.1f} ms")
        for name, lines in r["plans"].items():
            print(f"  plan, {name}:")
            for line in lines:
                print(f"    {line}")


if __name__ == "__main__":
    main()
