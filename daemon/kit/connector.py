"""The connector contract: what a platform plugin implements.

A connector speaks one platform's protocol and nothing else. The engine owns the rules, the
links, the outbox and the checkpoints; the connector only turns pages of the platform's records
into :class:`RemoteRecord` objects and pushes batches of :class:`PushItem` back. The shape
follows the Singer SDK and the Airbyte CDK: a typed config, declared capabilities, a field
catalogue, a pull that yields pages with the cursor to checkpoint after each, and a push that
answers per record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from threading import Event
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from daemon.foundation.clock import Clock, SystemClock
from daemon.foundation.dictionary import Code
from daemon.kit.changes import DEFAULT_MAX_AGE, ChangeHint, WebhookDelivery, WebhookRequest


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One record as the platform has it.

    ``fields`` maps remote field names to the platform's raw values; a field that is absent
    was not sent, ``None`` or ``""`` is blank, ``"UNSET"`` clears. ``modified_at`` is the
    platform's modification time (aware, UTC), or ``None`` where it has none (files, Slate).
    A record with ``deleted`` set was removed on the platform; the engine leaves a tombstone.
    """

    remote_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    modified_at: datetime | None = None
    deleted: bool = False
    merged_from: tuple[str, ...] = ()  # ids this record absorbed (merges): their links move here
    # Where the record came from, for its sync-log rows (a file's {"file": …, "row": 12}).
    source: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of records and the cursor to checkpoint once they are committed.

    The engine commits each page with its cursor in one transaction and hands the last
    committed cursor to the next ``pull``. The cursor is opaque to the engine (a connector
    usually stores JSON in it). A ``pull`` page whose cursor is ``None`` checkpoints no
    cursor, so the next pull starts from the beginning (in ``scan_deletes``, ``None`` keeps
    the previous checkpoint).

    Pulling again from a cursor must yield every record that changed since, and no
    unchanged record again: a connector may re-read inside its window (platforms commit
    late) as long as it yields no unchanged record again. A record is unchanged when its
    ``fields``, ``modified_at`` and ``deleted`` are those it was last yielded with.
    :class:`~daemon.kit.cursor.OverlapCursor` keeps this rule; ``ConnectorContract``
    (``daemon.testing``) checks it.

    Forgetting is the allowed failure, missing a change is not: a cursor with bounded memory
    that re-yields an unchanged record it no longer remembers is tolerated by the engine (a
    re-read page changes nothing), but the contract suite, whose data fits in any cursor's
    memory, holds a connector to the rule.
    """

    records: Sequence[RemoteRecord]
    cursor: str | None


class PushStatus(StrEnum):
    """How the platform answered one pushed record."""

    OK = "ok"
    REJECTED = "rejected"  # the platform refused the data: retried later, then parked
    TRANSIENT = "transient"  # try again soon (a 5xx, a timeout, a lock)
    PENDING = "pending"  # accepted; confirmed later (file uploads, async imports)


@dataclass(frozen=True, slots=True)
class PushItem:
    """One contact to send: its hub id, its linked remote id (``None`` to create), and the
    values of the fields to write, already in the platform's field names and forms."""

    contact_id: str
    remote_id: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PushResult:
    """The platform's answer for one :class:`PushItem`.

    ``message`` is the platform's own words for a rejection; ``handle`` identifies a pending
    write so a later pull can confirm it.
    """

    contact_id: str
    status: PushStatus
    remote_id: str | None = None
    message: str = ""
    code: Code | None = None
    handle: str | None = None
    # The write found a record the platform already held (an upsert that matched): the
    # contact is linked to it, not created there.
    existed: bool = False


