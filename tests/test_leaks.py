"""What reaches the operator and the logs from hostile data (issue 16: §6 and the "low" list):
a URL's user-info never shows, contact data never drives the terminal, a search is text not a
LIKE pattern, and a platform that drips its headers or sends a compressed bomb is cut off in
time and memory.

Every check reads the real outputs: the CLI through click's runner, the JSON log through the
pipeline the daemon configures, the sync-log table, HTTP over loopback.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import httpx
import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import Engine, select

from daemon.cli import cli
from daemon.cli.output import safe_text, visible_controls
from daemon.config.settings import redacted_url
from daemon.foundation.log import configure, get_logger, redact_text
from daemon.hub.contacts import list_contacts, save_contact
from daemon.hub.database import make_engine
from daemon.hub.store import Contact, SyncLog
from daemon.hub.synclog import SyncContext, SyncLogBuffer
from daemon.kit.connector import MalformedResponse, Unavailable
from daemon.kit.http import HttpSession, RetryPolicy, make_client
from daemon.kit.simkit import HostileAnswer, HostileServer
from tests.clikit import Cli, isolated
from tests.enginekit import fresh_remote, sync_engine, write_instance

MIB = 1024 * 1024
GIB = 1024 * MIB
ONE_TRY = RetryPolicy(attempts=1)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


@pytest.fixture
def password() -> str:
    """A password no test registers as a secret: only the URL redaction can hide it."""
    return f"pw{uuid.uuid4().hex[:12]}"


@pytest.fixture
def log_stream() -> Iterator[StringIO]:
    """The JSON log lines of the test, through the daemon's own pipeline."""
    stream = StringIO()
    saved = structlog.get_config()
    configure(level="debug", stream=stream, json=True)
    yield stream
    structlog.configure(**saved)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- §6: user-info in URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://staff:PW@db/hub", "postgresql://***@db/hub"),
        ("see sftp://u:PW@h:22/in and https://TOKEN@git.example", "see sftp://***@h:22/in"),
        ("http://admin:P@ss@h/x?email=a@b.edu", "http://***@h/x?email=a@b.edu"),  # @ in it
        ("ConnectError for 'HTTP://a:PW@h'", "ConnectError for 'HTTP://***@h'"),
        ("mail ada@example.edu at http://h/x?e=a@b", "mail ada@example.edu at http://h/x?e=a@b"),
    ],
)
def test_a_urls_userinfo_is_masked_wherever_it_sits(text: str, shown: str) -> None:
    masked = redact_text(text)
    assert masked.startswith(shown)
    assert "PW" not in masked and "TOKEN" not in masked and "P@ss" not in masked


def test_a_database_password_is_masked_even_where_the_url_is_not_rfc_3986() -> None:
    # SQLAlchemy reads "pa/ss" as the password; the URL pattern stops at the "/".
    assert redacted_url("postgresql://staff:pa/ss9@db/hub") == "postgresql://staff:***@db/hub"
    assert "pa/ss9" not in redact_text("connecting with pa/ss9 failed")
    assert redacted_url("sqlite:////var/lib/contactsync/hub.db").endswith("/hub.db")


def test_the_json_log_masks_userinfo_in_every_string_value(log_stream, password) -> None:
    get_logger("contactsync.test").warning(
        "remote_redirect",
        location=f"https://admin:{password}@elsewhere.example/login",
        details={"urls": [f"sftp://drop:{password}@files.example/in"]},
    )
    logging.getLogger("httpx").error("request to http://u:%s@h failed", password)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert len(lines) == 2 and password not in log_stream.getvalue()
    assert lines[0]["location"] == "https://***@elsewhere.example/login"
    assert lines[0]["details"] == {"urls": ["sftp://***@files.example/in"]}


