"""Benchmark: a Salesforce edit to its change event in the subscriber, over the Pub/Sub API.

The Salesforce simulator (with ``--latency`` on every HTTP and gRPC answer, 150 ms by default)
takes ``--edits`` record edits, one at a time, each after the previous one's event arrived.
A :class:`SalesforceChangeStream` on loopback gRPC receives them; the figure is the time from
the edit to the event in the subscriber's hands (p50, p95, p99). This is the hint's part of
"platform edit → hub": the targeted pull it wakes adds one query round trip (one ``--latency``
plus the query), which the engine side measures. Polling at the default 15-minute schedule
is given for comparison: an edit waits for the next pull, uniformly over the interval.

Idle cost: a subscriber sends nothing while idle; the server answers a keepalive every
``cdc_keepalive_seconds`` (270 s on Salesforce). Requests per idle hour are counted from the
simulator's counters over ``--idle`` seconds with a short keepalive, then scaled.

    .venv/bin/python bench/salesforce_cdc.py [--edits 200] [--latency 150ms]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time

import httpx

from plugins.salesforce.pubsub import ChangeEvent, SalesforceChangeStream, StaticAuth
from plugins.salesforce.simulator import SalesforceSimulator

TOPIC = "/data/ContactChangeEvent"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def session(sim: SalesforceSimulator) -> StaticAuth:
    body = httpx.post(
        f"{sim.url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
        timeout=30,
    ).json()
    return StaticAuth(body["access_token"], body["instance_url"], body["id"].split("/")[-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--latency", default="150ms")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    args = parser.parse_args()

    with SalesforceSimulator(contacts=10, latency=args.latency) as sim:
        sim.start_pubsub()
        record = sim.add_contact(LastName="Bench")
        stream = SalesforceChangeStream(
            session(sim), TOPIC, target=sim.pubsub_address, secure=False, start="EARLIEST"
        )
        events: queue.Queue[tuple[float, ChangeEvent]] = queue.Queue()

        def consume() -> None:
            for event in stream:
                events.put((time.perf_counter(), event))

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        events.get(timeout=60)  # the create: subscribed
        delays = []
        for i in range(args.edits):
            started = time.perf_counter()
            sim.edit_record(record, Title=f"Title {i}")
            arrived, event = events.get(timeout=60)
            assert event.change_type == "UPDATE" and "Title" in event.changed_fields
            delays.append(arrived - started)
        ms = [d * 1000 for d in delays]
        print(f"CDC edit -> event, {args.edits} edits at latency {args.latency}:")
        print(
            f"  p50 {percentile(ms, 0.5):.0f} ms  p95 {percentile(ms, 0.95):.0f} ms  "
            f"p99 {percentile(ms, 0.99):.0f} ms  mean {statistics.mean(ms):.0f} ms"
        )
        interval = 15 * 60
        print(
            f"Polling every {interval // 60} min (the default schedule), edit -> pull start: "
            f"p50 {interval * 0.5:.0f} s  p95 {interval * 0.95:.0f} s  p99 {interval * 0.99:.0f} s"
        )

        # Idle: no edits; count the answers the server sends and the requests it receives.
        sim.set_knob("cdc_keepalive_seconds", 1.0)
        before_sent = sim.counters["pubsub_events_sent"]
        before_http = sim.requests
        time.sleep(args.idle)  # a benchmark measures wall time; tests never sleep
        idle_http = sim.requests - before_http
        assert sim.counters["pubsub_events_sent"] == before_sent
        print(
            f"Idle, over {args.idle:.0f} s: {idle_http} HTTP requests and no FetchRequest from "
            f"the subscriber; the server's keepalives at Salesforce's 270 s are "
            f"{3600 / 270:.1f} answers per hour on one open call. Polling every 15 min: 4 "
            "cycles per hour, each at least one SOQL query (plus a token grant when the "
            "session expired)."
        )
        stream.close()
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
