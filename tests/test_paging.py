"""The paginator: every page until the token runs out, and never a loop on a stuck cursor."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from daemon.foundation.clock import Cancelled
from daemon.kit.connector import MalformedResponse
from daemon.kit.paging import pages, paginate


def pager(book: dict[object, tuple[Sequence[int], object]]):
    """A ``fetch_page`` over a dict of token -> (items, next token), recording its calls."""
    calls: list[object] = []

    def fetch(token):
        calls.append(token)
        return book[token]

    return fetch, calls


def test_all_items_of_all_pages():
    fetch, calls = pager({None: ([1, 2], "b"), "b": ([3], "c"), "c": ([4, 5], None)})
    assert list(paginate(fetch)) == [1, 2, 3, 4, 5]
    assert calls == [None, "b", "c"]


def test_pages_carry_the_token_to_checkpoint():
    fetch, _ = pager({None: ([1], "b"), "b": ([2], None)})
    assert list(pages(fetch)) == [([1], "b"), ([2], None)]


def test_starting_from_a_saved_token():
    fetch, calls = pager({"b": ([3], "c"), "c": ([4], None)})
    assert list(paginate(fetch, "b")) == [3, 4]
    assert calls == ["b", "c"]


def test_an_empty_string_token_ends_the_walk():
    fetch, _ = pager({None: ([1], "")})
    assert list(paginate(fetch)) == [1]


def test_a_cursor_that_does_not_advance_is_malformed():
    fetch, calls = pager({None: ([1], "b"), "b": ([2], "b")})
    with pytest.raises(MalformedResponse, match="did not advance"):
        list(paginate(fetch))
    assert calls == [None, "b"]


def test_a_cursor_that_cycles_back_is_malformed():
    fetch, _ = pager({None: ([1], "a"), "a": ([2], "b"), "b": ([3], "a")})
    items: list[int] = []
    with pytest.raises(MalformedResponse):
        items.extend(paginate(fetch))
    assert items == [1, 2, 3]  # what was read before the loop is still yielded


def test_a_cursor_pointing_back_at_the_start_is_malformed():
    fetch, _ = pager({"s": ([1], "s")})
    with pytest.raises(MalformedResponse):
        list(paginate(fetch, "s"))


def test_dict_tokens_are_compared_by_value():
    def fetch(token):
        offset = (token or {}).get("offset", 0)
        if offset >= 4:
            return [], {"offset": 2}  # the platform jumps back
        return [offset], {"offset": offset + 2}

    with pytest.raises(MalformedResponse):
        list(paginate(fetch))


def test_max_pages():
    def fetch(token):
        return [token or 0], (token or 0) + 1

    items: list[int] = []
    with pytest.raises(MalformedResponse, match="more than 3 pages"):
        items.extend(paginate(fetch, max_pages=3))
    assert items == [0, 1, 2]


def test_cancel_is_checked_between_pages():
    cancel = threading.Event()

    def fetch(token):
        cancel.set()
        return [1], "next"

    with pytest.raises(Cancelled):
        list(paginate(fetch, cancel=cancel))


def test_prefetch_keeps_order_raises_in_order_and_stops_when_abandoned():
    from daemon.kit.paging import prefetch

    assert list(prefetch(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        yield 2
        raise MalformedResponse("page 3 is garbage")

    got = []
    with pytest.raises(MalformedResponse, match="page 3"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1, 2]

    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the caller stops early: the producer thread must end, not run forever
    assert not [t for t in threading.enumerate() if t.name == "contactsync-prefetch"]
    assert len(produced) <= 5


def test_interleave_runs_sources_at_once_and_yields_every_page_once():
    import time

    from daemon.kit.paging import interleave

    started = []

    def slow(name: str, count: int):
        started.append(name)
        for i in range(count):
            time.sleep(0.01)
            yield f"{name}{i}"

    seen = list(interleave([slow("a", 5), slow("b", 3), slow("c", 0)]))
    assert sorted(item for _, item in seen) == sorted(
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    )
    # Each source's own pages keep their order, tagged with the source's index.
    assert [item for index, item in seen if index == 0] == [f"a{i}" for i in range(5)]
    assert {index for index, item in seen if item.startswith("b")} == {1}


def test_interleave_raises_the_first_error_and_stops_the_others():
    import threading

    from daemon.kit.paging import interleave

    def endless():
        n = 0
        while True:
            n += 1
            yield n

    def failing():
        yield 1
        raise ValueError("page 2 is malformed")

    with pytest.raises(ValueError, match="malformed"):
        for _ in interleave([endless(), failing()], depth=1):
            pass
    assert not [t for t in threading.enumerate() if t.name == "contactsync-prefetch"]
