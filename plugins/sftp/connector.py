"""The ``sftp`` connector: contacts as CSV files on an SFTP server (or a local folder).

Incoming (``pull``):

- lists ``incoming_folder`` for ``file_mask``, and keeps the files whose size and mtime stood
  still for ``stable_seconds`` (an SFTP server cannot tell a finished upload from one in
  flight);
- reads each file once to hash it and check it whole (UTF-8, CSV structure, header, the id
  column): a file that fails moves to ``error_folder`` with a ``file-malformed`` sync-log
  row, and nothing of it is imported;
- a file whose (name, size, sha256) is in the ledger was imported before: it moves to
  ``processed_folder`` untouched, so a file is never imported twice;
- then streams the rows as pages of records. Each page's cursor names the file, its hash and
  the last row read, and the engine commits it with the page, so a crash mid-file resumes
  after the last committed row: nothing twice, nothing lost. Once the file's last page is
  committed, the file moves to ``processed_folder`` and enters the ledger (kept in the cursor,
  which commits atomically with the rows, and in the connector state).

Rows are numbered as a spreadsheet shows them (the header is row 1); every row problem's
sync-log row carries ``file`` and ``row``. The record id (the link's remote id) is the
``id_column`` cell (Banner: ``SPRIDEN_ID``).

Outgoing (``push``): each batch becomes one CSV, ``<file_prefix><UTC timestamp>.csv``
(``mainstay_contact2022-10-03T235350411Z.csv``), uploaded atomically (a hidden temporary name,
then a rename) to ``outgoing_folder``. Columns: the hub id column, then the mapped columns in
preset order, custom fields as ``CUSTOM_<name>``. A blank cell means "no change": only what
changed since the last exchange is sent, and the key columns always are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from daemon.sdk import (
    SYSTEM_CLOCK,
    Capabilities,
    Clock,
    Code,
    Connector,
    ConnectorConfig,
    ConnectorContext,
    FileMalformed,
    FileNamePart,
    FileTransport,
    Page,
    PushItem,
    PushResult,
    PushStatus,
    RelativePath,
    RemoteField,
    RemoteFile,
    RemoteRecord,
    TransportSettings,
    Unavailable,
    check_header,
    get_logger,
    header_key,
    json_cursor,
    name_problem,
    open_transport,
    stable_files,
    stream_rows,
    write_csv,
)
from plugins.sftp.presets import PRESETS

log = get_logger("contactsync.sftp")
CUSTOM_COLUMN_PREFIX = "CUSTOM_"
LEDGER_STATE_KEY = "ledger"


class SftpConfig(ConnectorConfig):
    """The ``[settings]`` of an ``sftp`` instance file (``[settings.transport]`` is nested)."""

    transport: TransportSettings
    preset: Literal["mainstay", "banner", "recruit"] = "mainstay"
    columns: dict[str, str] = Field(default_factory=dict)  # hub field -> column; "" drops it
    custom_fields: list[str] = Field(default_factory=list)  # custom:<name> <-> CUSTOM_<name>
    id_column: str | None = None  # default: the preset's
    hub_id_column: str | None = None  # default: the preset's
    phone_transform: str | None = "phone_10digit"
    incoming_folder: RelativePath = "incoming"
    file_mask: str = "*.csv"
    processed_folder: RelativePath | None = None  # default: <incoming_folder>/processed
    error_folder: RelativePath | None = None  # default: <incoming_folder>/error
    outgoing_folder: RelativePath = "outgoing"
    file_prefix: FileNamePart = "mainstay_contact"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    page_size: int = Field(default=500, ge=1, le=10_000)
    ledger_size: int = Field(default=1000, ge=10, le=100_000)
    escape_formulas: bool | None = None  # default: the preset's (README, "Formula cells")

    @model_validator(mode="after")
    def _defaults(self) -> SftpConfig:
        preset = PRESETS[self.preset]
        self.id_column = self.id_column or preset.id_column
        self.hub_id_column = self.hub_id_column or preset.hub_id_column
        self.processed_folder = self.processed_folder or f"{self.incoming_folder}/processed"
        self.error_folder = self.error_folder or f"{self.incoming_folder}/error"
        if self.escape_formulas is None:
            self.escape_formulas = preset.escape_formulas
        return self

    def column_map(self) -> dict[str, str]:
        """Hub field -> column: the preset, the ``columns`` overrides, the custom fields."""
        merged = {**PRESETS[self.preset].columns, **self.columns}
        for name in self.custom_fields:
            merged.setdefault(f"custom:{name}", CUSTOM_COLUMN_PREFIX + name)
        return {hub: column for hub, column in merged.items() if column}


def csv_timestamp(moment: datetime) -> str:
    """``2022-10-03T235350411Z``: the UTC time as Mainstay names its files."""
    return moment.strftime("%Y-%m-%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


class _Cursor:
    """Where the pull stands: the file in progress (name, size, sha256, last row read, whether
    its last page is committed) and the ledger of imported files."""

    def __init__(self, text: str | None) -> None:
        raw = json_cursor(text, "SFTP")
        self.file: dict[str, Any] | None = raw.get("file")
        self.ledger: list[list[Any]] = [list(entry) for entry in raw.get("ledger", [])]

    def dump(self, limit: int) -> str:
        self.ledger = self.ledger[-limit:]
        raw: dict[str, Any] = {"v": 1, "ledger": self.ledger}
        if self.file is not None:
            raw["file"] = self.file
        return json.dumps(raw, separators=(",", ":"))


class _Checked:
    """A file that passed the whole-file check."""

    def __init__(self, file: RemoteFile, sha256: str, size: int, header: list[str]) -> None:
        self.file = file
        self.sha256 = sha256
        self.size = size
        self.header = header

    @property
    def key(self) -> list[Any]:
        return [self.file.name, self.size, self.sha256]


class SftpConnector(Connector):
    """Contact files over SFTP: Ellucian Banner and Recruit extracts in, CSV drops out."""

    type: ClassVar[str] = "sftp"
    Config: ClassVar[type[ConnectorConfig]] = SftpConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        pull=True, push=True, create=True, deletes=False, modified_at=False
    )

    def __init__(
        self,
        config: ConnectorConfig,
        context: ConnectorContext,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(config, context)
        assert isinstance(config, SftpConfig)
        self.settings = config
        self.clock = clock or SYSTEM_CLOCK
        self._transport: FileTransport | None = None
        columns = config.column_map()
        # Header cells are matched to configured columns case- and spacing-blind.
        self._by_key = {header_key(c): c for c in [*columns.values(), config.id_column or ""]}
        self._out_columns = list(dict.fromkeys([config.hub_id_column or "", *columns.values()]))

    @classmethod
    def default_fields(cls, settings: SftpConfig) -> list[dict[str, Any]]:
        """The ``[[fields]]`` the preset proposes (the instance's own entries win)."""
        fields = []
        for hub, column in settings.column_map().items():
            if hub == "phone" and settings.phone_transform:
                # Incoming phones meet the hub's own phone rule (invalid-phone, as an import
                # does); outgoing ones take the far side's form.
                fields.append({"hub": hub, "remote": column, "direction": "incoming"})
                fields.append(
                    {
                        "hub": hub,
                        "remote": column,
                        "direction": "outgoing",
                        "transform": settings.phone_transform,
                    }
                )
            else:
                fields.append({"hub": hub, "remote": column})
        return fields

    # --- connection -----------------------------------------------------------------------

    def transport(self) -> FileTransport:
        """The cycle's one connection, opened on first use."""
        if self._transport is None:
            self._transport = open_transport(self.settings.transport, clock=self.clock)
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def check(self) -> None:
        """Connect (host key, credentials) and list the incoming folder."""
        transport = self.transport()
        try:
            transport.list(self.settings.incoming_folder, self.settings.file_mask)
        except FileNotFoundError:
            raise Unavailable(
                f"incoming folder {self.settings.incoming_folder!r} does not exist"
            ) from None

    def describe(self) -> list[RemoteField]:
        """The configured columns (a file has no catalogue of its own).

        The id column is ``unique`` but not ``read_only``: unlike a platform's record id, it
        is written on every outgoing row (:meth:`push`), because it is how the far side keys
        the row. An outgoing map onto it (the presets map ``crm_id`` both ways) writes that
        key, which is what ``sync`` does, so ``contactsync check`` must not refuse it."""
        settings = self.settings
        names = list(dict.fromkeys([settings.id_column or "", *self._out_columns]))
        return [RemoteField(name=n, unique=n == settings.id_column) for n in names if n]

    # --- pull -----------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> Iterator[Page]:
        settings = self.settings
        state = _Cursor(cursor)
        transport = self.transport()
        if not self.context.dry_run:
            transport.makedirs(settings.processed_folder or "")
            transport.makedirs(settings.error_folder or "")
        ledger = {tuple(e) for e in state.ledger}
        ledger |= {tuple(e) for e in self.context.state.get(LEDGER_STATE_KEY, [])}

        if state.file is not None and state.file.get("done"):
            # The last page of this file was committed; the move (or the ledger) may not
            # have happened before the process stopped.
            self._finish(transport, state, ledger)
            yield Page([], state.dump(settings.ledger_size))
        try:
            listed = transport.list(settings.incoming_folder, settings.file_mask)
        except FileNotFoundError:
            raise Unavailable(
                f"incoming folder {settings.incoming_folder!r} does not exist"
            ) from None
        files = stable_files(
            transport,
            self._usable(listed),
            wait_seconds=settings.transport.stable_seconds,
            clock=self.clock,
        )
        if state.file is not None:
            # The file a crash interrupted goes first, before its position is overwritten.
            files.sort(key=lambda f: f.name != state.file.get("name"))  # type: ignore[union-attr]
        for file in files:
            checked = self._check(transport, file)
            if checked is None:
                continue
            if tuple(checked.key) in ledger:
                log.info("sftp_file_already_imported", file=file.name, sha256=checked.sha256)
                self._move(transport, file.path, settings.processed_folder or "")
                continue
            yield from self._import(transport, checked, state)
            self._finish(transport, state, ledger)
            yield Page([], state.dump(settings.ledger_size))

    def _usable(self, listed: list[RemoteFile]) -> list[RemoteFile]:
        """The listed files whose names are names. One that could be read as a path (a
        ``\\`` or ``/``, ``..``, a control character) is reported ``file-malformed`` and left
        where it is, untouched: moving it would mean using that name as a path on a server
        that may read it as one. The other files go on."""
        usable = []
        for file in listed:
            problem = name_problem(file.name)
            if problem is None:
                usable.append(file)
                continue
            self.context.report(
                Code.FILE_MALFORMED,
                f"file not imported: {problem}; left in {self.settings.incoming_folder}/",
                file=file.name,
            )
        return usable

    def _check(self, transport: FileTransport, file: RemoteFile) -> _Checked | None:
        """Hash and check the whole file; a bad one goes to the error folder."""
        settings = self.settings
        digest = hashlib.sha256()
        size = 0

        def seen(raw: bytes) -> None:
            nonlocal size
            digest.update(raw)
            size += len(raw)

        try:
            with transport.open_read(file.path) as stream:
                rows = stream_rows(stream, settings.delimiter, on_bytes=seen)
                header = check_header(next(rows, None))
                self._header_columns(header)
                for _ in rows:
                    pass
        except FileMalformed as exc:
            self.context.report(
                Code.FILE_MALFORMED,
                f"file not imported: {exc}; moved to {settings.error_folder}/",
                file=file.name,
            )
            self._move(transport, file.path, settings.error_folder or "")
            return None
        except FileNotFoundError:
            return None  # taken away meanwhile (another reader, an operator)
        if size != file.size:
            return None  # it changed after the stability check: next cycle
        return _Checked(file, digest.hexdigest(), size, header)

    def _header_columns(self, header: list[str]) -> list[str]:
        """Each header cell as the configured column it names (or itself, unmapped)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for position, raw in enumerate(header, start=1):
            cell = raw.strip()
            if not cell:
                raise FileMalformed(f"column {position} of the header has no name")
            key = header_key(cell)
            if key in seen:
                raise FileMalformed(f"columns {seen[key]} and {position} are both {cell!r}")
            seen[key] = position
            names.append(self._by_key.get(key, cell))
        if self.settings.id_column not in names:
            raise FileMalformed(f"the header has no {self.settings.id_column!r} column")
        return names

    def _import(
        self, transport: FileTransport, checked: _Checked, state: _Cursor
    ) -> Iterator[Page]:
        settings = self.settings
        name = checked.file.name
        resume = 0
        current = state.file
        if (
            current is not None
            and current.get("name") == name
            and current.get("sha256") == checked.sha256
        ):
            resume = int(current.get("row", 0))
        columns = self._header_columns(checked.header)
        width = len(columns)
        id_index = columns.index(settings.id_column or "")
        records: list[RemoteRecord] = []
        ids: set[str] = set()
        position = {"name": name, "size": checked.size, "sha256": checked.sha256}
        last_row = resume
        with transport.open_read(checked.file.path) as stream:
            rows = stream_rows(stream, settings.delimiter)
            next(rows)  # the header, already checked
            for row_number, row in enumerate(rows, start=2):
                if row_number <= resume:
                    continue
                last_row = row_number
                if not any(cell.strip() for cell in row):
                    continue  # a blank line is no record
                if len(row) != width:
                    self.context.report(
                        Code.FILE_MALFORMED,
                        f"row has {len(row)} cells; the header has {width}; row skipped",
                        file=name,
                        row=row_number,
                    )
                    continue
                remote_id = row[id_index].strip()
                if not remote_id:
                    self.context.report(
                        Code.BLANK_REQUIRED_DATA,
                        f"{settings.id_column} is blank; row skipped",
                        file=name,
                        row=row_number,
                    )
                    continue
                if remote_id in ids:
                    # One record per id per page: the engine keys a page's links on it.
                    yield self._page(records, position, row_number - 1, state)
                    records, ids = [], set()
                records.append(
                    RemoteRecord(
                        remote_id,
                        dict(zip(columns, row, strict=True)),
                        source={"file": name, "row": row_number},
                    )
                )
                ids.add(remote_id)
                if len(records) >= settings.page_size:
                    yield self._page(records, position, row_number, state)
                    records, ids = [], set()
        state.file = {**position, "row": last_row, "done": True}
        yield Page(records, state.dump(settings.ledger_size))

    def _page(
        self, records: list[RemoteRecord], position: dict[str, Any], row: int, state: _Cursor
    ) -> Page:
        state.file = {**position, "row": row, "done": False}
        return Page(records, state.dump(self.settings.ledger_size))

    def _finish(self, transport: FileTransport, state: _Cursor, ledger: set[tuple]) -> None:
        """After a file's last page is committed: into the ledger, then to processed."""
        done = state.file
        if done is None:
            return
        key = [done["name"], done["size"], done["sha256"]]
        if tuple(key) not in ledger:
            ledger.add(tuple(key))
            state.ledger.append(key)
            kept = list(self.context.state.get(LEDGER_STATE_KEY, []))
            kept.append(key)
            self.context.state[LEDGER_STATE_KEY] = kept[-self.settings.ledger_size * 10 :]
        state.file = None
        incoming = f"{self.settings.incoming_folder}/{done['name']}"
        present = transport.stat(incoming)
        if present is not None and present.size == done["size"]:
            self._move(transport, incoming, self.settings.processed_folder or "")

    def _move(self, transport: FileTransport, path: str, folder: str) -> None:
        if self.context.dry_run:
            return  # a dry run reads; the files stay where they are
        name = path.rsplit("/", 1)[-1]
        # Like Slate's /processed/: a file of the same name there is replaced.
        transport.move(path, f"{folder}/{name}")

    # --- push -----------------------------------------------------------------------------

    def push(self, batch: Sequence[PushItem]) -> list[PushResult]:
        """One CSV file for the batch, uploaded atomically; every row answers OK."""
        if not batch:
            return []
        settings = self.settings
        hub_column, id_column = settings.hub_id_column or "", settings.id_column or ""
        columns = list(self._out_columns)
        for item in batch:
            columns.extend(k for k in item.fields if k not in columns)
        rows: list[Mapping[str, Any]] = []
        results = []
        for item in batch:
            row = dict(item.fields)
            row[hub_column] = item.contact_id
            if item.remote_id and not row.get(id_column):
                row[id_column] = item.remote_id  # the key of an update is always written
            if id_column in row and id_column not in columns:
                columns.append(id_column)
            rows.append(row)
            # The link's remote id: the far side's key when we know it, else our own id
            # (the far side keys our rows on the hub id column).
            remote_id = str(row.get(id_column) or item.contact_id)
            results.append(PushResult(item.contact_id, PushStatus.OK, remote_id=remote_id))
        transport = self.transport()
        transport.makedirs(settings.outgoing_folder)
        path = self._free_name(transport)
        try:
            transport.write_atomic(
                path, write_csv(columns, rows, escape_formulas=bool(settings.escape_formulas))
            )
        except OSError as exc:
            raise Unavailable(f"cannot write {path}: {exc.strerror or exc}") from None
        log.info("sftp_file_written", file=path, rows=len(rows))
        return results

    def _free_name(self, transport: FileTransport) -> str:
        """``<prefix><timestamp>.csv`` in the outgoing folder, a millisecond later while
        the name is taken (two batches within one millisecond)."""
        moment = self.clock.now()
        while True:
            name = f"{self.settings.file_prefix}{csv_timestamp(moment)}.csv"
            path = f"{self.settings.outgoing_folder}/{name}"
            if transport.stat(path) is None:
                return path
            moment += timedelta(milliseconds=1)