@dataclass(frozen=True, slots=True)
class RemoteField:
    """One field of the platform's catalogue, as ``describe()`` reports it."""

    name: str
    label: str = ""
    type: str = "string"
    required: bool = False  # needed to create a record
    read_only: bool = False  # cannot be written (so never mapped outgoing)
    unique: bool = False  # the platform keys records on it (e.g. HubSpot's email)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a connector can do; the engine and the contract suite read these."""

    pull: bool = True
    push: bool = True
    create: bool = True
    deletes: bool = False
    modified_at: bool = True
    confirms_later: bool = False
    # push() may run in several threads at once (one batch each): the engine then keeps up
    # to the instance's ``push_concurrency`` batches in flight, so latency overlaps.
    concurrent_push: bool = False
    # lookup() finds the records the platform already holds for unlinked items (by its own
    # key, such as an email), so a first push links them instead of creating duplicates.
    looks_up: bool = False
    # read() returns linked records by id, so a push first applies the conflict policy to
    # what changed on the platform since the last exchange, whatever the order of cycles.
    reads_before_write: bool = False
    # receive_webhook() verifies the platform's signed webhooks and names the records that
    # changed; the daemon serves POST /webhooks/<instance> for the instance (daemon.kit.changes).
    webhooks: bool = False
    # stream() holds a change stream open (Salesforce CDC) and emits a hint per event, with
    # a position the daemon checkpoints once the pull it woke has committed.
    streams: bool = False


FieldGroup = str | tuple[str, ...]
"""A field an instance must map, or a tuple of fields any one of which will do."""


@dataclass(frozen=True, slots=True)
class RequiredMappings:
    """The fields an instance must map so that records can be created, per direction.

    - ``incoming``: hub fields (``first_name``, ``custom:Class Year``) a pull needs mapped
      incoming, beyond the hub's own needs to create a contact (first name, last name and
      phone), which ``contactsync check`` asks of every pulling instance anyway;
    - ``outgoing``: the platform's field names (as :meth:`Connector.describe` spells them)
      the platform needs to create a record, asked of an instance that pushes and may create
      (``create_remote``); whichever hub field feeds one counts.

    Each entry is one field, or a tuple of fields any one of which is enough
    (``("email", "firstname", "lastname")``). ``check`` fails naming the direction and the
    fields an instance leaves unmapped; loading does not refuse the file, because such an
    instance still updates the records it links, and each record it cannot create gets its
    own sync-log row.
    """

    incoming: tuple[FieldGroup, ...] = ()
    outgoing: tuple[FieldGroup, ...] = ()

    @staticmethod
    def missing(groups: Sequence[FieldGroup], mapped: set[str]) -> list[tuple[str, ...]]:
        """The groups of which ``mapped`` holds no field, each as a tuple of names."""
        out = []
        for group in groups:
            names = (group,) if isinstance(group, str) else tuple(group)
            if not mapped.intersection(names):
                out.append(names)
        return out


class ConnectorConfig(BaseModel):
    """Base of every connector's ``Config``: unknown keys are errors, secrets are SecretStr."""

    model_config = ConfigDict(extra="forbid")


class ConnectorError(Exception):
    """A failure of the platform or of the conversation with it, with a dictionary code.

    ``retry_after`` (seconds) says when trying again makes sense; the engine stops the cycle
    and backs the instance off until then.
    """

    code: ClassVar[Code] = Code.REMOTE_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class AuthFailed(ConnectorError):
    """The platform refused the credentials."""

    code = Code.REMOTE_AUTH_FAILED


class RateLimited(ConnectorError):
    """A rate limit or a daily quota ran out."""

    code = Code.REMOTE_RATE_LIMITED


class Unavailable(ConnectorError):
    """The platform could not be reached, or answered with a server error."""

    code = Code.REMOTE_UNAVAILABLE


class MalformedResponse(ConnectorError):
    """The platform sent something that could not be understood."""

    code = Code.REMOTE_MALFORMED


@dataclass
class ConnectorContext:
    """What the daemon hands a connector with its config (as ``self.context``).

    - ``instance``: the instance's name (the instance file's stem), for logs and messages;
    - ``state``: a JSON-able dict kept in the hub per instance, for what must survive
      restarts but never belongs in config (a rotated refresh token). Change it in place:
      the engine saves it after every cycle that built the connector, except a dry run;
    - ``dry_run``: read, but change nothing on the platform (not even move a file). In a
      dry run the engine never calls ``push``; a ``pull`` with side effects on the platform
      (a queue that deletes what it passes) must avoid them itself;
    - :meth:`report`: write a sync-log row for a problem that belongs to no single record.

    Tests build one by hand: ``ConnectorContext("acme-test")``.
    """

    instance: str
    state: dict[str, Any] = field(default_factory=dict)
    # Writes one sync-log row; the engine sets it (not in a dry run, where report() is a no-op).
    reporter: Callable[[Code, str, dict[str, Any]], None] | None = None
    # A dry run: read, but change nothing on the platform either (a file connector then
    # neither moves nor deletes files).
    dry_run: bool = False

    def report(self, code: Code, message: str, **details: Any) -> None:
        """Record a problem that belongs to no single record (a file that cannot be read,
        a broken row) in the sync log, with ``details`` such as ``file`` and ``row``."""
        if self.reporter is not None:
            self.reporter(code, message, details)


