"""The JSON log: its shape, the standard library's loggers, the journal's priority prefix,
tracebacks as one field, redaction."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any, TextIO

import pytest
import structlog

from daemon.foundation.log import (
    REDACTED,
    SCHEMA_VERSION,
    configure,
    get_logger,
    is_journal_stream,
    redact,
    redact_text,
    register_secret,
)

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch) -> Iterator[None]:
    """Each test configures logging its own way; put the process's back afterwards."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)


@pytest.fixture
def stream() -> StringIO:
    out = StringIO()
    configure(level="debug", stream=out, json=True)
    return out


def parsed(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def open_file(tmp_path) -> Iterator[Callable[[str], TextIO]]:
    """Real files to log into; unhooked from logging and closed after the test."""
    handles: list[TextIO] = []

    def open_one(name: str) -> TextIO:
        handles.append((tmp_path / name).open("w+"))
        return handles[-1]

    yield open_one
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if getattr(h, "stream", None) not in handles]
    for handle in handles:
        handle.close()


def journal_file(open_file: Callable[[str], TextIO], monkeypatch) -> TextIO:
    """A real file standing in for the journal's stream: JOURNAL_STREAM names its inode."""
    handle = open_file("journal")
    info = os.fstat(handle.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    return handle


# --- shape ------------------------------------------------------------------------------------


def test_every_line_is_one_json_object_with_the_schema_keys(stream):
    get_logger("contactsync.test").info("cycle_done", instance="alpha", run_id="r1")
    [line] = parsed(stream.getvalue())
    assert line["schema_version"] == SCHEMA_VERSION
    assert line["level"] == "info"
    assert line["event"] == "cycle_done"
    assert (line["instance"], line["run_id"]) == ("alpha", "r1")
    assert RFC3339_UTC.match(line["timestamp"]), line["timestamp"]
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


def test_levels_below_the_configured_one_are_dropped():
    out = StringIO()
    configure(level="warning", stream=out, json=True)
    log = get_logger("contactsync.test")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in parsed(out.getvalue())] == ["loud"]


def test_standard_library_loggers_are_routed_into_json(stream):
    logging.getLogger("thirdparty.http").info("HTTP Request: %s %s", "GET", "https://example.test/")
    logging.getLogger("apscheduler.scheduler").warning("job missed by %d seconds", 3)
    first, second = parsed(stream.getvalue())
    assert first["event"] == "HTTP Request: GET https://example.test/"
    assert first["level"] == "info"
    assert second["event"] == "job missed by 3 seconds"
    assert second["level"] == "warning"
    for line in (first, second):
        assert line["schema_version"] == SCHEMA_VERSION
        assert RFC3339_UTC.match(line["timestamp"])


