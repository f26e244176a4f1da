"""A slow memory connector, for daemon tests that stop a cycle halfway
(``CONTACTSYNC_PLUGINS=tests.memplugin,tests.daemonplugin``).

Each page of its pull takes ``page_delay`` seconds, as a page fetched over a slow network
would, so SIGTERM can land while a pull is in progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from daemon.hookspecs import hookimpl
from daemon.kit.connector import Page
from tests.memremote import MemoryConfig, MemoryConnector


class SlowMemoryConfig(MemoryConfig):
    """The memory connector's settings, plus the time each pulled page takes."""

    page_delay: float = 0.0


class SlowMemoryConnector(MemoryConnector):
    """The memory connector, with a delay before each pulled page."""

    type = "slowmemory"
    Config = SlowMemoryConfig

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """The memory connector's pages, each ``page_delay`` seconds late."""
        for page in super().pull(cursor):
            time.sleep(self.config.page_delay)  # type: ignore[attr-defined]
            yield page


@hookimpl
def register_connectors(register: Callable[[Any], None]) -> None:
    """Register the slow memory connector."""
    register(SlowMemoryConnector)
