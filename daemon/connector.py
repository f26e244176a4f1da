"""Deprecated alias of the connector contract, kept for one release: import from
:mod:`daemon.sdk`.

The previous release's hook documentation named ``daemon.connector.Connector`` as the class a
connector subclasses, so ``from daemon.connector import Connector`` may be in plugins written
against it. It keeps working until the next release, with a ``DeprecationWarning`` (once, at
import) naming the path to use instead; the names are the very objects ``daemon.sdk`` exports.
"""

from __future__ import annotations

import warnings

from daemon.sdk import (
    AuthFailed,
    Capabilities,
    ClientConnector,
    Connector,
    ConnectorConfig,
    ConnectorContext,
    ConnectorError,
    MalformedResponse,
    Page,
    PushItem,
    PushResult,
    PushStatus,
    RateLimited,
    RemoteField,
    RemoteRecord,
    Unavailable,
)

__all__ = [
    "AuthFailed",
    "Capabilities",
    "ClientConnector",
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorError",
    "MalformedResponse",
    "Page",
    "PushItem",
    "PushResult",
    "PushStatus",
    "RateLimited",
    "RemoteField",
    "RemoteRecord",
    "Unavailable",
]

# stacklevel=2 names the plugin module that imported this one (see daemon/simkit.py).
warnings.warn(
    "daemon.connector is deprecated and will be removed in the next release; import the "
    "connector contract from daemon.sdk instead (from daemon.sdk import Connector, Page)",
    DeprecationWarning,
    stacklevel=2,
)
