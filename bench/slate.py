"""The Slate connector against its simulator: a 100k-row query pulled, and a hub change's trip.

What it measures
    A :class:`SlateSimulator` holding N people (default 100k, one ``updated`` second apart)
    serves loopback HTTP from this (parent) process; Slate does not page, so the query's
    answer is one JSON document of N rows (about 190 bytes a row). Each stage runs in a fresh
    child process against an SQLite hub in a temp dir, and reports the child's peak RSS
    (``VmHWM``):

    * ``stream``: the connector alone reads the whole answer (``pull(None)``, records
      counted and dropped): the streaming parser's records/s and memory;
    * ``pull``: the engine's first full pull of the N rows into an empty hub: records/s
      and peak RSS;
    * ``trip``: hub changes to their confirmed arrival in Slate, through the engine: each
      is a staff edit (``save_contact``), one push cycle (a CSV file uploaded over SFTP to a
      real OpenSSH server on loopback, or to the ``local`` transport when there is no sshd),
      Slate's import (the simulator's processing delay is 0: its next request imports the
      file) and one pull cycle that confirms it. Reported per change, for edits of linked
      people and for new contacts, from the edit to the end of the confirming pull.

    The trip is the machinery's share only. In production a change waits for the next push
    (``schedule.push``, 1 min by default), Slate's import (SFTP is scanned "at least once
    per hour"; most web uploads import "within 15 minutes") and the next pull
    (``schedule.pull``): those dominate, and are configuration, not code.

How to run
    .venv/bin/python bench/slate.py                     # 100k rows, 5 trips of each kind
    .venv/bin/python bench/slate.py --rows 20000,100000 # peak RSS must not grow with rows
    .venv/bin/python bench/slate.py --rows 10000 --trips 3 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import child_instance, figures, open_hub, run_child, run_sync  # noqa: E402

from plugins.slate.simulator import SlateSimulator  # noqa: E402
from tests.instancekit import contact_fields  # noqa: E402

INSTANCE = """
type = "slate"
push_batch_size = 100

[settings]
base_url = "{url}"
query_id = "{query_id}"
token = {{ env = "BENCH_SLATE_TOKEN" }}
timezone = "America/New_York"
page_size = 500

[settings.transport]
{transport}

[[fields]]
hub = "id"
remote = "mainstay_id"
direction = "incoming"
""" + contact_fields("first_name", "last_name", "email", "phone")


def child(stage: str, db: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """Run one stage in this (fresh) process and report its figures."""
    from plugins.slate.connector import SlateConnector

    instance = child_instance(
        db,
        "slate",
        INSTANCE.format(**setup),
        {"slate": SlateConnector},
        {"BENCH_SLATE_TOKEN": setup["token"]},
    )
    if stage == "stream":
        from daemon.sdk import ConnectorContext

        connector = SlateConnector(instance.settings, ConnectorContext("bench"))
        started = time.perf_counter()
        count = sum(len(page.records) for page in connector.pull(None))
        connector.close()
        return figures(started, {"pull.read": count})
    engine, sync = open_hub(db, {instance.name: instance})
    if stage == "pull":
        started = time.perf_counter()
        report = run_sync(sync, instance, "pull", "pull", full=True)
        return figures(started, {f"pull.{k}": v for k, v in report.counts.items()})
    return _trips(sync, engine, instance, int(setup["trips"]))


def _trips(sync: Any, engine: Any, instance: Any, trips: int) -> dict[str, Any]:
    """Edits of linked people, then new contacts: each from the edit to its confirmation."""
    from sqlalchemy import select

    from daemon.hub import links
    from daemon.hub.contacts import save_contact
    from daemon.hub.store import Link

    table = Link.__table__
    with engine.connect() as conn:
        linked = [r[0] for r in conn.execute(select(table.c.contact_id).limit(trips)).all()]
    timings: dict[str, list[float]] = {"edit": [], "create": []}
    started = time.perf_counter()
    for n in range(trips * 2):
        kind = "edit" if n < trips else "create"
        t0 = time.perf_counter()
        if kind == "edit":
            contact_id = linked[n]
            save_contact(engine, {"last_name": f"Trip{n}"}, contact_id=contact_id)
        else:
            contact_id = save_contact(
                engine,
                {
                    "first_name": f"Trip{n}",
                    "last_name": "Bench",
                    "phone": f"+1212555{n:04d}",
                    "email": f"trip{n}@example.edu",
                },
            )
        push = sync.run(instance, "push", respect_backoff=False)
        pull = sync.run(instance, "pull", respect_backoff=False)
        with engine.connect() as conn:
            link = links.by_contact_ids(conn, instance.connection, [contact_id])[contact_id]
        if push.outcome != "ok" or pull.outcome != "ok" or link.state != links.ACTIVE:
            raise SystemExit(f"trip {n}: push {push.outcome}, pull {pull.outcome}, {link}")
        timings[kind].append((time.perf_counter() - t0) * 1000)
    out = figures(started, {})
    for kind, values in timings.items():
        out[f"{kind}_ms_median"] = round(statistics.median(values), 1)
        out[f"{kind}_ms_max"] = round(max(values), 1)
    return out


def run_stage(sim: SlateSimulator, stage: str, db: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """One stage in a child process, with the simulator's counts around it."""
    before = dict(sim.state()["counters"])
    result = run_child(__file__, stage, str(db), json.dumps(setup))
    after = sim.state()["counters"]
    result["queries"] = after["queries"] - before["queries"]
    result["files"] = after["files"] - before["files"]
    result["stage"] = stage
    return result


