"""Two-way truth whatever the order of the cycles (issue 15, §2).

With the daemon stopped, staff edit a first name in the hub, then, later, someone edits the
same field on the platform. Whichever cycle runs first when the daemon starts, the pull or a
delayed push, the instance's conflict policy decides, both sides end with its value, and one
``sync-conflict`` row says so. Before the read-before-write, a push that ran first wrote the
older hub value over the platform's newer one, with no row.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from daemon.engine.cycle import CycleReport
from daemon.hub.contacts import save_contact
from daemon.hub.store import Contact, utcnow
from tests import platformkit
from tests.enginekit import sync_engine
from tests.hubkit import log_rows
from tests.platformkit import hub_contacts, links_of, phone, sync_both, write_instance

platform = platformkit.platform  # the fixture: each test runs on both simulators

# Who wins when the platform's edit is the newer one.
WINNER = {"newest": "platform", "hub": "hub", "platform": "platform"}


@pytest.mark.parametrize("order", ["pull first", "push first", "both at once"])
@pytest.mark.parametrize("policy", sorted(WINNER))
def test_the_conflict_policy_holds_whatever_cycle_runs_first(
    cs_hub, tmp_path, platform, monkeypatch, policy, order
):
    contact = save_contact(
        cs_hub,
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@x.edu", "phone": phone(1)},
    )
    remote = platform.add("Ada", "Lovelace", "ada@x.edu", phone(1))
    instance = write_instance(tmp_path, platform, monkeypatch, extra=f'conflict = "{policy}"')
    sync = sync_engine(cs_hub, instance)
    sync_both(sync, instance)
    assert links_of(cs_hub) == {remote: contact}
    rows_before = len(log_rows(cs_hub))

    # The hub edit, dated 1.5 s before the platform's (no sleeping in tests).
    save_contact(cs_hub, {"first_name": "Hubedit"}, contact_id=contact)
    earlier = (utcnow() - timedelta(seconds=1.5)).isoformat()
    with cs_hub.begin() as conn:
        conn.execute(
            update(Contact.__table__)
            .where(Contact.__table__.c.id == contact)
            .values(changed_at={"first_name": earlier})
        )
    edit = dict(zip(platform.names, ("Crmedit",), strict=False))
    if platform.kind == "hubspot":
        platform.sim.edit_contact(remote, **edit)
    else:
        platform.sim.edit_record(remote, **edit)

    if order == "both at once":
        # Both edits inside one debounce window: the woken push and the scheduled pull start
        # together. The connection's lease lets one run; the other is refused as busy and runs
        # when the daemon next gets to it, as here.
        reports: dict[str, CycleReport] = {}
        start = threading.Barrier(2)

        def cycle(side: str) -> None:
            start.wait()
            reports[side] = sync.run(instance, side)

        threads = [threading.Thread(target=cycle, args=(side,)) for side in ("pull", "push")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for side, report in reports.items():
            if report.outcome == "busy":
                report = sync.run(instance, side)
            assert report.outcome == "ok", report.error
    else:
        sides = ["pull", "push"] if order == "pull first" else ["push", "pull"]
        for side in sides:
            report = sync.run(instance, side)
            assert report.outcome == "ok", report.error

    expected = "Hubedit" if WINNER[policy] == "hub" else "Crmedit"
    assert hub_contacts(cs_hub)[contact]["first_name"] == expected
    assert platform.records()[remote]["first_name"] == expected
    new_rows = log_rows(cs_hub)[rows_before:]
    assert [(r["code"], r["contact_id"], r["details"].get("field")) for r in new_rows] == [
        ("sync-conflict", contact, "first_name")
    ]
    # Settled: another round changes nothing and logs nothing.
    again = sync_both(sync, instance)
    assert not again[0].counts.get("updated") and not again[1].counts.get("updated")
    assert len(log_rows(cs_hub)) == rows_before + 1
