"""The first sync of a college that already has its people on both sides (issue 15, §1 and §3).

A hub of 200 contacts meets a platform of 300 records, on the HubSpot and the Salesforce
simulators, over HTTP: 50 people shared by email, 20 by phone only, 10 whose names differ
between the sides, 5 platform records that match two hub contacts (siblings who share a
parent's email), the rest on one side only. The preview's counts must be what the first sync
then reports; the linked people are never reported as duplicates; both sides end equal; a
second sync changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine

from daemon.engine.cycle import CycleReport
from daemon.engine.preview import Preview, preview
from daemon.hub.contacts import save_contact
from tests import platformkit
from tests.enginekit import sync_engine
from tests.hubkit import log_rows
from tests.platformkit import (
    Platform,
    hub_contacts,
    links_of,
    phone,
    sync_both,
    write_instance,
)

platform = platformkit.platform  # the fixture: each test runs on both simulators


@dataclass
class Mixed:
    """The mixed data set and what the first sync should make of it."""

    shared_email: list[str] = field(default_factory=list)  # hub ids
    shared_phone: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    siblings: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)  # remote ids
    no_phone: list[str] = field(default_factory=list)  # remote ids: cannot be created in the hub


def build_mixed(engine: Engine, platform: Platform) -> Mixed:
    data = Mixed()
    n = 0

    def hub(first: str, last: str, email: str | None, number: str | None) -> str:
        values = {"first_name": first, "last_name": last, "email": email, "phone": number}
        return save_contact(engine, {k: v for k, v in values.items() if v is not None})

    for i in range(50):  # the same person on both sides, found by email (and phone)
        n += 1
        data.shared_email.append(hub(f"Em{i}", "Shared", f"em{i}@college.edu", phone(n)))
        platform.add(f"Em{i}", "Shared", f"EM{i}@College.edu", phone(n))
    for i in range(20):  # found by phone only: the platform has no email for them
        n += 1
        data.shared_phone.append(hub(f"Ph{i}", "Shared", f"ph{i}@college.edu", phone(n)))
        platform.add(f"Ph{i}", "Shared", None, phone(n))
    for i in range(10):  # the same person, but the sides disagree on the first name
        n += 1
        data.conflicting.append(hub(f"Hubname{i}", "Conflict", f"cf{i}@college.edu", phone(n)))
        platform.add(f"Crmname{i}", "Conflict", f"cf{i}@college.edu", phone(n))
    for i in range(5):  # two siblings share a parent's email; the record has a third phone
        for who in ("A", "B"):
            n += 1
            data.siblings.append(hub(f"Sib{who}{i}", "Family", f"parent{i}@home.org", phone(n)))
        n += 1
        data.ambiguous.append(platform.add(f"Parent{i}", "Family", f"parent{i}@home.org", phone(n)))
    for i in range(200 - 90):  # only in the hub
        n += 1
        hub(f"Hubonly{i}", "Person", f"hubonly{i}@college.edu", phone(n))
    for i in range(300 - 85 - 5):  # only on the platform
        n += 1
        platform.add(f"Crmonly{i}", "Person", f"crmonly{i}@college.edu", phone(n))
    for i in range(5):  # only on the platform, and the hub cannot take them: no phone
        data.no_phone.append(platform.add(f"Nophone{i}", "Person", f"np{i}@college.edu", None))
    return data


def actual(engine: Engine, reports: list[CycleReport]) -> Preview:
    """What the sync reported, in the preview's terms (counts and its sync-log rows)."""
    pulled, pushed = reports
    got = Preview(
        link=pulled.counts.get("linked", 0) + pushed.counts.get("linked", 0),
        create_in_hub=pulled.counts.get("created", 0),
        create_on_platform=pushed.counts.get("created", 0),
    )
    for report in reports:
        for row in log_rows(engine, report.run_id):
            if row["code"] == "sync-conflict":
                got.conflicts += 1
            else:
                got.skipped[row["code"]] += 1
    return got


