"""contactsync's Colleague plugin: a connector for Ellucian Colleague's persons through Ethos
Integration, and its simulator.

contactsync loads this module through the ``contactsync`` entry point ``colleague`` (see
pyproject.toml) and calls the hooks below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl
from plugins.colleague.simulator import ColleagueSimulator

__all__ = ["ColleagueSimulator"]


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "colleague"`` use :class:`ColleagueConnector`."""
    # Imported here, not at the top: serving the simulator needs none of the connector's
    # dependencies, and a fault in the connector module must not take the simulator down.
    from plugins.colleague.connector import ColleagueConnector

    register(ColleagueConnector)


@hookimpl
def register_simulators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """``contactsync simulate colleague`` serves :class:`ColleagueSimulator`; the class is the
    factory, taking the kit's ``contacts``, ``latency``, ``error_rate`` and ``seed`` and its
    own knobs (``knob_options``) as keyword options."""
    register("colleague", ColleagueSimulator)
