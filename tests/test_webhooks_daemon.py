"""The whole daemon (``contactsync run`` in a child process, ``[http] enabled``) taking HubSpot's
webhooks: an edit made in HubSpot reaches the hub within a second or two while the scheduled
pull is an hour away; ``status`` shows the last event; and ``contactsync webhooks`` tells the
operator what to register."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.hub.database import make_engine
from daemon.hub.store import Contact
from plugins.hubspot.simulator import HubSpotSimulator
from tests.clikit import Cli, isolated
from tests.daemonkit import DaemonProcess, daemon_settings, wait_until
from tests.instancekit import contact_fields

HUBSPOT = """
type = "hubspot"
owns_crm_id = true
[schedule]
pull = "every 1h"
push = "every 1h"
[settings]
base_url = "{url}"
access_token = {{ env = "TEST_HUBSPOT_TOKEN" }}
webhook_secret = {{ env = "TEST_HUBSPOT_SECRET" }}
""" + contact_fields("firstname", "lastname", "email", "phone")


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(seed=5, contacts=10) as simulator:
        yield simulator


def first_name(engine, crm_id: str) -> str | None:  # type: ignore[no-untyped-def]
    table = Contact.__table__
    with engine.connect() as conn:
        return conn.execute(select(table.c.first_name).where(table.c.crm_id == crm_id)).scalar()


def test_the_daemon_pulls_a_hubspot_edit_its_webhook_announces(
    tmp_path: Path, sim: HubSpotSimulator, monkeypatch
) -> None:
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "contactsync.toml").write_text(
        daemon_settings(poll_interval_ms=100) + "[http]\nenabled = true\nport = 0\n"
    )
    (etc / "instances" / "hs.toml").write_text(HUBSPOT.format(url=sim.url))
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    env = {"TEST_HUBSPOT_TOKEN": sim.private_app_token, "TEST_HUBSPOT_SECRET": sim.client_secret}
    daemon = DaemonProcess(etc, tmp_path, database_url=url, env=env).start()
    engine = make_engine(url)
    try:
        serving = daemon.wait_log("api_serving", timeout=30)[0]
        daemon.wait_log("sync_cycle", direction="pull", outcome="ok", timeout=30)
        sim.set_knob("webhook_url", f"{serving['url']}/webhooks/hs")
        some = next(iter(sim.records))
        latencies = []
        for n in range(3):
            started = time.monotonic()
            sim.edit_contact(some, firstname=f"Hooked{n}")
            wait_until(lambda n=n: first_name(engine, some) == f"Hooked{n}", 15, what="the edit")
            latencies.append(time.monotonic() - started)
        # Well under the hour of the schedule: the webhook woke a targeted pull.
        assert max(latencies) < 5, latencies
        hinted = daemon.logged("sync_cycle", direction="pull", outcome="ok")
        assert any(r.get("hinted") for r in hinted)
        with isolated(monkeypatch):
            cli = Cli(tmp_path / "cli")
            cli.etc = etc
            cli.db_url = url
            (row,) = cli.json("status")["instances"]
            assert row["events"]["source"] == "webhook" and row["events"]["last_event_at"]
    finally:
        daemon.stop()
        engine.dispose()
    print(f"edit → hub latency over loopback webhooks: {[round(x, 3) for x in latencies]} s")


def test_the_webhooks_command_prints_the_url_and_the_subscriptions(
    tmp_path: Path, sim: HubSpotSimulator, monkeypatch
) -> None:
    with isolated(monkeypatch):
        cli = Cli(tmp_path)
        (cli.etc / "contactsync.toml").write_text("[http]\nenabled = false\nport = 8765\n")
        (cli.etc / "instances" / "hs.toml").write_text(HUBSPOT.format(url=sim.url))
        shown = cli("webhooks", "hs")
        assert "http://127.0.0.1:8765/webhooks/hs" in shown.stdout
        assert "contact.propertyChange (firstname)" in shown.stdout
        assert "contact.deletion" in shown.stdout and "contact.merge" in shown.stdout
        assert "enabled = false" in shown.stdout
        answer = json.loads(
            cli("webhooks", "hs", "--public-url", "https://sync.example.edu/", "--json").stdout
        )
        assert answer["url"] == "https://sync.example.edu/webhooks/hs"
        assert answer["mode"] == "webhook"
        # No secret is needed, or shown.
        assert sim.client_secret not in shown.stdout
        cli("webhooks", "nope", expect=1)
