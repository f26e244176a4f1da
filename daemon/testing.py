"""The test kit for contactsync plugins: fixtures and the connector contract suite.

It is a pytest plugin (the ``pytest11`` entry point ``contactsync``), so once contactsync is
installed a plugin's tests get, with no import:

- ``cs_plugin_manager``: a plugin manager; ``.register(plugin)`` lasts for one test;
- ``cs_hub``: a temporary SQLite hub (a SQLAlchemy engine with the tables created);
- ``cs_logs``: the daemon's JSON logs captured (``.text``, ``.lines``);
- ``cs_clock``: a :class:`~daemon.sdk.FakeClock`, whose sleeps cost nothing (``.sleeps``
  lists them; ``.advance(seconds)`` moves time on);
- ``cs_notify_socket``: a fake systemd ``NOTIFY_SOCKET`` that records sd_notify messages.

And every connector proves it keeps the contract by subclassing :class:`ConnectorContract`
in a test module (the subclass's name starts with ``Test`` so pytest collects it)::

    from daemon.testing import ConnectorContract

    class TestAcmeContract(ConnectorContract):
        secrets = ["acme-test-key"]
        mapped_fields = ["first_name", "last_name", "phone"]
        page_size = 5

        def make_connector(self, *, bad_credentials=False): ...
        def seed_remote(self, count): ...
        def edit_remote(self, remote_id, fields): ...
        def push_fields(self, i): ...
        def inject(self, fault): ...

Each check is skipped, with the reason, when the connector's ``capabilities`` do not claim
what it tests; a failing check says in plain words what the connector did wrong.

The suite gives each check ``self.clock``, the test's ``cs_clock``; hand it to the connector
(``clock=self.clock``, which :class:`~daemon.sdk.ClientConnector` takes) and set
``uses_clock = True``, and retries and ``Retry-After`` waits cost nothing. There is no
``simulator`` fixture: a platform's simulator is the plugin's own, and the fixture is three
lines in the plugin's test module. Give the simulator the same ``cs_clock``, so its
modification times and latency follow the time the connector sees::

    @pytest.fixture
    def simulator(cs_clock):
        with AcmeSimulator(contacts=0, seed=42, clock=cs_clock) as sim:  # started, then stopped
            yield sim

    class TestAcmeContract(ConnectorContract):
        @pytest.fixture(autouse=True)
        def _platform(self, simulator):
            self.sim = simulator
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pluggy
import pytest
import structlog
from sqlalchemy import Engine

from daemon.engine.registry import get_plugin_manager, register_plugin
from daemon.foundation import log as daemon_log
from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.hub.database import make_engine
from daemon.kit.changes import WebhookRefused, WebhookRequest
from daemon.kit.connector import (
    AuthFailed,
    Connector,
    ConnectorError,
    MalformedResponse,
    PushItem,
    PushResult,
    PushStatus,
    RateLimited,
    RemoteRecord,
    Unavailable,
)

FAULTS = ("rate_limit", "server_error", "malformed", "reject")

# --- fixtures ---------------------------------------------------------------------------------


class TemporaryPlugins:
    """A plugin manager whose :meth:`register` lasts for one test (see ``cs_plugin_manager``)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._registered: list[object] = []

    def register(self, plugin: object, name: str | None = None) -> object:
        """Register ``plugin`` (a module or an object with ``@hookimpl`` methods) until the
        test ends; returns it, so ``plugin = cs_plugin_manager.register(MyPlugin())`` reads."""
        register_plugin(self.pm, plugin, name=name)
        self._registered.append(plugin)
        return plugin

    def unregister_all(self) -> None:
        """Remove every plugin :meth:`register` added, newest first."""
        while self._registered:
            plugin = self._registered.pop()
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)

    def registry(self) -> Any:
        """The :class:`daemon.engine.registry.Registry` of what the registered plugins provide."""
        from daemon.engine.registry import Registry

        return Registry.from_plugin_manager(self.pm)


@pytest.fixture
def cs_plugin_manager() -> Iterator[TemporaryPlugins]:
    """A plugin manager with the hookspecs and no installed plugins; ``.register(plugin)``
    adds one for this test only, ``.pm`` is the pluggy manager, ``.registry()`` the registry."""
    # No entry points: a test sees exactly the plugins it registers, whatever else is installed.
    plugins = TemporaryPlugins(get_plugin_manager(entry_points=False))
    yield plugins
    plugins.unregister_all()


