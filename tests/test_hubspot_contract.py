"""The HubSpot connector keeps the connector contract, against the HubSpot simulator.

Each check gets its own simulator sharing the suite's fake clock, so HubSpot's rate windows,
token expiry and the connector's pacing all run on the same time, and no wait is real.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from contractkit import SimulatorContract

from daemon.sdk import WebhookRequest
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator

SEED = 42


class TestHubSpotContract(SimulatorContract):
    """The private-app flavour: a bearer token that never expires."""

    simulator = HubSpotSimulator
    seed = SEED
    connector = HubSpotConnector
    context_name = "hubspot-test"
    secrets: ClassVar[list[str]] = [HubSpotSimulator(seed=SEED).private_app_token]
    mapped_fields: ClassVar[list[str]] = ["firstname", "lastname", "email", "phone"]

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        token = "pat-na1-wrong" if bad_credentials else self.sim.private_app_token
        return {
            "base_url": self.sim.url,
            "access_token": token,
            "page_size": self.page_size,
            "webhook_secret": self.sim.client_secret,  # the app's, which signs its webhooks
        }

    def webhook_for(self, remote_id: str, *, forged: bool = False) -> WebhookRequest:
        url = "https://sync.example.edu/webhooks/hubspot-test"
        event = self.sim.webhooks.make_event("contact.propertyChange", remote_id, "CRM")
        body, headers = self.sim.webhooks.signed([event], url, forged=forged)
        lower = {k.lower(): v for k, v in headers.items()}
        return WebhookRequest("POST", url, lower, body, datetime.now(UTC))

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
        return {
            "firstname": f"Pushed{i}",
            "lastname": "Hub",
            "phone": f"+1202555{i:04d}",
            # After inject("reject"), no @: HubSpot's own rule refuses it as INVALID_EMAIL.
            "email": self.pushed_email(i),
        }


class TestHubSpotOAuthContract(TestHubSpotContract):
    """The OAuth flavour: the access token comes from a refresh token, rotated on use."""

    secrets: ClassVar[list[str]] = [
        HubSpotSimulator(seed=SEED).client_secret,
        HubSpotSimulator(seed=SEED).refresh_token,
    ]

    def simulator_options(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return {"rotate_refresh_tokens": True}

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "base_url": self.sim.url,
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            "refresh_token": "wrong-refresh" if bad_credentials else self.sim.refresh_token,
            "page_size": self.page_size,
        }