def bench(rows: int, trips: int, tmp: Path) -> list[dict[str, Any]]:
    """Every stage for ``rows`` people against one simulator."""
    sshd = None
    sftp_root = tmp / "slate-sftp"
    if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
        from tests.sshd import start_sshd

        server, sshd = start_sshd(tmp / "sshd")
        sftp_root = server.root
        transport = (
            f'kind = "sftp"\nhost = "{server.host}"\nport = {server.port}\n'
            f'username = "{server.username}"\n'
            f'private_key = {{ file = "{server.private_key_path}" }}\n'
            f'known_hosts = "{server.known_hosts}"\npath = "{sftp_root}"'
        )
    else:
        sftp_root.mkdir()
        transport = f'kind = "local"\npath = "{sftp_root}"'
    try:
        started = time.perf_counter()
        sim = SlateSimulator(sftp_root=sftp_root)
        sim.add_people(rows)
        print(f"seeded {rows} people in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        results = []
        with sim:
            setup = {
                "url": sim.url,
                "query_id": sim.query_id,
                "token": sim.user_token,
                "transport": transport,
                "trips": trips,
            }
            db = tmp / f"hub-{rows}.db"
            for stage in ("stream", "pull", "trip"):
                print(f"{stage} {rows} …", file=sys.stderr, flush=True)
                results.append(run_stage(sim, stage, db, setup))
        for r in results:
            r["rows"] = rows
            r["transport"] = "sftp" if sshd is not None else "local"
            r["records_per_s"] = round(rows / r["seconds"]) if r["stage"] != "trip" else None
        return results
    finally:
        if sshd is not None:
            from tests.sshd import stop_sshd

            stop_sshd(sshd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000", help="comma-separated query sizes")
    parser.add_argument("--trips", type=int, default=5, help="changes of each kind timed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for rows in (int(x) for x in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="contactsync-bench-slate-") as tmp:
            results += bench(rows, args.trips, Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'stage':<7} {'rows':>7} {'seconds':>8} {'records/s':>9} {'peak RSS':>9}  trip")
    for r in results:
        rate = "-" if r["records_per_s"] is None else r["records_per_s"]
        trip = ""
        if r["stage"] == "trip":
            trip = (
                f"edit {r['edit_ms_median']} ms (max {r['edit_ms_max']}), new contact "
                f"{r['create_ms_median']} ms (max {r['create_ms_max']}) over {r['transport']}"
            )
        print(
            f"{r['stage']:<7} {r['rows']:>7} {r['seconds']:>8} {rate:>9}"
            f" {r['peak_rss_mib']:>7.1f}Mi  {trip}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]))))
    else:
        main()
