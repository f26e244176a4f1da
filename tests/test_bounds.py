"""Memory and time stay bounded against a broken or hostile platform or file (issue 16, §4):
huge, endless and dripping answers, pages far larger than asked, deep or huge-number JSON, a
certificate that does not verify, and CSV lines without end. Each gets a dictionary code.

The platform is :class:`~daemon.kit.simkit.HostileServer` on loopback; its limits are scaled
down (a 1 MiB cap, a 0.4 s deadline) so every test takes well under a second.
"""

from __future__ import annotations

import datetime as dt
import io
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hubkit import contact_count, log_rows

from daemon.foundation.clock import SYSTEM_CLOCK, FakeClock
from daemon.foundation.csv_read import (
    MAX_LINE_CHARS,
    FileMalformed,
    bounded_lines,
    read_header,
    stream_rows,
)
from daemon.hub.contacts import load_schema
from daemon.hub.csv_import import import_csv
from daemon.kit.connector import ConnectorContext, MalformedResponse, Unavailable
from daemon.kit.http import (
    HttpSession,
    RetryPolicy,
    TlsRefused,
    json_body,
    make_client,
    text_stream,
)
from daemon.kit.paging import pages
from daemon.kit.simkit import HostileAnswer, HostileServer
from plugins.hubspot.connector import HubSpotConnector
from tests.connectorkit import build, pull_all

MIB = 1024 * 1024
ONE_TRY = RetryPolicy(attempts=1)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


def session(server: HostileServer, **bounds: Any) -> HttpSession:
    clock = bounds.pop("clock", None) or FakeClock()
    retry = bounds.pop("retry", RetryPolicy(attempts=3, jitter=False))
    return HttpSession(make_client(server.url), retry=retry, clock=clock, **bounds)


# --- the size cap -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        HostileAnswer("huge", size=5 * MIB),  # says its length: refused before reading
        HostileAnswer("huge", size=5 * MIB, lie_length=True),  # chunked: counted as it arrives
        HostileAnswer("endless"),  # never ends: only counting stops it
    ],
    ids=["content-length", "chunked", "endless"],
)
def test_an_answer_over_the_cap_is_malformed_naming_the_cap_not_the_body(
    hostile: HostileServer, answer: HostileAnswer
) -> None:
    hostile.answer = answer
    # A deadline well short of the default, so a broken cap fails the test in seconds.
    http = session(hostile, max_body_bytes=MIB, deadline=3)
    with http, pytest.raises(MalformedResponse) as caught:
        http.get("/crm/v3/objects/contacts?email=ada@example.edu")
    message = caught.value.message
    assert caught.value.code == "remote-malformed-response"
    assert "1,048,576 bytes (max_body_bytes)" in message
    assert "xxxx" not in message and "results" not in message  # the body is not echoed
    assert "ada@example.edu" not in message  # nor the query
    assert hostile.requests == 1  # a platform that sent too much once will again: no retry


def test_the_cap_holds_while_a_streamed_answer_is_read(hostile: HostileServer) -> None:
    hostile.answer = HostileAnswer("huge", size=5 * MIB, lie_length=True)
    with session(hostile, max_body_bytes=MIB) as http:
        response = http.get("/results", stream=True)
        with pytest.raises(MalformedResponse, match="max_body_bytes"):
            text_stream(response).read()
        response.close()


def test_an_answer_under_the_cap_is_read_whole(hostile: HostileServer) -> None:
    hostile.answer = HostileAnswer("huge", size=MIB - 10, lie_length=True)
    with session(hostile, max_body_bytes=MIB) as http:
        assert json_body(http.get("/x"))["results"] == []


# --- the deadline -----------------------------------------------------------------------------


