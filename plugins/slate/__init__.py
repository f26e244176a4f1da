"""contactsync's Slate plugin: a connector for Technolutions Slate (query web service for
pull, upload dataset over SFTP or web service for push), and its simulator.

contactsync loads this module through the ``contactsync`` entry point ``slate`` (see
pyproject.toml) and calls the hooks below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl
from plugins.slate.simulator import SlateSimulator

__all__ = ["SlateSimulator"]


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "slate"`` use :class:`SlateConnector`."""
    # Imported here: serving the simulator needs none of the connector's dependencies.
    from plugins.slate.connector import SlateConnector

    register(SlateConnector)


@hookimpl
def register_simulators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """``contactsync simulate slate`` serves :class:`SlateSimulator`; its own knobs
    (``--processing-delay-seconds``, ``--sftp-root`` …) are flags too."""
    register("slate", SlateSimulator)
