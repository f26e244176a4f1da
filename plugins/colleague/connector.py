"""The Ellucian Colleague connector: persons v12 through Ethos Integration.

Pull:

- the first pull takes the change-notification checkpoint **before** it walks the persons: it
  reads the application's queue to its end (those messages describe changes the walk is about
  to read anyway) and keeps the last id. Then it walks ``GET /api/persons`` by offset, once per
  role of the scope, several pages in flight at once, yielding them in order. A person changed
  while the walk runs is published after the checkpoint, so the next step sees it: nothing
  changed during the walk is lost, at the price of reading it twice;
- every later pull consumes change notifications with ``lastProcessedID`` as the cursor. Ethos
  deletes the messages up to the id a call names, for good, so each page of messages is yielded
  with its last id as its cursor and the next ``/consume`` (which deletes them) is sent only
  when the engine asks for the next page, that is after it committed this one and its cursor.
  A crash before the commit re-reads from the old checkpoint, whose messages are still queued.
  That is also why the consume is never prefetched, and why a dry run reads one page only
  (the first ``/consume`` names the committed checkpoint, so it deletes nothing new).

Scope: ``roles`` (Colleague's person roles; ``[]`` for every person) filters the walk with
``criteria`` and the notifications by the person they carry, so staff and vendors never become
contacts.

Push: read the person, change only the mapped outgoing fields in its ``names``, ``emails`` and
``phones``, and PUT back each array it changed whole (Colleague replaces an array it is sent),
so writing the mobile number keeps the home number. Unlinked contacts are matched by email
before one is created, so a retried create finds the person it made.

The remote id is the Colleague person id (the ``colleaguePersonId`` credential), the id people
and other feeds know; the Ethos GUID is looked up when needed.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from threading import Event
from typing import Any, ClassVar, TypeVar

import phonenumbers
from pydantic import Field, field_validator

from daemon.sdk import (
    Capabilities,
    ChangeHint,
    ClientConnector,
    Code,
    ConnectorConfig,
    MalformedResponse,
    Page,
    PlatformUrl,
    PushItem,
    PushResult,
    PushStatus,
    RemoteField,
    RemoteRecord,
    RequiredMappings,
    RetryPolicy,
    SecretStr,
    Unavailable,
    get_logger,
    json_cursor,
)
from plugins.colleague.client import MAX_CONSUME_LIMIT, EthosClient, error_message

log = get_logger("contactsync.colleague")

FIRST, LAST, EMAIL, PHONE, COLLEAGUE_ID = (
    "firstName",
    "lastName",
    "email",
    "phone",
    "colleaguePersonId",
)
FIELDS = (FIRST, LAST, EMAIL, PHONE, COLLEAGUE_ID)
BLANK = (None, "", "UNSET")
RETRY = RetryPolicy(attempts=5, backoff_base=0.5, backoff_max=10.0, max_retry_after=60.0)
T = TypeVar("T")


class ColleagueConfig(ConnectorConfig):
    """The ``[settings]`` of a ``colleague`` instance file."""

    base_url: PlatformUrl = "https://integrate.elluciancloud.com"  # .ca, .ie, .com.au by region
    api_key: SecretStr  # the Ethos application's API key: one application per instance
    # The scope: persons holding any of these Colleague roles ([]: every person).
    roles: list[str] = Field(default_factory=lambda: ["student", "prospectiveStudent"])
    page_size: int = Field(default=500, ge=1, le=1000)  # clamped to x-max-page-size
    concurrency: int = Field(default=4, ge=1, le=16)  # pages or persons in flight at once
    # Persons each walk page re-reads from the page before (see _offset_pages).
    walk_overlap: int = Field(default=10, ge=0, le=100)
    consume_limit: int = Field(default=MAX_CONSUME_LIMIT, ge=1, le=MAX_CONSUME_LIMIT)
    match_by_email: bool = True  # an unlinked contact updates the person with its email
    token_margin_seconds: float = Field(default=60.0, ge=0)
    # Seconds between looks at the notification queue (HEAD /consume, one request, deleting
    # nothing) that wake the pull when something waits; None: the pull's schedule alone.
    consume_interval_seconds: float | None = Field(default=None, ge=1, le=3600)

    @field_validator("roles")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(r.strip() for r in value if r.strip()))


class _Cursor:
    """Where a pull stands. ``mode`` is ``walk`` (the initial listing: ``role`` index and
    ``offset``) or ``consume``; ``cn`` is the last change-notification id whose changes are
    committed (taken before the walk), the next ``lastProcessedID``."""

    def __init__(self, text: str | None) -> None:
        raw = json_cursor(text, "Colleague")
        if text and raw.get("mode") not in ("walk", "consume"):
            raise MalformedResponse(f"not a Colleague cursor: {text[:40]!r}")
        self.fresh = not raw
        self.mode: str = str(raw.get("mode") or "walk")
        self.cn: int = int(raw.get("cn") or 0)
        self.role: int = int(raw.get("role") or 0)
        self.offset: int = int(raw.get("offset") or 0)

    def dump(self) -> str:
        raw: dict[str, Any] = {"v": 1, "mode": self.mode, "cn": self.cn}
        if self.mode == "walk":
            raw.update(role=self.role, offset=self.offset)
        return json.dumps(raw, separators=(",", ":"))


class ColleagueConnector(ClientConnector):
    """Two-way contact sync with Ellucian Colleague's persons, through Ethos Integration."""

    type: ClassVar[str] = "colleague"
    Config: ClassVar[type[ConnectorConfig]] = ColleagueConfig
    retry_policy: ClassVar[RetryPolicy] = RETRY
    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=True,
        push=True,
        create=True,
        deletes=True,
        modified_at=False,
        concurrent_push=True,  # push() keeps no state between calls
        # With consume_interval_seconds: a look at the queue every few seconds wakes the pull.
        streams=True,
    )
    # A person is created with a legal name, which needs a last name (names[].fullName is
    # required; push builds it from the first and last names).
    required_mappings: ClassVar[RequiredMappings] = RequiredMappings(outgoing=(LAST,))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config: ColleagueConfig = self.settings
        context = self.context
        self.client = EthosClient(
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value(),
            state=context.state,
            clock=self.clock,
            retry=self.retry,
            token_margin_seconds=config.token_margin_seconds,
            transport=self.transport,
        )
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="colleague")

    # --- check and describe -------------------------------------------------------------------

    def check(self) -> None:
        """A token, one person and the queue's length (``HEAD /consume``, which deletes
        nothing) prove the URL, the API key and both permissions."""
        self.client.list_persons(0, 1, self._criteria(0))
        log.info("colleague_queue", remaining=self.client.queue_remaining())

    def describe(self) -> list[RemoteField]:
        """The fields this connector reads from and writes to a person."""
        return [
            RemoteField(FIRST, "First name (preferred, else legal name)"),
            RemoteField(LAST, "Last name", required=True),
            RemoteField(EMAIL, "Primary email", unique=True),
            RemoteField(PHONE, "Mobile phone, else the primary phone", type="phone"),
            RemoteField(COLLEAGUE_ID, "Colleague person id", read_only=True, unique=True),
        ]

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Pages of persons changed since ``cursor``; see the module docstring."""
        pos = _Cursor(cursor)
        if pos.fresh:
            # The checkpoint comes first: whatever is queued now is older than the walk.
            # (Not in a dry run: reading the queue to its end deletes what it passes.)
            if not self.context.dry_run:
                pos.cn = self._queue_end()
            yield Page([], pos.dump())
        if pos.mode == "walk":
            yield from self._walk(pos)
        yield from self._consume(pos)

    def _queue_end(self) -> int:
        """Read the queue to its end and return the last message id (0 if it is empty).

        Each call deletes the messages before the id it names: they are all older than the
        walk about to start, which reads the persons as they are now.
        """
        last = 0
        while True:
            messages, remaining = self.client.consume(last, self.settings.consume_limit)
            if messages:
                last = max(last, max(_message_id(m) for m in messages))
            if not messages or remaining <= 0:
                return last

    def _criteria(self, role_index: int) -> str | None:
        roles = self.settings.roles
        if not roles:
            return None
        return json.dumps({"roles": [{"role": roles[role_index]}]}, separators=(",", ":"))

    def _walk(self, pos: _Cursor) -> Iterator[Page]:
        """The initial listing, role by role, resumable at the cursor's role and offset."""
        roles = self.settings.roles or [""]
        while pos.role < len(roles):
            earlier = set(self.settings.roles[: pos.role])
            for persons, next_offset in self._offset_pages(self._criteria(pos.role), pos.offset):
                records = []
                for person in persons:
                    # A person holding two roles of the scope was yielded with the first.
                    if earlier and earlier & _roles(person):
                        continue
                    record = self._record(person)
                    if record is not None:
                        records.append(record)
                if next_offset is None:
                    pos.role, pos.offset = pos.role + 1, 0
                    if pos.role >= len(roles):
                        pos.mode = "consume"
                else:
                    pos.offset = next_offset
                yield Page(records, pos.dump())

    def _offset_pages(
        self, criteria: str | None, start: int
    ) -> Iterator[tuple[list[dict[str, Any]], int | None]]:
        """``(persons, next offset or None at the end)``, in order.

        Each page starts ``overlap`` persons before the previous one ended, and persons the
        previous page had are dropped: a person who leaves the listing during the walk (a
        student who lost the role) moves everyone after them back one place, and without the
        overlap the person moved across a page boundary would be skipped, unchanged and so
        with no notification to bring them back.
        """
        limit = self.settings.page_size
        persons, total, max_size = self.client.list_persons(start, limit, criteria)
        if max_size:
            limit = min(limit, max_size)
        overlap = min(self.settings.walk_overlap, (limit - 1) // 2)
        step = limit - overlap
        if len(persons) < limit:
            yield persons, None
            return
        yield persons, start + step
        previous = {p.get("id") for p in persons}
        for at, page in self._pages_in_order(criteria, start + step, step, limit, total):
            fresh = [p for p in page if p.get("id") not in previous]
            if page and not fresh and len(page) >= limit:
                # A full page of nothing new: the platform ignored the offset, and walking on
                # would re-read the same persons forever.
                raise MalformedResponse(f"GET persons at offset {at} did not move past {at}")
            previous = {p.get("id") for p in page}
            if len(page) < limit:
                yield fresh, None
                return
            yield fresh, at + step

    def _pages_in_order(
        self, criteria: str | None, first: int, step: int, limit: int, total: int | None
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Pages at ``first``, ``first + step``, … up to ``total``, with up to
        ``concurrency`` in flight (offsets are known in advance, so unlike a cursor chain
        they can be fetched in parallel to hide the platform's latency), yielded in order;
        past ``total`` (persons added during the walk) one at a time, until the caller stops.
        """
        pending: deque[tuple[int, Future[Any]]] = deque()
        at = first
        end = total if total is not None else first
        try:
            while True:
                while len(pending) < self.settings.concurrency and at < end:
                    fetch = self._pool.submit(self.client.list_persons, at, limit, criteria)
                    pending.append((at, fetch))
                    at += step
                if pending:
                    page_at, fetch = pending.popleft()
                    yield page_at, fetch.result()[0]
                else:
                    yield at, self.client.list_persons(at, limit, criteria)[0]
                    at += step
        finally:
            for _, fetch in pending:
                fetch.cancel()

    def _consume(self, pos: _Cursor) -> Iterator[Page]:
        """Incremental pages from the notification queue; see the module docstring."""
        pos.mode = "consume"
        while True:
            messages, remaining = self.client.consume(pos.cn, self.settings.consume_limit)
            if not messages:
                return
            records = self._records_from(messages)
            pos.cn = max(pos.cn, max(_message_id(m) for m in messages))
            # What the queue still holds: a backlog that keeps growing means the pull
            # schedule is too slow for the institution's change rate.
            log.info(
                "colleague_consumed",
                messages=len(messages),
                records=len(records),
                last_processed_id=pos.cn,
                remaining=remaining,
            )
            # The engine commits this page and checkpoints pos.cn before it asks for the
            # next one; only then does the next /consume delete these messages.
            yield Page(records, pos.dump())
            # A dry run commits nothing, so asking past the checkpoint it started from would
            # delete messages the hub never applied: it shows one page and stops.
            if remaining <= 0 or self.context.dry_run:
                return

    def _records_from(self, messages: Sequence[Mapping[str, Any]]) -> list[RemoteRecord]:
        """The persons a page of messages is about: the latest message per person wins;
        other resources and persons out of scope are skipped."""
        latest: dict[str, Mapping[str, Any]] = {}
        for message in messages:
            resource = message.get("resource")
            if not isinstance(resource, Mapping) or resource.get("name") != "persons":
                continue
            guid = str(resource.get("id") or "")
            if not guid:
                raise MalformedResponse("a change notification without resource.id")
            latest.pop(guid, None)  # re-insert: keeps the order of the latest messages
            latest[guid] = message
        to_fetch = [
            guid
            for guid, m in latest.items()
            if m.get("operation") != "deleted" and not _is_person(m.get("content"))
        ]
        fetched = dict(zip(to_fetch, self._map(self.client.get_person, to_fetch), strict=True))
        records = []
        for guid, message in latest.items():
            published = _parse_published(message.get("published"))
            if message.get("operation") == "deleted" or (guid in fetched and not fetched[guid]):
                record = self._tombstone(guid, message.get("content"), published)
            else:
                person = fetched.get(guid) or message["content"]
                record = self._record(person, published) if self._in_scope(person) else None
            if record is not None:
                records.append(record)
        return records

    def _tombstone(
        self, guid: str, content: Any, published: datetime | None
    ) -> RemoteRecord | None:
        colleague_id = _colleague_id(content) if isinstance(content, Mapping) else ""
        if not colleague_id:
            # Ethos sends deletes without content, and the links know the Colleague id only;
            # Colleague itself does not delete persons through Ethos, so this is rare.
            log.warning("colleague_delete_without_id", guid=guid)
            return None
        return RemoteRecord(colleague_id, {}, published, deleted=True)

    def _in_scope(self, person: Mapping[str, Any]) -> bool:
        roles = self.settings.roles
        return not roles or bool(set(roles) & _roles(person))

    def _record(
        self, person: Mapping[str, Any], published: datetime | None = None
    ) -> RemoteRecord | None:
        colleague_id = _colleague_id(person)
        if not colleague_id:
            # One broken person must not stop the pull: it is reported and skipped.
            self.context.report(
                Code.REMOTE_MALFORMED,
                "a Colleague person without a colleaguePersonId credential was skipped",
                guid=str(person.get("id") or ""),
            )
            return None
        name = _pick(person.get("names"), _name_rank)
        email = _pick(person.get("emails"), _email_rank)
        phone = _pick(person.get("phones"), _phone_rank)
        fields = {
            FIRST: name.get("firstName") if name else None,
            LAST: name.get("lastName") if name else None,
            EMAIL: email.get("address") if email else None,
            PHONE: _phone_out(phone) if phone else None,
            COLLEAGUE_ID: colleague_id,
        }
        return RemoteRecord(colleague_id, fields, published)

    def _map(self, fn: Callable[[str], T], items: Sequence[str]) -> list[T]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        return list(self._pool.map(fn, items))

    # --- push ---------------------------------------------------------------------------------

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """Read, change the mapped fields, PUT (or create); one result per item."""
        futures = [self._pool.submit(self._push_one, item) for item in batch]
        return [f.result() for f in futures]

    def _push_one(self, item: PushItem) -> PushResult:
        try:
            return self._write(item)
        except Unavailable as exc:
            return PushResult(item.contact_id, PushStatus.TRANSIENT, item.remote_id, exc.message)

    def _write(self, item: PushItem) -> PushResult:
        person: dict[str, Any] | None = None
        if item.remote_id:
            found = self.client.find_persons(
                {"credentials": [{"type": COLLEAGUE_ID, "value": item.remote_id}]}
            )
            if not found:
                return self._rejected(
                    item, f"no Colleague person has the id {item.remote_id}", Code.REMOTE_REJECTED
                )
            person = found[0]
        elif self.settings.match_by_email and item.fields.get(EMAIL) not in BLANK:
            found = self.client.find_persons({"emails": [{"address": str(item.fields[EMAIL])}]})
            if len(found) > 1:
                ids = ", ".join(_colleague_id(p) for p in found)
                return self._rejected(
                    item,
                    f"several Colleague persons have this email ({ids})",
                    Code.DUPLICATE_REMOTE_KEY,
                )
            person = found[0] if found else None
        changes = apply_fields(person or {}, item.fields)
        if person is None:
            if not any(
                (n.get("type") or {}).get("category") == "legal" and n.get("lastName")
                for n in changes.get("names", [])
            ):
                return self._rejected(
                    item,
                    "Colleague needs a last name to create a person",
                    Code.MISSING_REMOTE_REQUIRED_FIELD,
                )
            status, body = self.client.write_person(None, changes)
        elif not changes:
            return PushResult(item.contact_id, PushStatus.OK, _colleague_id(person))
        else:
            status, body = self.client.write_person(str(person["id"]), changes)
        if status >= 400:
            return self._rejected(item, error_message(body, status), Code.REMOTE_REJECTED)
        colleague_id = _colleague_id(body) or (_colleague_id(person) if person else "")
        if not colleague_id:
            raise MalformedResponse("Colleague answered a write without a colleaguePersonId")
        return PushResult(item.contact_id, PushStatus.OK, colleague_id)

    @staticmethod
    def _rejected(item: PushItem, message: str, code: Code) -> PushResult:
        return PushResult(item.contact_id, PushStatus.REJECTED, item.remote_id, message, code)

    # --- the short consume interval ----------------------------------------------------------

    @classmethod
    def streams_for(cls, settings: ColleagueConfig) -> bool:
        """Only an instance with ``consume_interval_seconds`` watches its queue."""
        return settings.consume_interval_seconds is not None

    def stream(self, position: str | None, emit: Callable[[ChangeHint], None], stop: Event) -> None:
        """Look at the notification queue every ``consume_interval_seconds``: one
        ``HEAD /consume`` (it reads the count and deletes nothing), and when anything waits,
        a hint that wakes the ordinary pull, which consumes from its committed checkpoint.

        Ethos deletes consumed messages only at the next ``/consume``, so the count stays up
        until the pull after the one that applied them: that second pull costs one request
        and finds nothing. Idle, the cost is one request per interval (and a token renewal
        every few minutes). There is no position: the pull's cursor is the checkpoint."""
        interval = float(self.settings.consume_interval_seconds or 60)
        while not stop.is_set():
            remaining = self.client.queue_remaining()
            if remaining:
                emit(ChangeHint(everything=True))
            stop.wait(interval)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


# --- persons v12 <-> fields ------------------------------------------------------------------


def apply_fields(person: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body that writes ``fields`` into ``person``: each array it changed, whole,
    with every entry it did not mean to touch kept as it was. Empty when nothing changes."""
    body: dict[str, Any] = {}
    if FIRST in fields or LAST in fields:
        names = _entries(person.get("names"))
        index = _pick_index(names, _name_rank)
        if index is None:
            names.append({"type": {"category": "legal"}, "preference": "preferred"})
            index = len(names) - 1
        name = names[index]
        for key in (FIRST, LAST):
            if key in fields:
                _set(name, key, fields[key])
        name["fullName"] = " ".join(str(name[k]) for k in (FIRST, LAST) if name.get(k))
        if names != _entries(person.get("names")):
            body["names"] = names
    if EMAIL in fields:
        emails = _entries(person.get("emails"))
        index = _pick_index(emails, _email_rank)
        value = fields[EMAIL]
        if value in BLANK:
            if index is not None:
                emails.pop(index)
        elif index is not None:
            emails[index]["address"] = str(value)
        else:
            entry: dict[str, Any] = {"type": {"emailType": "personal"}, "address": str(value)}
            if not any(e.get("preference") == "primary" for e in emails):
                entry["preference"] = "primary"
            emails.append(entry)
        if emails != _entries(person.get("emails")):
            body["emails"] = emails
    if PHONE in fields:
        phones = _entries(person.get("phones"))
        index = _pick_index(phones, _phone_rank)
        value = fields[PHONE]
        if value in BLANK:
            if index is not None:
                phones.pop(index)
        else:
            if index is None:
                phones.append({"type": {"phoneType": "mobile"}})
                index = len(phones) - 1
            country, number = _phone_in(str(value))
            phones[index]["number"] = number
            if country:
                phones[index]["countryCallingCode"] = country
            else:
                phones[index].pop("countryCallingCode", None)
        if phones != _entries(person.get("phones")):
            body["phones"] = phones
    return body


def _entries(value: Any) -> list[dict[str, Any]]:
    """A deep copy of an array of objects (so the original stays comparable)."""
    return [json.loads(json.dumps(v)) for v in value or [] if isinstance(v, dict)]


def _set(entry: dict[str, Any], key: str, value: Any) -> None:
    if value in BLANK:
        entry.pop(key, None)
    else:
        entry[key] = str(value)


def _name_rank(name: Mapping[str, Any]) -> int:
    # The preferred name first, then the legal one: what the person goes by.
    if name.get("preference") == "preferred":
        return 0
    return 1 if (name.get("type") or {}).get("category") == "legal" else 9


def _email_rank(email: Mapping[str, Any]) -> int:
    return 0 if email.get("preference") == "primary" else 5


def _phone_rank(phone: Mapping[str, Any]) -> int:
    # The mobile phone (the primary one if several), else the primary phone: texts go there.
    mobile = (phone.get("type") or {}).get("phoneType") == "mobile"
    primary = phone.get("preference") == "primary"
    if mobile:
        return 0 if primary else 1
    return 2 if primary else 9


def _pick_index(entries: Sequence[Mapping[str, Any]], rank: Callable[..., int]) -> int | None:
    """The index of the best-ranked entry (the first among equals); ``None`` if there is no
    entry of a usable rank (emails: any; names: preferred or legal; phones: mobile or
    primary)."""
    best: tuple[int, int] | None = None
    for index, entry in enumerate(entries):
        score = rank(entry)
        if score < 9 and (best is None or score < best[0]):
            best = (score, index)
    return best[1] if best else None


def _pick(entries: Any, rank: Callable[..., int]) -> Mapping[str, Any] | None:
    usable = [e for e in entries or [] if isinstance(e, Mapping)]
    index = _pick_index(usable, rank)
    return usable[index] if index is not None else None


def _phone_out(phone: Mapping[str, Any]) -> str | None:
    """A phone as the hub reads it: ``+<country><number>`` when Colleague has the country."""
    number = str(phone.get("number") or "").strip()
    if not number:
        return None
    country = str(phone.get("countryCallingCode") or "").strip().lstrip("+")
    digits = re.sub(r"\D", "", number)
    return f"+{country}{digits}" if country and digits else number


def _phone_in(value: str) -> tuple[str | None, str]:
    """``(countryCallingCode, number)`` for Colleague from the hub's E.164 form."""
    if value.startswith("+"):
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            return None, value
        return str(parsed.country_code), str(parsed.national_number)
    return None, value


def _colleague_id(person: Mapping[str, Any]) -> str:
    for credential in person.get("credentials") or []:
        if isinstance(credential, Mapping) and credential.get("type") == COLLEAGUE_ID:
            return str(credential.get("value") or "")
    return ""


def _roles(person: Mapping[str, Any]) -> set[str]:
    return {str(r.get("role")) for r in person.get("roles") or [] if isinstance(r, Mapping)}


def _is_person(content: Any) -> bool:
    """Whether a message carries the whole person (some publishers send only its id)."""
    return isinstance(content, Mapping) and "names" in content and "credentials" in content


def _message_id(message: Mapping[str, Any]) -> int:
    try:
        return int(message["id"])  # an int, or a string of digits in older payloads
    except (KeyError, TypeError, ValueError):
        raise MalformedResponse("a change notification without a numeric id") from None


_SHORT_OFFSET = re.compile(r"([+-]\d\d)$")


def _parse_published(value: Any) -> datetime | None:
    """``published`` (``2020-10-30 12:00:00.000Z`` or ``…183489+00``) as aware UTC."""
    if not value:
        return None
    text = _SHORT_OFFSET.sub(r"\1:00", str(value).strip().replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None  # a time is a nicety here, not worth refusing the change over
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
