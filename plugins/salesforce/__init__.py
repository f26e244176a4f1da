"""contactsync's Salesforce plugin: a connector for an org's Contacts or Leads (REST, sObject
Collections and Bulk API 2.0), and a simulator of the org.

contactsync loads this module through the ``contactsync`` entry point ``salesforce`` (see
pyproject.toml) and calls the hooks below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl
from plugins.salesforce.simulator import SalesforceSimulator

__all__ = ["SalesforceSimulator"]


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "salesforce"`` use :class:`SalesforceConnector`."""
    # Imported here, not at the top: serving the simulator needs none of the connector's
    # dependencies, and a fault in the connector module must not take the simulator down.
    from plugins.salesforce.connector import SalesforceConnector

    register(SalesforceConnector)


@hookimpl
def register_simulators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """``contactsync simulate salesforce`` serves :class:`SalesforceSimulator`; the class is
    the factory, taking the kit's ``contacts``, ``latency``, ``error_rate`` and ``seed`` and
    its own knobs (``knob_options``) as keyword options, each a flag."""
    register("salesforce", SalesforceSimulator)
