"""contactsync's HubSpot plugin: a connector for HubSpot's CRM v3 contacts, and its simulator.

contactsync loads this module through the ``contactsync`` entry point ``hubspot`` (see
pyproject.toml) and calls the hooks below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl
from plugins.hubspot.simulator import HubSpotSimulator

__all__ = ["HubSpotSimulator"]


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "hubspot"`` use :class:`HubSpotConnector`."""
    # Imported here, not at the top: serving the simulator needs none of the connector's
    # dependencies, and a fault in the connector module must not take the simulator down.
    from plugins.hubspot.connector import HubSpotConnector

    register(HubSpotConnector)


@hookimpl
def register_simulators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """``contactsync simulate hubspot`` serves :class:`HubSpotSimulator`; the class is the
    factory, taking the kit's ``contacts``, ``latency``, ``error_rate`` and ``seed`` and its
    own knobs as keyword options."""
    register("hubspot", HubSpotSimulator)
