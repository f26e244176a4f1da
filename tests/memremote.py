"""A platform in memory, and the connector that talks to it: the engine's test double.

The remote is real enough to catch engine bugs: it keeps records with modification ticks,
pages through them by a (tick, id) cursor, creates idempotently by the hub id (as a
connector upserting on an external-id field would), keeps deletes, and can be told to reject
records or fail whole calls. For the connector contract suite (tests/test_contract_memory.py)
it also checks an API key when given one, and misbehaves once on request (``next_fault``),
the way an HTTP platform would: a rate-limit answer, a 5xx, a garbage body, a refused record.
With the ``persist`` setting it lives in a JSON file, written
atomically after every change, so it survives a process killed mid-push (tests/test_crash.py).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from daemon.foundation.clock import SYSTEM_CLOCK, Clock
from daemon.foundation.log import get_logger
from daemon.kit.connector import (
    AuthFailed,
    Capabilities,
    Connector,
    ConnectorConfig,
    MalformedResponse,
    Page,
    PushItem,
    PushResult,
    PushStatus,
    RateLimited,
    RemoteField,
    RemoteRecord,
    Unavailable,
)

log = get_logger("contactsync.memory")

FAULTS = ("rate_limit", "server_error", "malformed", "reject")


def _now() -> datetime:
    return datetime.now(UTC)


CATALOGUE = [
    RemoteField("FirstName", required=True),
    RemoteField("LastName", required=True),
    RemoteField("Phone"),
    RemoteField("Email", unique=False),
    RemoteField("StudentId"),
    RemoteField("ClassYear"),
    RemoteField("Status"),
    RemoteField("CreatedBy", read_only=True),
]


@dataclass
class RemoteRow:
    """One record on the fake platform."""

    id: str
    fields: dict[str, Any]
    tick: int
    deleted: bool = False
    created_for: str | None = None
    modified: datetime = field(default_factory=_now)

    def touch(self, tick: int) -> None:
        self.tick = tick
        self.modified = _now()


@dataclass
class MemoryRemote:
    """The fake platform's state."""

    rows: dict[str, RemoteRow] = field(default_factory=dict)
    ticks: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    reject: Callable[[PushItem], str | None] = lambda item: None
    fail_pull: Exception | None = None
    fail_push: Exception | None = None
    push_calls: int = 0
    pushed_items: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The key the platform accepts; ``None`` accepts any (what the engine tests rely on).
    api_key: str | None = None
    # One misbehaviour for the next call that can show it (see FAULTS); then it is spent.
    next_fault: str | None = None
    # The wait the platform asks for in its rate-limit answer (a Retry-After, in seconds).
    retry_after: float = 30.0

    def take_fault(self, *kinds: str) -> str | None:
        """The pending fault if it is one of ``kinds`` (it is then spent), else ``None``."""
        with self.lock:
            if self.next_fault in kinds:
                fault, self.next_fault = self.next_fault, None
                return fault
            return None

    def add(self, **fields: Any) -> str:
        """Create a record as a platform user would."""
        with self.lock:
            rid = f"R{next(self.ids):06d}"
            self.rows[rid] = RemoteRow(rid, dict(fields), next(self.ticks))
            return rid

    def edit(self, rid: str, **fields: Any) -> None:
        """Change a record as a platform user would."""
        with self.lock:
            row = self.rows[rid]
            row.fields.update(fields)
            row.touch(next(self.ticks))

    def delete(self, rid: str) -> None:
        with self.lock:
            row = self.rows[rid]
            row.deleted = True
            row.touch(next(self.ticks))

    def live(self) -> list[RemoteRow]:
        return [r for r in self.rows.values() if not r.deleted]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the records to ``path`` atomically (a temporary file, then a rename): a
        process killed at any moment leaves the old file or the new one, never half of one.
        The caller holds :attr:`lock` or is the remote's only user."""
        data = {
            "rows": [
                {
                    "id": r.id,
                    "fields": r.fields,
                    "tick": r.tick,
                    "deleted": r.deleted,
                    "created_for": r.created_for,
                    "modified": r.modified.isoformat(),
                }
                for r in self.rows.values()
            ]
        }
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, target)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the records with those :meth:`save` wrote to ``path`` (if it exists); ticks
        and ids continue after the highest saved ones, as the platform's own counters would.
        Hooks (``reject``, ``fail_*``) and call counts stay as they are."""
        target = Path(path)
        if not target.exists():
            return
        data = json.loads(target.read_text(encoding="utf-8"))
        self.rows = {
            r["id"]: RemoteRow(
                r["id"],
                r["fields"],
                r["tick"],
                r["deleted"],
                r["created_for"],
                datetime.fromisoformat(r["modified"]),
            )
            for r in data["rows"]
        }
        # Every tick ever handed out is some row's tick or below it, and ids only grow.
        last_tick = max((r.tick for r in self.rows.values()), default=0)
        last_id = max((int(rid[1:]) for rid in self.rows if rid[1:].isdigit()), default=0)
        self.ticks = itertools.count(last_tick + 1)
        self.ids = itertools.count(last_id + 1)


class MemoryConfig(ConnectorConfig):
    """Settings of the memory connector: which remote, and its page size."""

    remote: str = "default"
    page_size: int = 3
    api_key: SecretStr | None = None
    # A JSON file the remote lives in, so that it survives a killed process (crash tests).
    persist: str | None = None
    fail_check: bool = False


class MemoryConnector(Connector):
    """A connector for :class:`MemoryRemote`."""

    type = "memory"
    Config = MemoryConfig
    capabilities = Capabilities(deletes=True)
    REMOTES: ClassVar[dict[str, MemoryRemote]] = {}
    # Waits (a rate-limit answer's) go through this clock; tests set a FakeClock.
    clock: Clock = SYSTEM_CLOCK

    @property
    def remote(self) -> MemoryRemote:
        return self.REMOTES.setdefault(self.config.remote, MemoryRemote())  # type: ignore[attr-defined]

    def check(self) -> None:
        """Refuse the credentials when the settings say ``fail_check``. The message quotes
        the key, as a careless connector's might, so tests prove the CLI redacts it."""
        if self.config.fail_check:  # type: ignore[attr-defined]
            key = self.config.api_key  # type: ignore[attr-defined]
            shown = key.get_secret_value() if key else "(none)"
            raise AuthFailed(f"401 the platform refused API key {shown}")
        self._request(faults=False)

    def _request(self, *, faults: bool = True) -> str | None:
        """One request to the platform, as an HTTP connector makes it: the key is checked,
        a rate-limit answer is waited out once (its Retry-After, on :attr:`clock`) and
        retried, a 5xx is :class:`Unavailable`. Returns a fault for the caller to act on
        (``"malformed"`` or ``"reject"``), or ``None``."""
        expected = self.remote.api_key
        if expected is not None:
            key = self.config.api_key  # type: ignore[attr-defined]
            if key is None or key.get_secret_value() != expected:
                raise AuthFailed("401 the platform refused the API key")
        if not faults:
            return None
        for attempt in (1, 2):
            fault = self.remote.take_fault("rate_limit", "server_error")
            if fault == "server_error":
                raise Unavailable("HTTP 503 from the platform")
            if fault != "rate_limit":
                break
            wait = self.remote.retry_after
            if attempt == 2:
                raise RateLimited("HTTP 429 twice", retry_after=wait)
            log.warning("memory_rate_limited", retry_after=wait, attempt=attempt)
            self.clock.sleep(wait)
        return self.remote.take_fault("malformed", "reject")

    def describe(self) -> list[RemoteField]:
        return list(CATALOGUE)

    def _load(self) -> None:
        """With ``persist``, read the remote's state as the last process left it."""
        if self.config.persist:  # type: ignore[attr-defined]
            with self.remote.lock:
                self.remote.load(self.config.persist)  # type: ignore[attr-defined]

    def _save(self) -> None:
        """With ``persist``, write the remote's state after a change (lock held)."""
        if self.config.persist:  # type: ignore[attr-defined]
            self.remote.save(self.config.persist)  # type: ignore[attr-defined]

    def pull(self, cursor: str | None) -> Iterator[Page]:
        self._load()
        if self.remote.fail_pull is not None:
            raise self.remote.fail_pull
        fault = self._request()
        after = tuple(json.loads(cursor)) if cursor else (0, "")
        with self.remote.lock:
            rows = sorted(
                (r for r in self.remote.rows.values() if (r.tick, r.id) > after),
                key=lambda r: (r.tick, r.id),
            )
            snapshot: Any = [(r.id, dict(r.fields), r.tick, r.deleted, r.modified) for r in rows]
        if fault == "malformed":
            snapshot = "<html>502 Bad Gateway</html>"  # what a proxy in front may send
        if not isinstance(snapshot, list):
            raise MalformedResponse("the platform's answer is not a list of records")
        log.debug("memory_pull", remote=self.config.remote, records=len(snapshot))  # type: ignore[attr-defined]
        size = self.config.page_size  # type: ignore[attr-defined]
        for start in range(0, len(snapshot), size):
            chunk = snapshot[start : start + size]
            records = [
                RemoteRecord(rid, fields, modified, deleted)
                for rid, fields, _tick, deleted, modified in chunk
            ]
            last = chunk[-1]
            yield Page(records, json.dumps([last[2], last[0]]))

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        self._load()
        remote = self.remote
        if remote.fail_push is not None:
            raise remote.fail_push
        fault = self._request()
        if fault == "malformed":
            raise MalformedResponse("the platform's answer to a push is not JSON")
        remote.push_calls += 1
        results = []
        with remote.lock:
            for item in batch:
                remote.pushed_items += 1
                problem = remote.reject(item)
                if fault == "reject":
                    fault = None  # the platform refuses this one record only
                    problem = "INVALID_FIELD_VALUE: the platform refused this record"
                if problem:
                    results.append(
                        PushResult(item.contact_id, PushStatus.REJECTED, message=problem)
                    )
                    continue
                if item.remote_id is None:
                    existing = next(
                        (r for r in remote.rows.values() if r.created_for == item.contact_id),
                        None,
                    )
                    if existing is None:
                        rid = f"R{next(remote.ids):06d}"
                        existing = RemoteRow(rid, {}, 0, created_for=item.contact_id)
                        remote.rows[rid] = existing
                    row = existing
                else:
                    row = remote.rows.get(item.remote_id)
                    if row is None or row.deleted:
                        results.append(
                            PushResult(
                                item.contact_id, PushStatus.REJECTED, message="ENTITY_IS_DELETED"
                            )
                        )
                        continue
                row.fields.update(item.fields)
                row.touch(next(remote.ticks))
                self._save()  # each write is durable on its own, as on a real platform
                results.append(PushResult(item.contact_id, PushStatus.OK, remote_id=row.id))
        return results
