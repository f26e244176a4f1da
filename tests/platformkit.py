"""Two platforms for the first-sync and conflict tests: the HubSpot and Salesforce simulators
behind one small interface, an instance file for each, and views of both sides."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from daemon.config.instances import Instance
from daemon.engine.cycle import CycleReport
from daemon.hub.store import Contact, Link
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.simulator import SalesforceSimulator
from tests.instancekit import contact_fields, load_written

HUB_FIELDS = ("first_name", "last_name", "email", "phone")


@dataclass
class Platform:
    """One simulator seen through the names the test needs."""

    kind: str
    sim: Any
    names: tuple[str, str, str, str]  # the remote first name, last name, email, phone

    def add(self, first: str, last: str, email: str | None, phone: str | None) -> str:
        values = dict(zip(self.names, (first, last, email, phone), strict=True))
        values = {k: v for k, v in values.items() if v is not None}
        return self.sim.add_contact(**values)

    def records(self) -> dict[str, dict[str, Any]]:
        """Live records by id, as hub-comparable values (lower-case email, digits of phone)."""
        if self.kind == "hubspot":
            raw = {i: r["properties"] for i, r in self.sim.records.items() if not r.get("archived")}
        else:
            raw = {i: r for i, r in self.sim.records["Contact"].items() if not r["IsDeleted"]}
        out = {}
        for record_id, values in raw.items():
            first, last, email, phone = (values.get(n) or None for n in self.names)
            out[record_id] = {
                "first_name": first,
                "last_name": last,
                "email": email.lower() if email else None,
                "phone": "".join(c for c in str(phone) if c.isdigit())[-10:] if phone else None,
            }
        return out


@pytest.fixture(params=["hubspot", "salesforce"])
def platform(request) -> Iterator[Platform]:
    """Each simulator on the wall clock's time, as the hub is: ``newest`` compares the two."""
    if request.param == "hubspot":
        with HubSpotSimulator(seed=5, contacts=0) as sim:
            yield Platform("hubspot", sim, ("firstname", "lastname", "email", "phone"))
    else:
        with SalesforceSimulator(seed=5) as sim:
            yield Platform("salesforce", sim, ("FirstName", "LastName", "Email", "Phone"))


def write_instance(tmp_path: Path, platform: Platform, monkeypatch, extra: str = "") -> Instance:
    if platform.kind == "hubspot":
        monkeypatch.setenv("TEST_HUBSPOT_TOKEN", platform.sim.private_app_token)
        settings = (
            f'base_url = "{platform.sim.url}"\naccess_token = {{ env = "TEST_HUBSPOT_TOKEN" }}\n'
        )
        connectors: dict[str, Any] = {"hubspot": HubSpotConnector}
    else:
        monkeypatch.setenv("SF_TEST_SECRET", platform.sim.client_secret)
        settings = (
            f'login_url = "{platform.sim.url}"\nclient_id = "{platform.sim.client_id}"\n'
            'client_secret = { env = "SF_TEST_SECRET" }\n'
        )
        connectors = {"salesforce": SalesforceConnector}
    text = f'type = "{platform.kind}"\n{textwrap.dedent(extra)}\n[settings]\n{settings}'
    text += contact_fields(*platform.names)
    return load_written(tmp_path / "instances", "crm", text, connectors)


def phone(n: int) -> str:
    return f"617{200 + n // 10000}{n % 10000:04d}"


def sync_both(sync, instance: Instance) -> list[CycleReport]:
    reports = [sync.run(instance, "pull"), sync.run(instance, "push")]
    for report in reports:
        assert report.outcome == "ok", report.error
    return reports


def hub_contacts(engine: Engine) -> dict[str, dict[str, Any]]:
    table = Contact.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
    return {
        r["id"]: {
            "first_name": r["first_name"],
            "last_name": r["last_name"],
            "email": r["email"],
            "phone": r["phone"][-10:] if r["phone"] else None,
        }
        for r in rows
    }


def links_of(engine: Engine) -> dict[str, str]:
    table = Link.__table__
    with engine.connect() as conn:
        return dict(conn.execute(select(table.c.remote_id, table.c.contact_id)).all())
