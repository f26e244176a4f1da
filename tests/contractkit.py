"""What the simulator-backed connector contract suites share.

Each check gets its own simulator on the suite's fake clock, so a platform's rate windows,
token expiry and the connector's pacing all run on the same time and no wait is real. No
simulator has a "reject" knob: the ``reject`` fault pushes an email without an @, which every
platform's own validation refuses, so the rejection under test is a real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from daemon.foundation.clock import FakeClock
from daemon.sdk import Connector, ConnectorContext
from daemon.testing import ConnectorContract


class SimulatorContract(ConnectorContract):
    """A :class:`ConnectorContract` against one plugin's simulator.

    A subclass names ``simulator`` (the simulator class), ``seed``, ``connector`` (the
    connector class) and ``context_name``, and writes ``settings`` (the instance's
    ``[settings]`` table, with wrong credentials when asked), ``seed_remote``,
    ``edit_remote`` and ``push_fields`` (using :meth:`pushed_email`).
    """

    simulator: ClassVar[type[Any]]
    seed: ClassVar[int]
    connector: ClassVar[type[Any]]
    context_name: ClassVar[str]
    page_size: ClassVar[int] = 5
    uses_clock: ClassVar[bool] = True

    def simulator_options(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        """Keyword arguments for the simulator beyond its seed and clock."""
        return {}

    @pytest.fixture(autouse=True)
    def _platform(self, cs_clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[None]:
        options = self.simulator_options(request)
        with self.simulator(seed=self.seed, clock=cs_clock, **options) as sim:
            self.sim = sim
            self._reject_next = False
            yield

    def settings(self, *, bad_credentials: bool = False) -> dict[str, Any]:
        """The instance's settings for this check's simulator."""
        raise NotImplementedError

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        config = self.connector.Config.model_validate(
            self.settings(bad_credentials=bad_credentials)
        )
        return self.connector(config, ConnectorContext(self.context_name), clock=self.clock)

    def pushed_email(self, i: int, domain: str = "example.org") -> str:
        """``pushed{i}@domain``; right after ``inject("reject")``, the same without its @."""
        if self._reject_next:
            self._reject_next = False
            return f"pushed{i}-at-{domain}"
        return f"pushed{i}@{domain}"

    def inject(self, fault: str) -> None:
        if fault == "reject":
            self._reject_next = True  # no simulator has a "reject" knob: a real rule does it
        else:
            self.sim.inject(fault)