@pytest.fixture
def cs_hub(tmp_path: Path) -> Iterator[Engine]:
    """A fresh hub in a temporary SQLite file, tables created; disposed afterwards."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cs-hub.db'}")
    yield engine
    engine.dispose()


class CapturedLogs:
    """What the daemon logged during a test, one JSON object per line."""

    def __init__(self, stream: StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        """Everything logged so far."""
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every line so far, parsed."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self) -> list[str]:
        """The ``event`` of every line, in order."""
        return [str(line.get("event")) for line in self.lines]

    def clear(self) -> None:
        """Forget what was captured so far."""
        self.stream.seek(0)
        self.stream.truncate()


@contextlib.contextmanager
def _captured_logs() -> Iterator[CapturedLogs]:
    # daemon.foundation.log.configure replaces the root handlers and structlog's configuration;
    # put the process's own back afterwards so the next test (and pytest's capture) is unaffected.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    stream = StringIO()
    daemon_log.configure(level="debug", stream=stream, json=True)
    try:
        yield CapturedLogs(stream)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**saved)


@pytest.fixture
def cs_logs() -> Iterator[CapturedLogs]:
    """The daemon's logging, at debug level in JSON, captured: ``.text`` and ``.lines``."""
    with _captured_logs() as logs:
        yield logs


@pytest.fixture
def cs_clock() -> FakeClock:
    """A :class:`~daemon.foundation.clock.FakeClock`: ``sleep`` advances time instantly and is
    recorded in ``.sleeps``, so a 60-second ``Retry-After`` costs a test nothing."""
    return FakeClock()


