"""The kit's overlap cursor: its invariant under random streams, and the cursors of old.

The property test plays a platform against a connector built on the cursor the way the
plugins use it: records edited at a coarse clock (so many share a timestamp), some committed
late (stamped up to a window in the past), pulls that re-read from ``since`` in
``(modified, id)`` order, cut into pages of random sizes, checkpointed after every page,
sometimes stopped (a crash: the next pull starts from the last checkpoint) and sometimes
reloaded from the checkpoint text between pages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kit.cursor import FORMAT, OverlapCursor, fingerprint
from daemon.sdk import MalformedResponse, RemoteRecord
from daemon.sdk import OverlapCursor as PublicOverlapCursor

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=1)  # the platform's clock step: coarse, so timestamps tie


def record(rid: str, at: datetime, deleted: bool = False, **fields: object) -> RemoteRecord:
    return RemoteRecord(rid, fields, at, deleted=deleted)


# --- the property test ---------------------------------------------------------------------

Version = tuple[int, int]  # (modified tick, value)


@dataclass
class Platform:
    """Records as id -> (modified tick, value); ``now`` in ticks."""

    now: int = 0
    rows: dict[str, Version] = field(default_factory=dict)

    def changed_since(self, since: datetime | None) -> list[RemoteRecord]:
        """Rows stamped at or after ``since``, in ``(modified, id)`` order."""
        out = [
            RemoteRecord(rid, {"value": value}, T0 + tick * TICK)
            for rid, (tick, value) in self.rows.items()
            if since is None or T0 + tick * TICK >= since
        ]
        return sorted(out, key=lambda r: (r.modified_at, int(r.remote_id)))


def version_of(r: RemoteRecord) -> Version:
    assert r.modified_at is not None
    return ((r.modified_at - T0) // TICK, r.fields["value"])


edits = st.tuples(
    st.just("edit"),
    st.integers(0, 5).map(str),  # the record
    st.integers(0, 2),  # its new value (often the same as before)
    st.integers(0, 6),  # how late it commits, in ticks (capped to the window below)
)
ticks = st.tuples(st.just("tick"), st.integers(0, 3))
pulls = st.tuples(
    st.just("pull"),
    st.lists(st.integers(1, 4), min_size=1, max_size=8),  # page sizes, cycled
    st.one_of(st.none(), st.integers(0, 3)),  # stop (crash) after this many pages
    st.booleans(),  # reload the cursor from its text between pages
)


@settings(max_examples=300, deadline=None)
@given(
    window_ticks=st.integers(0, 6),
    cap=st.integers(1, 10),
    ops=st.lists(st.one_of(edits, ticks, pulls), max_size=40),
)
def test_the_cursor_loses_no_change_and_repeats_nothing_unchanged(
    window_ticks: int, cap: int, ops: list[tuple]
) -> None:
    window = window_ticks * TICK
    platform = Platform()
    checkpoint: str | None = None
    last_yielded: dict[str, Version] = {}  # what the hub has, per record
    roomy = cap >= 6  # every record fits in the seen map: no re-yield is excusable

    def pull(sizes: list[int], stop: int | None, reload: bool) -> bool:
        """One pull from the checkpoint; True if it ran to the end."""
        nonlocal checkpoint
        cursor = OverlapCursor.load(checkpoint, window=window, cap=cap)
        mark = cursor.high_water
        rows = platform.changed_since(cursor.since)
        start, pages = 0, 0
        while start < len(rows) or pages == 0:
            if stop is not None and pages >= stop:
                return False  # crashed: what was checkpointed stays
            size = sizes[pages % len(sizes)]
            page = list(cursor.fresh(rows[start : start + size], key=lambda r: int(r.remote_id)))
            start += size
            pages += 1
            checkpoint = cursor.dump()  # committed with the page
            assert len(cursor.seen) <= cap
            if mark is not None:
                assert cursor.high_water is not None and cursor.high_water >= mark
            mark = cursor.high_water
            for r in page:
                if roomy:
                    assert last_yielded.get(r.remote_id) != version_of(r), (
                        f"record {r.remote_id} yielded again, unchanged"
                    )
                last_yielded[r.remote_id] = version_of(r)
            if reload:
                cursor = OverlapCursor.load(checkpoint, window=window, cap=cap)
        return True

    for op in ops:
        if op[0] == "edit":
            _, rid, value, late = op
            # A late commit lands stamped in the past, but never further than the window:
            # the window is how late the platform promises its commits can be.
            platform.rows[rid] = (max(0, platform.now - min(late, window_ticks)), value)
        elif op[0] == "tick":
            platform.now += op[1]
        elif pull(*op[1:]):
            # A pull that ran to the end has yielded every change made before it.
            assert last_yielded == platform.rows
    assert pull([3], None, False)
    assert last_yielded == platform.rows


def test_the_example_in_the_module_docstring_works_through_the_sdk() -> None:
    assert PublicOverlapCursor is OverlapCursor
    position = OverlapCursor.load(None, window=timedelta(minutes=5))
    assert position.since is None  # nothing read yet: read everything
    records = [record("1", T0, first="Ada"), record("2", T0, first="Bo")]
    state = position.dump()
    first = list(position.fresh(records))
    state = position.dump()
    again = OverlapCursor.load(state, window=timedelta(minutes=5))
    assert again.since == T0 - timedelta(minutes=5)
    edited = [record("1", T0, first="Ada"), record("2", T0 + TICK, first="Bob")]
    assert [r.remote_id for r in first] == ["1", "2"]
    assert [r.fields for r in again.fresh(edited)] == [{"first": "Bob"}]


# --- the rules, one at a time --------------------------------------------------------------


def test_the_fingerprint_changes_with_values_time_and_deletion_but_not_key_order() -> None:
    base = fingerprint(record("1", T0, a=1, b="x"))
    assert fingerprint(RemoteRecord("1", {"b": "x", "a": 1}, T0)) == base
    assert fingerprint(record("1", T0, a=2, b="x")) != base
    assert fingerprint(record("1", T0 + timedelta(milliseconds=1), a=1, b="x")) != base
    assert fingerprint(record("1", T0)) != fingerprint(record("1", T0, deleted=True))
    with pytest.raises(ValueError, match="modified_at"):
        fingerprint(RemoteRecord("1", {}))


def test_the_high_water_mark_breaks_ties_by_key_and_never_goes_back() -> None:
    cursor = OverlapCursor(window=timedelta(0))
    cursor.advance(T0, 5)
    cursor.advance(T0, 3)
    assert (cursor.high_water, cursor.key) == (T0, 5)
    cursor.advance(T0, 9)
    assert cursor.key == 9
    cursor.advance(T0 - TICK, 99)
    assert (cursor.high_water, cursor.key) == (T0, 9)
    cursor.rewind(T0 - TICK)  # on purpose only
    assert (cursor.high_water, cursor.key) == (T0 - TICK, None)
    cursor.rewind(T0)  # rewinding forward is no move
    assert cursor.high_water == T0 - TICK


def test_dump_prunes_to_the_window_then_keeps_the_newest_up_to_the_cap() -> None:
    cursor = OverlapCursor(window=timedelta(seconds=10), cap=3)
    for n in range(6):  # records stamped T0, T0+5s, … T0+25s
        assert cursor.read(record(str(n), T0 + n * 5 * TICK, v=n))
    state = json.loads(cursor.dump(mode="search"))
    # The window keeps 15s..25s (>= 25s - 10s); the cap would keep three anyway.
    assert sorted(state["seen"]) == ["3", "4", "5"]
    assert state["mode"] == "search" and state["v"] == FORMAT
    cursor = OverlapCursor(window=timedelta(hours=1), cap=2)
    for n in range(4):
        cursor.read(record(str(n), T0 + n * TICK, v=n))
    assert sorted(json.loads(cursor.dump())["seen"]) == ["2", "3"]
    # Forgotten ("0") is yielded again if re-read; remembered ("3") is not.
    assert cursor.read(record("0", T0, v=0))
    assert not cursor.read(record("3", T0 + 3 * TICK, v=3))


def test_the_connector_keys_go_round_and_cannot_shadow_the_cursor() -> None:
    cursor = OverlapCursor(window=TICK)
    cursor.remember(record("7", T0, v=1), "7")
    raw = json.loads(cursor.dump(job="750x", skip=4))
    loaded = OverlapCursor.load(raw, window=TICK)
    assert (raw["job"], raw["skip"]) == ("750x", 4)
    assert (loaded.high_water, loaded.key, loaded.seen) == (T0, "7", cursor.seen)
    with pytest.raises(ValueError, match="own keys"):
        cursor.dump(seen={})


def test_text_that_is_not_a_cursor_is_a_malformed_response() -> None:
    with pytest.raises(MalformedResponse, match="not a Acme cursor"):
        OverlapCursor.load("[1, 2]", window=TICK, platform="Acme")
    with pytest.raises(MalformedResponse, match="ts 'yesterday'"):
        OverlapCursor.load('{"ts": "yesterday"}', window=TICK, platform="Acme")


# --- the cursors the connectors wrote before the kit had one --------------------------------
# Each text below is what main's plugins/<name>/connector.py dumped (its _Position.dump) after
# yielding two records: "101"/"003A" at T0 and "102"/"003B" one second later.

T0_MS = 1736164800000
HUBSPOT_V1 = (
    '{"v":1,"mode":"search","ts":1736164801000,"id":102,'
    '"seen":{"102":"1736164801000:229c428f","101":"1736164800000:36f6e5cc"}}'
)
SLATE_V1 = (
    '{"v":1,"ts":1736164801000,'
    '"seen":{"102":"1736164801000:54366711fa1d","101":"1736164800000:5ed362d8a519"}}'
)
SALESFORCE_V1 = (
    '{"v":1,"ts":"2025-01-06T12:00:01Z","id":"003B",'
    '"seen":{"003B":"2025-01-06T12:00:01Z|1","003A":"2025-01-06T12:00:00Z|0"}}'
)
A = record("101", T0, email="a@x.org", firstname="Ada")
B = record("102", T0 + TICK, email="b@x.org", firstname="Bo")


def test_an_old_hubspot_cursor_keeps_its_mark_and_its_seen_map() -> None:
    cursor = OverlapCursor.load(HUBSPOT_V1, window=timedelta(minutes=5))
    assert (cursor.high_water, cursor.key) == (T0 + TICK, 102)  # no re-pull from the start
    assert cursor.since == T0 + TICK - timedelta(minutes=5)
    # HubSpot's fingerprint is the kit's: re-read unchanged, neither is yielded again.
    assert list(cursor.fresh([A, B])) == []
    edited = record("101", T0 + 2 * TICK, email="a@x.org", firstname="Ada L.")
    assert list(cursor.fresh([edited])) == [edited]
    assert json.loads(cursor.dump(mode="search"))["v"] == FORMAT


def test_an_old_slate_cursor_keeps_its_mark_and_yields_its_window_once_more() -> None:
    cursor = OverlapCursor.load(SLATE_V1, window=timedelta(minutes=10))
    assert cursor.high_water == T0 + TICK and cursor.key is None
    assert cursor.since == T0 + TICK - timedelta(minutes=10)
    # Slate hashed differently: the rows of the first window are yielded once more (the
    # safe failure), then recognised.
    assert [r.remote_id for r in cursor.fresh([A, B])] == ["101", "102"]
    again = OverlapCursor.load(cursor.dump(), window=timedelta(minutes=10))
    assert list(again.fresh([A, B])) == []


def test_an_old_salesforce_cursor_keeps_its_keyset_and_prunes_its_seen_map_by_time() -> None:
    cursor = OverlapCursor.load(SALESFORCE_V1, window=timedelta(minutes=5))
    assert (cursor.high_water, cursor.key) == (T0 + TICK, "003B")
    assert cursor.since == T0 + TICK - timedelta(minutes=5)
    # The old entries keep their times: ten minutes on, both are out of the window.
    assert {int(v.partition(":")[0]) for v in cursor.seen.values()} == {T0_MS, T0_MS + 1000}
    cursor.advance(T0 + timedelta(minutes=10))
    assert json.loads(cursor.dump())["seen"] == {}
    sf = record("003A", T0, Email="a@x.org")
    fresh = OverlapCursor.load(SALESFORCE_V1, window=timedelta(minutes=5))
    assert list(fresh.fresh([sf])) == [sf]  # yielded once more, then recognised
    assert list(fresh.fresh([sf])) == []
