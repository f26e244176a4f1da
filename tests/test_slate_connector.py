"""The Slate connector's own rules, against the simulator on loopback (and a real sshd).

Auth both ways, ``since`` with its overlap, the streamed answer, Slate's naive local times,
the upload over SFTP and by web service within its rate limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.sdk import AuthFailed, ConnectorContext, MalformedResponse, PushItem, PushStatus
from plugins.slate.client import RowStream, spooled
from plugins.slate.connector import (
    PENDING_PREFIX,
    SlateConnector,
    parse_slate_time,
    upload_name,
)
from plugins.slate.simulator import SlateSimulator
from tests.sshd import SshdServer


class Recording(httpx.HTTPTransport):
    """A real transport that remembers every request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture
def sim(clock: FakeClock, tmp_path: Path) -> Iterator[SlateSimulator]:
    with SlateSimulator(clock=clock, sftp_root=tmp_path / "sftp") as simulator:
        yield simulator


def connector(
    sim: SlateSimulator, clock: FakeClock, wire: httpx.BaseTransport | None = None, **extra
) -> SlateConnector:
    settings: dict[str, Any] = {
        "base_url": sim.url,
        "query_id": sim.query_id,
        "token": sim.user_token,
        "page_size": 50,
        "transport": {"kind": "local", "path": str(sim.sftp_root)},
        **extra,
    }
    config = SlateConnector.Config.model_validate(settings)
    return SlateConnector(config, ConnectorContext("slate"), clock=clock, transport=wire)


def pull_all(conn: SlateConnector, cursor: str | None) -> tuple[list[Any], str | None]:
    records, final = [], cursor
    for page in conn.pull(cursor):
        records += page.records
        final = page.cursor
    return records, final


# --- auth -------------------------------------------------------------------------------