class Connector:
    """Base class of every connector. Subclasses set ``type``, ``Config``,
    ``capabilities`` and, where the platform needs fields to create a record,
    ``required_mappings``, and implement the methods their capabilities promise.

    The engine builds one per cycle, ``Connector(config, context)``, with the instance's
    validated ``[settings]`` (secrets resolved into ``SecretStr``) and a
    :class:`ConnectorContext`; both are kept as ``self.config`` and ``self.context``. It calls
    :meth:`close` once at the end of the cycle, whatever happened.
    """

    type: ClassVar[str] = ""
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    capabilities: ClassVar[Capabilities] = Capabilities()
    # What an instance must map for records to be created; see RequiredMappings.
    required_mappings: ClassVar[RequiredMappings] = RequiredMappings()
    # The hub fields an unlinked record is matched on, in order, when the instance file sets
    # no ``match_on``: the keys this platform's records carry reliably.
    match_on: ClassVar[tuple[str, ...]] = ("crm_id", "email", "phone")
    # With ``capabilities.webhooks``: how old a signed request may be, and what the operator
    # subscribes to on the platform (``contactsync webhooks INSTANCE`` prints it).
    webhook_max_age: ClassVar[timedelta] = DEFAULT_MAX_AGE
    webhook_subscriptions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ConnectorConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def required_mappings_for(cls, settings: Any) -> RequiredMappings:
        """What an instance with these validated ``settings`` must map: the class's
        :attr:`required_mappings`, unless a subclass knows that its settings change what the
        platform needs (HubSpot creating by email or not)."""
        return cls.required_mappings

    def check(self) -> None:
        """Prove the credentials and the connection work; raise :class:`ConnectorError`."""

    def describe(self) -> list[RemoteField]:
        """The platform's field catalogue, with required and read-only fields."""
        return []

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Yield pages of records changed since ``cursor`` (``None``: everything).

        Each :class:`Page` is committed with its cursor before the next is asked for, so a
        generator may do work between pages that must follow a commit. A dry run pulls too
        (it reads); see :attr:`ConnectorContext.dry_run`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not pull")

    def scan_deletes(self, cursor: str | None) -> Iterator[Page]:
        """Yield pages of ``deleted=True`` records removed since ``cursor``, for platforms
        whose changes feed does not report deletes (the engine runs this on the instance's
        ``schedule.deletes``). The default finds none: deletes arrive with ``pull``."""
        return iter(())

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """Write ``batch``; answer once per item (a :class:`PushResult`), in any order.

        A record the platform refuses fails alone (``REJECTED`` with the platform's words);
        a failure of the whole call raises :class:`ConnectorError`. A dry run never calls
        ``push``. With ``capabilities.concurrent_push`` it may run in several threads at once.
        """
        raise NotImplementedError(f"{type(self).__name__} does not push")

    def lookup(self, batch: Sequence[PushItem]) -> list[RemoteRecord]:
        """The records the platform already holds for these unlinked items, found by the
        platform's own key for a person (an email), as a pull would yield them; read only.

        The engine calls it before a push would create anything (with
        ``capabilities.looks_up``) and links what it finds through the incoming matching
        rules, so a first sync never duplicates a person the platform already has. Items
        without the key are simply not looked up.
        """
        raise NotImplementedError(f"{type(self).__name__} does not look records up")

    def read(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The current state of these records, as a pull would yield them (a deleted one
        with ``deleted=True`` or absent); read only.

        With ``capabilities.reads_before_write`` the engine reads a push batch's linked
        records first and settles, by the instance's conflict policy, any field changed on
        the platform since the last exchange, so a delayed push never overwrites a newer
        platform edit. One request per batch is the expected cost.
        """
        raise NotImplementedError(f"{type(self).__name__} does not read records by id")

    @classmethod
    def streams_for(cls, settings: Any) -> bool:
        """Whether an instance with these ``settings`` holds a change stream open: the
        capability, unless a setting turns it on or off (Colleague's
        ``consume_interval_seconds``)."""
        return cls.capabilities.streams

    @classmethod
    def webhook_subscriptions_for(cls, settings: Any) -> list[str]:
        """What the operator subscribes to on the platform for an instance with these
        ``settings`` (``contactsync webhooks INSTANCE`` prints it): :attr:`webhook_subscriptions`
        unless the settings change it (HubSpot: one propertyChange per property read)."""
        return list(cls.webhook_subscriptions)

    @classmethod
    def receive_webhook(cls, settings: Any, request: WebhookRequest) -> WebhookDelivery:
        """Verify one webhook of the platform and say what changed (``capabilities.webhooks``).

        :param settings: the instance's validated ``[settings]`` (the app's secret is there);
            a classmethod, so no client is built per request.
        :param request: the request as received, raw body included.
        :returns: a :class:`~daemon.kit.changes.WebhookDelivery`: the hints, the time the
            platform signed the request and a key unique to this request. The daemon refuses
            one older than :attr:`webhook_max_age` and a key it has seen; the connector checks
            only what is the platform's own (the signature, the body's shape).
        :raises WebhookRefused: a signature that does not match, a body that is not the
            platform's event format. Never quote the secret or the body in the message.

        A delivery is a hint, never data: the daemon reads the named records with
        :meth:`read` and pulls them through the engine like any pull, so nothing in a
        webhook's body is written to the hub. Duplicate and out-of-order events are harmless.
        """
        raise NotImplementedError(f"{cls.__name__} takes no webhooks")

    def stream(self, position: str | None, emit: Callable[[ChangeHint], None], stop: Event) -> None:
        """Hold the platform's change stream open (``capabilities.streams``) until ``stop``.

        :param position: the last checkpointed position (a replay id), ``None`` at first: the
            stream resumes after it, so nothing between a stop and a restart is missed.
        :param emit: call with one :class:`~daemon.kit.changes.ChangeHint` per event (or per
            batch of events), its ``position`` being the stream's position after them. The
            daemon checkpoints a position only after the targeted pull serving every hint up
            to it has committed.
        :param stop: set when the daemon stops or the instance changes: return soon.

        Raise :class:`ConnectorError` when the stream breaks; the daemon calls ``stream``
        again, on a fresh connector, after a back-off, from the last checkpoint. The
        connector is built for the stream alone, as for a cycle, and closed after it.
        """
        raise NotImplementedError(f"{type(self).__name__} holds no change stream")

    def close(self) -> None:
        """Release connections; called once when the instance stops."""


class ClientConnector(Connector):
    """Base of connectors that talk to their platform through a client of their own.

    Its constructor, ``(config, context, *, clock=None, retry=None, transport=None)``, takes
    the seams that tests and benchmarks use, so that no connector repeats them, and sets:

    - ``self.settings``: the config, checked to be the connector's own ``Config`` (else
      ``TypeError``), typed for the subclass's reading (``self.config`` is the same object);
    - ``self.clock``: the clock for waits and token expiry (``None``: the system clock; the
      contract suite passes its fake clock);
    - ``self.retry``: a :class:`~daemon.kit.http.RetryPolicy`, or ``None``; ``None`` given
      means the class attribute :attr:`retry_policy`, and where that is ``None`` too,
      :class:`~daemon.kit.http.HttpSession` uses its default policy;
    - ``self.transport``: an ``httpx`` transport (a mock) or ``None`` for the network;
    - ``self.context``: the :class:`ConnectorContext`.

    A subclass then builds its client from these in its own ``__init__``::

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            client = make_client(self.settings.base_url, transport=self.transport)
            self.session = HttpSession(client, retry=self.retry, clock=self.clock)
    """

    retry_policy: ClassVar[Any] = None

    def __init__(
        self,
        config: ConnectorConfig,
        context: ConnectorContext,
        *,
        clock: Clock | None = None,
        retry: Any = None,
        transport: Any = None,
    ) -> None:
        super().__init__(config, context)
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}")
        self.settings: Any = config
        self.clock: Clock = clock or SystemClock()
        self.retry = retry if retry is not None else self.retry_policy
        self.transport = transport
