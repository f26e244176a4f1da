"""The Slate simulator over real HTTP on loopback: its wire protocol and its rules.

Windows (the upload rate limit, the processing delay, SFTP scans) run on a FakeClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daemon.foundation.clock import FakeClock
from plugins.slate.simulator import SlateSimulator


@pytest.fixture
def sim(clock: FakeClock, tmp_path: Path) -> Iterator[SlateSimulator]:
    with SlateSimulator(clock=clock, contacts=3, sftp_root=tmp_path / "sftp") as simulator:
        yield simulator


def query(sim: SlateSimulator, auth: str = "token", **params: str) -> httpx.Response:
    base = {"id": sim.query_id, "cmd": "service", "output": "json"}
    if auth == "token":
        base["h"] = sim.user_token
    credentials = (sim.username, sim.password) if auth == "basic" else None
    return httpx.get(f"{sim.url}/manage/query/run", params={**base, **params}, auth=credentials)


def upload(
    sim: SlateSimulator, body: str, auth: bool = True, client: httpx.Client | None = None
) -> httpx.Response:
    return (client or httpx).post(  # type: ignore[attr-defined]
        f"{sim.url}/manage/service/import",
        params={"cmd": "load", "format": sim.format_id},
        content=body.encode(),
        auth=(sim.username, sim.password) if auth else None,
    )


def test_the_query_answers_rows_with_a_token_or_basic_auth(sim: SlateSimulator) -> None:
    for auth in ("token", "basic"):
        response = query(sim, auth)
        assert response.status_code == 200
        rows = response.json()["row"]
        assert len(rows) == 3
        assert {"slate_id", "first_name", "last_name", "email", "phone", "updated"} <= set(rows[0])
    refused = query(sim, "none")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert refused.headers["Content-Type"].startswith("text/html")
    assert query(sim, "token", id="not-the-query").status_code == 404
    # Parameters are parsed, not matched by position.
    reordered = httpx.get(
        f"{sim.url}/manage/query/run?output=json&h={sim.user_token}&cmd=service&id={sim.query_id}"
    )
    assert reordered.status_code == 200


def test_since_filters_on_naive_local_time(sim: SlateSimulator, clock: FakeClock) -> None:
    clock.advance(3600)
    later = sim.add_person(first_name="Late", last_name="Comer")
    stamp = sim.person(later)["updated"]
    # 2025-01-06 13:00 UTC is 08:00 in New York: Slate writes the local time, naive.
    assert stamp == "2025-01-06T08:00:00"
    rows = query(sim, since=stamp).json()["row"]
    assert [r["slate_id"] for r in rows] == [later]
    assert query(sim, since="2025-01-06T08:00:01").json() == {"row": []}
    assert query(sim, since="yesterday").status_code == 500


def test_nulls_are_left_out_unless_included(clock: FakeClock) -> None:
    with SlateSimulator(clock=clock, include_nulls=True) as sim:
        sim.add_person(first_name="Only")
        row = query(sim).json()["row"][0]
        assert row["email"] is None and row["mainstay_id"] is None
    with SlateSimulator(clock=clock) as sim:
        sim.add_person(first_name="Only")
        assert "email" not in query(sim).json()["row"][0]


def test_an_upload_is_accepted_then_imported_later(clock: FakeClock) -> None:
    with SlateSimulator(clock=clock, processing_delay_seconds=900) as sim:
        csv = "mainstay_id,first_name,last_name\r\nhub-1,Ada,Lovelace\r\n"
        assert upload(sim, csv, auth=False).status_code == 401  # source formats need a user
        response = upload(sim, csv)
        assert (response.status_code, response.text) == (200, "OK")
        assert query(sim).json() == {"row": []}  # accepted, not imported
        clock.advance(900)
        rows = query(sim).json()["row"]
        assert [(r["mainstay_id"], r["first_name"]) for r in rows] == [("hub-1", "Ada")]
        # The same hub id again updates that person; blank cells leave values alone.
        upload(sim, "mainstay_id,first_name,last_name\r\nhub-1,,Byron\r\n")
        sim.process_pending()
        rows = query(sim).json()["row"]
        assert [(r["first_name"], r["last_name"]) for r in rows] == [("Ada", "Byron")]
        # A row naming an unknown Slate id goes to the import log, not into the data.
        upload(sim, "slate_id,first_name\r\nno-such-guid,X\r\n")
        sim.process_pending()
        assert "no person" in sim.state()["import_log"][-1]["error"]


def test_uploads_past_50_in_5_minutes_are_refused(sim: SlateSimulator, clock: FakeClock) -> None:
    csv = "mainstay_id,first_name\r\nhub-1,Ada\r\n"
    with httpx.Client() as client:  # one keep-alive connection for the 52 posts
        statuses = [upload(sim, csv, client=client).status_code for _ in range(50)]
        assert statuses == [200] * 50
        refused = upload(sim, csv, client=client)
        assert refused.status_code == 429 and "50 posts in a 5 minute window" in refused.text
        clock.advance(300)
        assert upload(sim, csv, client=client).status_code == 200


def test_sftp_files_matching_the_mask_are_processed_and_moved(
    sim: SlateSimulator, clock: FakeClock
) -> None:
    incoming, processed = sim.incoming, sim.processed
    (incoming / "mainstay_contact1.csv").write_text("mainstay_id,first_name\r\nh1,Ada\r\n")
    (incoming / "other.csv").write_text("mainstay_id,first_name\r\nh2,Bob\r\n")
    (incoming / ".mainstay_contact2.csv.abc.part").write_text("mainstay_id\r\nh3\r\n")
    (processed / "mainstay_contact1.csv").write_text("an older file of the same name")
    rows = query(sim).json()["row"]
    assert [r["first_name"] for r in rows if r.get("mainstay_id")] == ["Ada"]
    assert sorted(p.name for p in incoming.iterdir()) == [
        ".mainstay_contact2.csv.abc.part",
        "other.csv",
    ]
    # Overwritten, as Slate overwrites a same-named file in processed/.
    assert (processed / "mainstay_contact1.csv").read_text().startswith("mainstay_id")
    assert sim.state()["counters"]["files"] == 1


def test_sftp_scans_wait_for_the_interval(tmp_path: Path, clock: FakeClock) -> None:
    with SlateSimulator(
        clock=clock, sftp_root=tmp_path, scan_interval_seconds=3600, import_mask="mainstay*.csv"
    ) as sim:
        query(sim)  # the first scan: nothing there yet
        (sim.incoming / "mainstay_a.csv").write_text("mainstay_id,first_name\r\nh1,Ada\r\n")
        assert query(sim).json() == {"row": []}
        clock.advance(3600)
        assert len(query(sim).json()["row"]) == 1


def test_simulate_lists_every_knob_as_a_flag() -> None:
    from tests.clikit import listed_knobs

    listed_knobs("slate", SlateSimulator)
