"""Structured logging: one JSON object per line, with secrets redacted.

Every line carries ``schema_version``, an RFC 3339 UTC ``timestamp``, ``level`` and ``event``;
a traceback is one field (``exception``), so a line is always one JSON object. Standard-library
loggers (httpx, paramiko, APScheduler) go through the same pipeline. Secrets are scrubbed twice:
values registered with :func:`register_secret` are replaced wherever they appear, and keys that
name a secret (``password``, ``token`` …) are masked whatever their value.

Under systemd, when the stream is the journal's (``JOURNAL_STREAM`` names its device and inode),
each line starts with its syslog priority (``<3>`` for an error), which journald strips and
stores, so ``journalctl -p err`` finds the errors. Colour is used on a terminal only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SCHEMA_VERSION = 1
REDACTED = "***"
# syslog priorities (sd-daemon(3)): what journald reads from a "<N>" line prefix.
PRIORITIES = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
    "fatal": 2,
}
_SECRET_KEYS = ("password", "passphrase", "secret", "token", "api_key", "apikey", "authorization")

# A URL's user-info (``scheme://user:password@host``), wherever a URL sits in a string: an
# httpx error, a redirect's Location, a database URL in a message. Greedy up to the last "@"
# before the path, so a password holding an unescaped "@" goes too; the authority ends at the
# first "/", "?", "#" or white space, so an email address later in the text is left alone.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@")

# PostgreSQL's own error text carries a DETAIL line that quotes the row or key it refused
# ("Key (phone)=(+16175550123) already exists", "Failing row contains (…)"): personal data, in
# any traceback or message that names the error. The values bound to a statement are hidden by
# the engine (hide_parameters); the server's words are hidden here.
_PG_DETAIL = re.compile(r"(?m)^(DETAIL:)[^\n]*")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never print ``value``: every later log line has it replaced by ``***``."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def strip_userinfo(text: str) -> str:
    """``text`` with the user-info of every URL in it masked: ``scheme://***@host``."""
    if "://" not in text:
        return text
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced and every URL's user-info masked."""
    text = strip_userinfo(text)
    if "DETAIL:" in text:
        text = _PG_DETAIL.sub(r"\1 (the values are not logged)", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` (str, list or dict, nested) with secrets masked."""
    if key and any(marker in key.lower() for marker in _SECRET_KEYS):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = redact(value, key)
    return event


def _schema(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("schema_version", SCHEMA_VERSION)
    return event


def _processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _schema,
        structlog.processors.format_exc_info,
        _redact_processor,
    ]


class _BoundLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger, except that ``exception()`` leaves no live exception on the
    ``LogRecord``: the standard library's ``Logger.exception`` would put it there, and any
    handler but ours (pytest's, a library's) would print its message unredacted. structlog
    renders the traceback into the ``exception`` field instead, where it is redacted."""

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(event, *args, **kw)


def is_journal_stream(stream: Any) -> bool:
    """Whether ``stream`` is the journal stream systemd gave the service: ``JOURNAL_STREAM``
    is ``<device>:<inode>`` of it (a redirected stream keeps the variable but not the match)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # StringIO, a closed or detached stream
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _PriorityPrefix:
    """Wraps the renderer: every output line starts with ``<N>``, the record's syslog
    priority, which journald turns into the entry's PRIORITY."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        level = str(event.get("level") or name).lower()
        prefix = f"<{PRIORITIES.get(level, 6)}>"
        text = self.renderer(logger, name, event)
        return "\n".join(prefix + line for line in str(text).split("\n"))


def configure(level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Send every log line, structlog's and the standard library's, to ``stream``.

    ``json`` defaults to JSON unless the stream is a terminal. CLI commands log to stderr so
    that ``--json`` output on stdout stays parseable. On the journal's stream each line gets
    its syslog priority prefix.
    """
    stream = stream or sys.stderr
    tty = _isatty(stream)
    if json is None:
        json = not tty or "NO_COLOR" in os.environ
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=tty and "NO_COLOR" not in os.environ)
    )
    if is_journal_stream(stream):
        renderer = _PriorityPrefix(renderer)
    shared = _processors()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO as "HTTP Request: GET <full URL>", query string and all:
    # a lookup by phone or a SOQL filter would put personal data in the log. The kit logs its
    # own exchange lines, with the query cut (``safe_url``), so httpx speaks only of problems.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "contactsync") -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)
