"""The overlap cursor: re-read a window before the newest change, yield only what changed.

Invariant: a record is skipped only when this very version of it (its :func:`fingerprint`)
was yielded before. Everything the cursor forgets (records older than the window, the oldest
past the cap, entries of an older cursor format) can only make a re-read record be yielded
again, which the engine tolerates; nothing it forgets can hide a change.

Platforms commit late (a long transaction stamps rows before the newest one already read; a
search index lags behind writes), so an incremental read must start a little before the
newest change it has seen: at :attr:`OverlapCursor.since`, the high-water mark less the
window. Records re-read inside the window are recognised by a ``seen`` map of record id to
fingerprint and are not yielded again, unless they changed.

- **High-water mark**: the newest ``(modified time, key)`` read (yielded or skipped: a read
  in time order has seen everything before it), where ``key`` is an optional tiebreak for
  platforms whose query is a keyset (``SystemModstamp, Id``). It moves only
  forward (:meth:`OverlapCursor.advance`), except by :meth:`OverlapCursor.rewind`, which a
  connector calls on purpose after a read that was not in time order.
- **Fingerprint**: ``"<modified ms>:<8 hex>"``; the hex is a 4-byte BLAKE2b of the record's
  fields as canonical JSON (sorted keys, ``str()`` for what JSON lacks), and a tombstone
  hashes differently from a live record with the same fields. The time keeps two versions
  with equal values apart (edited and edited back) and lets the map be pruned by time.
- **Bounded memory**: at every :meth:`~OverlapCursor.dump` the map drops records modified
  before the window (a query from :attr:`~OverlapCursor.since` does not read them again)
  and then keeps only the ``cap`` most recently modified. A forgotten record that is read
  again is yielded again: the safe failure. A cap smaller than the number of records
  changed within one window therefore means some re-reads are yielded again, never that a
  change is lost.
- **State**: :meth:`~OverlapCursor.dump` writes a JSON object
  ``{"v": 2, "ts": ms, "id": key, "seen": {id: fingerprint}, ...}`` plus the connector's own
  keys; :meth:`~OverlapCursor.load` also reads the cursors the HubSpot, Slate and Salesforce
  connectors wrote before this module existed (``"v": 1``). Their high-water mark is kept
  exactly (no full re-pull, no stall); their ``seen`` entries keep their time, so they are
  pruned as usual, but only HubSpot's hash is this one: a Slate or Salesforce record re-read
  in the first window after the upgrade is yielded once more.

A simple connector::

    def pull(self, cursor: str | None) -> Iterator[Page]:
        position = OverlapCursor.load(cursor, window=timedelta(minutes=5))
        for rows in self.fetch_changed_since(position.since):  # None: read everything
            records = [self.record(row) for row in rows]  # each with modified_at set
            yield Page(list(position.fresh(records)), position.dump())
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.kit.connector import MalformedResponse, RemoteRecord
from daemon.kit.paging import json_cursor

Key = int | str
"""A high-water mark's tiebreak: the record id, as the platform orders it (HubSpot's are
numbers, Salesforce's strings)."""

FORMAT = 2
"""The ``"v"`` :meth:`OverlapCursor.dump` writes; ``1`` (or none) is a connector's own older
format, read by :meth:`OverlapCursor.load`."""

DEFAULT_CAP = 5000
"""How many fingerprints a cursor keeps unless told otherwise (about 20 bytes each)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exactly (integer arithmetic, no float)."""
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return _EPOCH + ms * _MS


def fingerprint(record: RemoteRecord) -> str:
    """``"<modified ms>:<hash>"`` of one version of a record (see the module docstring).

    Raises ``ValueError`` for a record without ``modified_at``: the overlap cursor needs a
    time to re-read by and to prune by.
    """
    if record.modified_at is None:
        raise ValueError(f"record {record.remote_id!r} has no modified_at: the cursor needs one")
    values = json.dumps(dict(record.fields), sort_keys=True, default=str)
    if record.deleted:
        values = "deleted:" + values  # a tombstone differs from the live record it ends
    digest = hashlib.blake2b(values.encode(), digest_size=4).hexdigest()
    return f"{to_ms(record.modified_at)}:{digest}"


