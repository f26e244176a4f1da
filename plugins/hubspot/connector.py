"""The HubSpot connector: contacts pulled through the CRM search and pushed in batches.

Pull (the robust pattern of the research notes, Airbyte PR 44899 and its kin):

- the first pull lists every contact (``GET /crm/v3/objects/contacts``: no 10,000 cap and no
  search-index lag); later pulls search on ``lastmodifieddate``;
- the cursor is ``(ts, id)``: every record at or before it, in ``(lastmodifieddate,
  hs_object_id)`` order, has been yielded. A search takes ``lastmodifieddate >= ts`` minus a
  lookback window (the search index lags behind writes), and records re-read inside that
  window are recognised by the kit's overlap cursor (``OverlapCursor``: a ``seen`` map of
  fingerprints), so they are not yielded again unless they changed;
- before a search reaches HubSpot's 10,000-result cap it is restarted from the last record's
  timestamp; that timestamp is first swept on its own, ``lastmodifieddate EQ ts AND
  hs_object_id GT id`` sorted by id, which also pages through more than 10,000 contacts that
  share one timestamp (HubSpot's month-end bulk updates).

Deletes never show in a search: :meth:`HubSpotConnector.scan_deletes` lists archived contacts
on its own, slower schedule. Merges: the surviving record carries ``hs_merged_object_ids``;
:meth:`HubSpotConnector.resolve_merged` maps old ids to it.

Push: linked records go to ``batch/update`` by id; unlinked ones to ``batch/upsert`` keyed on
email (or ``batch/create``). Each input carries ``objectWriteTraceId`` = the hub contact id,
so every result and every 207 error is attributed to its own record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

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
    WebhookDelivery,
    WebhookRefused,
    WebhookRequest,
    interleave,
    json_cursor,
    prefetch,
    reveal,
)
from plugins.hubspot.client import (
    MAX_BATCH,
    MAX_SEARCH_LIMIT,
    MAX_SEARCH_RESULTS,
    STATE_REFRESH_TOKEN,
    HubSpotClient,
    error_message,
)

ID = "hs_object_id"
MODIFIED = "lastmodifieddate"
MERGED = "hs_merged_object_ids"
EMAIL = "email"
OAUTH_SCOPES = ("oauth", "crm.objects.contacts.read", "crm.objects.contacts.write")
HUBSPOT_API = "https://api.hubapi.com"
HUBSPOT_AUTHORIZE = "https://app.hubspot.com/oauth/authorize"
# HubSpot computes these; a write that names one is refused.
ALWAYS_READ_ONLY = frozenset({ID, MODIFIED, "createdate", MERGED})
# How many record fingerprints the cursor keeps to recognise re-read records; past it the
# oldest are dropped and a re-read is yielded again, which the engine tolerates.
MAX_SEEN = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ID_DIGITS = 20  # a 64-bit id has at most 20 digits
_MS = timedelta(milliseconds=1)
# Fast retries: HubSpot answers in milliseconds; Retry-After and the limiter do the pacing.
RETRY = RetryPolicy(attempts=5, backoff_base=0.5, backoff_max=10.0, max_retry_after=60.0)


# The contact events a webhook names records for; propertyChange is one subscription per
# property (HubSpot has no wildcard): subscribe to each property the instance reads.
WEBHOOK_SUBSCRIPTIONS = (
    "contact.creation",
    "contact.propertyChange",
    "contact.deletion",
    "contact.merge",
    "contact.restore",
)
MAX_WEBHOOK_EVENTS = 100  # HubSpot batches at most 100 events in one request
SIGNATURE = "x-hubspot-signature-v3"
TIMESTAMP = "x-hubspot-request-timestamp"


def webhook_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 request signature: base64 of HMAC-SHA256, keyed with the app's client
    secret, over method + URI + body + timestamp (ms), as HubSpot's own client computes it."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class HubSpotConfig(ConnectorConfig):
    """The ``[settings]`` of a ``hubspot`` instance file."""

    base_url: PlatformUrl = "https://api.hubapi.com"
    access_token: SecretStr | None = None  # a private app's token
    client_id: str | None = None  # OAuth: the app's id, secret and the install's refresh token
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_path: str = "/oauth/2026-03/token"  # "/oauth/v1/token" until its 2027-02-16 sunset
    # contactsync auth: where the user signs in (None: HubSpot's own, or base_url's for a
    # simulator) and the scopes the app asks for.
    authorize_url: PlatformUrl | None = None
    scopes: list[str] = Field(default_factory=lambda: list(OAUTH_SCOPES))
    properties: list[str] = Field(default_factory=lambda: ["firstname", "lastname", EMAIL, "phone"])
    # Records per request: searches take up to 200, the list (``pull_concurrency = 1``) 100.
    page_size: int = Field(default=200, ge=1, le=MAX_SEARCH_LIMIT)
    # Id ranges the first pull reads at once through the search API (200 per page); 1 lists
    # the contacts page by page instead (100 per page, one request in flight).
    pull_concurrency: int = Field(default=3, ge=1, le=8)
    lookback_seconds: int = Field(default=300, ge=0)
    upsert_by_email: bool = True
    daily_share: float = Field(default=0.9, gt=0, le=1)
    account_timezone: str = "UTC"  # HubSpot resets the daily limit at the account's midnight
    # Webhooks (POST /webhooks/<instance>): the secret HubSpot signs them with (the app's
    # client secret; None: client_secret) and the target URL registered in the app, exactly
    # as HubSpot calls it (None: the URL the daemon sees; set it behind a proxy).
    webhook_secret: SecretStr | None = None
    webhook_url: str | None = None

    @field_validator("properties")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> HubSpotConfig:
        # The refresh token may instead be the one `contactsync auth` stored in the hub; the
        # client says so at sync time when there is neither.
        oauth = self.client_id and self.client_secret
        if not self.access_token and not oauth:
            raise ValueError(
                "set access_token (a private app), or client_id and client_secret (OAuth, "
                "with refresh_token or after `contactsync auth`)"
            )
        return self


def to_ms(value: datetime) -> int:
    """Epoch milliseconds, exactly (no float rounding), as HubSpot's search filters take."""
    return (value - _EPOCH) // _MS


