"""The HubSpot connector keeps the connector contract, against the HubSpot simulator.

Each check gets its own simulator sharing the suite's fake clock, so HubSpot's rate windows,
token expiry and the connector's pacing all run on the same time, and no wait is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from daemon.clock import FakeClock
from daemon.sdk import Connector, ConnectorContext
from daemon.testing import ConnectorContract
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator

SEED = 42


class TestHubSpotContract(ConnectorContract):
    """The private-app flavour: a bearer token that never expires."""

    secrets: ClassVar[list[str]] = [HubSpotSimulator(seed=SEED).private_app_token]
    mapped_fields: ClassVar[list[str]] = ["firstname", "lastname", "email", "phone"]
    page_size: ClassVar[int] = 5
    uses_clock: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock) -> Iterator[None]:
        with HubSpotSimulator(seed=SEED, clock=cs_clock) as sim:
            self.sim = sim
            self._reject_next = False
            yield

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        token = "pat-na1-wrong" if bad_credentials else self.sim.private_app_token
        return {"base_url": self.sim.url, "access_token": token, "page_size": self.page_size}

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        config = HubSpotConnector.Config.model_validate(
            self.settings(bad_credentials=bad_credentials)
        )
        return HubSpotConnector(config, ConnectorContext("hubspot-test"), clock=self.clock)

    def seed_remote(self, count: int) -> list[str]:
        return [
            self.sim.add_contact(
                firstname=f"Seed{i}",
                lastname="Remote",
                phone=f"+1617555{i:04d}",
                email=f"seed{i}@example.org",
            )
            for i in range(count)
        ]

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        self.sim.edit_contact(remote_id, **fields)

    def push_fields(self, i: int) -> dict[str, Any]:
        email = f"pushed{i}@example.org"
        if self._reject_next:
            # HubSpot's own rule refuses it: an email without an @ is INVALID_EMAIL.
            self._reject_next = False
            email = f"pushed{i}-at-example.org"
        return {
            "firstname": f"Pushed{i}",
            "lastname": "Hub",
            "phone": f"+1202555{i:04d}",
            "email": email,
        }

    def inject(self, fault: str) -> None:
        if fault == "reject":
            self._reject_next = True  # the simulator has no "reject" knob: use a real rule
        else:
            self.sim.inject(fault)


class TestHubSpotOAuthContract(TestHubSpotContract):
    """The OAuth flavour: the access token comes from a refresh token, rotated on use."""

    secrets: ClassVar[list[str]] = [
        HubSpotSimulator(seed=SEED).client_secret,
        HubSpotSimulator(seed=SEED).refresh_token,
    ]

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock) -> Iterator[None]:
        with HubSpotSimulator(seed=SEED, clock=cs_clock, rotate_refresh_tokens=True) as sim:
            self.sim = sim
            self._reject_next = False
            yield

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "base_url": self.sim.url,
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            "refresh_token": "wrong-refresh" if bad_credentials else self.sim.refresh_token,
            "page_size": self.page_size,
        }