def test_the_preview_predicts_the_first_sync_which_links_what_exists_and_ends_equal(
    cs_hub, tmp_path, platform, monkeypatch
):
    data = build_mixed(cs_hub, platform)
    instance = write_instance(tmp_path, platform, monkeypatch)
    sync = sync_engine(cs_hub, instance)
    before = (hub_contacts(cs_hub), platform.records())

    predicted = preview(sync, instance, ["pull", "push"])
    assert [r.outcome for r in predicted.reports] == ["ok", "ok"]
    assert (hub_contacts(cs_hub), platform.records()) == before  # the preview wrote nothing
    assert not log_rows(cs_hub) and not links_of(cs_hub)

    reports = sync_both(sync, instance)
    got = actual(cs_hub, reports)
    assert (predicted.link, predicted.create_in_hub, predicted.create_on_platform) == (
        got.link,
        got.create_in_hub,
        got.create_on_platform,
    )
    assert predicted.conflicts == got.conflicts == 10
    assert predicted.skipped == got.skipped
    # What the data set says, not only what the two agree on.
    assert got.link == 80 and got.create_in_hub == 210 and got.create_on_platform == 110
    assert got.skipped["ambiguous-match"] >= 5 and got.skipped["blank-required-data-in-record"] == 5

    rows = log_rows(cs_hub)
    linked = set(data.shared_email + data.shared_phone + data.conflicting)
    assert not [r for r in rows if r["code"] == "duplicate-contact"]
    assert not [r for r in rows if r["contact_id"] in linked and r["code"] != "sync-conflict"]
    for remote_id in data.ambiguous:  # one row each, naming both siblings and no one's email
        mine = [r for r in rows if r["remote_id"] == remote_id]
        assert [r["code"] for r in mine] == ["ambiguous-match"]
        named = [s for s in data.siblings if s in mine[0]["message"]]
        assert len(named) == 2 and "@" not in mine[0]["message"]

    # Both sides end equal, each person once: every link joins equal values.
    hub, remote = hub_contacts(cs_hub), platform.records()
    pairs = links_of(cs_hub)
    assert len(set(pairs.values())) == len(pairs)
    for remote_id, contact_id in pairs.items():
        assert remote[remote_id] == hub[contact_id], (remote_id, contact_id)
    assert linked <= set(pairs.values())
    assert len(hub) == 200 + 210 and len(remote) == 300 + 110
    assert not (set(data.siblings) & set(pairs.values()))
    assert not (set(data.ambiguous) & set(pairs))
    for contact_id in data.conflicting:  # first_sync = "hub": the hub's names went out
        assert hub[contact_id]["first_name"].startswith("Hubname")

    again = sync_both(sync, instance)
    assert {k: v for k, v in again[0].counts.items() if v and k not in ("read", "unchanged")} == {}
    assert not again[1].counts.get("created") and not again[1].counts.get("updated")
    assert (hub_contacts(cs_hub), platform.records()) == (hub, remote)


@pytest.mark.parametrize("policy", ["hub", "platform"])
def test_people_sharing_only_an_email_are_linked_once_and_end_equal_per_first_sync(
    cs_hub, tmp_path, platform, monkeypatch, policy
):
    """The hub holds the texting mobile, the CRM another number: 25 such people are linked
    by email once each, and the phone both sides keep is the policy's."""
    people = []
    for i in range(25):
        contact = save_contact(
            cs_hub,
            {
                "first_name": f"Mo{i}",
                "last_name": "Bile",
                "email": f"mo{i}@college.edu",
                "phone": phone(i),
            },
        )
        remote = platform.add(f"Mo{i}", "Bile", f"mo{i}@college.edu", phone(500 + i))
        people.append((contact, remote))
    instance = write_instance(tmp_path, platform, monkeypatch, extra=f'first_sync = "{policy}"')
    sync = sync_engine(cs_hub, instance)
    reports = sync_both(sync, instance)

    assert reports[0].counts.get("linked") == 25 and not reports[0].counts.get("created")
    assert not reports[1].counts.get("created")
    assert links_of(cs_hub) == {remote: contact for contact, remote in people}
    hub, records = hub_contacts(cs_hub), platform.records()
    assert len(hub) == 25 and len(records) == 25
    for i, (contact, remote) in enumerate(people):
        assert hub[contact] == records[remote]
        assert hub[contact]["phone"] == phone(i if policy == "hub" else 500 + i)
    rows = log_rows(cs_hub)
    assert Counter(r["code"] for r in rows) == {"sync-conflict": 25}
    again = sync_both(sync, instance)
    assert not again[0].counts.get("updated") and not again[1].counts.get("updated")