def test_a_traceback_is_one_field_of_one_line(stream):
    log = get_logger("contactsync.test")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("cycle_crashed", instance="alpha")
    try:
        raise KeyError("lib")
    except KeyError:
        logging.getLogger("somelib").exception("library failed")
    text = stream.getvalue()
    assert len(text.splitlines()) == 2
    ours, theirs = parsed(text)
    assert ours["level"] == "error"
    assert ours["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in ours["exception"]
    assert theirs["level"] == "error"
    assert "KeyError: 'lib'" in theirs["exception"]


def test_no_colour_off_a_terminal():
    out = StringIO()
    configure(level="info", stream=out, json=False)  # the console form, but not a terminal
    get_logger("contactsync.test").warning("plain", instance="alpha")
    assert "\x1b[" not in out.getvalue()
    assert "plain" in out.getvalue()


def test_json_is_the_default_off_a_terminal():
    out = StringIO()
    configure(level="info", stream=out)
    get_logger("contactsync.test").info("hello")
    assert parsed(out.getvalue())[0]["event"] == "hello"


# --- the journal ------------------------------------------------------------------------------


def test_under_systemd_each_line_has_its_syslog_priority(tmp_path, open_file, monkeypatch):
    handle = journal_file(open_file, monkeypatch)
    assert is_journal_stream(handle)
    configure(level="debug", stream=handle, json=True)
    log = get_logger("contactsync.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise RuntimeError("x")
    except RuntimeError:
        log.exception("x")
    logging.getLogger("thirdparty.http").error("library error")
    handle.flush()
    text = (tmp_path / "journal").read_text()
    prefixes, events = [], []
    for line in text.splitlines():
        match = re.match(r"^<(\d)>(\{.*\})$", line)
        assert match, line
        prefixes.append(int(match.group(1)))
        events.append(json.loads(match.group(2))["event"])
    assert prefixes == [7, 6, 4, 3, 2, 3, 3]
    assert events == ["d", "i", "w", "e", "c", "x", "library error"]


def test_journal_stream_of_another_stream_adds_no_prefix(tmp_path, open_file, monkeypatch):
    journal_file(open_file, monkeypatch)  # JOURNAL_STREAM names a different file
    other = open_file("redirected")
    assert not is_journal_stream(other)
    configure(level="info", stream=other, json=True)
    get_logger("contactsync.test").error("e")
    other.flush()
    line = (tmp_path / "redirected").read_text()
    assert line.startswith("{")
    assert json.loads(line)["event"] == "e"


@pytest.mark.parametrize("value", ["", "garbage", "1:", ":2", "12:34"])
def test_a_stream_without_a_file_or_a_bad_variable_is_not_the_journal(monkeypatch, value):
    monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not is_journal_stream(StringIO())


# --- redaction --------------------------------------------------------------------------------


def test_registered_secrets_and_secret_keys_are_redacted(stream):
    register_secret("hunter2-registered")
    register_secret("abc")  # too short to be worth a blanket replace
    log = get_logger("contactsync.test")
    log.warning(
        "auth_failed",
        message="the platform refused hunter2-registered",
        access_token="tok-123",
        nested={"password": "pw", "list": ["x hunter2-registered y"]},
        count=3,
    )
    logging.getLogger("somelib").warning("sent key %s", "hunter2-registered")
    try:
        raise RuntimeError("bad key hunter2-registered")
    except RuntimeError:
        log.exception("crashed")
    text = stream.getvalue()
    assert "hunter2-registered" not in text
    assert "tok-123" not in text
    first, second, third = parsed(text)
    assert first["message"] == f"the platform refused {REDACTED}"
    assert first["access_token"] == REDACTED
    assert first["nested"] == {"password": REDACTED, "list": [f"x {REDACTED} y"]}
    assert first["count"] == 3
    assert second["event"] == f"sent key {REDACTED}"
    assert f"bad key {REDACTED}" in third["exception"]


def test_redact_helpers():
    register_secret("s3cr3t-helper")
    assert redact_text("a s3cr3t-helper b") == f"a {REDACTED} b"
    assert redact({"api_key": "k", "token": None, "x": ("s3cr3t-helper",)}) == {
        "api_key": REDACTED,
        "token": None,
        "x": [REDACTED],
    }


def test_lines_logged_during_a_cycle_carry_its_instance_and_run_id(tmp_path):
    import io

    from daemon.foundation import log as log_setup
    from daemon.hub.database import make_engine
    from tests.enginekit import fresh_remote, sync_engine, write_instance
    from tests.memremote import MemoryConnector

    stream = io.StringIO()
    log_setup.configure(level="info", stream=stream, json=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    fresh_remote().add(FirstName="Ada", LastName="Lovelace", Phone="2025550143")
    instance = write_instance(tmp_path, "mem")
    original = MemoryConnector.pull

    def chatty_pull(self, cursor):  # a connector logging through the standard library
        logging.getLogger("acme.connector").info("fetching page")
        yield from original(self, cursor)

    MemoryConnector.pull = chatty_pull
    try:
        report = sync_engine(engine, instance).run(instance, "pull")
    finally:
        MemoryConnector.pull = original
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (fetch,) = [line for line in lines if line["event"] == "fetching page"]
    assert fetch["instance"] == "mem" and fetch["run_id"] == report.run_id
    assert fetch["direction"] == "pull"


def test_httpx_request_lines_never_carry_the_query_string(stream):
    """httpx's own INFO line names the full URL; a phone in a lookup's query must not reach
    the log (the kit logs exchanges itself, without the query)."""
    import httpx

    from daemon.kit.simkit import HostileAnswer, HostileServer

    answer = HostileAnswer(kind="body", body=b"{}")
    with HostileServer(answer) as server, httpx.Client() as client:
        client.get(f"{server.url}/contacts?phone=%2B16175550123&email=ada%40example.edu")
    text = stream.getvalue()
    assert "16175550123" not in text
    assert "example.edu" not in text
