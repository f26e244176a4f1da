"""The Colleague connector keeps the connector contract, against the Colleague simulator.

Each check gets its own simulator sharing the suite's fake clock, so the JWT's expiry and the
connector's retries run on the same time, and no wait is real. The scope is every person
(``roles = []``): a person Colleague creates through Ethos holds no role yet, so a scoped
instance would not read back what the round-trip check pushes (the scope has its own tests).
"""

from __future__ import annotations

from typing import Any, ClassVar

from contractkit import SimulatorContract

from plugins.colleague.connector import ColleagueConnector
from plugins.colleague.simulator import ColleagueSimulator

SEED = 11
# Connector field -> the simulator's registrar-side keyword.
EDITS = {"firstName": "first_name", "lastName": "last_name", "email": "email", "phone": "phone"}


class TestColleagueContract(SimulatorContract):
    """Persons v12 through Ethos, with an API key exchanged for 5-minute JWTs."""

    simulator = ColleagueSimulator
    seed = SEED
    connector = ColleagueConnector
    context_name = "colleague-test"
    secrets: ClassVar[list[str]] = [ColleagueSimulator(seed=SEED).api_key]
    mapped_fields: ClassVar[list[str]] = ["firstName", "lastName", "email", "phone"]

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "base_url": self.sim.url,
            "api_key": "wrong-key" if bad_credentials else self.sim.api_key,
            "page_size": self.page_size,
            "roles": [],
        }

    def seed_remote(self, count: int) -> list[str]:
        return [
            self.sim.add_person(
                f"Seed{i}", "Remote", email=f"seed{i}@example.edu", phone=f"+1617555{i:04d}"
            )["credentials"][0]["value"]
            for i in range(count)
        ]

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        self.sim.edit_person(remote_id, **{EDITS[k]: v for k, v in fields.items()})

    def push_fields(self, i: int) -> dict[str, Any]:
        return {
            "firstName": f"Pushed{i}",
            "lastName": "Hub",
            "phone": f"+1202555{i:04d}",
            # After inject("reject"), no @: Colleague's own rule refuses it.
            "email": self.pushed_email(i, "example.edu"),
        }