def parse_modified(value: Any) -> datetime:
    """``lastmodifieddate`` as an aware UTC datetime: ISO 8601, or epoch ms in a string."""
    text = str(value).strip()
    if text.isdigit():
        return _EPOCH + int(text) * _MS
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def wire_value(value: Any) -> str:
    """HubSpot property values are strings; ``""`` clears one."""
    if value is None or value == "UNSET":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class _Position:
    """Where a pull stands, as the cursor records it.

    ``cursor``: the kit's overlap cursor, whose high-water mark ``(lastmodifieddate,
    hs_object_id)`` is where the next pull starts (less the lookback) and whose ``seen`` map
    skips records re-read unchanged. ``at``: the timestamp of the last row the current
    search read, where it restarts before the cap. ``sweep``/``sweep_id``: the timestamp
    ``at`` is being paged by id. ``mode``/``start``/``parts``/``after``: the first pull's
    listing or id-range scan.
    """

    def __init__(self, raw: Mapping[str, Any], lookback: timedelta) -> None:
        self.cursor = OverlapCursor.load(raw, window=lookback, cap=MAX_SEEN, platform="HubSpot")
        self.mode: str = str(raw.get("mode") or "list")
        self.start: int = int(raw.get("start", 0))
        # A scan's id ranges: [last id read, highest id of the range], per range.
        self.parts: list[list[int]] = [[int(lo), int(hi)] for lo, hi in raw.get("parts") or []]
        self.after: str | None = raw.get("after")
        self.at: int = int(raw.get("at", self.ts))
        self.sweep: bool = bool(raw.get("sweep", False))
        self.sweep_id: int = int(raw.get("sweep_id", 0))

    @property
    def ts(self) -> int:
        """The high-water mark in ms (0 before any record)."""
        moment = self.cursor.high_water
        return 0 if moment is None else to_ms(moment)

    def read(self, record: RemoteRecord) -> bool:
        """Count one record read; whether it is to be yielded (not re-read unchanged)."""
        return self.cursor.read(record, int(record.remote_id))

    def dump(self) -> str:
        """The cursor text, ``seen`` pruned to the lookback window and capped."""
        raw: dict[str, Any] = {"mode": self.mode}
        if self.after:
            raw["after"] = self.after
        if self.mode == "scan":
            raw.update(start=self.start, parts=self.parts)
        if self.sweep:
            raw.update(at=self.at, sweep=True, sweep_id=self.sweep_id)
        return self.cursor.dump(**raw)


