"""The Slate connector: people pulled through a query web service, pushed as an upload dataset.

Pull. The configured query runs with its custom parameters and a ``since`` parameter: the
newest ``updated`` time seen so far, less an overlap window, written as Slate's naive local
time in the instance's time zone. It never relies on Slate's server-side "new since last
run" state, which a crash between Slate's answer and our commit would lose. The answer
streams (:class:`~plugins.slate.client.RowStream`) and is cut into pages of ``page_size``;
while rows come sorted by ``updated`` each page's cursor moves forward, otherwise pages keep
the cursor the pull started from and only the last page moves it. The cursor remembers the
rows inside the overlap (id, time and a hash of their values) so a re-read row that did not
change is not yielded again (the kit's ``OverlapCursor``).

Push. A batch becomes one CSV file with the Mainstay template's columns: the hub id
(``mainstay_id``), the Slate id of records already linked, and the mapped fields (custom
fields as ``CUSTOM_<name>``). By default it is uploaded over SFTP as
``mainstay_contact<UTC timestamp>.csv`` into ``incoming/<folder>/`` (written under a hidden
temporary name and renamed, so Slate's mask never sees half a file); ``upload = "web"``
posts it to the source format's web service instead, within 50 posts per 5 minutes. Slate
imports files later, so every record answers ``PENDING`` with a handle; the engine confirms
it when a pull sees the hub id come back (the query must export it), see
:mod:`daemon.engine.confirm`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from daemon.sdk import (
    AuthFailed,
    Capabilities,
    ClientConnector,
    Code,
    ConnectorConfig,
    ConnectorError,
    FileNamePart,
    FileTransport,
    MalformedResponse,
    OverlapCursor,
    Page,
    PlatformUrl,
    PushItem,
    PushResult,
    PushStatus,
    RelativePath,
    RemoteField,
    RemoteRecord,
    RetryPolicy,
    SecretStr,
    TransportSettings,
    Unavailable,
    check_time_zone,
    csv_bytes,
    json_cursor,
    open_transport,
    reveal,
    write_csv,
)
from plugins.slate.client import SlateClient

PENDING_PREFIX = "pending:"  # a handle, not a Slate id: the record is not imported yet
MAX_SEEN = 5000  # rows remembered inside the overlap; past it a re-read is yielded again
RETRY = RetryPolicy(attempts=5, backoff_base=1.0, backoff_max=30.0, max_retry_after=120.0)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLATE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class SlateConfig(ConnectorConfig):
    """The ``[settings]`` of a ``slate`` instance file."""

    base_url: PlatformUrl
    query_id: str
    token: SecretStr | None = None  # the web service's user token (sent as ``h``)
    username: str | None = None  # a service account (HTTP Basic); needed for upload = "web"
    password: SecretStr | None = None
    params: dict[str, str] = Field(default_factory=dict)  # the query's other custom parameters
    since_param: str = "since"
    overlap_seconds: int = Field(default=600, ge=0)
    timezone: str = "America/New_York"  # the Slate instance's zone: its times are naive
    id_field: str = "slate_id"  # export names: the record id, its update time, the hub id
    updated_field: str = "updated"
    hub_id_field: str = "mainstay_id"
    fields: list[str] = Field(default_factory=lambda: ["first_name", "last_name", "email", "phone"])
    email_fields: list[str] = Field(default_factory=lambda: ["email"])
    page_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=300.0, gt=0)
    upload: Literal["sftp", "web"] = "sftp"
    format_id: str | None = None  # the source format's GUID (upload = "web")
    folder: RelativePath = "mainstay"  # incoming/<folder>/ (upload = "sftp")
    file_prefix: FileNamePart = "mainstay_contact"
    transport: TransportSettings | None = None  # [settings.transport] (upload = "sftp")
    # Slate's import reads cells as data, so a quote would be stored in the record: off
    # (README, "Formula cells"); on for an upload folder that people also open.
    escape_formulas: bool = False

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_time_zone(value)

    @model_validator(mode="after")
    def _complete(self) -> SlateConfig:
        if self.token is None and not (self.username and self.password):
            raise ValueError("set token (a user token), or username and password")
        if self.upload == "web" and not (self.format_id and self.username and self.password):
            raise ValueError('upload = "web" needs format_id, username and password')
        if self.upload == "sftp" and self.transport is None:
            raise ValueError('upload = "sftp" needs a [settings.transport] table')
        return self


def parse_slate_time(value: Any, zone: ZoneInfo) -> datetime:
    """A Slate timestamp (naive, local to ``zone``) as an aware UTC datetime.

    ``2024-05-01T12:00:00``, ``2024-05-01 12:00:00.123`` and a bare date are read in
    ``zone``; a time that carries an offset keeps it. ``ValueError`` on anything else.
    """
    text = str(value).strip()
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)  # fold=0: an ambiguous hour reads as the first
    return moment.astimezone(UTC)


def slate_time(moment: datetime, zone: ZoneInfo) -> str:
    """An aware datetime as a naive local Slate parameter (to the second, rounded down)."""
    return moment.astimezone(zone).strftime(_SLATE_TIME_FORMAT)


def upload_name(prefix: str, moment: datetime) -> str:
    """Mainstay's file name: ``mainstay_contact2022-10-03T235350411Z.csv`` (UTC, ms)."""
    moment = moment.astimezone(UTC)
    return f"{prefix}{moment:%Y-%m-%dT%H%M%S}{moment.microsecond // 1000:03d}Z.csv"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class SlateConnector(ClientConnector):
    """Two-way contact sync with one Slate instance (query web service + upload dataset)."""

    type: ClassVar[str] = "slate"
    Config: ClassVar[type[ConnectorConfig]] = SlateConfig
    retry_policy: ClassVar[RetryPolicy] = RETRY
    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=True, push=True, create=True, deletes=False, modified_at=True, confirms_later=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config: SlateConfig = self.settings
        self.zone = ZoneInfo(config.timezone)

        self.client = SlateClient(
            base_url=config.base_url,
            query_id=config.query_id,
            token=reveal(config.token),
            username=config.username,
            password=reveal(config.password),
            format_id=config.format_id,
            clock=self.clock,
            retry=self.retry,
            timeout=config.timeout_seconds,
            transport=self.transport,
        )
        self._overlap = timedelta(seconds=config.overlap_seconds)
        self._files: FileTransport | None = None  # one SFTP session for the cycle's pushes
        self._times: dict[str, tuple[datetime, int]] = {}  # many rows share a timestamp
        self._read = list(dict.fromkeys([*config.fields, config.hub_id_field]))

    # --- check and describe -------------------------------------------------------------------

    def check(self) -> None:
        """Run the query for rows changed in the last minute: proves URL, query and auth."""
        since = slate_time(self.clock.now() - timedelta(minutes=1), self.zone)
        for _ in self.client.query({**self.settings.params, self.settings.since_param: since}):
            pass
        if self.settings.upload == "sftp" and self.settings.transport is not None:
            with open_transport(self.settings.transport, clock=self.clock) as files:
                files.makedirs(self._folder)

    def describe(self) -> list[RemoteField]:
        """The query's exports as configured (Slate has no schema API for a query)."""
        s = self.settings
        out = [
            RemoteField(s.id_field, "Slate id", read_only=True, unique=True),
            RemoteField(s.updated_field, "Updated", "datetime", read_only=True),
            RemoteField(s.hub_id_field, "Hub id", unique=True),
        ]
        for name in s.fields:
            if name not in (s.id_field, s.updated_field, s.hub_id_field):
                kind = "email" if name in s.email_fields else "string"
                out.append(RemoteField(name, name, kind))
        return out

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Pages of rows updated since the cursor (less the overlap); module docstring."""
        s = self.settings
        pos = OverlapCursor.load(
            json_cursor(cursor, "Slate"), window=self._overlap, cap=MAX_SEEN, platform="Slate"
        )
        start = pos.dump()
        params = dict(s.params)
        if pos.since is not None:
            params[s.since_param] = slate_time(pos.since, self.zone)
        in_order, last_ms = True, -1
        batch: list[RemoteRecord] = []
        for number, row in enumerate(self.client.query(params), 1):
            parsed = self._record(row, number)
            if parsed is None:
                continue
            record, ms = parsed
            if ms < last_ms:
                in_order = False  # only the end of the answer may move the cursor now
            last_ms = max(last_ms, ms)
            if not pos.read(record):
                continue  # re-read inside the overlap, unchanged
            batch.append(record)
            if len(batch) >= s.page_size:
                yield Page(batch, pos.dump() if in_order else start)
                batch = []
        yield Page(batch, pos.dump())

    def _record(self, row: Mapping[str, Any], number: int) -> tuple[RemoteRecord, int] | None:
        """The row as a record and its time in ms; ``None`` (reported, coded) for a row
        that cannot be one, so one bad row never holds up the others."""
        s = self.settings
        remote_id = row.get(s.id_field)
        updated = row.get(s.updated_field)
        if remote_id in (None, "") or updated in (None, ""):
            self.context.report(
                Code.REMOTE_MALFORMED,
                f"a Slate row without {s.id_field!r} or {s.updated_field!r}: the query must "
                "export both",
                row=number,
            )
            return None
        known = self._times.get(str(updated))
        if known is None:
            try:
                modified = parse_slate_time(updated, self.zone)
            except ValueError:
                self.context.report(
                    Code.REMOTE_MALFORMED,
                    f"{s.updated_field} is not a date: {str(updated)[:40]!r}",
                    row=number,
                    remote_id=str(remote_id),
                )
                return None
            if len(self._times) > 10_000:
                self._times.clear()
            known = self._times[str(updated)] = (modified, _ms(modified))
        fields = {k: row[k] for k in self._read if k in row}
        return RemoteRecord(str(remote_id), fields, known[0]), known[1]

    # --- push ---------------------------------------------------------------------------------

    @property
    def _folder(self) -> str:
        return f"incoming/{self.settings.folder.strip('/')}"

    def _problem(self, item: PushItem) -> str | None:
        """Why Slate's import would refuse this row (checked here: an upload has no
        per-row answer, and a bad row must fail alone rather than silently)."""
        for name in self.settings.email_fields:
            value = item.fields.get(name)
            if value not in (None, "") and not _EMAIL.match(str(value)):
                return f"{name} is not an email address Slate would import"
        for name, value in item.fields.items():
            if isinstance(value, str) and ("\x00" in value or len(value) > 4000):
                return f"{name} holds a value Slate cannot import (NUL or over 4000 characters)"
        return None

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """One upload file for the batch; every accepted row is PENDING with a handle."""
        s = self.settings
        results: list[PushResult] = []
        rows: list[dict[str, Any]] = []
        items: list[PushItem] = []
        for item in batch:
            problem = self._problem(item)
            if problem:
                results.append(
                    PushResult(item.contact_id, PushStatus.REJECTED, item.remote_id, problem)
                )
                continue
            slate_id = item.remote_id
            if slate_id and slate_id.startswith(PENDING_PREFIX):
                slate_id = None  # not imported yet: the hub id finds it, or it is created
            row = {k: v for k, v in item.fields.items() if v is not None}
            row[s.hub_id_field] = item.contact_id  # how Slate matches and we confirm
            if slate_id:
                row[s.id_field] = slate_id
            rows.append(row)
            items.append(item)
        if not rows:
            return results
        columns = [s.hub_id_field, s.id_field]
        columns += sorted({k for row in rows for k in row} - set(columns))
        name = upload_name(s.file_prefix, self.clock.now())
        escape = s.escape_formulas
        try:
            if s.upload == "web":
                self.client.upload(csv_bytes(columns, rows, escape_formulas=escape))
            else:
                self._transport().write_atomic(
                    f"{self._folder}/{name}", write_csv(columns, rows, escape_formulas=escape)
                )
        except (AuthFailed, MalformedResponse):
            raise  # the cycle stops with the code; nothing was accepted
        except (Unavailable, OSError) as exc:
            self._drop_transport()  # the next batch connects afresh
            message = exc.message if isinstance(exc, ConnectorError) else str(exc)
            return results + [
                PushResult(i.contact_id, PushStatus.TRANSIENT, i.remote_id, message) for i in items
            ]
        for item in items:
            real = item.remote_id if item.remote_id and not _pending(item.remote_id) else None
            results.append(
                PushResult(
                    item.contact_id,
                    PushStatus.PENDING,
                    real,
                    handle=f"{PENDING_PREFIX}{name}#{item.contact_id}",
                )
            )
        return results

    def _transport(self) -> FileTransport:
        if self._files is None:
            assert self.settings.transport is not None
            files = open_transport(self.settings.transport, clock=self.clock)
            try:
                files.makedirs(self._folder)
            except BaseException:
                files.close()
                raise
            self._files = files
        return self._files

    def _drop_transport(self) -> None:
        files, self._files = self._files, None
        if files is not None:
            with contextlib.suppress(Exception):
                files.close()

    def close(self) -> None:
        self._drop_transport()
        self.client.close()


def _pending(remote_id: str) -> bool:
    return remote_id.startswith(PENDING_PREFIX)


__all__ = ["PENDING_PREFIX", "SlateConfig", "SlateConnector"]
