"""Tests that would catch a regression in the push (issue 16): what a mutation run of
daemon/engine/push.py changed without any test failing.

Each test drives the real push (``SyncEngine.run``) against the in-memory platform
(tests/memremote.py) and checks what an operator sees: the counts of the cycle report, the
sync-log rows, the outbox rows left and the links saved. bench/mutation.md ("push.py") names
the mutants each one kills. Every test runs on SQLite and PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from daemon.hub.contacts import save_contact
from daemon.hub.store import Link
from daemon.kit.connector import PushItem
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.hubkit import log_rows, outbox_rows
from tests.instancekit import contact_fields

OUTGOING = 'direction = "outgoing"\n'


@pytest.fixture
def remote():
    return fresh_remote()


def person(engine, first: str, phone: str, **values: Any) -> str:
    """A contact staff created in the hub; its id. ``test_user`` is a flag, the rest values."""
    flags = {"test_user": values.pop("test_user")} if "test_user" in values else {}
    values = {"first_name": first, "last_name": "Hub", "phone": phone, **values}
    return save_contact(engine, values, **flags)


def link_rows(engine, connection: str) -> dict[str, dict[str, Any]]:
    """contact id -> the link row of every link on ``connection``."""
    table = Link.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.connection == connection)).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def record_sent(remote) -> list[dict[str, Any]]:
    """The fields of every item the platform receives from now on, in order (through the
    remote's per-item hook, which then accepts the item)."""
    sent: list[dict[str, Any]] = []

    def accept(item: PushItem) -> None:
        sent.append(dict(item.fields))

    remote.reject = accept
    return sent


# --- rows with nothing sent: skipped, or parked at once with their code ----------------------


def test_unsent_rows_are_counted_once_each_and_a_refusal_is_parked_and_logged_for_its_contact(
    engine, tmp_path, remote
):
    # The platform's required LastName is fed from the hub's email here, so a contact with
    # no email cannot be created: refused before sending, and parked at once. Two of those,
    # and two test users (outgoing rule 1: skipped, done with).
    fields = contact_fields("FirstName", "Status", "LastName", "Phone")
    instance = write_instance(tmp_path, "mem", extra=OUTGOING + "max_attempts = 5", fields=fields)
    sync = sync_engine(engine, instance)
    testers = [person(engine, "T", p, test_user=True) for p in ("2025550101", "2025550102")]
    refused = [person(engine, "R", p) for p in ("2025550103", "2025550104")]

    report = sync.run(instance, "push")

    assert report.outcome == "ok", report.error
    assert (report.counts.get("skipped"), report.counts.get("failed")) == (2, 2)
    assert remote.pushed_items == 0
    refusals = [(r["code"], r["contact_id"]) for r in log_rows(engine)]
    assert sorted(refusals) == sorted(("missing-remote-required-field", c) for c in refused)
    # Parked on the first try, whatever max_attempts says: the same data would fail again,
    # so only a change to the contact re-arms the row.
    rows = {r["contact_id"]: r for r in outbox_rows(engine)}
    assert set(rows) == set(refused)  # the test users' rows are done with
    assert {(r["state"], r["attempts"]) for r in rows.values()} == {("parked", 1)}
    assert not set(testers) & set(link_rows(engine, "mem"))