def test_a_dripping_server_is_given_up_at_the_deadline(hostile: HostileServer) -> None:
    hostile.answer = HostileAnswer("drip", size=30, interval=0.05)  # 1.5 s if not stopped
    started = time.monotonic()
    http = session(hostile, deadline=0.4, clock=SYSTEM_CLOCK)
    with http, pytest.raises(Unavailable) as caught:
        http.get("/x")
    assert time.monotonic() - started < 1.5
    assert caught.value.code == "remote-unavailable"
    assert "within 0.4 s (the request deadline)" in caught.value.message
    assert hostile.requests == 1  # the next cycle tries again, not this worker five times


def test_the_deadline_counts_on_the_injected_clock() -> None:
    """Every chunk of a slow body advances the fake clock by 10 s: at 60 s the read stops,
    and the test waits for nothing."""
    clock = FakeClock()

    class Slow(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            while True:
                clock.advance(10)
                yield b" "

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Slow()))
    client = make_client("http://platform.test", transport=transport)
    http = HttpSession(client, clock=clock, deadline=60)
    with http, pytest.raises(Unavailable) as caught:
        http.get("/contacts")
    assert "within 60 s" in caught.value.message
    assert 60 < clock.monotonic() <= 80


def test_a_server_that_says_nothing_is_given_up_within_the_deadline() -> None:
    """Per-phase timeouts (30 s read) are capped by the deadline, so a server that accepts
    and never answers does not hold the worker for the whole read timeout."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        http = HttpSession(make_client(url), retry=ONE_TRY, deadline=0.3)
        with http, pytest.raises(Unavailable, match=r"within 0.3 s \(the request deadline\)"):
            http.get("/x")
    assert time.monotonic() - started < 1.5


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a freshly made self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def test_a_certificate_that_does_not_verify_is_tls_refused_and_not_retried(
    self_signed: ssl.SSLContext,
) -> None:
    clock = FakeClock()
    with HostileServer(HostileAnswer("body", body=b"{}"), ssl_context=self_signed) as server:
        http = HttpSession(make_client(server.url), clock=clock, retry=RetryPolicy(attempts=5))
        with http, pytest.raises(TlsRefused) as caught:
            http.get("/contacts?email=ada@example.edu")
    assert caught.value.code == "tls-refused"
    assert "certificate" in caught.value.message and "trust store" in caught.value.message
    assert "ada@example.edu" not in caught.value.message
    assert clock.sleeps == []  # not one retry: waiting cannot fix a certificate


def test_tls_refused_is_in_the_dictionary_and_the_readme() -> None:
    from daemon.foundation.dictionary import Code, explain

    assert "trust store" in explain(Code.TLS_REFUSED).next_step
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "| `tls-refused` |" in readme


# --- JSON that is not a page ------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        HostileAnswer("deep", depth=200_000),
        HostileAnswer("body", body=b'{"results": [{"id": ' + b"9" * 5000 + b"}]}"),
    ],
    ids=["200k-deep", "5000-digit-number"],
)
def test_deep_or_huge_number_json_is_malformed_not_an_internal_error(
    hostile: HostileServer, answer: HostileAnswer
) -> None:
    hostile.answer = answer
    with session(hostile) as http, pytest.raises(MalformedResponse) as caught:
        json_body(http.get("/x"))
    assert caught.value.code == "remote-malformed-response"


def test_a_page_far_larger_than_asked_is_refused(hostile: HostileServer) -> None:
    hostile.answer = HostileAnswer("records", count=2000)
    with session(hostile) as http:

        def fetch(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            return json_body(http.get("/contacts", params={"limit": 100}))["results"], None

        with pytest.raises(MalformedResponse, match="2,000 records when at most 100"):
            list(pages(fetch, asked=100))
        assert [len(items) for items, _ in pages(fetch, asked=2000)] == [2000]


def hubspot(server: HostileServer, context: ConnectorContext) -> HubSpotConnector:
    # One listing thread: the first pull lists GET /contacts, which the server answers.
    settings = {"base_url": server.url, "access_token": "pat-na1-hostile", "pull_concurrency": 1}
    return build(HubSpotConnector, settings, {}, context, FakeClock())


def test_hubspot_refuses_a_list_page_larger_than_it_asked_for(hostile: HostileServer) -> None:
    hostile.answer = HostileAnswer("records", count=101)
    with pytest.raises(MalformedResponse, match="101 records when at most 100"):
        pull_all(hubspot(hostile, ConnectorContext("hs")), None)


def test_hubspot_skips_a_5000_digit_id_with_a_coded_row(hostile: HostileServer) -> None:
    def row(record_id: str) -> bytes:
        props = '{"email": "x@example.edu", "lastmodifieddate": "2025-01-06T10:00:00Z"}'
        return f'{{"id": "{record_id}", "properties": {props}}}'.encode()

    hostile.answer = HostileAnswer(
        "body", body=b'{"results": [' + row("9" * 5000) + b", " + row("51") + b"]}"
    )
    reports: list[tuple[Any, ...]] = []
    context = ConnectorContext("hs", reporter=lambda *report: reports.append(report))
    records, _ = pull_all(hubspot(hostile, context), None)
    assert [r.remote_id for r in records] == ["51"]
    assert [(code, details) for code, _, details in reports] == [
        ("remote-malformed-response", {"remote_id": "9" * 40})
    ]


# --- CSV lines --------------------------------------------------------------------------------


def long_line_file(tmp_path: Path, length: int) -> Path:
    path = tmp_path / "contacts.csv"
    with path.open("wb") as fh:
        fh.write(b"crm_id,first_name,last_name,phone\n")
        fh.write(b"a" * length)  # no line break, ever
    return path


def test_a_line_longer_than_the_limit_is_file_malformed_naming_it(tmp_path: Path) -> None:
    path = long_line_file(tmp_path, MAX_LINE_CHARS + 10)
    with pytest.raises(FileMalformed, match="line 2 is longer than 1,048,576 characters"):
        read_header(path)
    with path.open("rb") as fh, pytest.raises(FileMalformed, match="line 2 is longer"):
        list(stream_rows(fh))


def test_the_line_limit_counts_the_text_not_its_line_end() -> None:
    ok = ["abcdefghij\r\n", "0123456789\n", "short\r", "end"]
    assert list(bounded_lines(io.StringIO("".join(ok), newline=""), limit=10)) == ok
    binary = io.BytesIO(b"abcdefghij\r\nx")
    assert list(bounded_lines(binary, limit=10)) == [b"abcdefghij\r\n", b"x"]
    with pytest.raises(FileMalformed, match="line 2"):
        list(bounded_lines(io.BytesIO(b"ok\nabcdefghijk\n"), limit=10))


def test_import_of_a_file_without_line_breaks_is_refused_with_a_row(
    sqlite_engine: Any, tmp_path: Path
) -> None:
    path = long_line_file(tmp_path, 3 * MIB)
    result = import_csv(sqlite_engine, path, load_schema(sqlite_engine))
    assert not result.ok and "line 2 is longer" in (result.file_error or "")
    assert contact_count(sqlite_engine) == 0
    assert [(r["code"], r["details"]) for r in log_rows(sqlite_engine)] == [
        ("file-malformed", {"file": "contacts.csv"})
    ]


def test_a_large_file_with_cr_only_line_ends_is_not_one_long_line() -> None:
    """A binary readline splits at LF only: CR-only files arrive in limit-sized pieces, cut
    after their last CR, and only a real run without any line end is refused."""
    data = b"crm_id,first_name\r" + b"S-1,Ada\r" * 5
    assert b"".join(bounded_lines(io.BytesIO(data), limit=20)) == data
    rows = list(stream_rows(io.BytesIO(data * 3)))
    assert len(rows) == 18 and rows[1] == ["S-1", "Ada"]
    with pytest.raises(FileMalformed, match="line 3 is longer"):
        list(bounded_lines(io.BytesIO(b"ok\rno\r" + b"x" * 30), limit=20))
