"""The Salesforce connector keeps the connector contract, against the Salesforce simulator.

Each check gets its own simulator sharing the suite's fake clock, so sessions, the daily
allowance and the connector's waits all run on the same time, and no wait is real. The
refresh-token and JWT-bearer grants are proven in test_salesforce_connector.py (a full
contract run per grant would cost more test time than it finds).
"""

from __future__ import annotations

from typing import Any, ClassVar

from contractkit import SimulatorContract

from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.simulator import SalesforceSimulator

SEED = 42
_SIM = SalesforceSimulator(seed=SEED)


class TestSalesforceContract(SimulatorContract):
    """Client credentials: the connected app's key and secret."""

    simulator = SalesforceSimulator
    seed = SEED
    connector = SalesforceConnector
    context_name = "salesforce-test"
    secrets: ClassVar[list[str]] = [_SIM.client_secret]
    mapped_fields: ClassVar[list[str]] = ["FirstName", "LastName", "Email", "Phone"]

    def auth_settings(self, bad: bool) -> dict[str, Any]:
        secret = "wrong-secret" if bad else self.sim.client_secret
        return {"client_id": self.sim.client_id, "client_secret": secret}

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "login_url": self.sim.url,
            # Small chunks so the suite's few records still span several keyset queries.
            "query_chunk": self.page_size,
            **self.auth_settings(bad_credentials),
        }

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
        return {
            "FirstName": f"Pushed{i}",
            "LastName": "Hub",
            "Phone": f"+1202555{i:04d}",
            # After inject("reject"), no @: Salesforce's own rule, INVALID_EMAIL_ADDRESS.
            "Email": self.pushed_email(i),
        }
