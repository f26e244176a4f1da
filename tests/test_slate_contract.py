"""The Slate connector keeps the connector contract, against the Slate simulator.

Two flavours: the user token in ``h`` with uploads over SFTP (the default; here the ``local``
transport onto the simulator's SFTP root, the SFTP transport itself is proved in
test_slate_connector.py against a real sshd), and a service account over HTTP Basic with
uploads posted to the source format's web service. Slate imports uploads later, so the
suite's ``confirm_pending`` has the simulator process what it was sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from contractkit import SimulatorContract

from plugins.slate.connector import SlateConnector
from plugins.slate.simulator import SlateSimulator

SEED = 9


class TestSlateContract(SimulatorContract):
    """User token in ``h``; the batch is a CSV file dropped into incoming/mainstay/."""

    simulator = SlateSimulator
    seed = SEED
    connector = SlateConnector
    context_name = "slate-test"
    secrets: ClassVar[list[str]] = [SlateSimulator(seed=SEED).user_token]
    mapped_fields: ClassVar[list[str]] = ["first_name", "last_name", "email", "phone"]

    def simulator_options(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        self.root = request.getfixturevalue("tmp_path") / "sftp"
        return {"sftp_root": self.root}

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "base_url": self.sim.url,
            "query_id": self.sim.query_id,
            "token": "00000000-0000-4000-8000-000000000000"
            if bad_credentials
            else self.sim.user_token,
            "page_size": self.page_size,
            "transport": {"kind": "local", "path": str(self.root)},
        }

    def seed_remote(self, count: int) -> list[str]:
        return [
            self.sim.add_person(
                first_name=f"Seed{i}",
                last_name="Remote",
                email=f"seed{i}@example.edu",
                phone=f"617555{i:04d}",
            )
            for i in range(count)
        ]

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        self.sim.edit_person(remote_id, **fields)

    def push_fields(self, i: int) -> dict[str, Any]:
        return {
            "first_name": f"Pushed{i}",
            "last_name": "Hub",
            # After inject("reject"), no @: Slate's import would refuse it; the connector
            # says so for this row alone.
            "email": self.pushed_email(i),
            "phone": f"202555{i:04d}",
        }

    def confirm_pending(self) -> None:
        self.sim.process_pending()


class TestSlateWebServiceContract(TestSlateContract):
    """A service account over HTTP Basic; the batch is posted to the source format."""

    secrets: ClassVar[list[str]] = [SlateSimulator(seed=SEED).password]

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        return {
            "base_url": self.sim.url,
            "query_id": self.sim.query_id,
            "username": self.sim.username,
            "password": "wrong-password" if bad_credentials else self.sim.password,
            "page_size": self.page_size,
            "upload": "web",
            "format_id": self.sim.format_id,
        }
