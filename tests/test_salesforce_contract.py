"""The Salesforce connector keeps the connector contract, against the Salesforce simulator.

Each check gets its own simulator sharing the suite's fake clock, so sessions, the daily
allowance and the connector's waits all run on the same time, and no wait is real. The
refresh-token and JWT-bearer grants are proven in test_salesforce_connector.py (a full
contract run per grant would cost more test time than it finds).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from daemon.clock import FakeClock
from daemon.sdk import Connector, ConnectorContext
from daemon.testing import ConnectorContract
from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.simulator import SalesforceSimulator

SEED = 42
_SIM = SalesforceSimulator(seed=SEED)


class TestSalesforceContract(ConnectorContract):
    """Client credentials: the connected app's key and secret."""

    secrets: ClassVar[list[str]] = [_SIM.client_secret]
    mapped_fields: ClassVar[list[str]] = ["FirstName", "LastName", "Email", "Phone"]
    page_size: ClassVar[int] = 5
    uses_clock: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock) -> Iterator[None]:
        with SalesforceSimulator(seed=SEED, clock=cs_clock) as sim:
            self.sim = sim
            self._reject_next = False
            yield

    def auth_settings(self, bad: bool) -> dict[str, Any]:
        secret = "wrong-secret" if bad else self.sim.client_secret
        return {"client_id": self.sim.client_id, "client_secret": secret}

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        settings = {
            "login_url": self.sim.url,
            # Small chunks so the suite's few records still span several keyset queries.
            "query_chunk": self.page_size,
            **self.auth_settings(bad_credentials),
        }
        config = SalesforceConnector.Config.model_validate(settings)
        return SalesforceConnector(config, ConnectorContext("salesforce-test"), clock=self.clock)

    def seed_remote(self, count: int) -> list[str]:
        return [
            self.sim.add_contact(
                FirstName=f"Seed{i}",
                LastName="Remote",
                Phone=f"+1617555{i:04d}",
                Email=f"seed{i}@example.org",
            )
            for i in range(count)
        ]

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        self.clock.advance(1)  # Salesforce stamps whole seconds
        self.sim.edit_record(remote_id, **fields)

    def push_fields(self, i: int) -> dict[str, Any]:
        email = f"pushed{i}@example.org"
        if self._reject_next:
            # Salesforce's own rule refuses it: INVALID_EMAIL_ADDRESS.
            self._reject_next = False
            email = f"pushed{i}-at-example.org"
        return {
            "FirstName": f"Pushed{i}",
            "LastName": "Hub",
            "Phone": f"+1202555{i:04d}",
            "Email": email,
        }

    def inject(self, fault: str) -> None:
        if fault == "reject":
            self._reject_next = True  # no "reject" knob: a real validation rule does it
        else:
            self.sim.inject(fault)