class OverlapCursor:
    """A high-water mark, an overlap window before it, and the fingerprints of the records
    yielded inside that window (module docstring: the invariant, the cap, the format).

    Build one with :meth:`load` (from the cursor text of the last page, or ``None``), read
    from :attr:`since`, pass each page's records through :meth:`fresh` (or one at a time
    through :meth:`read`), and checkpoint :meth:`dump` with the page.
    """

    __slots__ = ("_ms", "_window_ms", "cap", "key", "seen")

    def __init__(
        self,
        *,
        window: timedelta,
        cap: int = DEFAULT_CAP,
        high_water: datetime | None = None,
        key: Key | None = None,
        seen: Mapping[str, str] | None = None,
    ) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self._window_ms = to_ms(_EPOCH + window)
        self.cap = cap
        self._ms: int | None = to_ms(high_water) if high_water is not None else None
        self.key: Key | None = key
        """The high-water mark's tiebreak (``None``: none, or lower than any key)."""
        self.seen: dict[str, str] = dict(seen or {})
        """Record id → fingerprint of the version last yielded, inside the window."""

    # --- state ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        state: str | Mapping[str, Any] | None,
        *,
        window: timedelta,
        cap: int = DEFAULT_CAP,
        platform: str = "connector",
    ) -> OverlapCursor:
        """The cursor a page's cursor text (or its parsed JSON object) describes; an empty
        one for ``None``. Reads :data:`FORMAT` and the connectors' older formats; keys it
        does not know are left to the caller, who reads them from the same object.

        Raises :class:`~daemon.kit.connector.MalformedResponse` (naming ``platform``) for
        text that is not a JSON object, or whose ``ts`` is not a time.
        """
        raw = json_cursor(state, platform) if state is None or isinstance(state, str) else state
        try:
            ms = _legacy_ms(raw.get("ts"))
        except ValueError:
            raise MalformedResponse(f"not a {platform} cursor: ts {raw.get('ts')!r}") from None
        key = raw.get("id")
        if not isinstance(key, int | str) or isinstance(key, bool):
            key = None
        seen: dict[str, str] = {}
        stored = raw.get("seen")
        for record_id, mark in (stored if isinstance(stored, dict) else {}).items():
            upgraded = _legacy_mark(str(mark))
            if upgraded is not None:
                seen[str(record_id)] = upgraded
        cursor = cls(window=window, cap=cap, key=key, seen=seen)
        cursor._ms = ms
        return cursor

    def state(self, **extra: Any) -> dict[str, Any]:
        """The JSON-ready state, ``seen`` pruned and capped first, with ``extra`` (the
        connector's own keys, which must not be ``v``, ``ts``, ``id`` or ``seen``) added."""
        clash = {"v", "ts", "id", "seen"} & extra.keys()
        if clash:
            raise ValueError(f"the overlap cursor's own keys: {sorted(clash)}")
        self.prune()
        return {"v": FORMAT, "ts": self._ms, "id": self.key, **extra, "seen": self.seen}

    def dump(self, **extra: Any) -> str:
        """The cursor text to put in a :class:`~daemon.kit.connector.Page` (see
        :meth:`state`): compact JSON, read back by :meth:`load`."""
        return json.dumps(self.state(**extra), separators=(",", ":"))

    def prune(self) -> None:
        """Forget records modified before the window, then all but the ``cap`` most recently
        modified. :meth:`dump` calls it; a forgotten record read again is yielded again."""
        floor = None if self._ms is None else self._ms - self._window_ms
        if floor is not None:
            self.seen = {i: v for i, v in self.seen.items() if _mark_ms(v) >= floor}
        if len(self.seen) > self.cap:
            # Newest first; ties broken by id so that the same map always keeps the same ones.
            newest = sorted(self.seen.items(), key=lambda iv: (_mark_ms(iv[1]), iv[0]))
            self.seen = dict(newest[len(newest) - self.cap :])

    # --- the high-water mark -------------------------------------------------------------

    @property
    def high_water(self) -> datetime | None:
        """The newest modified time read (``None`` before the first record)."""
        return None if self._ms is None else from_ms(self._ms)

    @property
    def since(self) -> datetime | None:
        """Where the next read starts: the high-water mark less the window (``None``: read
        everything)."""
        return None if self._ms is None else from_ms(self._ms - self._window_ms)

    @property
    def window(self) -> timedelta:
        """How far before the high-water mark a read starts again."""
        return self._window_ms * _MS

    def advance(self, moment: datetime, key: Key | None = None) -> None:
        """Move the high-water mark to ``(moment, key)`` if that is later; never backwards."""
        ms = to_ms(moment)
        if self._ms is None or ms > self._ms:
            self._ms, self.key = ms, key
        elif ms == self._ms and key is not None and (self.key is None or key > self.key):
            self.key = key

    def rewind(self, moment: datetime) -> None:
        """Move the high-water mark back to ``moment`` if it is later, and clear the key.

        For a read that was not in time order (a first pull by id ranges): the changes made
        while it ran are only found by reading again from when it started. The ``seen`` map
        is kept, so the records it read and that did not change since are still skipped.
        """
        ms = to_ms(moment)
        if self._ms is not None and ms < self._ms:
            self._ms = ms
        self.key = None

    # --- records -------------------------------------------------------------------------

    def unchanged(self, record: RemoteRecord) -> bool:
        """Whether this very version of the record was yielded before (no side effect)."""
        return self.seen.get(record.remote_id) == fingerprint(record)

    def remember(self, record: RemoteRecord, key: Key | None = None) -> None:
        """Count ``record`` as yielded: advance past it and keep its fingerprint."""
        mark = fingerprint(record)
        assert record.modified_at is not None  # fingerprint() checked it
        self.advance(record.modified_at, key)
        self.seen[record.remote_id] = mark

    def read(self, record: RemoteRecord, key: Key | None = None) -> bool:
        """Advance past a record read; ``True`` (and remember it) if it must be yielded,
        ``False`` if this version was yielded before."""
        mark = fingerprint(record)
        assert record.modified_at is not None
        self.advance(record.modified_at, key)
        if self.seen.get(record.remote_id) == mark:
            return False  # re-read inside the window, unchanged
        self.seen[record.remote_id] = mark
        return True

    def fresh(
        self,
        records: Iterable[RemoteRecord],
        key: Callable[[RemoteRecord], Key] | None = None,
    ) -> Iterator[RemoteRecord]:
        """The records to yield, in order: each one read (:meth:`read`), those whose
        version was yielded before left out. ``key`` gives a record's tiebreak."""
        for record in records:
            if self.read(record, None if key is None else key(record)):
                yield record

    def __repr__(self) -> str:
        return (
            f"OverlapCursor(high_water={self.high_water!r}, key={self.key!r}, "
            f"window={self.window!r}, seen={len(self.seen)}, cap={self.cap})"
        )


def _mark_ms(mark: str) -> int:
    return int(mark.partition(":")[0])


def _legacy_ms(value: Any) -> int | None:
    """A stored ``ts``: epoch ms (this format, HubSpot's and Slate's), or Salesforce's SOQL
    datetime text (``2024-05-01T10:00:00Z``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return to_ms(_parse_time(text))


def _legacy_mark(mark: str) -> str | None:
    """A stored ``seen`` value in this format: ``ms:hash`` stays as it is (HubSpot's hash
    is this one; Slate's is longer, so it never matches and its record is yielded once
    more); Salesforce's ``<SOQL datetime>|<deleted>`` keeps its time, with a marker no
    fingerprint equals. ``None`` for what is neither: forgetting is the safe failure."""
    head, colon, _ = mark.partition(":")
    if colon and head.lstrip("-").isdigit():
        return mark
    stamp, bar, _ = mark.partition("|")
    if bar:
        try:
            return f"{to_ms(_parse_time(stamp))}:v1"
        except ValueError:
            return None
    return None


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


__all__ = ["DEFAULT_CAP", "FORMAT", "Key", "OverlapCursor", "fingerprint", "from_ms", "to_ms"]
