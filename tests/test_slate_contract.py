"""The Slate connector keeps the connector contract, against the Slate simulator.

Two flavours: the user token in ``h`` with uploads over SFTP (the default; here the ``local``
transport onto the simulator's SFTP root, the SFTP transport itself is proved in
test_slate_connector.py against a real sshd), and a service account over HTTP Basic with
uploads posted to the source format's web service. Slate imports uploads later, so the
suite's ``confirm_pending`` has the simulator process what it was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daemon.clock import FakeClock
from daemon.sdk import Connector, ConnectorContext
from daemon.testing import ConnectorContract
from plugins.slate.connector import SlateConnector
from plugins.slate.simulator import SlateSimulator

SEED = 9


class TestSlateContract(ConnectorContract):
    """User token in ``h``; the batch is a CSV file dropped into incoming/mainstay/."""

    secrets: ClassVar[list[str]] = [SlateSimulator(seed=SEED).user_token]
    mapped_fields: ClassVar[list[str]] = ["first_name", "last_name", "email", "phone"]
    page_size: ClassVar[int] = 5
    uses_clock: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock, tmp_path: Path) -> Iterator[None]:
        self.root = tmp_path / "sftp"
        with SlateSimulator(seed=SEED, clock=cs_clock, sftp_root=self.root) as sim:
            self.sim = sim
            self._reject_next = False
            yield

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

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        config = SlateConnector.Config.model_validate(
            self.settings(bad_credentials=bad_credentials)
        )
        return SlateConnector(config, ConnectorContext("slate-test"), clock=self.clock)

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
        email = f"pushed{i}@example.org"
        if self._reject_next:
            # Slate's import would refuse it; the connector says so for this row alone.
            self._reject_next = False
            email = f"pushed{i}-at-example.org"
        return {
            "first_name": f"Pushed{i}",
            "last_name": "Hub",
            "email": email,
            "phone": f"202555{i:04d}",
        }

    def inject(self, fault: str) -> None:
        if fault == "reject":
            self._reject_next = True
        else:
            self.sim.inject(fault)

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
