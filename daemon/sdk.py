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

from daemon.config.instances import check_time_zone
from daemon.config.secrets import reveal
from daemon.foundation.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from daemon.foundation.csv_read import FileMalformed, check_header, header_key, stream_rows
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger, register_secret
from daemon.hookspecs import HOOKSPEC_VERSION, NO_MATCH, CycleKind, NoMatch, Winner, hookimpl
from daemon.hub import normalize
from daemon.kit.changes import ChangeHint, WebhookDelivery, WebhookRefused, WebhookRequest
from daemon.kit.client import ClientSeams, PlatformClient
from daemon.kit.connector import (
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
    RequiredMappings,
    Unavailable,
)
from daemon.kit.csv_write import csv_bytes, csv_cell, write_csv, write_rows
from daemon.kit.cursor import OverlapCursor
from daemon.kit.exporter import (
    BatchInfo,
    Exporter,
    ExportRow,
    MessageFilter,
    UploadRejected,
    is_exporter,
)
from daemon.kit.filetransport import (
    FileTransport,
    HostKeyRefused,
    RemoteFile,
    TransportSettings,
    clean_path,
    name_problem,
    open_transport,
    stable_files,
)
from daemon.kit.http import (
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
from daemon.kit.oauth import (
    AuthorizationCodes,
    AuthorizationFailed,
    NotSignedIn,
    OAuthApp,
    authorize,
    consent_page,
    redirect_allowed,
    redirect_reply,
)
from daemon.kit.paging import (
    FetchPage,
    check_page_size,
    interleave,
    json_cursor,
    pages,
    paginate,
    prefetch,
)
from daemon.kit.ratelimit import DailyQuota, RateLimiter
from daemon.kit.settings_types import FileNamePart, PlatformUrl, RelativePath
from daemon.kit.simkit import (
    Faults,
    IssuedTokens,
    Reply,
    Request,
    Simulator,
    SimulatorError,
    error_reply,
    json_reply,
    parse_duration,
)
from daemon.kit.tokens import Token, TokenCache, grant_answer

# 1.1 added ClientConnector, Code, Token, TokenCache, Unauthorized, interleave, prefetch,
# reveal, json_body, json_answer, json_or_none, int_header, json_cursor and text_stream.
# 1.2 added the file transports (FileTransport, TransportSettings, open_transport, …), CSV
# reading and writing (stream_rows, write_csv, …), the exporter base (Exporter, BatchInfo, …),
# the simulator kit (Simulator, Request, Reply, json_reply, …), normalize, check_time_zone,
# get_logger and SYSTEM_CLOCK: everything the built-in plugins use.
# 1.2 also added PlatformClient, ClientSeams, grant_answer, IssuedTokens, FetchPage (the type
# of the function pages() and paginate() call), CycleKind (the kind of a cycle), Winner,
# NO_MATCH and NoMatch (what resolve_conflict and match_record return), and the
# OAuth authorization-code flow: OAuthApp (a connector's oauth_app hook), authorize,
# AuthorizationFailed, NotSignedIn, and for simulators AuthorizationCodes, redirect_reply,
# redirect_allowed and consent_page.
# 1.2 also added OverlapCursor (daemon.kit.cursor): the overlap-window cursor.
# 1.2 also added RequiredMappings (what an instance must map for records to be created, which
# `contactsync check` holds instances to) and PlatformUrl (the type of a URL setting), and
# RelativePath and FileNamePart (the types of a folder setting and a file-name setting).
# 1.3 added change hints (daemon.kit.changes): ChangeHint, WebhookRequest, WebhookDelivery,
# WebhookRefused, with Capabilities.webhooks/streams, Connector.receive_webhook and .stream.
SDK_VERSION: Final = "1.3"
"""The version of this surface: the major number changes only when a name is removed or
changes meaning."""

__all__ = [
    "HOOKSPEC_VERSION",
    "NO_MATCH",
    "SDK_VERSION",
    "SYSTEM_CLOCK",
    "AuthFailed",
    "AuthorizationCodes",
    "AuthorizationFailed",
    "BatchInfo",
    "Capabilities",
    "ChangeHint",
    "ClientConnector",
    "ClientSeams",
    "Clock",
    "Code",
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorError",
    "CycleKind",
    "DailyQuota",
    "ExportRow",
    "Exporter",
    "FakeClock",
    "Faults",
    "FetchPage",
    "FileMalformed",
    "FileNamePart",
    "FileTransport",
    "HostKeyRefused",
    "HttpSession",
    "IssuedTokens",
    "MalformedResponse",
    "MessageFilter",
    "NoMatch",
    "NotSignedIn",
    "OAuthApp",
    "OverlapCursor",
    "Page",
    "PlatformClient",
    "PlatformUrl",
    "PushItem",
    "PushResult",
    "PushStatus",
    "RateLimited",
    "RateLimiter",
    "RelativePath",
    "RemoteField",
    "RemoteFile",
    "RemoteRecord",
    "Reply",
    "Request",
    "RequiredMappings",
    "RetryPolicy",
    "SecretStr",
    "Simulator",
    "SimulatorError",
    "SystemClock",
    "Token",
    "TokenCache",
    "TransportSettings",
    "Unauthorized",
    "Unavailable",
    "UploadRejected",
    "WebhookDelivery",
    "WebhookRefused",
    "WebhookRequest",
    "Winner",
    "authorize",
    "check_header",
    "check_page_size",
    "check_time_zone",
    "clean_path",
    "consent_page",
    "csv_bytes",
    "csv_cell",
    "error_reply",
    "get_logger",
    "grant_answer",
    "header_key",
    "hookimpl",
    "int_header",
    "interleave",
    "is_exporter",
    "json_answer",
    "json_body",
    "json_cursor",
    "json_or_none",
    "json_reply",
    "make_client",
    "name_problem",
    "normalize",
    "open_transport",
    "pages",
    "paginate",
    "parse_duration",
    "prefetch",
    "redirect_allowed",
    "redirect_reply",
    "register_secret",
    "request_with_retries",
    "reveal",
    "stable_files",
    "stream_rows",
    "text_stream",
    "write_csv",
    "write_rows",
]