def test_an_http_failure_naming_a_url_with_userinfo_leaks_nowhere(
    engine: Engine, tmp_path: Path, capfd, caplog, log_stream, password
) -> None:
    """A platform URL with user-info that got past load (a connector building its own, a
    redirect): httpx's failure names it; not the message, the sync-log row, the JSON log, the
    cycle's report nor ``contactsync log`` shows the password."""
    url = f"http://admin:{password}@127.0.0.1:{closed_port()}/services"
    with HttpSession(make_client(url), retry=ONE_TRY) as http, pytest.raises(Unavailable) as err:
        http.get("/data")
    assert "ConnectError" in err.value.message and password not in err.value.message

    remote = fresh_remote("userinfo")
    instance = write_instance(tmp_path, "userinfo", remote="userinfo")
    # What a connector raises, and what a plugin's own bug might say, quoting the URL raw.
    remote.fail_pull = Unavailable(f"{err.value.message}; base_url was {url}")
    report = sync_engine(engine, instance).run(instance, "pull")
    assert report.outcome == "failed"
    with engine.connect() as conn:
        messages = conn.execute(select(SyncLog.__table__.c.message)).scalars().all()
    assert any("http://***@127.0.0.1" in m for m in messages)  # the row is there, masked

    db_url = engine.url.render_as_string(hide_password=False)
    shown = CliRunner().invoke(cli, ["--database-url", db_url, "log", "--limit", "5"])
    shown_json = CliRunner().invoke(cli, ["--database-url", db_url, "log", "--json"])
    assert shown.exit_code == 0 and shown_json.exit_code == 0
    assert "remote-unavailable" in shown.stdout
    captured = capfd.readouterr()
    places = {
        "log": log_stream.getvalue(),
        "records": caplog.text,
        "report": repr(report.as_dict()),
        "sync log": repr(messages),
        "cli log": shown.stdout + shown.stderr,
        "cli log --json": shown_json.stdout,
        "std streams": captured.out + captured.err,
    }
    assert [where for where, text in places.items() if password in text] == []


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["check"], ["log"]])
def test_a_database_password_never_shows_in_cli_output(command: list[str], password) -> None:
    """A hub that cannot be reached: the error names no password."""
    for url in (
        f"postgresql://staff:{password}@127.0.0.1:{closed_port()}/hub",
        f"postgresql://staff:{password}/x@127.0.0.1:{closed_port()}/hub",  # not RFC 3986
    ):
        result = CliRunner().invoke(cli, ["--database-url", url, *command])
        assert result.exit_code == 2 and "config-invalid" in result.stderr
        assert password not in result.stdout + result.stderr, command