def test_a_user_token_goes_in_h_and_a_service_account_in_basic_auth(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    sim.add_person(first_name="Ada")
    token_wire = Recording()
    assert len(pull_all(connector(sim, clock, token_wire), None)[0]) == 1
    sent = token_wire.requests[-1]
    assert sent.url.params["h"] == sim.user_token and "Authorization" not in sent.headers

    basic_wire = Recording()
    basic = connector(
        sim, clock, basic_wire, token=None, username=sim.username, password=sim.password
    )
    assert len(pull_all(basic, None)[0]) == 1
    sent = basic_wire.requests[-1]
    assert "h" not in sent.url.params and sent.headers["Authorization"].startswith("Basic ")

    wrong = connector(sim, clock, token=None, username=sim.username, password="nope")
    with pytest.raises(AuthFailed):
        wrong.check()


# --- pull -------------------------------------------------------------------------------


def test_since_carries_the_overlap_and_reread_rows_are_not_yielded_again(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    first = sim.add_person(first_name="First")
    clock.advance(3600)
    second = sim.add_person(first_name="Second")
    wire = Recording()
    conn = connector(sim, clock, wire, overlap_seconds=600)
    records, cursor = pull_all(conn, None)
    assert [r.remote_id for r in records] == [first, second]
    assert "since" not in wire.requests[-1].url.params  # the first pull reads everything

    clock.advance(60)
    sim.edit_person(first, first_name="Changed")
    records, cursor = pull_all(conn, cursor)
    # newest seen (13:00 UTC = 08:00 New York) less 10 minutes, as Slate's naive local time
    assert wire.requests[-1].url.params["since"] == "2025-01-06T07:50:00"
    # The second person is re-read inside the overlap, unchanged: not yielded again.
    assert [(r.remote_id, r.fields["first_name"]) for r in records] == [(first, "Changed")]
    assert pull_all(conn, cursor)[0] == []
    assert json.loads(cursor or "{}")["seen"]  # what the overlap re-reads are checked against


def test_pages_of_an_ordered_answer_move_the_cursor_forward(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    sim.add_people(120)
    pages = list(connector(sim, clock, page_size=50).pull(None))
    assert [len(p.records) for p in pages] == [50, 50, 20]
    stamps = [json.loads(p.cursor or "{}")["ts"] for p in pages]
    assert stamps == sorted(stamps) and stamps[0] < stamps[-1]


def test_pages_of_an_unordered_answer_keep_the_cursor_until_the_end(
    clock: FakeClock,
) -> None:
    with SlateSimulator(clock=clock, sort_rows=False) as sim:
        sim.add_people(120)
        conn = connector(sim, clock, page_size=50)
        pages = list(conn.pull(None))
        cursors = [json.loads(p.cursor or "{}")["ts"] for p in pages]
        # A crash before the end must re-read from the start, not skip what came unsorted.
        assert cursors[:-1] == [None, None] and cursors[-1] is not None
        assert sum(len(p.records) for p in pages) == 120
        assert pull_all(conn, pages[-1].cursor)[0] == []


def test_a_row_without_id_or_time_is_reported_and_skipped_alone(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    # The query's time export is "when" here: one good, one unreadable, one missing.
    good = sim.add_person(first_name="Ada", when="2025-01-06T07:00:00")
    sim.add_person(first_name="Bob", when="soon")
    sim.add_person(first_name="Cy")
    reported: list[tuple[str, str, dict[str, Any]]] = []
    conn = connector(sim, clock, updated_field="when")
    conn.context.reporter = lambda code, message, details: reported.append(
        (str(code), message, details)
    )
    records, _ = pull_all(conn, None)
    assert [r.remote_id for r in records] == [good]
    assert sorted(m.split(":")[0] for _, m, _ in reported) == [
        "a Slate row without 'slate_id' or 'when'",
        "when is not a date",
    ]
    assert {c for c, _, _ in reported} == {str(Code.REMOTE_MALFORMED)}
    assert all(d["row"] in (1, 2, 3) for _, _, d in reported)


def test_naive_times_are_read_in_the_instance_time_zone(clock: FakeClock, tmp_path: Path) -> None:
    with SlateSimulator(clock=clock, timezone="America/Los_Angeles") as sim:
        sim.add_person(first_name="Ada")
        assert sim.find("first_name", "Ada")["updated"] == "2025-01-06T04:00:00"
        conn = connector(sim, clock, timezone="America/Los_Angeles")
        (record,), _ = pull_all(conn, None)
        assert record.modified_at == datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
    zone = conn.zone
    # Summer time, a space instead of the T, fractions, and an explicit offset.
    assert parse_slate_time("2025-07-01 08:00:00.250", zone) == datetime(
        2025, 7, 1, 15, 0, 0, 250000, tzinfo=UTC
    )
    assert parse_slate_time("2025-07-01T08:00:00+00:00", zone).hour == 8


# --- the streamed answer ------------------------------------------------------------------


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_rows_come_out_before_the_body_ends() -> None:
    body = json.dumps({"row": [{"slate_id": str(i), "first_name": "é" * 20} for i in range(5000)]})
    stream = RowStream(chunked(body.encode(), 4096))
    rows = iter(stream)
    first = next(rows)
    total_chunks = -(-len(body.encode()) // 4096)
    assert first["slate_id"] == "0"
    assert stream.chunks_read <= 2 < total_chunks  # not the whole body
    assert sum(1 for _ in rows) == 4999


@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_rows_split_anywhere_by_chunks_parse_the_same(size: int) -> None:
    rows = [{"a": 1.5e3, "b": 'x"}],{', "c": None, "d": [1, {"e": True}], "n": -12345}] * 3
    body = json.dumps({"meta": {"x": [1, 2]}, "row": rows, "n": 1234}).encode()
    assert list(RowStream(chunked(body, size))) == rows


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (b"{}", []),
        (b'{"row": []}', []),
        (b'{"row": null}', []),
        (b'{"row": {"slate_id": "1"}}', [{"slate_id": "1"}]),
        (b' \n{ "row" : [ {"a":"1"} , {"a":"2"} ] }\n', [{"a": "1"}, {"a": "2"}]),
    ],
)
def test_the_shapes_slate_may_send(body: bytes, rows: list[dict[str, Any]]) -> None:
    assert list(RowStream(chunked(body, 5))) == rows


@pytest.mark.parametrize(
    "body",
    [
        b'{"row": [{"slate_id": "1"}, {"slate_id": ',  # cut off
        b'{"contacts": [{"id": <html>',  # garbage
        b'{"row": [1, 2]}',  # rows that are not objects
        b'{"row": []} trailing',
        b"\xff\xfe{}",
        b"",
    ],
)
def test_a_broken_answer_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        list(RowStream(chunked(body, 4)))


def test_the_spool_hands_on_every_byte_then_the_receivers_error() -> None:
    data = [bytes([i]) * 1000 for i in range(50)]
    assert b"".join(spooled(iter(data), read_chunk=333)) == b"".join(data)

    def broken() -> Iterator[bytes]:
        yield b"abc"
        yield b"def"
        raise httpx.ReadError("connection reset")

    got = []
    with pytest.raises(httpx.ReadError):
        for chunk in spooled(broken()):
            got.append(chunk)
    assert b"".join(got) == b"abcdef"
    # A reader that stops early stops the receiver (nothing raised, nothing left running).
    endless = spooled(iter(lambda: b"x" * 100, None))
    assert next(endless) and endless.close() is None


# --- push ---------------------------------------------------------------------------------


def items(count: int, start: int = 0) -> list[PushItem]:
    return [
        PushItem(
            f"hub{i}",
            None,
            {"first_name": f"P{i}", "last_name": "Hub", "email": f"p{i}@example.org"},
        )
        for i in range(start, start + count)
    ]


def test_push_over_sftp_to_a_real_sshd(
    sshd_server: SshdServer, sftp_root: Path, clock: FakeClock
) -> None:
    with SlateSimulator(clock=clock, sftp_root=sftp_root) as sim:
        transport = sshd_server.transport_settings(sftp_root)
        conn = connector(sim, clock, transport=transport)
        conn.check()  # the query and the SFTP folder
        results = conn.push(items(3))
        assert {r.status for r in results} == {PushStatus.PENDING}
        assert all(r.handle and r.handle.startswith(PENDING_PREFIX) for r in results)
        name = upload_name("mainstay_contact", clock.now())
        assert name == "mainstay_contact2025-01-06T120000000Z.csv"
        assert [p.name for p in sim.incoming.iterdir()] == [name]  # no temporary file left
        header = (sim.incoming / name).read_text().splitlines()[0]
        assert header == "mainstay_id,slate_id,email,first_name,last_name"
        sim.process_pending()
        assert [p.name for p in sim.processed.iterdir()] == [name]
        pulled, _ = pull_all(conn, None)
        assert sorted(r.fields["mainstay_id"] for r in pulled) == ["hub0", "hub1", "hub2"]
        conn.close()


def test_a_repush_before_confirmation_updates_rather_than_duplicates(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    conn = connector(sim, clock)
    (first,) = conn.push(items(1))
    sim.process_pending()
    again = PushItem("hub0", first.handle, {"first_name": "Again"})
    (second,) = conn.push([again])
    assert second.status is PushStatus.PENDING and second.remote_id is None
    sim.process_pending()
    pulled, _ = pull_all(conn, None)
    assert [(r.fields["mainstay_id"], r.fields["first_name"]) for r in pulled] == [
        ("hub0", "Again")
    ]
    # A linked record is sent with its Slate id.
    update = PushItem("hub0", pulled[0].remote_id, {"last_name": "Linked"})
    (third,) = conn.push([update])
    assert third.remote_id == pulled[0].remote_id
    sim.process_pending()
    assert sim.person(pulled[0].remote_id)["last_name"] == "Linked"


def test_web_service_uploads_stay_within_50_posts_in_5_minutes(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    conn = connector(
        sim,
        clock,
        token=None,
        username=sim.username,
        password=sim.password,
        upload="web",
        format_id=sim.format_id,
        transport=None,
    )
    for n in range(60):
        results = conn.push(items(1, start=n))
        assert results[0].status is PushStatus.PENDING
    assert sim.state()["counters"]["rate_limited"] == 0
    assert sim.state()["counters"]["posts"] == 60
    assert clock.slept >= 300  # the 51st post waited for the window
    sim.process_pending()
    assert len(pull_all(conn, None)[0]) == 60


def test_an_unreachable_sftp_server_makes_the_batch_transient(
    sim: SlateSimulator, clock: FakeClock, tmp_path: Path
) -> None:
    conn = connector(sim, clock, transport={"kind": "local", "path": str(tmp_path / "gone")})
    results = conn.push(items(2))
    assert {r.status for r in results} == {PushStatus.TRANSIENT}