class HubSpotConnector(ClientConnector):
    """Two-way contact sync with one HubSpot account (CRM v3)."""

    type: ClassVar[str] = "hubspot"
    Config: ClassVar[type[ConnectorConfig]] = HubSpotConfig
    retry_policy: ClassVar[RetryPolicy] = RETRY
    # push() keeps no state between calls, and the client's limiter, quota and token cache
    # are locked, so the engine may run several batches at once.
    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=True,
        push=True,
        create=True,
        deletes=True,
        modified_at=True,
        concurrent_push=True,
        looks_up=True,
        reads_before_write=True,
        webhooks=True,
    )
    webhook_subscriptions: ClassVar[tuple[str, ...]] = WEBHOOK_SUBSCRIPTIONS
    # A contact is upserted by its email (upsert_by_email, the default); a plain create needs
    # one of email, firstname or lastname (see required_mappings_for).
    required_mappings: ClassVar[RequiredMappings] = RequiredMappings(outgoing=(EMAIL,))

    @classmethod
    def required_mappings_for(cls, settings: HubSpotConfig) -> RequiredMappings:
        """Email, the upsert's key; without ``upsert_by_email`` any one of email, first or
        last name, as HubSpot's create asks."""
        if settings.upsert_by_email:
            return cls.required_mappings
        return RequiredMappings(outgoing=((EMAIL, "firstname", "lastname"),))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config: HubSpotConfig = self.settings
        context = self.context

        self.client = HubSpotClient(
            base_url=config.base_url,
            context=context,
            access_token=reveal(config.access_token),
            client_id=config.client_id,
            client_secret=reveal(config.client_secret),
            refresh_token=reveal(config.refresh_token),
            token_path=config.token_path,
            clock=self.clock,
            retry=self.retry,
            daily_share=config.daily_share,
            account_timezone=config.account_timezone,
            transport=self.transport,
        )
        self._lookback = timedelta(seconds=config.lookback_seconds)
        # HubSpot's 10,000-result cap; an attribute so tests can meet it with fewer records.
        self.search_cap = MAX_SEARCH_RESULTS
        # What every read asks for: the mapped properties plus what the cursor and the merge
        # logic need (HubSpot ignores unknown names in a read).
        self._read = list(dict.fromkeys([*config.properties, ID, MODIFIED, MERGED]))

    @classmethod
    def oauth_app(cls, config: HubSpotConfig) -> OAuthApp:
        """``contactsync auth``: HubSpot's authorize page (``app.hubspot.com``; a simulator's
        ``base_url`` serves its own) and token endpoint, for an OAuth app's instance."""
        if not (config.client_id and config.client_secret):
            raise ValueError("contactsync auth needs client_id and client_secret (an OAuth app)")
        base = config.base_url.rstrip("/")
        default = HUBSPOT_AUTHORIZE if base == HUBSPOT_API else f"{base}/oauth/authorize"
        return OAuthApp(
            platform="HubSpot",
            authorize_url=config.authorize_url or default,
            token_url=base + config.token_path,
            client_id=config.client_id,
            client_secret=reveal(config.client_secret),
            state_key=STATE_REFRESH_TOKEN,
            scopes=tuple(config.scopes),
            error_text=error_message,
        )

    # --- webhooks -----------------------------------------------------------------------------

    @classmethod
    def webhook_subscriptions_for(cls, settings: HubSpotConfig) -> list[str]:
        """HubSpot has no wildcard for property changes: one subscription per property the
        instance reads, beside creation, deletion, merge and restore."""
        out = []
        for kind in cls.webhook_subscriptions:
            if kind == "contact.propertyChange":
                out += [f"{kind} ({name})" for name in settings.properties]
            else:
                out.append(kind)
        return out

    @classmethod
    def receive_webhook(cls, settings: HubSpotConfig, request: WebhookRequest) -> WebhookDelivery:
        """A HubSpot webhook, signed v3: the records its events name. The daemon refuses one
        signed over 5 minutes ago (``webhook_max_age``) or received before (the key is the
        signature, which covers the timestamp)."""
        secret = reveal(settings.webhook_secret) or reveal(settings.client_secret)
        if not secret:
            raise WebhookRefused(
                "not-enabled", "set webhook_secret (or client_secret): the app's client secret"
            )
        signature = request.headers.get(SIGNATURE, "")
        stamp = request.headers.get(TIMESTAMP, "")
        # Thirteen digits of milliseconds reach the year 2286; more is no timestamp.
        if not signature or not stamp.isdigit() or len(stamp) > 13:
            raise WebhookRefused("signature", f"no {SIGNATURE} or {TIMESTAMP} header")
        uri = settings.webhook_url or request.url
        expected = webhook_signature(secret, request.method, uri, request.body, stamp)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise WebhookRefused("signature", "the v3 signature does not match the app's secret")
        return WebhookDelivery(
            tuple(_hints(request.body)),
            signed_at=_EPOCH + int(stamp) * _MS,
            key=signature,
        )

    # --- check and describe -------------------------------------------------------------------

    def check(self) -> None:
        """One small read proves the URL, the credentials and the contacts scope."""
        self.client.check()

    def describe(self) -> list[RemoteField]:
        """The contact properties, from HubSpot's properties API."""
        fields = []
        for prop in self.client.properties():
            name = prop.get("name")
            if not isinstance(name, str) or prop.get("archived"):
                continue
            meta = prop.get("modificationMetadata") or {}
            read_only = bool(
                name in ALWAYS_READ_ONLY
                or prop.get("calculated")
                or (isinstance(meta, dict) and meta.get("readOnlyValue"))
            )
            fields.append(
                RemoteField(
                    name=name,
                    label=str(prop.get("label") or name),
                    type=str(prop.get("type") or "string"),
                    # HubSpot creates contacts without email, but it is the only key they
                    # are deduplicated on, and Mainstay's HubSpot sync requires it.
                    required=name == EMAIL,
                    read_only=read_only,
                    unique=name == EMAIL or bool(prop.get("hasUniqueValue")),
                )
            )
        return fields

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Pages of contacts changed since ``cursor``; see the module docstring."""
        pos = _Position(json_cursor(cursor, "HubSpot"), self._lookback)
        if pos.mode == "list" and pos.after is None and self.settings.pull_concurrency > 1:
            pos.mode = "scan"
        if pos.mode == "scan":
            yield from self._pull_scan(pos)
        elif pos.mode == "list":
            yield from self._pull_list(pos)
        else:
            yield from self._pull_search(pos)

    def _pull_list(self, pos: _Position) -> Iterator[Page]:
        """The first pull: every contact, by id, resumable at HubSpot's ``after`` token."""
        limit = min(self.settings.page_size, MAX_BATCH)
        listing = self.client.list_pages(self._read, after=pos.after, limit=limit)
        # The next page is fetched while the engine applies this one: at 150 ms a page, one
        # page at a time would make the platform's latency the pull's speed.
        for rows, after in prefetch(listing):
            records = self._records(rows)
            for record in records:
                pos.cursor.remember(record, int(record.remote_id))
            pos.after = after
            if after is None:
                # Listed to the end: from here on, searches from the newest change seen.
                pos.mode = "search"
            yield Page(records, pos.dump())

    def _pull_scan(self, pos: _Position) -> Iterator[Page]:
        """The first pull, concurrently: the id space split into ranges, each read by a
        keyset search (``hs_object_id GT last AND LTE high``, sorted by id, 200 a page).

        A keyset search starts afresh from the last id on every page, so the 10,000 cap never
        applies; the ranges run at once (:func:`~daemon.kit.paging.interleave`), paced by the
        search limiter, so the platform's latency is paid once per round, not once per page.
        The cursor records every range's last id: a pull that stops resumes each range.
        Search may lag writes by a few seconds, and a contact edited in a range already read
        is not read again, so the incremental pulls start from the scan's start (less the
        lookback), not from the newest change the scan saw.
        """
        if not pos.parts:
            pos.start = to_ms(self.client.clock.now())
            bottom, top = self._end_id("ASCENDING") - 1, self._end_id("DESCENDING")
            width = -(-(top - bottom) // self.settings.pull_concurrency)  # ceil: none left out
            pos.parts = [[low, min(top, low + width)] for low in range(bottom, top, width or 1)]
        ranges = [i for i, (last, high) in enumerate(pos.parts) if last < high]
        sources = [self._scan_range(*pos.parts[i]) for i in ranges]
        for index, (rows, last) in interleave(sources, depth=2):
            part = pos.parts[ranges[index]]
            part[0] = last
            records = self._records(rows)
            for record in records:
                pos.cursor.remember(record, int(record.remote_id))
            yield Page(records, pos.dump())
        pos.mode = "search"
        pos.cursor.rewind(_EPOCH + pos.start * _MS)
        yield Page([], pos.dump())

    def _end_id(self, direction: str) -> int:
        """The lowest or highest contact id (1 and 0 when there are none)."""
        rows, _ = self.client.search([], [{"propertyName": ID, "direction": direction}], [ID], 1, 0)
        found = _id_number(rows[0].get("id")) if rows else None
        if found is not None:
            return found
        return 1 if direction == "ASCENDING" else 0

    def _scan_range(self, last: int, high: int) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Pages of one id range and the last id each reaches (``high`` once it is done)."""
        sorts = [{"propertyName": ID, "direction": "ASCENDING"}]
        while last < high:
            groups = [{"filters": [_filter(ID, "GT", last), _filter(ID, "LTE", high)]}]
            rows, _ = self.client.search(groups, sorts, self._read, self.settings.page_size, 0)
            # A row without a numeric id is reported and skipped where the page is read
            # (_records); the keyset moves on from the rows that have one.
            ids = [n for n in (_id_number(r.get("id")) for r in rows) if n is not None]
            if len(rows) >= self.settings.page_size and not ids:
                raise MalformedResponse("a full page of HubSpot search results without ids")
            if ids and (min(ids) <= last or max(ids) > high):
                raise MalformedResponse("HubSpot's search answered ids outside the range asked")
            # A short page is the range's last; otherwise the next page starts past it.
            last = high if len(rows) < self.settings.page_size else max(ids)
            yield rows, last

    def _pull_search(self, pos: _Position) -> Iterator[Page]:
        """Incremental pages from the search API, restarting before the 10,000 cap."""
        first = not pos.sweep  # a pull that stopped mid-sweep resumes the sweep first
        while True:
            if pos.sweep:
                # Everything at exactly ``at``, by id: the id bound moves with every page, so
                # more than 10,000 contacts sharing one timestamp cannot stall it.
                filters = [
                    _filter(MODIFIED, "EQ", pos.at),
                    _filter(ID, "GT", pos.sweep_id),
                ]
                sorts = [{"propertyName": ID, "direction": "ASCENDING"}]
            else:
                # Inclusive at the start of a pull (re-reading the lookback window and the
                # last timestamp, deduplicated by ``seen``); past ``at`` after a restart.
                filters = [
                    _filter(MODIFIED, "GTE", max(0, to_ms(pos.cursor.since or _EPOCH)))
                    if first
                    else _filter(MODIFIED, "GT", pos.at)
                ]
                # HubSpot takes one sort: ties within a timestamp come in no promised order,
                # which is why a restart sweeps the last timestamp by id.
                sorts = [{"propertyName": MODIFIED, "direction": "ASCENDING"}]
            first = False
            capped = yield from self._search_segment(pos, [{"filters": filters}], sorts)
            if pos.sweep:
                pos.sweep = capped  # capped: sweep on from sweep_id; else ``at`` is done
            elif capped:
                # Finish the last timestamp by id (a search sorted on the date may have
                # split it at the cap), then go on past it.
                pos.sweep, pos.sweep_id = True, 0
            else:
                return

    def _search_segment(
        self, pos: _Position, groups: list[dict[str, Any]], sorts: list[dict[str, str]]
    ) -> Generator[Page, None, bool]:
        """Page one search until it ends (False) or would pass the 10,000 cap (True)."""
        limit = self.settings.page_size
        after = 0
        while True:
            rows, nxt = self.client.search(groups, sorts, self._read, limit, after)
            fresh = []
            for record in self._records(rows):
                assert record.modified_at is not None
                if pos.sweep:
                    pos.sweep_id = max(pos.sweep_id, int(record.remote_id))
                else:
                    pos.at = to_ms(record.modified_at)  # rows come sorted by date: the restart
                if pos.read(record):
                    fresh.append(record)  # else re-read inside the lookback window, unchanged
            if nxt is None or not rows:
                yield Page(fresh, pos.dump())
                return False
            if nxt <= after:
                raise MalformedResponse("HubSpot's search offset did not advance")
            after = nxt
            if after + limit > self.search_cap:
                yield Page(fresh, pos.dump())
                return True
            if fresh:
                yield Page(fresh, pos.dump())

    def _records(self, rows: Sequence[Mapping[str, Any]]) -> list[RemoteRecord]:
        """The page's records; a row that is not a usable contact (no id, no date) is a
        ``remote-malformed-response`` sync-log row and is skipped, so one broken record
        never stops the pull at the same place every cycle."""
        records = []
        for row in rows:
            try:
                records.append(self._record(row))
            except MalformedResponse as exc:
                remote_id = str(row.get("id") or "") if isinstance(row, Mapping) else ""
                # An id of 5,000 digits is not logged whole: the row names its start.
                self.context.report(Code.REMOTE_MALFORMED, exc.message, remote_id=remote_id[:40])
        return records

    def _record(self, row: Mapping[str, Any]) -> RemoteRecord:
        props = row.get("properties") if isinstance(row, Mapping) else None
        if not isinstance(props, dict):
            raise MalformedResponse("a HubSpot contact without properties")
        record_id = str(row.get("id") or props.get(ID) or "")
        modified = props.get(MODIFIED) or row.get("updatedAt")
        if _id_number(record_id) is None or not modified:
            raise MalformedResponse(f"a HubSpot contact without a usable id or {MODIFIED}")
        try:
            modified_at = parse_modified(modified)
        except ValueError:
            raise MalformedResponse(f"{MODIFIED} {modified!r} is not a date") from None
        fields = {k: props[k] for k in self.settings.properties if k in props}
        merged = tuple(i for i in str(props.get(MERGED) or "").split(";") if i and i != record_id)
        return RemoteRecord(
            record_id,
            fields,
            modified_at,
            deleted=bool(row.get("archived")),
            merged_from=merged,  # the engine moves links of these ids to this record
        )

    # --- deletes and merges ------------------------------------------------------------------

    def scan_deletes(self, cursor: str | None = None) -> Iterator[Page]:
        """Archived (deleted) contacts as tombstones: ``deleted=True`` records.

        Search never shows deletes, and listing the archive costs a request per 100, so the
        engine runs this on its own, less frequent schedule with its own cursor. The cursor
        is the newest ``archivedAt`` seen (ms): a later scan yields only newer archives.
        HubSpot keeps archived contacts restorable for 90 days, which bounds the list.
        """
        since = int(json_cursor(cursor, "HubSpot").get("archived_since", 0))
        newest = since
        for rows, after in self.client.list_pages([ID, EMAIL], archived=True):
            records = []
            for row in rows:
                when = row.get("archivedAt") or row.get("updatedAt")
                try:
                    ms = to_ms(parse_modified(when)) if when else 0
                except ValueError:
                    raise MalformedResponse(f"archivedAt {when!r} is not a date") from None
                if ms and ms <= since:
                    continue
                newest = max(newest, ms)
                records.append(
                    RemoteRecord(
                        str(row.get("id")),
                        {},
                        _EPOCH + ms * _MS if ms else None,
                        deleted=True,
                    )
                )
            # Only the finished scan may move the cursor: the archive is listed by id, not
            # by time, so an earlier page's newest archivedAt is no bound on the next pages.
            done = after is None
            cursor_out = json.dumps({"archived_since": newest}) if done else None
            if records or done:
                yield Page(records, cursor_out)

    def resolve_merged(self, remote_ids: Sequence[str]) -> dict[str, str]:
        """Map ids merged away to the surviving record's id (ids still alive map to none).

        HubSpot answers a read of a merged-away id with the survivor, whose
        ``hs_merged_object_ids`` lists the old ids.
        """
        resolved: dict[str, str] = {}
        wanted = set(remote_ids)
        for start in range(0, len(remote_ids), MAX_BATCH):
            chunk = remote_ids[start : start + MAX_BATCH]
            status, body = self.client.batch(
                "read",
                [{"id": i} for i in chunk],
                idempotent=True,
                properties=[ID, MERGED],
            )
            if status >= 400 and status != 404:
                raise MalformedResponse(f"batch/read: HTTP {status}: {error_message(body, status)}")
            for row in body.get("results") or []:
                survivor = str(row.get("id"))
                merged = str((row.get("properties") or {}).get(MERGED) or "")
                for old in merged.replace(",", ";").split(";"):
                    old = old.strip()
                    if old and old in wanted and old != survivor:
                        resolved[old] = survivor
        return resolved

    # --- push ---------------------------------------------------------------------------------

    def read(self, remote_ids: Sequence[str]) -> list[RemoteRecord]:
        """The records now: ``batch/read`` by id, 100 a call (one per push batch). A record
        merged away answers with its survivor, which is not what was asked for and is left
        out (the next pull follows the merge)."""
        wanted = set(remote_ids)
        records: list[RemoteRecord] = []
        ids = sorted(wanted)
        for start in range(0, len(ids), MAX_BATCH):
            status, body = self.client.batch(
                "read",
                [{"id": i} for i in ids[start : start + MAX_BATCH]],
                idempotent=True,
                properties=self._read,
            )
            if status >= 400 and status not in (207, 404):
                raise MalformedResponse(f"batch/read: HTTP {status}: {error_message(body, status)}")
            records += [
                r for r in self._records(body.get("results") or []) if r.remote_id in wanted
            ]
        return records

    def lookup(self, batch: Sequence[PushItem]) -> list[RemoteRecord]:
        """The contacts HubSpot holds with these items' emails: ``batch/read`` by the
        ``email`` id property, 100 a call (one call per push batch of 100). An email it does
        not know is simply absent from the answer (207 with ``errors[]``)."""
        emails = sorted({e.lower() for i in batch if (e := wire_value(i.fields.get(EMAIL)))})
        records: list[RemoteRecord] = []
        for start in range(0, len(emails), MAX_BATCH):
            chunk = emails[start : start + MAX_BATCH]
            status, body = self.client.batch(
                "read",
                [{"id": e} for e in chunk],
                idempotent=True,
                idProperty=EMAIL,
                properties=self._read,
            )
            if status >= 400 and status not in (207, 404):
                raise MalformedResponse(f"batch/read: HTTP {status}: {error_message(body, status)}")
            records += self._records(body.get("results") or [])
        return records

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """Update linked records by id; create or upsert (by email) the others."""
        results: list[PushResult] = []
        updates = [i for i in batch if i.remote_id]
        creates: list[PushItem] = []
        for item in batch:
            if item.remote_id:
                continue
            if self.settings.upsert_by_email and not wire_value(item.fields.get(EMAIL)):
                results.append(
                    PushResult(
                        item.contact_id,
                        PushStatus.REJECTED,
                        message="HubSpot needs an email to create or upsert a contact",
                        code=Code.MISSING_REMOTE_REQUIRED_FIELD,
                    )
                )
                continue
            creates.append(item)
        action = "upsert" if self.settings.upsert_by_email else "create"
        for items, act in ((updates, "update"), (creates, action)):
            for start in range(0, len(items), MAX_BATCH):
                results += self._push_chunk(act, items[start : start + MAX_BATCH])
        return results

    def _input(self, action: str, item: PushItem) -> dict[str, Any]:
        props = {k: wire_value(v) for k, v in item.fields.items() if k not in ALWAYS_READ_ONLY}
        entry: dict[str, Any] = {"properties": props, "objectWriteTraceId": item.contact_id}
        if action == "update":
            entry["id"] = item.remote_id
        elif action == "upsert":
            entry["id"] = props[EMAIL]
            entry["idProperty"] = EMAIL
        return entry

    def _push_chunk(self, action: str, items: Sequence[PushItem]) -> list[PushResult]:
        inputs = [self._input(action, item) for item in items]
        try:
            # Update and upsert land the same state however often they are sent; a create
            # that timed out may have been applied, so it is not repeated.
            status, body = self.client.batch(action, inputs, idempotent=action != "create")
        except Unavailable as exc:
            return [
                PushResult(i.contact_id, PushStatus.TRANSIENT, i.remote_id, message=exc.message)
                for i in items
            ]
        if status >= 400 and status != 207:
            message = error_message(body, status)
            if len(items) > 1:
                # The whole batch was refused for something one input did (a 409 duplicate
                # email, a bad value): send them one by one so only that record fails.
                return [r for item in items for r in self._push_chunk(action, [item])]
            return [
                PushResult(items[0].contact_id, PushStatus.REJECTED, items[0].remote_id, message)
            ]
        return self._attribute(action, items, inputs, body)

    def _attribute(
        self,
        action: str,
        items: Sequence[PushItem],
        inputs: Sequence[dict[str, Any]],
        body: Mapping[str, Any],
    ) -> list[PushResult]:
        """One result per item from a 200/201/207 body: results and ``errors[]`` matched to
        inputs by what HubSpot echoes for the action: the record id for an update (or the
        old id a merged survivor lists), the email for an upsert, the trace id or email for a
        create."""
        keys: dict[str, str] = {}
        for item, entry in zip(items, inputs, strict=True):
            if action == "update":
                keys[str(item.remote_id)] = item.contact_id
                continue
            if action == "create":
                keys[item.contact_id.lower()] = item.contact_id  # the objectWriteTraceId
            email = entry["properties"].get(EMAIL)
            if email:
                keys[email.lower()] = item.contact_id
        answered: dict[str, PushResult] = {}
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            message = error_message(error, 400)
            for value in _context_values(error):
                contact_id = keys.get(value.lower())
                if contact_id and contact_id not in answered:
                    remote = next(i.remote_id for i in items if i.contact_id == contact_id)
                    answered[contact_id] = PushResult(
                        contact_id, PushStatus.REJECTED, remote, message=message
                    )
        unmatched = []
        for row in body.get("results") or []:
            if not isinstance(row, dict) or not row.get("id"):
                continue
            props = row.get("properties") or {}
            if action == "update":
                candidates = [row.get("id"), *str(props.get(MERGED) or "").split(";")]
            else:
                candidates = [row.get("objectWriteTraceId"), props.get(EMAIL)]
            contact_id = next(
                (keys[str(c).lower()] for c in candidates if c and str(c).lower() in keys),
                None,
            )
            if contact_id is None:
                unmatched.append(row)
            elif contact_id not in answered:
                # An upsert that matched a record HubSpot already held says ``new: false``.
                answered[contact_id] = PushResult(
                    contact_id, PushStatus.OK, str(row["id"]), existed=row.get("new") is False
                )
        waiting = [i for i in items if i.contact_id not in answered]
        if not body.get("errors") and len(waiting) == len(unmatched):
            # Nothing echoed to match on, and no failures: HubSpot answers in input order.
            for item, row in zip(waiting, unmatched, strict=True):
                answered[item.contact_id] = PushResult(
                    item.contact_id, PushStatus.OK, str(row["id"]), existed=row.get("new") is False
                )
        return [
            answered.get(item.contact_id)
            or PushResult(
                item.contact_id,
                PushStatus.TRANSIENT,
                item.remote_id,
                message=f"HubSpot's batch/{action} answer did not mention this record",
            )
            for item in items
        ]

    def close(self) -> None:
        self.client.close()


def _filter(name: str, operator: str, value: int) -> dict[str, str]:
    """One search filter; HubSpot takes dates as epoch milliseconds in a string."""
    return {"propertyName": name, "operator": operator, "value": str(value)}


def _context_values(error: Mapping[str, Any]) -> list[str]:
    """Every string an error's ``context`` (and trace id) names: ids, emails, trace ids."""
    values: list[str] = []
    if error.get("objectWriteTraceId"):
        values.append(str(error["objectWriteTraceId"]))
    context = error.get("context")
    if isinstance(context, dict):
        for value in context.values():
            if isinstance(value, list):
                values += [str(v) for v in value]
            elif value is not None:
                values.append(str(value))
    return values


def _id_number(value: Any) -> int | None:
    """A HubSpot id as a number, or ``None`` when it is not one. Ids are 64-bit: a longer
    string of digits is no id, and ``int()`` of one past 4,300 digits raises, which would
    fail the page at the same place every cycle."""
    text = str(value or "")
    return int(text) if text.isdigit() and len(text) <= MAX_ID_DIGITS else None


def _hints(body: bytes) -> Iterator[ChangeHint]:
    """The hints of a webhook's events (a JSON array of up to 100): each contact event names
    its record; a merge names the survivor (whose read moves the merged ids' links); a
    deletion asks for the deletion scan too. Other objects' events are ignored."""
    try:
        events = json.loads(body)
    except ValueError:
        raise WebhookRefused("malformed", "the body is not JSON") from None
    if not isinstance(events, list) or len(events) > MAX_WEBHOOK_EVENTS:
        raise WebhookRefused(
            "malformed", f"the body is not an array of up to {MAX_WEBHOOK_EVENTS} events"
        )
    for event in events:
        if not isinstance(event, dict):
            raise WebhookRefused("malformed", "an event is not an object")
        kind = str(event.get("subscriptionType") or "")
        if not kind.startswith("contact.") and event.get("objectTypeId") != "0-1":
            continue
        occurred = event.get("occurredAt")
        stamped = isinstance(occurred, int) and 0 < occurred < 10**13
        at = _EPOCH + occurred * _MS if stamped else None
        ids = [event.get("primaryObjectId") if kind.endswith(".merge") else event.get("objectId")]
        if kind.endswith(".merge"):
            ids += list(event.get("mergedObjectIds") or [])
        wanted = tuple(str(i) for i in ids if _id_number(i) is not None)
        deleted = kind.endswith((".deletion", ".privacyDeletion"))
        if wanted or deleted:
            yield ChangeHint(wanted, deletes=deleted, occurred_at=at)