def test_a_reachable_hubs_password_never_shows(
    pg_engine: Engine, password, log_stream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test server trusts every login, so any password opens it: status and check name
    the hub they use, and must show ``postgresql://***@``."""
    monkeypatch.chdir(tmp_path)  # no config folder: the hub is named by --database-url only
    url = pg_engine.url.set(username="postgres", password=password)
    url_text = url.render_as_string(hide_password=False)
    assert password in url_text
    outputs = []
    for command in (["status"], ["status", "--json"], ["check"], ["check", "--json"], ["log"]):
        result = CliRunner().invoke(cli, ["--database-url", url_text, *command])
        assert result.exit_code in (0, 1), (command, result.stdout, result.stderr)
        outputs.append(result.stdout + result.stderr)
    assert json.loads(outputs[1])["hub"]["url"].startswith("postgresql+psycopg://***@127.0.0.1")
    leaks = [text for text in [*outputs, log_stream.getvalue()] if password in text]
    assert leaks == []


# --- control characters on the terminal -------------------------------------------------------

HOSTILE_NAME = "\x1b]0;pwned\x07\x1b[2J\x1b[31mEve"  # retitle, clear the screen, red
REVERSED = "abc\u202eexe.txt\u2066x\u2069"  # a right-to-left override and an isolate
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u2069", "\r")


def test_visible_controls_escapes_c0_c1_and_bidi_and_keeps_the_rest() -> None:
    assert visible_controls("a\x1b[1mb\x9bc\u202ed\re") == "a\\u001b[1mb\\u009bc\\u202ed\\u000de"
    assert visible_controls("Zoë 山田 +1", keep_newlines=True) == "Zoë 山田 +1"
    assert visible_controls("a\nb", keep_newlines=True) == "a\nb"
    assert visible_controls("a\nb") == "a\\u000ab"
    assert safe_text("x\x1b http://u:pw@h") == "x\\u001b http://***@h"


def test_contacts_list_and_show_never_print_control_characters(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    added = run.json(
        "contacts", "add", "--first-name", "Eve", "--last-name", REVERSED,
        "--phone", "2025550143", "--email", "eve@example.edu",
    )  # fmt: skip
    # The incoming rules now refuse C0/C1 controls (control-character-in-value), but a hub
    # holds rows written before them: one such row, put there directly.
    engine = make_engine(run.db_url)
    with engine.begin() as conn:
        conn.execute(Contact.__table__.update().values(first_name=HOSTILE_NAME))
    engine.dispose()
    listed = run("contacts", "list").stdout
    shown = run("contacts", "show", added["id"]).stdout
    for output in (listed, shown):
        assert not [c for c in UNSAFE if c in output], output
        assert "\\u001b]0;pwned\\u0007" in output and "\\u202eexe" in output
    # --json is exact: the data comes back as it is, and stays harmless on a terminal.
    as_json = run("contacts", "show", added["id"], "--json").stdout
    assert not [c for c in UNSAFE if c in as_json]
    data = json.loads(as_json)
    assert (data["first_name"], data["last_name"]) == (HOSTILE_NAME, REVERSED)
    assert json.loads(run("contacts", "list", "--json").stdout)[0]["first_name"] == HOSTILE_NAME


def test_the_sync_log_and_errors_never_print_control_characters(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    run("status")  # creates the hub
    engine = make_engine(run.db_url)
    rows = SyncLogBuffer(SyncContext("csv", "incoming", "run1"))
    rows.add("invalid-email", f"{HOSTILE_NAME} is not an email", remote_id=REVERSED)
    with engine.begin() as conn:
        rows.write(conn)
    engine.dispose()
    logged = run("log").stdout
    assert not [c for c in UNSAFE if c in logged] and "\\u001b[2J" in logged
    missing = run("contacts", "show", HOSTILE_NAME, expect=1)
    assert not [c for c in UNSAFE if c in missing.stderr] and "pwned" in missing.stderr


# --- --search is text, not a LIKE pattern -----------------------------------------------------


def test_search_wildcards_are_literal(engine: Engine) -> None:
    for first, phone in (("Ada", "2025550143"), ("100%", "2025550144"), ("a_b\\c", "2025550145")):
        save_contact(engine, {"first_name": first, "last_name": "Test", "phone": phone})

    def found(search: str) -> list[str]:
        return sorted(r["first_name"] for r in list_contacts(engine, search=search))

    assert found("%") == ["100%"]
    assert found("_") == ["a_b\\c"]
    assert found("\\") == ["a_b\\c"]
    assert found("/") == []  # SQLAlchemy's escape character is not a wildcard either
    assert found("a_b") == ["a_b\\c"]
    assert found("ad") == ["Ada"]  # case-insensitive substring, as before
    assert found("555014") == ["100%", "Ada", "a_b\\c"]  # the phone, as a substring


def test_contacts_list_search_percent_from_the_cli(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    run("contacts", "add", "--first-name", "Ada", "--last-name", "L", "--phone", "2025550143")
    assert run.json("contacts", "list", "--search", "%") == []
    assert len(run.json("contacts", "list", "--search", "ad")) == 1


# --- header drip and compressed bombs ---------------------------------------------------------


def test_a_server_dripping_its_headers_is_given_up_at_the_deadline() -> None:
    """The headers arrive a byte every 50 ms (2 s in all): each read is quick, so no read
    timeout trips; the exchange's deadline (0.4 s) must hold in the headers phase."""
    with HostileServer(HostileAnswer("headers", size=40, interval=0.05)) as server:
        started = time.monotonic()
        http = HttpSession(make_client(server.url), retry=RetryPolicy(attempts=3))
        http.deadline = 0.4
        with http, pytest.raises(Unavailable) as caught:
            http.get("/crm/v3/objects/contacts")
        took = time.monotonic() - started
    assert caught.value.code == "remote-unavailable"
    assert "within 0.4 s (the request deadline)" in caught.value.message
    assert took < 1.0, took
    assert server.requests == 1  # not retried in place: the next cycle tries again


def test_a_slow_but_steady_server_within_the_deadline_is_read() -> None:
    answer = HostileAnswer("headers", size=4, interval=0.02)
    with HostileServer(answer) as server, HttpSession(make_client(server.url), deadline=2) as http:
        assert http.get("/x").json() == {}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_bomb_is_refused_at_the_cap_with_bounded_memory(encoding: str) -> None:
    """About 1 MB on the wire that inflates to 1 GiB: refused once 2 MiB are inflated,
    holding a few MiB at most (the old cap counted the compressed bytes, and read it all)."""
    with HostileServer(HostileAnswer("gzip", size=GIB, encoding=encoding)) as server:
        http = HttpSession(make_client(server.url), retry=ONE_TRY, max_body_bytes=2 * MIB)
        tracemalloc.start()
        started = time.monotonic()
        try:
            with http, pytest.raises(MalformedResponse) as caught:
                http.get("/crm/v3/objects/contacts")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        took = time.monotonic() - started
    print(f"\n{encoding} bomb (1 GiB inflated): refused in {took:.2f} s, peak {peak / MIB:.1f} MiB")
    assert caught.value.code == "remote-malformed-response"
    assert "2,097,152 bytes (max_body_bytes)" in caught.value.message
    assert peak < 8 * MIB, peak
    assert server.requests == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_under_the_cap_is_inflated_whole(encoding: str) -> None:
    with HostileServer(HostileAnswer("gzip", size=3 * MIB, encoding=encoding)) as server:
        with HttpSession(make_client(server.url), retry=ONE_TRY, max_body_bytes=4 * MIB) as http:
            response = http.get("/x")
            assert response.content == bytes(3 * MIB)
            assert "content-encoding" not in response.headers  # inflated once, here
        with HttpSession(make_client(server.url), retry=ONE_TRY) as http:
            streamed = http.get("/x", stream=True)
            assert sum(len(piece) for piece in streamed.iter_bytes()) == 3 * MIB
            streamed.close()


def test_a_corrupt_compressed_body_is_malformed_not_retried() -> None:
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    client = make_client("http://platform.test", transport=httpx.MockTransport(answer))
    http = HttpSession(client, retry=RetryPolicy(attempts=3))
    with http, pytest.raises(MalformedResponse, match="undecodable response body"):
        http.get("/x")
    assert len(calls) == 1


def test_only_encodings_inflated_under_the_cap_are_asked_for() -> None:
    client = make_client("http://platform.test")
    assert client.headers["Accept-Encoding"] == "gzip, deflate"
    client.close()
