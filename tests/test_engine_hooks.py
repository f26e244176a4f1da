"""Plugins taking part in a sync: match_record, resolve_conflict and the observer hooks."""

from __future__ import annotations

from typing import Any

from daemon.engine.cycle import SyncEngine
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.hookspecs import NO_MATCH, Winner, hookimpl
from daemon.hub.contacts import get_contact, save_contact
from daemon.hub.mirror import mirror_instances
from tests.enginekit import fresh_remote, write_instance


def engine_with(engine, instance, *plugins: object) -> SyncEngine:
    pm = get_plugin_manager(plugins=plugins)
    mirror_instances(engine, {instance.name: instance})
    return SyncEngine(engine, Registry.from_plugin_manager(pm).transforms, pm=pm)


class MatchByPhone:
    """Links an unlinked record to the contact holding its phone."""

    seen: list[dict[str, Any]]

    def __init__(self) -> None:
        self.seen = []

    @hookimpl
    def match_record(self, instance, record, hub_fields, candidates):
        self.seen.append(
            {
                "instance": instance,
                "remote_id": record.remote_id,
                "candidates": [c["id"] for c in candidates],
            }
        )
        for candidate in candidates:
            if candidate["phone"] == hub_fields.get("phone"):
                return candidate["id"]
        return None


def test_match_record_plugin_links_by_phone_instead_of_a_duplicate(engine, tmp_path):
    remote = fresh_remote()
    existing = save_contact(
        engine, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143"}
    )
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="(202) 555-0143")
    # Match keys off: only the plugin can link it; the platform wins the first exchange.
    instance = write_instance(tmp_path, "mem", extra='match_on = []\nfirst_sync = "platform"')
    plugin = MatchByPhone()

    report = engine_with(engine, instance, plugin).run(instance, "pull")

    assert report.counts.get("linked") == 1 and report.counts.get("updated") == 1
    assert not report.counts.get("created")
    assert get_contact(engine, existing).row["last_name"] == "Lovelace"
    assert plugin.seen[0]["instance"] == "mem" and plugin.seen[0]["candidates"] == [existing]


def test_without_the_plugin_or_match_keys_the_same_record_is_a_duplicate_contact(engine, tmp_path):
    remote = fresh_remote()
    existing = save_contact(
        engine, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143"}
    )
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="(202) 555-0143")
    instance = write_instance(tmp_path, "mem", extra='match_on = ["crm_id"]')
    report = engine_with(engine, instance).run(instance, "pull")
    assert report.counts.get("skipped") == 1
    assert get_contact(engine, existing).row["last_name"] == "Hub"


def test_without_the_plugin_the_phone_key_links_and_the_hub_wins_by_default(engine, tmp_path):
    remote = fresh_remote()
    existing = save_contact(
        engine, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143"}
    )
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="(202) 555-0143")
    instance = write_instance(tmp_path, "mem")
    report = engine_with(engine, instance).run(instance, "pull")
    assert report.counts.get("linked") == 1 and not report.counts.get("skipped")
    assert get_contact(engine, existing).row["last_name"] == "Hub"  # first_sync = "hub"


class NeverMatch:
    @hookimpl
    def match_record(self, instance, record, hub_fields, candidates):
        return NO_MATCH


def test_match_record_no_match_makes_a_crm_id_match_a_refused_new_contact(engine, tmp_path):
    remote = fresh_remote()
    existing = save_contact(
        engine, {"first_name": "Ada", "last_name": "Hub", "phone": "2025550143", "crm_id": "S1"}
    )
    remote.add(FirstName="Ada", LastName="Other", Phone="2025550181", StudentId="S1")
    instance = write_instance(tmp_path, "mem")
    report = engine_with(engine, instance, NeverMatch()).run(instance, "pull")
    # A new contact may not take a CRM id another contact holds.
    assert report.counts.get("skipped") == 1
    assert get_contact(engine, existing).row["last_name"] == "Hub"


class HubAlwaysWins:
    calls: int = 0

    @hookimpl
    def resolve_conflict(
        self,
        instance,
        contact_id,
        field,
        hub_value,
        hub_changed_at,
        remote_value,
        remote_modified_at,
        policy,
    ):
        HubAlwaysWins.calls += 1
        assert policy == "platform"
        return Winner.HUB


def test_resolve_conflict_plugin_overrides_the_policy(engine, tmp_path):
    remote = fresh_remote()
    rid = remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    instance = write_instance(tmp_path, "mem", extra='conflict = "platform"')
    sync = engine_with(engine, instance, HubAlwaysWins())
    sync.run(instance, "pull")
    sync.run(instance, "push")
    (contact_id,) = [c.row["id"] for c in [get_contact(engine, "S1")]]
    save_contact(engine, {"last_name": "HubSide"}, contact_id=contact_id)
    remote.edit(rid, LastName="PlatformSide")
    HubAlwaysWins.calls = 0
    sync.run(instance, "pull")
    sync.run(instance, "push")
    assert HubAlwaysWins.calls == 1
    assert get_contact(engine, contact_id).row["last_name"] == "HubSide"
    assert remote.rows[rid].fields["LastName"] == "HubSide"


class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def sync_started(self, instance, run_id, direction):
        self.events.append(("started", {"instance": instance, "direction": direction}))

    @hookimpl
    def sync_finished(self, instance, run_id, direction, counts, duration_seconds, outcome):
        self.events.append(("finished", {"counts": counts, "outcome": outcome}))

    @hookimpl
    def sync_error(self, instance, run_id, direction, error, code):
        self.events.append(("error", {"code": code}))


class BrokenObserver:
    @hookimpl
    def sync_started(self, instance, run_id, direction):
        raise RuntimeError("observer bug")


def test_observers_see_each_cycle_and_a_broken_one_stops_nothing(engine, tmp_path):
    remote = fresh_remote()
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143")
    instance = write_instance(tmp_path, "mem")
    observer = Observer()
    sync = engine_with(engine, instance, BrokenObserver(), observer)

    report = sync.run(instance, "pull")
    assert report.outcome == "ok" and report.counts["created"] == 1
    assert observer.events[0] == ("started", {"instance": "mem", "direction": "pull"})
    assert observer.events[-1] == ("finished", {"counts": report.counts, "outcome": "ok"})

    remote.fail_pull = RuntimeError("platform exploded")
    sync.run(instance, "pull")
    # A failed cycle: sync_error, then sync_finished all the same (hookspec 1.2).
    assert observer.events[-2:] == [
        ("error", {"code": "internal-error"}),
        ("finished", {"counts": {}, "outcome": "failed"}),
    ]
