"""The public surface for plugin authors: import everything a plugin needs from here.

::

    from daemon.sdk import Connector, ConnectorConfig, Page, RemoteRecord, SecretStr, hookimpl

Compatibility promise: every name in ``__all__`` keeps working, with the same meaning, for
as long as :data:`SDK_VERSION` keeps its major number. A minor release may add names or add
optional arguments; removing or changing a name bumps the major number. Anything imported
from another ``daemon.*`` module is internal and may change in any release.

:data:`HOOKSPEC_VERSION` versions the hooks themselves (``daemon.hookspecs``); both show in
``contactsync plugins``. The test kit for plugins lives in :mod:`daemon.testing` (a pytest
plugin: its fixtures and :class:`~daemon.testing.ConnectorContract` are available once
contactsync is installed).
"""

from __future__ import annotations

from typing import Final

from pydantic import SecretStr

from daemon.clock import Clock, FakeClock, SystemClock
from daemon.connector import (
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
from daemon.dictionary import Code
from daemon.hookspecs import HOOKSPEC_VERSION, hookimpl
from daemon.http import (
    HttpSession,
    RetryPolicy,
    Unauthorized,
    int_header,
    json_answer,
    json_body,
    json_or_none,
    make_client,
    request_with_retries,
    text_stream,
)
from daemon.log import register_secret
from daemon.paging import interleave, json_cursor, pages, paginate, prefetch
from daemon.ratelimit import DailyQuota, RateLimiter
from daemon.secrets import reveal
from daemon.tokens import Token, TokenCache

# 1.1 added ClientConnector, Code, Token, TokenCache, Unauthorized, interleave, prefetch,
# reveal, json_body, json_answer, json_or_none, int_header, json_cursor and text_stream.
SDK_VERSION: Final = "1.1"
"""The version of this surface: the major number changes only when a name is removed or
changes meaning."""

__all__ = [
    "HOOKSPEC_VERSION",
    "SDK_VERSION",
    "AuthFailed",
    "Capabilities",
    "ClientConnector",
    "Clock",
    "Code",
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorError",
    "DailyQuota",
    "FakeClock",
    "HttpSession",
    "MalformedResponse",
    "Page",
    "PushItem",
    "PushResult",
    "PushStatus",
    "RateLimited",
    "RateLimiter",
    "RemoteField",
    "RemoteRecord",
    "RetryPolicy",
    "SecretStr",
    "SystemClock",
    "Token",
    "TokenCache",
    "Unauthorized",
    "Unavailable",
    "hookimpl",
    "int_header",
    "interleave",
    "json_answer",
    "json_body",
    "json_cursor",
    "json_or_none",
    "make_client",
    "pages",
    "paginate",
    "prefetch",
    "register_secret",
    "request_with_retries",
    "reveal",
    "text_stream",
]
