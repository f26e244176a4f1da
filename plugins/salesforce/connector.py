"""The Salesforce connector: Contacts (or Leads) pulled by ``SystemModstamp``, pushed in
sObject Collections, with Bulk API 2.0 for the big first exchanges.

Pull (the robust pattern of the research notes, §3 "Salesforce issues to learn from"):

- the cursor is the keyset ``(SystemModstamp, Id)`` of the last row read, in
  ``ORDER BY SystemModstamp, Id`` order. Salesforce stamps whole seconds and bulk updates stamp
  thousands of rows alike, so a bound on the time alone either loops (``>=``) or loses rows
  (``>``): the query is ``(SystemModstamp > t) OR (SystemModstamp = t AND Id > id)``;
- each pull first re-reads an overlap window (``SystemModstamp >= t - overlap``), because a
  long transaction can commit rows stamped before the cursor (Airbyte issue 27146); rows
  re-read unchanged are recognised by the kit's overlap cursor (``OverlapCursor``);
- each query is capped (``LIMIT query_chunk``) and the next starts from the last row's keyset,
  so no server-side cursor has to live for a whole backfill; within a query, pages of up to
  2,000 follow ``nextRecordsUrl``;
- later pulls use ``queryAll``: deleted rows come back with ``IsDeleted = true`` and become
  tombstones (``RemoteRecord(deleted=True)``);
- a first pull (no cursor) counts the records and, above ``bulk_pull_threshold``, reads them
  through a Bulk API 2.0 query job instead: ``Sforce-Locator`` pages of CSV, parsed as they
  are read and handed on 2,000 rows at a time, each checkpointed with the job, the locator
  and the rows used, so a restart resumes the job where it stopped.

Push: linked records are updated by ``Id``; the others are upserted by ``external_id_field``
(e.g. ``Mainstay_ID__c``) carrying the hub contact id, which every write also sets, so a
retried create finds the record it made instead of making another. At or above
``bulk_push_threshold`` unlinked records, the upsert runs as one Bulk 2.0 ingest job.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from threading import Event
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, StrictBool, field_validator, model_validator

from daemon.sdk import (
    Capabilities,
    ChangeHint,
    ClientConnector,
    Code,
    ConnectorConfig,
    MalformedResponse,
    OAuthApp,
    OverlapCursor,
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
    json_cursor,
    prefetch,
    reveal,
)
from plugins.salesforce.client import (
    MAX_COLLECTION,
    STATE_REFRESH_TOKEN,
    TOKEN_PATH,
    SalesforceClient,
    error_text,
)
from plugins.salesforce.pubsub import RESYNC, ClientAuth, SalesforceChangeStream
from plugins.salesforce.pubsub.changeevent import topic_name
from plugins.salesforce.soql import parse_datetime

AUTHORIZE_PATH = "/services/oauth2/authorize"
# `api` for the REST and Bulk APIs, `refresh_token` so the sign-in yields one to keep.
OAUTH_SCOPES = ("api", "refresh_token")

ID = "Id"
MODSTAMP = "SystemModstamp"
EMAIL_FIELD = "Email"
LOOKUP_CHUNK = 200  # emails per lookup query: well inside SOQL's 100,000-character limit
DELETED = "IsDeleted"
# How many record fingerprints the cursor keeps to recognise rows re-read in the overlap
# window; past it the oldest are dropped and a re-read is yielded again, which the engine
# tolerates.
MAX_SEEN = 5000
GENERIC_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
BULK_ROWS_PER_PAGE = 2000  # as many as a REST query page
NA = "#N/A"  # Bulk CSV: sets a field to null (an empty cell leaves it unchanged)
# Salesforce's per-record statusCodes, as the hub's dictionary codes.
RECORD_CODES = {
    "REQUIRED_FIELD_MISSING": Code.MISSING_REMOTE_REQUIRED_FIELD,
    "DUPLICATE_VALUE": Code.DUPLICATE_REMOTE_KEY,
    "DUPLICATES_DETECTED": Code.DUPLICATE_REMOTE_KEY,
    "DUPLICATE_EXTERNAL_ID": Code.DUPLICATE_REMOTE_KEY,
    "INVALID_EMAIL_ADDRESS": Code.INVALID_EMAIL,
    "STRING_TOO_LONG": Code.VALUE_TOO_LONG,
}
# Per-record failures that say nothing about the record: try again later.
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "ALL_OR_NONE_OPERATION_ROLLED_BACK", "SERVER_UNAVAILABLE"}
)
# Fast retries: Salesforce answers in milliseconds and sends no Retry-After.
RETRY = RetryPolicy(attempts=5, backoff_base=0.5, backoff_max=10.0, max_retry_after=60.0)


class SalesforceConfig(ConnectorConfig):
    """The ``[settings]`` of a ``salesforce`` instance file."""

    login_url: PlatformUrl = "https://login.salesforce.com"  # My Domain for client_credentials
    auth: Literal["client_credentials", "refresh_token", "jwt"] | None = None
    client_id: str
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    username: str | None = None  # jwt: the pre-authorised user (the JWT's sub)
    private_key: SecretStr | None = None  # jwt: PEM RSA key of the connected app's certificate
    audience: str | None = None  # jwt: default login_url
    api_version: str = "v62.0"
    object: Literal["Contact", "Lead"] = "Contact"
    fields: list[str] = Field(default_factory=lambda: ["FirstName", "LastName", "Email", "Phone"])
    soql_filter: str | None = None  # a SOQL condition choosing the records that sync
    external_id_field: str | None = "Mainstay_ID__c"
    overlap_seconds: int = Field(default=300, ge=0)
    query_chunk: int = Field(default=10_000, ge=1)
    daily_share: float = Field(default=0.8, gt=0, le=1)
    limit_backoff_seconds: float = Field(default=3600.0, gt=0)
    bulk_pull_threshold: int = Field(default=50_000, ge=0)  # 0: never
    bulk_push_threshold: int = Field(default=2_000, ge=0)  # 0: never
    bulk_page_size: int = Field(default=50_000, ge=1)
    bulk_poll_seconds: float = Field(default=2.0, gt=0)
    bulk_timeout_seconds: float = Field(default=1800.0, gt=0)
    # Change Data Capture: hold a Pub/Sub API stream of the object's change events open, so
    # an edit in Salesforce reaches the hub in seconds (the scheduled pull still runs).
    cdc: StrictBool = False
    # Where the Pub/Sub API answers (gRPC over TLS); http:// only to loopback (the simulator).
    pubsub_url: PlatformUrl = "https://api.pubsub.salesforce.com:7443"

    @field_validator("fields")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> SalesforceConfig:
        if self.auth is None:
            if self.private_key and self.username:
                self.auth = "jwt"
            elif self.refresh_token:
                self.auth = "refresh_token"
            else:
                self.auth = "client_credentials"
        needs = {
            "client_credentials": ("client_secret",),
            # The refresh token may instead be the one `contactsync auth` stored in the hub;
            # the client says so at sync time when there is neither.
            "refresh_token": ("client_secret",),
            "jwt": ("username", "private_key"),
        }[self.auth]
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"auth = {self.auth!r} needs {', '.join(missing)}")
        generic = urlsplit(self.login_url).hostname in GENERIC_LOGIN_HOSTS
        if self.auth == "client_credentials" and generic:
            # Salesforce answers this grant only at the org's own host (simple-salesforce
            # refuses login/test for it too).
            raise ValueError(
                "client_credentials needs login_url = the org's My Domain "
                "(https://<domain>.my.salesforce.com), not login or test.salesforce.com"
            )
        return self


def parse_stamp(value: Any) -> datetime:
    """``SystemModstamp`` (REST ``.000+0000`` or Bulk ``.000Z``) as an aware UTC datetime."""
    return parse_datetime(str(value))


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal (unquoted): ``2024-05-01T10:00:00Z``."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def soql_string(value: str) -> str:
    """A quoted SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wire_value(value: Any) -> Any:
    """A hub value in JSON for Salesforce: ``None``/``"UNSET"`` is null (clears the field)."""
    if value is None or value == "UNSET":
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class _Position:
    """Where a pull stands, as the cursor records it.

    ``cursor``: the kit's overlap cursor, whose high-water mark is the keyset
    ``(SystemModstamp, Id)`` of the newest row read and whose ``seen`` map skips rows
    re-read unchanged in the overlap window. ``job``/``locator``/``skip``: a Bulk query job
    being read, the results page being read, and the rows of it already yielded.
    """

    def __init__(self, raw: Mapping[str, Any], overlap: timedelta) -> None:
        self.cursor = OverlapCursor.load(raw, window=overlap, cap=MAX_SEEN, platform="Salesforce")
        self.job: str | None = raw.get("job")
        self.locator: str | None = raw.get("locator")
        self.skip: int = int(raw.get("skip") or 0)

    @property
    def keyset(self) -> tuple[str, str] | None:
        """The newest row read as a SOQL datetime and an Id (``None`` before any)."""
        moment = self.cursor.high_water
        return None if moment is None else (soql_datetime(moment), str(self.cursor.key or ""))

    def dump(self) -> str:
        """The cursor text, ``seen`` pruned to the overlap window and capped."""
        if self.job:
            return self.cursor.dump(job=self.job, locator=self.locator, skip=self.skip)
        return self.cursor.dump()


