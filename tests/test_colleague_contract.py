"""The Colleague connector keeps the connector contract, against the Colleague simulator.

Each check gets its own simulator sharing the suite's fake clock, so the JWT's expiry and the
connector's retries run on the same time, and no wait is real. The scope is every person
(``roles = []``): a person Colleague creates through Ethos holds no role yet, so a scoped
instance would not read back what the round-trip check pushes (the scope has its own tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from daemon.clock import FakeClock
from daemon.sdk import Connector, ConnectorContext
from daemon.testing import ConnectorContract
from plugins.colleague.connector import ColleagueConnector
from plugins.colleague.simulator import ColleagueSimulator

SEED = 11
# Connector field -> the simulator's registrar-side keyword.
EDITS = {"firstName": "first_name", "lastName": "last_name", "email": "email", "phone": "phone"}


class TestColleagueContract(ConnectorContract):
    """Persons v12 through Ethos, with an API key exchanged for 5-minute JWTs."""

    secrets: ClassVar[list[str]] = [ColleagueSimulator(seed=SEED).api_key]
    mapped_fields: ClassVar[list[str]] = ["firstName", "lastName", "email", "phone"]
    page_size: ClassVar[int] = 5
    uses_clock: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock) -> Iterator[None]:
        with ColleagueSimulator(seed=SEED, clock=cs_clock) as sim:
            self.sim = sim
            self._reject_next = False
            yield

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        config = ColleagueConnector.Config.model_validate(
            {
                "base_url": self.sim.url,
                "api_key": "wrong-key" if bad_credentials else self.sim.api_key,
                "page_size": self.page_size,
                "roles": [],
            }
        )
        return ColleagueConnector(config, ConnectorContext("colleague-test"), clock=self.clock)

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
        email = f"pushed{i}@example.edu"
        if self._reject_next:
            # Colleague's own rule refuses it: an email address without an @.
            self._reject_next = False
            email = f"pushed{i}-at-example.edu"
        return {
            "firstName": f"Pushed{i}",
            "lastName": "Hub",
            "phone": f"+1202555{i:04d}",
            "email": email,
        }

    def inject(self, fault: str) -> None:
        if fault == "reject":
            self._reject_next = True  # no "reject" knob: a real Colleague rule refuses it
        else:
            self.sim.inject(fault)