class NotifySocket:
    """A fake systemd notify socket: a unix datagram socket the daemon's sd_notify sends to."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def messages(self, timeout: float = 1.0) -> list[dict[str, str]]:
        """Messages received so far, each parsed into ``{"READY": "1", ...}``; waits up to
        ``timeout`` seconds for the first one when none is queued yet."""
        received: list[dict[str, str]] = []
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return received
            received.append(
                dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            )
            self.sock.settimeout(0.0)  # after the first, take only what is already queued

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@pytest.fixture
def cs_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """``NOTIFY_SOCKET`` pointing at a socket in ``tmp_path``; ``.messages(timeout)`` returns
    what the code under test sent (``[{"READY": "1", "STATUS": "..."}]``)."""
    path = str(tmp_path / "notify.sock")
    if len(path.encode()) > 100:  # sun_path holds about 108 bytes; pytest's tmp paths can be long
        path = f"/tmp/cs-notify-{uuid.uuid4().hex[:12]}.sock"
    notify = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield notify
    notify.close()


# --- the contract suite -----------------------------------------------------------------------


class ContractSetupError(Exception):
    """The contract subclass lacks something the suite needs (a method or an attribute)."""


def _version(record: RemoteRecord) -> tuple[Any, ...]:
    """What makes two yields of a record the same version (the ``Page`` docstring's
    "unchanged"): its values, its modification time and whether it is deleted."""
    values = json.dumps(dict(record.fields), sort_keys=True, default=str)
    return (values, record.modified_at, record.deleted)


def _unchanged_repeats(
    versions: dict[str, tuple[Any, ...]], records: Sequence[RemoteRecord]
) -> list[str]:
    """The ids in ``records`` yielded with the very version they were last yielded with
    (``versions``: id -> last version yielded, updated as the records are read)."""
    repeats = []
    for record in records:
        version = _version(record)
        if versions.get(record.remote_id) == version:
            repeats.append(record.remote_id)
        versions[record.remote_id] = version
    return sorted(set(repeats))


def _broken(message: str) -> NoReturn:
    # pytrace=False: the message is the whole story; a traceback into the suite adds nothing.
    pytest.fail(message, pytrace=False)


class ConnectorContract:
    """The checks every connector passes. Subclass it in a test module as ``Test<Name>``.

    The subclass provides:

    ``make_connector(self, *, bad_credentials: bool = False) -> Connector``
        A connector for a fresh (or reset) platform. The suite calls it once at the start
        of a check, before seeding anything; ``bad_credentials=True`` gives a connector whose
        credentials the platform refuses. Hand it ``self.clock`` (a
        :class:`~daemon.foundation.clock.FakeClock`) if it takes one, and set ``uses_clock = True``.
    ``seed_remote(self, count: int) -> list[str]``
        Create ``count`` records on the platform, as its users would; return their remote ids.
    ``edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None``
        Change one record on the platform, as a user would.
    ``push_fields(self, i: int) -> dict[str, Any]``
        The remote field values of pushed record number ``i`` (distinct for each ``i``).
    ``inject(self, fault: str) -> None``
        Make the platform misbehave once: ``"rate_limit"`` (the next request gets the
        platform's own rate-limit answer, say a 429 with ``Retry-After``), ``"server_error"``
        (the next request gets a 5xx), ``"malformed"`` (the next response body is garbage),
        ``"reject"`` (the platform refuses the next pushed record, and only that one).
    ``secrets: list[str]``
        Credential values that must never appear in logs or output.
    ``mapped_fields: list[str]``
        Remote fields an instance would map; ``describe()`` must list each.
    ``page_size: int``
        The connector's page size; the suite seeds ``page_size * 2 + 1`` records.
    ``confirm_pending(self) -> None``
        Only for ``capabilities.confirms_later``: have the platform process pending uploads.

    Optional:

    ``uses_clock: bool = False``
        ``make_connector`` wires ``self.clock`` into the connector; the rate-limit check then
        also asserts the connector waited on that clock before retrying.
    ``values_match(self, field, pushed, pulled) -> bool``
        Whether a pulled value is the pushed one (default ``==``); override for platforms
        that reformat values (phone numbers, dates).

    Secrets: the suite does not register ``secrets`` with the log redaction, so a connector
    that logs a credential fails here even though the daemon would mask a value it knows.
    Credentials a connector derives itself (access tokens, signed headers) must be passed to
    ``register_secret`` or never logged.
    """

    secrets: ClassVar[list[str]]
    mapped_fields: ClassVar[list[str]]
    page_size: ClassVar[int]
    uses_clock: ClassVar[bool] = False

    clock: FakeClock

    # --- what the subclass provides ---------------------------------------------------------

    def make_connector(self, *, bad_credentials: bool = False) -> Connector:
        """A connector for a fresh or reset platform (see the class docstring)."""
        raise ContractSetupError(self._missing("make_connector(self, *, bad_credentials=False)"))

    def seed_remote(self, count: int) -> list[str]:
        """Create ``count`` records on the platform; return their remote ids."""
        raise ContractSetupError(self._missing("seed_remote(self, count)"))

    def edit_remote(self, remote_id: str, fields: dict[str, Any]) -> None:
        """Change one record on the platform as a user would."""
        raise ContractSetupError(self._missing("edit_remote(self, remote_id, fields)"))

    def push_fields(self, i: int) -> dict[str, Any]:
        """The remote field values of pushed record number ``i``."""
        raise ContractSetupError(self._missing("push_fields(self, i)"))

    def inject(self, fault: str) -> None:
        """Make the platform misbehave once (``fault`` is one of :data:`FAULTS`)."""
        raise ContractSetupError(self._missing("inject(self, fault)"))

    def confirm_pending(self) -> None:
        """Have the platform process pending uploads (``confirms_later`` connectors only)."""
        raise ContractSetupError(
            self._missing("confirm_pending(self)", "its capabilities say confirms_later")
        )

    def webhook_for(self, remote_id: str, *, forged: bool = False) -> WebhookRequest:
        """Only for ``capabilities.webhooks``: the webhook the platform sends once
        ``remote_id`` changed, signed as the platform signs it for the connector's settings
        (``forged``: signed with another secret)."""
        raise ContractSetupError(
            self._missing("webhook_for(self, remote_id, *, forged=False)", "it takes webhooks")
        )

    def values_match(self, field: str, pushed: Any, pulled: Any) -> bool:
        """Whether ``pulled`` is the value that was pushed as ``pushed``."""
        return bool(pushed == pulled)

    def _missing(self, what: str, why: str = "the connector contract suite needs it") -> str:
        return (
            f"{type(self).__name__} must define {what}: {why} "
            "(see daemon.testing.ConnectorContract)"
        )

    # --- setup ------------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _cs_contract_setup(self, cs_clock: FakeClock) -> Iterator[None]:
        """Give each check a fresh clock, check the subclass's attributes, close connectors."""
        self.clock = cs_clock
        self._connectors: list[Connector] = []
        missing = [
            name for name in ("secrets", "mapped_fields", "page_size") if not hasattr(self, name)
        ]
        if missing:
            raise ContractSetupError(
                self._missing(", ".join(missing), "class attributes the contract suite reads")
            )
        if not isinstance(self.page_size, int) or self.page_size < 1:
            raise ContractSetupError(f"{type(self).__name__}.page_size must be a positive int")
        yield
        for connector in self._connectors:
            with contextlib.suppress(Exception):
                connector.close()

    def _connector(self, *, bad_credentials: bool = False) -> Connector:
        connector = self.make_connector(bad_credentials=bad_credentials)
        if not isinstance(connector, Connector):
            raise ContractSetupError(
                f"{type(self).__name__}.make_connector returned {connector!r}, not a Connector"
            )
        self._connectors.append(connector)
        return connector

    def _name(self, connector: Connector) -> str:
        return type(connector).__name__

    def _needs(self, connector: Connector, *capabilities: str) -> None:
        caps = connector.capabilities
        lacking = [c for c in capabilities if not getattr(caps, c)]
        if lacking:
            pytest.skip(f"{self._name(connector)} does not claim {', '.join(lacking)}")

    # --- helpers ----------------------------------------------------------------------------

    def _pull_pages(
        self, connector: Connector, cursor: str | None
    ) -> list[tuple[list[RemoteRecord], str | None]]:
        return [(list(page.records), page.cursor) for page in connector.pull(cursor)]

    def _pull_all(
        self, connector: Connector, cursor: str | None
    ) -> tuple[list[RemoteRecord], str | None]:
        """Every record of a pull, and the last cursor it gave (``cursor`` if none)."""
        records: list[RemoteRecord] = []
        final = cursor
        for page_records, page_cursor in self._pull_pages(connector, cursor):
            records.extend(page_records)
            if page_cursor is not None:
                final = page_cursor
        return records, final

    def _items(self, numbers: Sequence[int]) -> list[PushItem]:
        return [PushItem(f"contract-{i}", None, dict(self.push_fields(i))) for i in numbers]

    def _push(self, connector: Connector, items: Sequence[PushItem]) -> list[PushResult]:
        """Push ``items``; check there is one result per item; confirm pending ones."""
        results = connector.push(items)
        name = self._name(connector)
        got = sorted(r.contact_id for r in results)
        wanted = sorted(i.contact_id for i in items)
        if got != wanted:
            _broken(
                f"{name}.push() answered for contacts {got}, but was given {wanted}: "
                "push must return exactly one PushResult per item"
            )
        if any(r.status is PushStatus.PENDING for r in results):
            if not connector.capabilities.confirms_later:
                _broken(
                    f"{name}.push() returned PENDING results but its capabilities do not "
                    "claim confirms_later"
                )
            self.confirm_pending()
        return results

    def _by_contact(self, results: Sequence[PushResult]) -> dict[str, PushResult]:
        return {r.contact_id: r for r in results}

    def _matching(self, record: RemoteRecord, fields: Mapping[str, Any]) -> bool:
        return all(
            k in record.fields and self.values_match(k, v, record.fields[k])
            for k, v in fields.items()
        )

    # --- check and describe -----------------------------------------------------------------

    def test_check_passes(self) -> None:
        """``check()`` succeeds with good credentials."""
        connector = self._connector()
        try:
            connector.check()
        except ConnectorError as exc:
            _broken(
                f"{self._name(connector)}.check() failed with good credentials: "
                f"{type(exc).__name__} ({exc.code}): {exc}"
            )

    def test_check_refuses_bad_credentials(self) -> None:
        """``check()`` with credentials the platform refuses raises AuthFailed."""
        if not self.secrets:
            pytest.skip("the connector has no credentials (secrets is empty)")
        connector = self._connector(bad_credentials=True)
        name = self._name(connector)
        try:
            connector.check()
        except AuthFailed as exc:
            if exc.code != Code.REMOTE_AUTH_FAILED:
                _broken(f"{name}.check() raised AuthFailed with code {exc.code}")
            for n, secret in enumerate(self.secrets, 1):
                if secret in str(exc):
                    _broken(f"{name}.check()'s AuthFailed message shows secret #{n}")
        except Exception as exc:
            code = getattr(exc, "code", None)
            _broken(
                f"{name}.check() with bad credentials raised {type(exc).__name__} "
                f"(code {code}): {exc}; it must raise AuthFailed (code {Code.REMOTE_AUTH_FAILED})"
            )
        else:
            _broken(
                f"{name}.check() accepted bad credentials: it must raise AuthFailed "
                f"(code {Code.REMOTE_AUTH_FAILED})"
            )

    def test_describe_covers_mapped_fields(self) -> None:
        """``describe()`` lists every field an instance would map."""
        connector = self._connector()
        names = {f.name for f in connector.describe()}
        missing = [f for f in self.mapped_fields if f not in names]
        if missing:
            _broken(
                f"{self._name(connector)}.describe() does not list the mapped fields "
                f"{missing} (it lists {sorted(names)})"
            )

    def test_required_mappings_name_writable_catalogue_fields(self) -> None:
        """The fields ``required_mappings`` says the platform needs to create a record are
        fields ``describe()`` lists and that can be written: ``contactsync check`` compares
        them with the instance's mapping by these names, so a misspelt one fails every
        instance, or none."""
        connector = self._connector()
        self._needs(connector, "push", "create")
        needs = type(connector).required_mappings_for(connector.config)
        names = [
            n for group in needs.outgoing for n in ((group,) if isinstance(group, str) else group)
        ]
        if not names:
            pytest.skip("the connector declares no outgoing required_mappings")
        catalogue = {f.name: f for f in connector.describe()}
        if not catalogue:
            pytest.skip("describe() lists no fields to hold the declaration to")
        name = self._name(connector)
        unknown = [n for n in names if n not in catalogue]
        if unknown:
            _broken(
                f"{name}.required_mappings names {unknown}, which describe() does not list "
                f"(it lists {sorted(catalogue)})"
            )
        read_only = [n for n in names if catalogue[n].read_only]
        if read_only:
            _broken(f"{name}.required_mappings names read-only fields {read_only}")

    # --- pull -------------------------------------------------------------------------------

    def test_pull_pages_through_every_record_once(self) -> None:
        """``pull(None)`` over more than one page yields every record once, with cursors."""
        connector = self._connector()
        self._needs(connector, "pull")
        name = self._name(connector)
        count = self.page_size * 2 + 1
        seeded = self.seed_remote(count)
        pages = self._pull_pages(connector, None)
        nonempty = [p for p in pages if p[0]]
        if len(nonempty) < 2:
            _broken(
                f"{name}.pull(None) yielded {count} records in {len(nonempty)} page(s) with "
                f"page_size {self.page_size}: it must yield a page at a time"
            )
        records = [r for page_records, _ in pages for r in page_records]
        # Nothing changes on the platform during this pull: any record yielded twice is an
        # unchanged one yielded again.
        twice = _unchanged_repeats({}, records)
        if twice:
            _broken(f"{name}.pull(None) yielded {twice} more than once, unchanged")
        missing = sorted(set(seeded) - {r.remote_id for r in records})
        if missing:
            _broken(f"{name}.pull(None) did not yield the seeded records {missing}")
        without = [n for n, (_, cursor) in enumerate(pages, 1) if not cursor]
        if without:
            _broken(
                f"{name}.pull(None) yielded page(s) {without} without a cursor: every page "
                "carries the cursor to checkpoint after it"
            )

    def test_incremental_pull_yields_nothing_new(self) -> None:
        """``pull(final cursor)`` yields no unchanged record again (the ``Page`` rule: it may
        re-read a window, but what it re-reads unchanged it does not yield)."""
        connector = self._connector()
        self._needs(connector, "pull")
        self.seed_remote(self.page_size * 2 + 1)
        seen, final = self._pull_all(connector, None)
        if final is None:
            _broken(f"{self._name(connector)}.pull(None) gave no cursor to resume from")
        versions: dict[str, tuple[Any, ...]] = {}
        _unchanged_repeats(versions, seen)
        again, _ = self._pull_all(connector, final)
        repeated = _unchanged_repeats(versions, again)
        if repeated:
            _broken(
                f"{self._name(connector)}.pull(final cursor) yielded {len(repeated)} records "
                f"already seen, unchanged ({repeated[:5]}): the cursor does not advance, or "
                "re-reads a window without skipping what did not change"
            )

    def test_incremental_pull_yields_an_edited_record(self) -> None:
        """After a change on the platform, ``pull(final cursor)`` yields the changed record,
        and no other (unchanged) record again."""
        connector = self._connector()
        self._needs(connector, "pull")
        ids = self.seed_remote(self.page_size + 1)
        seen, final = self._pull_all(connector, None)
        versions: dict[str, tuple[Any, ...]] = {}
        _unchanged_repeats(versions, seen)
        changes = self.push_fields(999)
        self.edit_remote(ids[0], changes)
        again, _ = self._pull_all(connector, final)
        mine = [r for r in again if r.remote_id == ids[0]]
        if not mine:
            _broken(
                f"{self._name(connector)}.pull(final cursor) did not yield record {ids[0]} "
                "edited after that cursor: incremental pulls miss changes"
            )
        if not self._matching(mine[-1], changes):
            _broken(
                f"{self._name(connector)}.pull(final cursor) yielded record {ids[0]} without "
                f"its edit {sorted(changes)}"
            )
        # The edit moves the connector's newest change; a window re-read before it must
        # skip the records that did not change.
        repeated = _unchanged_repeats(versions, again)
        if repeated:
            _broken(
                f"{self._name(connector)}.pull(final cursor) yielded {len(repeated)} "
                f"unchanged records again ({repeated[:5]}) with the edited one: a re-read "
                "window must skip what did not change"
            )

    # --- push -------------------------------------------------------------------------------

    def test_push_then_pull_round_trips(self) -> None:
        """Two new records pushed come back from a pull with the values pushed."""
        connector = self._connector()
        self._needs(connector, "push", "create", "pull")
        name = self._name(connector)
        items = self._items([1, 2])
        results = self._by_contact(self._push(connector, items))
        refused = [
            r for r in results.values() if r.status not in (PushStatus.OK, PushStatus.PENDING)
        ]
        if refused:
            _broken(
                f"{name}.push() did not accept new records: "
                + "; ".join(f"{r.contact_id}: {r.status} {r.message}" for r in refused)
            )
        records, _ = self._pull_all(connector, None)
        for item in items:
            remote_id = results[item.contact_id].remote_id
            found = [r for r in records if r.remote_id == remote_id] if remote_id else []
            if not found:
                found = [r for r in records if self._matching(r, item.fields)]
            if not found:
                _broken(
                    f"{name}: record pushed for {item.contact_id} (remote id {remote_id}) "
                    "is not in the next pull"
                )
            if not self._matching(found[0], item.fields):
                pulled = {k: found[0].fields.get(k) for k in item.fields}
                _broken(
                    f"{name}: pushed {dict(item.fields)} for {item.contact_id} but pulled "
                    f"{pulled}: push then pull does not round-trip"
                )

    def test_push_twice_is_idempotent(self) -> None:
        """Pushing the same new records twice (a retry after a crash) creates them once."""
        connector = self._connector()
        self._needs(connector, "push", "create")
        name = self._name(connector)
        items = self._items([1, 2])
        first = self._by_contact(self._push(connector, items))
        if connector.capabilities.pull:
            after_first, _ = self._pull_all(connector, None)
        second = self._by_contact(self._push(connector, items))
        changed = [
            f"{c}: {first[c].remote_id} then {second[c].remote_id}"
            for c in first
            if first[c].remote_id
            and second[c].remote_id
            and first[c].remote_id != second[c].remote_id
        ]
        if changed:
            _broken(
                f"{name}.push() is not idempotent: pushing the same items twice gave new "
                f"remote ids ({'; '.join(changed)})"
            )
        if connector.capabilities.pull:
            after_second, _ = self._pull_all(connector, None)
            ids_first = sorted({r.remote_id for r in after_first if not r.deleted})
            ids_second = sorted({r.remote_id for r in after_second if not r.deleted})
            if ids_first != ids_second:
                _broken(
                    f"{name}.push() is not idempotent: pushing the same items twice left "
                    f"{len(ids_second)} records on the platform instead of {len(ids_first)}"
                )

    def test_a_rejected_record_fails_alone(self) -> None:
        """A record the platform refuses is REJECTED with its message; the others go through."""
        connector = self._connector()
        self._needs(connector, "push", "create")
        name = self._name(connector)
        self.inject("reject")
        results = self._push(connector, self._items([1, 2, 3]))
        rejected = [r for r in results if r.status is PushStatus.REJECTED]
        accepted = [r for r in results if r.status in (PushStatus.OK, PushStatus.PENDING)]
        if len(rejected) != 1 or len(accepted) != 2:
            _broken(
                f"{name}.push() after one record was refused answered "
                f"{sorted(str(r.status) for r in results)}: exactly one REJECTED and the "
                "others OK was expected (a per-record rejection fails that record only)"
            )
        if not rejected[0].message.strip():
            _broken(f"{name}.push() rejected a record without the platform's message")

    # --- faults -----------------------------------------------------------------------------

    def _exercise(self, connector: Connector) -> Any:
        """One pull (or, for a push-only connector, one push) through the connector."""
        if connector.capabilities.pull:
            return self._pull_all(connector, None)
        return self._push(connector, self._items([7]))

    def test_rate_limit_is_paced_and_retried(self) -> None:
        """After the platform's rate-limit answer, the call waits and succeeds."""
        connector = self._connector()
        name = self._name(connector)
        if connector.capabilities.pull:
            self.seed_remote(2)
        self.inject("rate_limit")
        try:
            self._exercise(connector)
        except RateLimited as exc:
            _broken(
                f"{name} gave up on one rate-limit answer ({exc}): it must wait as the "
                "platform says (Retry-After) and retry"
            )
        except Exception as exc:
            _broken(
                f"{name} raised {type(exc).__name__} on a rate-limit answer ({exc}): it must "
                "wait and retry, or raise RateLimited"
            )
        if self.uses_clock and not self.clock.sleeps:
            _broken(f"{name} retried after a rate-limit answer without waiting first")

    def test_server_error_is_transient(self) -> None:
        """A 5xx is retried or raised as Unavailable, never as another error."""
        connector = self._connector()
        if connector.capabilities.pull:
            self.seed_remote(2)
        self.inject("server_error")
        try:
            self._exercise(connector)
        except Unavailable:
            pass
        except Exception as exc:
            _broken(
                f"{self._name(connector)} raised {type(exc).__name__} "
                f"(code {getattr(exc, 'code', None)}) on a server error: it must retry or "
                f"raise Unavailable (code {Code.REMOTE_UNAVAILABLE}), a transient error"
            )

    def test_malformed_response_is_a_coded_error(self) -> None:
        """A garbage response body is MalformedResponse, not a KeyError or ValueError."""
        connector = self._connector()
        self._needs(connector, "pull")
        self.seed_remote(2)
        self.inject("malformed")
        try:
            self._pull_all(connector, None)
        except MalformedResponse as exc:
            if exc.code != Code.REMOTE_MALFORMED:
                _broken(f"{self._name(connector)} raised MalformedResponse with code {exc.code}")
        except Exception as exc:
            _broken(
                f"{self._name(connector)}.pull() raised {type(exc).__name__} on a garbage "
                f"response: it must raise MalformedResponse (code {Code.REMOTE_MALFORMED})"
            )
        else:
            _broken(f"{self._name(connector)}.pull() accepted a garbage response without error")

    # --- secrets ----------------------------------------------------------------------------

    def test_no_secret_in_logs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A full run (check, describe, pull, push, pull) logs and prints no secret."""
        with _captured_logs() as logs:
            connector = self._connector()
            caps = connector.capabilities
            connector.check()
            connector.describe()
            if caps.pull:
                ids = self.seed_remote(self.page_size + 1)
                _, final = self._pull_all(connector, None)
            if caps.push and caps.create:
                self._push(connector, self._items([1, 2]))
            if caps.pull:
                self.edit_remote(ids[0], self.push_fields(3))
                self._pull_all(connector, final)
        captured = capsys.readouterr()
        places = {"logs": logs.text, "stdout": captured.out, "stderr": captured.err}
        for n, secret in enumerate(self.secrets, 1):
            for where, text in places.items():
                if secret and secret in text:
                    lines = [line for line in text.splitlines() if secret in line]
                    shown = lines[0].replace(secret, "<SECRET>")[:300]
                    _broken(
                        f"{self._name(connector)} leaked secret #{n} of `secrets` into the "
                        f"{where} ({len(lines)} line(s)), e.g.: {shown}"
                    )

    # --- two-way truth and the first sync ----------------------------------------------------

    def test_read_shows_an_edit_made_on_the_platform(self) -> None:
        """``read(ids)`` answers the records as they are now, an edit included: the engine
        reads a push batch's linked records first, so a delayed push applies the conflict
        policy to a platform edit instead of overwriting it."""
        connector = self._connector()
        self._needs(connector, "reads_before_write")
        name = self._name(connector)
        ids = self.seed_remote(2)
        changes = self.push_fields(998)
        self.edit_remote(ids[0], changes)
        records = {r.remote_id: r for r in connector.read(ids)}
        missing = [i for i in ids if i not in records]
        if missing:
            _broken(f"{name}.read({ids}) did not answer {missing}: read must return each record")
        if not self._matching(records[ids[0]], changes):
            _broken(
                f"{name}.read() gave record {ids[0]} without its edit {sorted(changes)}: the "
                "engine would overwrite a newer platform value"
            )
        if connector.capabilities.modified_at and records[ids[0]].modified_at is None:
            _broken(f"{name}.read() gave no modified_at, though its capabilities claim it")

    def test_a_webhook_names_the_changed_record_and_a_forgery_is_refused(self) -> None:
        """``receive_webhook(settings, request)`` (``capabilities.webhooks``) turns the
        platform's webhook into hints naming the changed record, gives the daemon a key or a
        signing time to refuse replays with, and refuses a forged signature or a garbled body
        with ``WebhookRefused`` (never another exception, never the secret in its message)."""
        connector = self._connector()
        self._needs(connector, "webhooks")
        name = self._name(connector)
        ids = self.seed_remote(1)
        self.edit_remote(ids[0], self.push_fields(997))
        kind = type(connector)
        good = self.webhook_for(ids[0])
        delivery = kind.receive_webhook(connector.config, good)
        named = {i for hint in delivery.hints for i in hint.remote_ids}
        if ids[0] not in named and not any(h.everything for h in delivery.hints):
            _broken(f"{name}.receive_webhook() did not name the changed record {ids[0]}")
        if delivery.key is None and delivery.signed_at is None:
            _broken(f"{name}.receive_webhook() gave no key nor signing time: replays pass")
        forged = self.webhook_for(ids[0], forged=True)
        garbled = WebhookRequest(
            good.method, good.url, good.headers, b"\x00garbled", good.received_at
        )
        for what, request in (("a forged", forged), ("a garbled", garbled)):
            try:
                kind.receive_webhook(connector.config, request)
            except WebhookRefused as exc:
                for secret in self.secrets:
                    if secret and secret in exc.message:
                        _broken(f"{name} quoted a secret refusing {what} webhook")
            else:
                _broken(f"{name}.receive_webhook() accepted {what} webhook")

    def test_lookup_finds_the_records_the_platform_holds(self) -> None:
        """``lookup(items)`` finds the records the platform already holds for unlinked items
        (by its own key, such as an email) and nothing for the others, so a first sync links
        instead of creating duplicates."""
        connector = self._connector()
        self._needs(connector, "looks_up", "push", "create")
        name = self._name(connector)
        held = self._items([11, 12])
        results = self._by_contact(self._push(connector, held))
        absent = self._items([13])
        found = connector.lookup([*held, *absent])
        for item in held:
            remote_id = results[item.contact_id].remote_id
            if not any(r.remote_id == remote_id for r in found):
                _broken(
                    f"{name}.lookup() did not find record {remote_id} pushed for "
                    f"{item.contact_id}: a first sync would create it twice"
                )
        if any(self._matching(r, absent[0].fields) for r in found):
            _broken(f"{name}.lookup() found a record for an item the platform never held")

    # --- platforms that confirm later -------------------------------------------------------

    def test_pending_push_is_confirmed(self) -> None:
        """A push the platform confirms later is PENDING with a handle, then shows in a pull."""
        connector = self._connector()
        self._needs(connector, "confirms_later", "push", "create")
        name = self._name(connector)
        items = self._items([1, 2])
        results = connector.push(items)
        for result in results:
            if result.status is not PushStatus.PENDING or not result.handle:
                _broken(
                    f"{name}.push() answered {result.status} (handle {result.handle!r}) for "
                    f"{result.contact_id}: a platform that confirms later answers PENDING "
                    "with a handle"
                )
        self.confirm_pending()
        if connector.capabilities.pull:
            records, _ = self._pull_all(connector, None)
            for item in items:
                if not any(self._matching(r, item.fields) for r in records):
                    _broken(
                        f"{name}: the pending push for {item.contact_id} was never confirmed: "
                        "it is not in a pull after confirm_pending()"
                    )


__all__ = [
    "FAULTS",
    "CapturedLogs",
    "ConnectorContract",
    "ContractSetupError",
    "NotifySocket",
    "TemporaryPlugins",
]