class SalesforceConnector(ClientConnector):
    """Two-way contact sync with one Salesforce org's Contacts or Leads."""

    type: ClassVar[str] = "salesforce"
    Config: ClassVar[type[ConnectorConfig]] = SalesforceConfig
    retry_policy: ClassVar[RetryPolicy] = RETRY
    # push() is thread-safe (one httpx pool, a locked token cache and quota), and Salesforce
    # limits only long-running (20 s+) concurrent requests: the engine may overlap batches.
    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=True,
        push=True,
        create=True,
        deletes=True,
        modified_at=True,
        concurrent_push=True,
        looks_up=True,
        reads_before_write=True,
        # With cdc = true: the object's Change Data Capture events, over the Pub/Sub API.
        streams=True,
    )
    # A Contact is refused without LastName (REQUIRED_FIELD_MISSING); a Lead also needs Company.
    required_mappings: ClassVar[RequiredMappings] = RequiredMappings(outgoing=("LastName",))

    @classmethod
    def required_mappings_for(cls, settings: SalesforceConfig) -> RequiredMappings:
        """LastName for a Contact; LastName and Company for a Lead."""
        if settings.object == "Lead":
            return RequiredMappings(outgoing=("LastName", "Company"))
        return cls.required_mappings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config: SalesforceConfig = self.settings
        context = self.context

        assert config.auth is not None
        self.client = SalesforceClient(
            login_url=config.login_url,
            context=context,
            auth=config.auth,
            client_id=config.client_id,
            client_secret=reveal(config.client_secret),
            refresh_token=reveal(config.refresh_token),
            username=config.username,
            private_key=reveal(config.private_key),
            audience=config.audience,
            api_version=config.api_version,
            clock=self.clock,
            retry=self.retry,
            daily_share=config.daily_share,
            limit_backoff_seconds=config.limit_backoff_seconds,
            transport=self.transport,
        )
        self.object = config.object
        ext = config.external_id_field
        # What every read asks for: the mapped fields plus what the cursor needs.
        self._read = list(dict.fromkeys([ID, *config.fields, MODSTAMP, DELETED]))
        self._ext = ext
        # Records per Page from a Bulk results page; an attribute so tests can use fewer.
        self.bulk_rows_per_page = BULK_ROWS_PER_PAGE

    @classmethod
    def oauth_app(cls, config: SalesforceConfig) -> OAuthApp:
        """``contactsync auth``: the web-server flow at ``login_url`` (with PKCE), for an
        instance with ``auth = "refresh_token"``; the connected app's callback URL must be
        the loopback redirect URI ``contactsync auth`` prints."""
        if config.auth != "refresh_token":
            raise ValueError(
                f'contactsync auth signs in for auth = "refresh_token", not {config.auth!r}'
            )
        login = config.login_url.rstrip("/")
        return OAuthApp(
            platform="Salesforce",
            authorize_url=login + AUTHORIZE_PATH,
            token_url=login + TOKEN_PATH,
            client_id=config.client_id,
            client_secret=reveal(config.client_secret),
            state_key=STATE_REFRESH_TOKEN,
            scopes=OAUTH_SCOPES,
            authorize_params={"response_type": "code"},
            pkce=True,
            error_text=error_text,
        )

    @classmethod
    def default_fields(cls, settings: SalesforceConfig) -> list[dict[str, Any]]:
        """The hub id goes out to the external-id field: a record linked by a pull gets it on
        the next push (the engine queues a first exchange whose link lacks a field), and
        records created from the hub are upserted by it."""
        if not settings.external_id_field:
            return []
        return [{"hub": "id", "remote": settings.external_id_field, "direction": "outgoing"}]

    # --- check and describe -----------------------------------------------------------------

    def check(self) -> None:
        """A token grant and a one-row query prove the credentials and the object's access."""
        for _ in self.client.query(f"SELECT Id FROM {self.object} LIMIT 1"):
            break

    def describe(self) -> list[RemoteField]:
        """The object's fields, from ``sobjects/<object>/describe``."""
        out = []
        for spec in self.client.describe(self.object)["fields"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                continue
            writable = bool(spec.get("createable") or spec.get("updateable"))
            out.append(
                RemoteField(
                    name=spec["name"],
                    label=str(spec.get("label") or spec["name"]),
                    type=str(spec.get("type") or "string"),
                    required=bool(
                        spec.get("createable")
                        and not spec.get("nillable", True)
                        and not spec.get("defaultedOnCreate")
                    ),
                    read_only=not writable,
                    unique=bool(spec.get("unique") or spec.get("externalId")),
                )
            )
        return out

    # --- pull -------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Pages of records changed since ``cursor``; see the module docstring."""
        overlap = timedelta(seconds=self.settings.overlap_seconds)
        pos = _Position(json_cursor(cursor, "Salesforce"), overlap)
        if pos.job:
            yield from self._pull_bulk(pos)
            return
        first = cursor is None
        threshold = self.settings.bulk_pull_threshold
        if first and threshold and self.client.count(self._count_soql()) >= threshold:
            yield from self._pull_bulk(pos)
            return
        # The next page is fetched while the engine applies this one.
        yield from prefetch(self._pull_rest(pos, first=first))

    def _filter(self) -> str:
        return f"({self.settings.soql_filter})" if self.settings.soql_filter else ""

    def _count_soql(self) -> str:
        where = self._filter()
        return f"SELECT COUNT() FROM {self.object}" + (f" WHERE {where}" if where else "")

    def _soql(self, pos: _Position, keyset: tuple[str, str] | None, overlap: bool) -> str:
        conditions = []
        since = pos.cursor.since
        if overlap and since is not None and self.settings.overlap_seconds:
            conditions.append(f"{MODSTAMP} >= {soql_datetime(since)}")
        elif keyset is not None:
            ts, last = keyset
            conditions.append(
                f"({MODSTAMP} > {ts} OR ({MODSTAMP} = {ts} AND {ID} > {soql_string(last)}))"
            )
        if self.settings.soql_filter:
            conditions.append(self._filter())
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return (
            f"SELECT {', '.join(self._read)} FROM {self.object}{where} "
            f"ORDER BY {MODSTAMP} ASC, {ID} ASC LIMIT {self.settings.query_chunk}"
        )

    def _pull_rest(self, pos: _Position, *, first: bool) -> Iterator[Page]:
        """Keyset queries of ``query_chunk`` rows each, the first re-reading the overlap."""
        overlap = not first
        keyset = pos.keyset
        while True:
            soql = self._soql(pos, keyset, overlap)
            got = 0
            # A first pull wants the living; later ones queryAll to see deletes.
            for rows in self.client.query(soql, all_rows=not first):
                got += len(rows)
                fresh = []
                for row in rows:
                    record = self._usable(row)
                    if record is None:
                        continue
                    assert record.modified_at is not None
                    keyset = (soql_datetime(record.modified_at), record.remote_id)
                    if pos.cursor.read(record, record.remote_id):
                        fresh.append(record)  # else re-read in the overlap window, unchanged
                yield Page(fresh, pos.dump())
            if got < self.settings.query_chunk:
                return
            overlap = False  # the next chunk starts right after the last row read

    def _usable(self, row: Any, *, csv_row: bool = False) -> RemoteRecord | None:
        """The row's record; a row that is not a usable record (no Id, no SystemModstamp) is
        a ``remote-malformed-response`` sync-log row and is skipped, so one broken row never
        stops the pull at the same place every cycle."""
        try:
            return self._record(row, csv_row=csv_row)
        except MalformedResponse as exc:
            remote_id = row.get(ID) if isinstance(row, Mapping) else None
            self.context.report(Code.REMOTE_MALFORMED, exc.message, remote_id=str(remote_id or ""))
            return None

    def _record(self, row: Mapping[str, Any], *, csv_row: bool = False) -> RemoteRecord:
        if not isinstance(row, Mapping):
            raise MalformedResponse("a Salesforce record is not an object")
        record_id, stamp = row.get(ID), row.get(MODSTAMP)
        if not isinstance(record_id, str) or not record_id or not stamp:
            raise MalformedResponse(f"a Salesforce record without {ID} or {MODSTAMP}")
        try:
            modified = parse_stamp(stamp)
        except ValueError:
            raise MalformedResponse(f"{MODSTAMP} {stamp!r} is not a datetime") from None
        deleted = row.get(DELETED)
        is_deleted = deleted is True or (isinstance(deleted, str) and deleted.lower() == "true")
        if is_deleted:
            return RemoteRecord(record_id, {}, modified, deleted=True)
        fields = {}
        for name in self.settings.fields:
            if name in row:
                value = row[name]
                # Bulk CSV writes null as an empty cell.
                fields[name] = None if csv_row and value == "" else value
        return RemoteRecord(record_id, fields, modified)

    def _pull_bulk(self, pos: _Position) -> Iterator[Page]:
        """A first pull through a Bulk 2.0 query job: results pages of ``bulk_page_size``
        rows (few requests), parsed as read and handed on in Pages of 2,000 (bounded
        memory), each checkpointed with the job, the results page and the rows it used."""
        client, settings = self.client, self.settings
        if not pos.job:
            where = self._filter()
            soql = f"SELECT {', '.join(self._read)} FROM {self.object}"
            soql += f" WHERE {where}" if where else ""
            pos.job, pos.locator = client.create_query_job(soql, all_rows=False), None
            info = client.wait_for_job(
                "query",
                pos.job,
                poll=settings.bulk_poll_seconds,
                timeout=settings.bulk_timeout_seconds,
            )
            if info.get("state") != "JobComplete":
                # Airbyte falls back to REST when a job fails; so does this.
                pos.job = None
                yield from self._pull_rest(pos, first=True)
                return
        while True:
            try:
                rows, nxt = client.query_results(pos.job, pos.locator, settings.bulk_page_size)
            except MalformedResponse:
                if pos.locator is None and pos.cursor.high_water is None:
                    raise
                # The job is gone (results live 7 days): start over. Re-read records are an
                # overlap the engine tolerates.
                yield from self.pull(None)
                return
            records: list[RemoteRecord] = []
            consumed = 0
            for row in rows:
                consumed += 1
                if consumed <= pos.skip:
                    continue  # yielded before a restart: resume inside the page
                record = self._usable(row, csv_row=True)
                if record is None:
                    continue
                pos.cursor.remember(record, record.remote_id)
                records.append(record)
                if len(records) >= self.bulk_rows_per_page:
                    # The engine gets pages of REST's size: memory stays bounded by them
                    # however large a results page is, and a restart skips what it had.
                    pos.skip = consumed
                    yield Page(records, pos.dump())
                    records = []
            pos.locator, pos.skip = nxt, 0
            job = pos.job
            if nxt is None:
                pos.job = None  # done: later pulls go on from the newest row read
            yield Page(records, pos.dump())
            if nxt is None:
                client.delete_job("query", job)
                return

    # --- push -------------------------------------------------------------------------------

    def read(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The records now: one SOQL query ``WHERE Id IN (…)`` per 200 ids (``queryAll``, so
        a deleted one comes back as deleted)."""
        ids = sorted(set(remote_ids))
        records: list[RemoteRecord] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            listed = ", ".join(soql_string(i) for i in ids[start : start + LOOKUP_CHUNK])
            soql = f"SELECT {', '.join(self._read)} FROM {self.object} WHERE {ID} IN ({listed})"
            for rows in self.client.query(soql, all_rows=True):
                records += [r for row in rows if (r := self._usable(row))]
        return records

    def lookup(self, batch: Sequence[PushItem]) -> list[RemoteRecord]:
        """The records Salesforce holds with these items' emails: one SOQL query of
        ``Email IN (…)`` per 200 emails (SOQL compares strings case-insensitively), within
        the instance's ``soql_filter``. Without an ``Email`` field in the mapping there is no
        key to look up by."""
        emails = sorted({str(e).lower() for i in batch if (e := i.fields.get(EMAIL_FIELD))})
        records: list[RemoteRecord] = []
        for start in range(0, len(emails), LOOKUP_CHUNK):
            listed = ", ".join(soql_string(e) for e in emails[start : start + LOOKUP_CHUNK])
            where = f"{EMAIL_FIELD} IN ({listed})"
            if self.settings.soql_filter:
                where += f" AND {self._filter()}"
            soql = f"SELECT {', '.join(self._read)} FROM {self.object} WHERE {where}"
            for rows in self.client.query(soql):
                records += [r for row in rows if (r := self._usable(row)) and not r.deleted]
        return records

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """Update linked records by Id; upsert the others by the external-id field."""
        results: list[PushResult] = []
        updates = [i for i in batch if i.remote_id]
        creates = [i for i in batch if not i.remote_id]
        threshold = self.settings.bulk_push_threshold
        if creates and self._ext and threshold and len(creates) >= threshold:
            results += self._bulk_upsert(creates)
            creates = []
        for start in range(0, len(updates), MAX_COLLECTION):
            chunk = updates[start : start + MAX_COLLECTION]
            results += self._collection("PATCH", "composite/sobjects", chunk, by_id=True)
        if self._ext:
            path = f"composite/sobjects/{self.object}/{self._ext}"
            method = "PATCH"
        else:
            path, method = "composite/sobjects", "POST"
        for start in range(0, len(creates), MAX_COLLECTION):
            chunk = creates[start : start + MAX_COLLECTION]
            results += self._collection(method, path, chunk, by_id=False)
        return results

    def _values(self, item: PushItem) -> dict[str, Any]:
        values = {k: wire_value(v) for k, v in item.fields.items() if k not in (ID, MODSTAMP)}
        if self._ext:
            # Every write carries the hub id: a record linked from a pull gets it on its first
            # push, and an upsert retried after a timeout finds the record it created.
            values[self._ext] = item.contact_id
        return values

    def _collection(
        self, method: str, path: str, items: Sequence[PushItem], *, by_id: bool
    ) -> list[PushResult]:
        records = []
        for item in items:
            record: dict[str, Any] = {"attributes": {"type": self.object}, **self._values(item)}
            if by_id:
                record["id"] = item.remote_id
            records.append(record)
        try:
            answers = self.client.collection(method, path, records)
        except Unavailable as exc:
            return [
                PushResult(i.contact_id, PushStatus.TRANSIENT, i.remote_id, message=exc.message)
                for i in items
            ]
        except MalformedResponse as exc:
            # The whole request was refused (a bad external-id field, a body Salesforce could
            # not parse): every record carries the reason.
            return [
                PushResult(i.contact_id, PushStatus.REJECTED, i.remote_id, message=exc.message)
                for i in items
            ]
        return [self._result(item, answer) for item, answer in zip(items, answers, strict=True)]

    def _result(self, item: PushItem, answer: Any) -> PushResult:
        if not isinstance(answer, dict):
            return PushResult(
                item.contact_id, PushStatus.TRANSIENT, item.remote_id, "an unreadable result"
            )
        if answer.get("success") and answer.get("id"):
            # An upsert by the external id answers ``created: false`` when it found a record.
            existed = item.remote_id is None and answer.get("created") is False
            return PushResult(item.contact_id, PushStatus.OK, str(answer["id"]), existed=existed)
        errors = [e for e in answer.get("errors") or [] if isinstance(e, dict)]
        codes = [str(e.get("statusCode") or "") for e in errors]
        # With allOrNone, the innocent records carry only the rollback code: report the cause.
        real = [e for e in errors if e.get("statusCode") not in TRANSIENT_CODES]
        message = error_text(real or errors, 400)
        if not real:
            return PushResult(item.contact_id, PushStatus.TRANSIENT, item.remote_id, message)
        code = next((RECORD_CODES[c] for c in codes if c in RECORD_CODES), Code.REMOTE_REJECTED)
        return PushResult(
            item.contact_id, PushStatus.REJECTED, item.remote_id, message=message, code=code
        )

    def _bulk_upsert(self, items: Sequence[PushItem]) -> list[PushResult]:
        """One Bulk 2.0 upsert job by the external-id field; results matched back by it."""
        assert self._ext is not None
        rows = [self._values(item) for item in items]
        columns = [self._ext, *sorted({k for r in rows for k in r} - {self._ext})]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            # A key that is absent stays as it is (an empty cell); null is "#N/A".
            writer.writerow(
                [
                    ("" if c not in row else NA if row[c] is None or row[c] == "" else row[c])
                    for c in columns
                ]
            )
        try:
            _, done, failed = self.client.ingest(
                self.object,
                "upsert",
                out.getvalue(),
                external_id=self._ext,
                poll=self.settings.bulk_poll_seconds,
                timeout=self.settings.bulk_timeout_seconds,
            )
        except Unavailable as exc:
            # Upserts by the hub id: sending them again later cannot duplicate.
            return [
                PushResult(i.contact_id, PushStatus.TRANSIENT, None, message=exc.message)
                for i in items
            ]
        answered: dict[str, PushResult] = {}
        for row in done:
            key = row.get(self._ext) or ""
            if row.get("sf__Id"):
                answered[key] = PushResult(key, PushStatus.OK, row["sf__Id"])
        for row in failed:
            key = row.get(self._ext) or ""
            cause = row.get("sf__Error") or "rejected by the Bulk API"
            status_code, _, message = cause.partition(":")
            code = RECORD_CODES.get(status_code, Code.REMOTE_REJECTED)
            answered[key] = PushResult(
                key, PushStatus.REJECTED, None, message=f"{status_code}: {message}", code=code
            )
        return [
            answered.get(item.contact_id)
            or PushResult(
                item.contact_id,
                PushStatus.TRANSIENT,
                None,
                message="the Bulk API job did not process this record",
            )
            for item in items
        ]

    # --- Change Data Capture -----------------------------------------------------------------

    @classmethod
    def streams_for(cls, settings: SalesforceConfig) -> bool:
        """Only an instance with ``cdc = true`` holds a change stream open."""
        return settings.cdc

    def stream(self, position: str | None, emit: Callable[[ChangeHint], None], stop: Event) -> None:
        """Follow the object's change events (``/data/ContactChangeEvent`` or
        ``/data/LeadChangeEvent``) through the Pub/Sub API until ``stop``.

        ``position`` is the replay id (hex) of the last event whose pull committed; the
        subscription resumes after it. ``None`` (never checkpointed, or cleared) subscribes
        at ``LATEST``: what changed before is the scheduled pull's, which runs from its own
        cursor. Each event becomes a hint naming its record ids, with the event's replay id
        as the position; an event naming no record (a ``GAP_*`` event, an undecodable one, a
        replay id Salesforce no longer holds: ``RESYNC``) asks for the instance's ordinary
        incremental pull. A delete also asks for the deletion scan. The session is the
        connector's own (renewed on refusal like any REST 401); ``AuthFailed`` ends the
        stream and the daemon reopens it after a back-off."""
        replay_id = _replay_id(position)
        target, secure = _grpc_target(self.settings.pubsub_url)
        changes = SalesforceChangeStream(
            ClientAuth(self.client),
            topic_name(self.object),
            replay_id,
            target=target,
            secure=secure,
            stop=stop,
            clock=self.clock,
        )
        for event in changes:
            everything = event.everything or event.change_type == RESYNC
            emit(
                ChangeHint(
                    () if everything else event.record_ids,
                    everything=everything,
                    deletes=event.change_type == "DELETE",
                    occurred_at=event.commit_timestamp,
                    # A RESYNC carries no replay id: the checkpoint keeps its old value until
                    # an event after it is served (resubscribing from it is refused again and
                    # falls back at once, costing one more full pull, never a change).
                    position=event.replay_id.hex() if event.replay_id else None,
                )
            )

    def close(self) -> None:
        self.client.close()


def _replay_id(position: str | None) -> bytes | None:
    """The replay id of a checkpointed position; ``None`` when it is not hex (a damaged
    hub row), so the stream starts at ``LATEST`` and the scheduled pull covers the gap."""
    if not position:
        return None
    try:
        return bytes.fromhex(position)
    except ValueError:
        return None


def _grpc_target(url: str) -> tuple[str, bool]:
    """``host:port`` and whether TLS is used, from ``pubsub_url`` (already a PlatformUrl:
    ``http://`` reaches only loopback)."""
    parts = urlsplit(url)
    secure = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address goes in brackets
        host = f"[{host}]"
    return f"{host}:{parts.port or (443 if secure else 80)}", secure
