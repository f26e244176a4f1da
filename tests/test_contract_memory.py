"""The connector contract suite run against the memory connector (tests/memremote.py).

This proves the suite itself on a connector known to be right; tests/test_contract_broken.py
proves it fails, with a clear message, on connectors that are not.

Rate limits: the memory connector has no HTTP layer, so it models one. Its ``_request`` waits
out the platform's rate-limit answer (a Retry-After) on its injectable clock and retries once,
as :func:`daemon.kit.http.request_with_retries` does for real connectors. The check therefore runs
ungated, and ``uses_clock`` makes the suite also assert that the wait happened on the
FakeClock, not by retrying at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from daemon.kit.connector import ConnectorContext
from daemon.testing import FAULTS, ConnectorContract
from tests.memremote import MemoryConfig, MemoryConnector, MemoryRemote

API_KEY = "mem-contract-key-5f1c9a"


class TestMemoryContract(ConnectorContract):
    """The memory connector keeps the connector contract."""

    secrets = [API_KEY]
    mapped_fields = ["FirstName", "LastName", "Phone", "Email", "StudentId"]
    page_size = 3
    uses_clock = True

    remote: MemoryRemote

    def make_connector(self, *, bad_credentials: bool = False) -> MemoryConnector:
        # A remote of its own per check, under a name no engine test uses.
        name = f"contract-{id(self)}"
        self.remote = MemoryConnector.REMOTES[name] = MemoryRemote(api_key=API_KEY)
        key = "wrong-key-0000" if bad_credentials else API_KEY
        config = MemoryConfig(remote=name, page_size=self.page_size, api_key=SecretStr(key))
        connector = MemoryConnector(config, ConnectorContext("contract"))
        connector.clock = self.clock
        return connector

    def seed_remote(self, count: int) -> list[str]:
        return [
            self.remote.add(FirstName=f"Seed{i}", LastName="Contract", StudentId=f"S{i:04d}")
            for i in range(count)
        ]

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        self.remote.edit(remote_id, **fields)

    def push_fields(self, i: int) -> dict[str, Any]:
        return {"FirstName": f"Pushed{i}", "LastName": "Contract", "Phone": f"+1555010{i:04d}"}

    def inject(self, fault: str) -> None:
        assert fault in FAULTS, fault
        self.remote.next_fault = fault
