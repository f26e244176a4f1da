"""Walking a platform's pages without trusting its cursors.

A connector describes one request as a :data:`FetchPage`: a function that takes the paging
token of the page to read (``None`` for the first page) and returns the page's items and the
token of the next page, ``None`` (or ``""``) when there is none::

    def fetch(token):
        params = {"after": token} if token else {}
        body = json_answer(session.get("/contacts", params=params), error_text)
        return body["results"], body.get("next")

    for items, next_token in pages(fetch):    # page by page, with the token to checkpoint
        ...
    for item in paginate(fetch):              # or item by item
        ...

The helpers call it until the platform stops sending a token. A token seen before means the
platform's cursor is not advancing, and following it would loop forever re-reading the same
records, so that is a :class:`MalformedResponse` instead. A token may be a string, a number
or a small dict (an offset with a filter); it is compared by value.

Nor is a page trusted to be the size asked for: with ``asked=100``, a page of more than 100
items (a platform that ignored the limit, or a hostile one sending 200,000) is a
:class:`MalformedResponse` before any of it is applied; :func:`check_page_size` is the same
check for a single request that is not walked with :func:`pages`.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

from daemon.foundation.clock import check_cancel
from daemon.kit.connector import MalformedResponse

Item = TypeVar("Item")
Token = Any  # a string, a number or a small dict; compared by value
FetchPage = Callable[[Token | None], tuple[Sequence[Item], Token | None]]
"""``fetch_page(token) -> (items, next_token)``: one request of a paged listing (see the
module docstring); ``next_token`` is ``None`` or ``""`` after the last page."""


def json_cursor(cursor: str | None, platform: str) -> dict[str, Any]:
    """A connector's JSON cursor as a dict (``{}`` for none). A cursor that is not a JSON
    object was not written by this connector: :class:`MalformedResponse`, naming ``platform``."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        raise MalformedResponse(f"not a {platform} cursor: {cursor[:40]!r}") from None
    if not isinstance(value, dict):
        raise MalformedResponse(f"not a {platform} cursor: {cursor[:40]!r}")
    return value


def check_page_size(items: Sequence[Item], asked: int | None, where: str = "a page") -> None:
    """:class:`MalformedResponse` when ``items`` holds more than ``asked`` (``None``: no limit
    was asked for). The message names the counts, never the items."""
    if asked is not None and len(items) > asked:
        raise MalformedResponse(
            f"{where}: {len(items):,} records when at most {asked:,} were asked for; page refused"
        )


def pages(
    fetch_page: FetchPage[Item],
    start: Token | None = None,
    *,
    max_pages: int | None = None,
    cancel: threading.Event | None = None,
    asked: int | None = None,
) -> Iterator[tuple[Sequence[Item], Token | None]]:
    """Yield ``(items, next_token)`` per page, from ``start`` until no next token comes.

    ``fetch_page`` is a :data:`FetchPage`; the first call gets ``start``. The next token is
    what a connector puts in its :class:`~daemon.kit.connector.Page` cursor, so a pull resumes
    after the last committed page. Raises
    :class:`MalformedResponse` when a token repeats, after ``max_pages`` pages or for a page
    of more than ``asked`` items (:func:`check_page_size`), and
    :class:`daemon.foundation.clock.Cancelled` between pages once ``cancel`` is set.
    """
    seen: set[Hashable] = set()
    token = start
    if token is not None:
        seen.add(_key(token))
    count = 0
    while True:
        check_cancel(cancel)
        items, next_token = fetch_page(token)
        count += 1
        check_page_size(items, asked, f"page {count}")
        yield items, next_token
        if next_token is None or next_token == "":
            return
        key = _key(next_token)
        if key in seen:
            raise MalformedResponse(
                f"the platform's paging cursor did not advance (page {count} pointed back to "
                "an earlier page); stopped to avoid an endless loop"
            )
        if max_pages is not None and count >= max_pages:
            raise MalformedResponse(f"more than {max_pages} pages; stopped")
        seen.add(key)
        token = next_token


def paginate(
    fetch_page: FetchPage[Item],
    start: Token | None = None,
    *,
    max_pages: int | None = None,
    cancel: threading.Event | None = None,
    asked: int | None = None,
) -> Iterator[Item]:
    """Yield every item of every page (see :func:`pages` for the arguments and the guards)."""
    for items, _ in pages(fetch_page, start, max_pages=max_pages, cancel=cancel, asked=asked):
        yield from items


def _key(token: Token) -> Hashable:
    if isinstance(token, Hashable):
        return (type(token).__name__, token)
    # A dict or list cursor (an offset plus a filter, say) is compared by its JSON text.
    return ("json", json.dumps(token, sort_keys=True, default=str))


T = TypeVar("T")
_DONE = object()


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Fetch the next pages in a background thread while the caller works on this one.

    Cursor-chained pages (each token comes from the previous answer) cannot be fetched in
    parallel, but fetching page N+1 while the engine applies page N hides the platform's
    latency behind the hub's work. At most ``depth`` pages wait in memory. An error in the
    source is raised in the caller, in order; a caller that stops early stops the thread.
    """
    for _, item in interleave([source], depth=depth):
        yield item


def interleave(sources: Sequence[Iterator[T]], depth: int = 2) -> Iterator[tuple[int, T]]:
    """Run several page sources at once, one thread each; yield ``(source index, page)`` in
    the order pages arrive.

    For platforms whose records can be split into independent ranges (ids, dates), this is
    what turns N latencies in a row into N at a time, while the connector's rate limiter
    keeps them within the platform's limit. At most ``depth`` pages per source wait in
    memory, so memory stays bounded by the page size. The first error in any source is
    raised in the caller; a caller that stops early (or an error) stops every thread.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth * len(sources)))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(index: int, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not put((index, item)):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, who decides
            put(_Raised(exc))

    workers = [
        threading.Thread(target=produce, args=(i, source), name="contactsync-prefetch", daemon=True)
        for i, source in enumerate(sources)
    ]
    for worker in workers:
        worker.start()
    running = len(workers)
    try:
        while running:
            item = slots.get()
            if item is _DONE:
                running -= 1
                continue
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=5)
