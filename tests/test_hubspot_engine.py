"""The engine with the HubSpot connector against its simulator: the rules that need both
sides at once (the CRM id written back, keys shared by two hub contacts, 207 errors)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.config.instances import Instance
from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.store import Contact, SyncLog
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from tests.enginekit import sync_engine
from tests.instancekit import contact_fields, load_written

INSTANCE = """
type = "hubspot"
owns_crm_id = {owns}
{top}

[settings]
base_url = "{url}"
access_token = {{ env = "TEST_HUBSPOT_TOKEN" }}
{extra}

""" + contact_fields("firstname", "lastname", "email", "phone")


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(seed=3) as simulator:
        yield simulator


def _instance(
    tmp_path: Path, sim: HubSpotSimulator, monkeypatch, owns: bool, extra: str = "", top: str = ""
) -> Instance:
    monkeypatch.setenv("TEST_HUBSPOT_TOKEN", sim.private_app_token)
    text = INSTANCE.format(url=sim.url, owns=str(owns).lower(), extra=extra, top=top)
    text = textwrap.dedent(text)
    return load_written(tmp_path / "instances", "hs", text, {"hubspot": HubSpotConnector})


def _log(engine) -> list[tuple[str, str | None, str]]:
    table = SyncLog.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.code, table.c.contact_id, table.c.message))
        return [tuple(r) for r in rows]


def test_the_hubspot_id_becomes_the_crm_id_of_contacts_created_from_the_hub(
    engine, tmp_path, sim, monkeypatch
):
    instance = _instance(tmp_path, sim, monkeypatch, owns=True)
    contact = save_contact(
        engine,
        {"first_name": "Ada", "last_name": "Lovelace", "phone": "2025550143", "email": "ada@x.edu"},
    )
    sync = sync_engine(engine, instance)
    assert sync.run(instance, "pull").outcome == "ok"  # the seeded contacts come in
    assert sync.run(instance, "push").outcome == "ok"
    created = [r for r in sim.records.values() if r["properties"].get("email") == "ada@x.edu"]
    assert len(created) == 1
    assert get_contact(engine, contact).row["crm_id"] == created[0]["id"]
    # Pulled contacts carry their HubSpot id as CRM id too.
    pulled = sim.records[next(iter(sim.records))]
    with engine.connect() as conn:
        crm_ids = set(conn.execute(select(Contact.__table__.c.crm_id)).scalars())
    assert pulled["id"] in crm_ids


def test_an_email_shared_by_two_hub_contacts_is_a_duplicate_remote_key(
    engine, tmp_path, sim, monkeypatch
):
    instance = _instance(tmp_path, sim, monkeypatch, owns=False)
    first = save_contact(
        engine, {"first_name": "A", "last_name": "One", "phone": "2025550101", "email": "s@x.edu"}
    )
    second = save_contact(
        engine, {"first_name": "B", "last_name": "Two", "phone": "2025550102", "email": "s@x.edu"}
    )
    no_email = save_contact(
        engine, {"first_name": "C", "last_name": "Three", "phone": "2025550103"}
    )
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    assert sync.run(instance, "push").outcome == "ok"
    log = _log(engine)
    assert {("duplicate-remote-key", first), ("duplicate-remote-key", second)} <= {
        (code, contact) for code, contact, _ in log
    }
    assert ("missing-remote-required-field", no_email) in {(c, k) for c, k, _ in log}
    # Neither was created: HubSpot would have merged them into one record.
    assert not [r for r in sim.records.values() if r["properties"].get("email") == "s@x.edu"]


def test_a_refused_record_gets_a_sync_log_row_with_hubspots_words_and_fails_alone(
    engine, tmp_path, sim, monkeypatch
):
    # No match keys: the push's lookup links nothing, so the create meets HubSpot's 409.
    instance = _instance(
        tmp_path,
        sim,
        monkeypatch,
        owns=False,
        extra="upsert_by_email = false",
        top='match_on = ["crm_id"]',
    )
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    # Someone creates this email in HubSpot after the pull; creating it again is a 409.
    sim.add_contact(firstname="Other", lastname="Person", email="taken@x.edu")
    good = save_contact(
        engine, {"first_name": "G", "last_name": "Ood", "phone": "2025550111", "email": "g@x.edu"}
    )
    bad = save_contact(
        engine,
        {"first_name": "B", "last_name": "Ad", "phone": "2025550112", "email": "taken@x.edu"},
    )
    assert sync.run(instance, "push").outcome == "ok"
    rows = {contact: (code, message) for code, contact, message in _log(engine)}
    assert rows[bad][0] == "remote-rejected"
    assert "exists" in rows[bad][1].lower(), rows[bad][1]  # HubSpot's own words
    assert good not in rows
    assert [r for r in sim.records.values() if r["properties"].get("email") == "g@x.edu"]


def test_a_record_created_in_hubspot_after_the_pull_is_linked_by_the_push_not_refused(
    engine, tmp_path, sim, monkeypatch
):
    """The push looks unlinked contacts up by email before creating: a person someone added
    to HubSpot since the last pull is linked (counted so), never created twice or refused."""
    instance = _instance(tmp_path, sim, monkeypatch, owns=False, extra="upsert_by_email = false")
    sync = sync_engine(engine, instance)
    sync.run(instance, "pull")
    remote = sim.add_contact(firstname="Bea", lastname="Person", email="bea@x.edu")
    contact = save_contact(
        engine,
        {"first_name": "Bea", "last_name": "Ad", "phone": "2025550112", "email": "bea@x.edu"},
    )
    report = sync.run(instance, "push")
    assert report.outcome == "ok" and report.counts.get("linked") == 1
    assert not report.counts.get("created") and not report.counts.get("failed")
    assert [r for r in _log(engine) if r[1] == contact] == [
        ("sync-conflict", contact, _log(engine)[-1][2])
    ]  # the last name: first_sync = "hub" kept the hub's and sent it
    assert sim.records[remote]["properties"]["lastname"] == "Ad"
    assert sim.records[remote]["properties"]["phone"]
