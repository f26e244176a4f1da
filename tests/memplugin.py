"""The memory connector as a plugin module, for processes started by tests
(``CONTACTSYNC_PLUGINS=tests.memplugin``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.hookspecs import hookimpl
from tests.memremote import MemoryConnector


@hookimpl
def register_connectors(register: Callable[[Any], None]) -> None:
    """Register the in-memory test connector."""
    register(MemoryConnector)
