"""Technolutions Slate, simulated: its query web service and its upload dataset, on the kit.

The kit (:mod:`daemon.kit.simkit`) serves HTTP on loopback and owns latency, random 5xx, dropped
connections, malformed bodies, one-shot faults and ``/_sim/reset|faults|state``. This module
adds what Slate does (facts from ``shared/research/slate_colleague_sftp.md`` §1 and
``shared/research/mainstay.md`` §2.3):

- **Query web service**: ``GET /manage/query/run?id=<query guid>&cmd=service&output=json``.
  The query string is parsed, not matched by position. Auth is the user token in ``h``, or
  HTTP Basic with a service account; anything else is a 401 with ``WWW-Authenticate: Basic``
  and an HTML body. Custom parameters: ``since`` (a naive datetime in the instance's time
  zone) filters on the ``updated`` export. The answer is ``{"row": [...]}``, one flat
  object per person keyed by export name, sorted by ``updated``; no paging, so one answer
  can be large. Without ``include_nulls`` a NULL value's key is left out of the row.
- **Upload dataset by web service**: ``POST /manage/service/import?cmd=load&format=<guid>``
  with HTTP Basic only (source formats always need a user). At most ``upload_rate_limit``
  posts per ``upload_rate_window_seconds`` (50 per 5 minutes); past it a 429 with Slate's
  sentence. A 200 means *accepted*: the file is processed ``processing_delay_seconds`` later
  on the simulator's clock (checked on every request, or by :meth:`process_pending`).
- **Upload dataset by SFTP**: with ``sftp_root`` (the folder the test sshd serves, or any
  local folder), files in ``incoming/<sftp_folder>/`` matching ``import_mask`` (hidden and
  ``.part``/``.filepart``/``.tmp`` names are ignored) are picked up on a scan (at most every
  ``scan_interval_seconds``), processed after the same delay, and moved to
  ``incoming/processed/``, overwriting a file of the same name there, as Slate does.
- **Source format**: CSV with a header; columns are export names. A row updates the person
  whose ``slate_id`` it names, else the person whose ``match_field`` (the hub id,
  ``mainstay_id``) it carries, else creates a person with a new GUID. Blank cells leave a
  value alone. Processed rows become people that later queries return, so a round trip can
  be tested. Bad rows go to the import log (``GET /_sim/state``), as Slate's import report.
- Timestamps are naive local times in ``timezone`` (the instance's time zone), to the second.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import io
import os
import random
import uuid
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from daemon.sdk import Reply, Request, Simulator, SimulatorError, json_reply

QUERY_PATH = "/manage/query/run"
IMPORT_PATH = "/manage/service/import"
ID = "slate_id"
UPDATED = "updated"
HUB_ID = "mainstay_id"
STANDARD = ("first_name", "last_name", "email", "phone")
IGNORED_SUFFIXES = (".part", ".filepart", ".tmp", ".incomplete")
RATE_SENTENCE = "The Upload Dataset rate limit is 50 posts in a 5 minute window."
STAMP = "%Y-%m-%dT%H:%M:%S"

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Radia", "Tim")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Perlman")
_AREA_CODES = ("212", "305", "312", "404", "415", "503", "512", "617", "646", "702")


def _html(status: int, title: str) -> Reply:
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    headers = {"Content-Type": "text/html; charset=utf-8"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Slate"'
    return status, headers, body


class SlateSimulator(Simulator):
    """Slate's query web service and upload dataset. See the module docstring for the rules.

    Knobs (keyword options; each is a ``contactsync simulate slate`` flag): ``timezone``,
    ``processing_delay_seconds``, ``upload_rate_limit``, ``upload_rate_window_seconds``,
    ``sftp_root``, ``sftp_folder``, ``import_mask``, ``scan_interval_seconds``,
    ``include_nulls``, ``match_field`` and ``sort_rows``, besides the kit's ``contacts``,
    ``latency``, ``error_rate``, ``seed`` and ``clock``.
    """

    name = "slate"
    knob_options: ClassVar[dict[str, tuple[type, Any, str]]] = {
        "timezone": (str, "America/New_York", "The instance's time zone (naive timestamps)."),
        "processing_delay_seconds": (float, 0.0, "Seconds from an accepted upload to its data."),
        "upload_rate_limit": (int, 50, "Upload Dataset posts allowed per window."),
        "upload_rate_window_seconds": (float, 300.0, "The upload rate window, in seconds."),
        "sftp_root": (str, "", "Folder holding incoming/ (the SFTP root); empty: no SFTP."),
        "sftp_folder": (str, "mainstay", "The import path's folder under incoming/."),
        "import_mask": (str, "mainstay*.csv", "The import mask in that folder."),
        "scan_interval_seconds": (float, 0.0, "Least seconds between two SFTP scans."),
        "include_nulls": (bool, False, "Rows carry NULL values as null keys."),
        "match_field": (str, HUB_ID, "The upload column that finds an existing person."),
        "sort_rows": (bool, True, "Rows come sorted by updated (else by Slate id)."),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.sftp_root is not None:
            for folder in (self.incoming, self.sftp_root / "incoming" / "processed"):
                folder.mkdir(parents=True, exist_ok=True)

    def set_knob(self, name: str, value: Any) -> None:
        # Three knobs are kept in the form the rules use; the rest as declared.
        if name == "timezone":
            self.timezone = ZoneInfo(str(value))
            self.timezone_name = str(value)
        elif name == "sftp_root":
            self.sftp_root = Path(value) if value else None
        elif name == "sftp_folder":
            self.sftp_folder = str(value).strip("/")
        else:
            super().set_knob(name, value)

    # --- credentials --------------------------------------------------------------------------

    @property
    def query_id(self) -> str:
        """The query's GUID (its ``id`` parameter)."""
        return str(uuid.UUID(int=random.Random(self.seed + 11).getrandbits(128), version=4))

    @property
    def format_id(self) -> str:
        """The source format's GUID (the upload's ``format`` parameter)."""
        return str(uuid.UUID(int=random.Random(self.seed + 12).getrandbits(128), version=4))

    @property
    def user_token(self) -> str:
        """The web service's user token, sent as ``h``."""
        return str(uuid.UUID(int=random.Random(self.seed + 13).getrandbits(128), version=4))

    @property
    def username(self) -> str:
        """The service account's user name."""
        return "svc-contactsync"

    @property
    def password(self) -> str:
        """The service account's password."""
        return f"slate-sim-pw-{self.seed:04d}-Xq7"

    def credentials(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "format_id": self.format_id,
            "token": self.user_token,
            "username": self.username,
            "password": self.password,
            "timezone": self.timezone_name,
            "sftp_root": str(self.sftp_root) if self.sftp_root else None,
            "sftp_folder": self.sftp_folder,
        }

    @property
    def incoming(self) -> Path:
        """The folder SFTP uploads land in (``<sftp_root>/incoming/<sftp_folder>``)."""
        if self.sftp_root is None:
            raise RuntimeError("the Slate simulator has no sftp_root")
        return self.sftp_root / "incoming" / self.sftp_folder

    @property
    def processed(self) -> Path:
        """Where processed files are moved (``<sftp_root>/incoming/processed``)."""
        if self.sftp_root is None:
            raise RuntimeError("the Slate simulator has no sftp_root")
        return self.sftp_root / "incoming" / "processed"

    # --- state --------------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self._id_rng = random.Random(self.seed + 1)
        self._posts: deque[float] = deque()
        # Accepted uploads waiting to be processed: (due monotonic, source name, CSV bytes).
        self._queue: list[tuple[float, str, bytes]] = []
        self._seen_files: dict[str, float] = {}  # file name -> monotonic it was first seen
        self._last_scan = float("-inf")
        self.import_log: list[dict[str, Any]] = []
        self.counters = {"queries": 0, "rows_served": 0, "posts": 0, "rate_limited": 0}
        self.counters |= {"files": 0, "rows_imported": 0}
        rng = random.Random(self.seed)
        for i in range(self.contacts):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            self._create(
                {
                    "first_name": first,
                    "last_name": last,
                    "email": f"{first}.{last}.{i}@example.edu".lower(),
                    "phone": f"{rng.choice(_AREA_CODES)}{rng.randrange(200, 1000)}"
                    f"{rng.randrange(10000):04d}",
                }
            )

    def state(self) -> dict[str, Any]:
        return {
            "people": len(self.people),
            "queued_uploads": len(self._queue),
            "import_log": self.import_log[-50:],
            "counters": dict(self.counters),
            "knobs": self.knobs(),
        }

    def knobs(self) -> dict[str, Any]:
        return super().knobs() | {
            "timezone": self.timezone_name,
            "sftp_root": str(self.sftp_root or ""),
        }

    def local_now(self) -> datetime:
        """Now as Slate writes it: naive, in the instance's time zone, to the second."""
        return self.clock.now().astimezone(self.timezone).replace(tzinfo=None, microsecond=0)

    # --- what a Slate user does (tests call these directly) -----------------------------------

    def add_person(self, **fields: Any) -> str:
        """Create a person as a Slate user would; return the GUID."""
        with self.lock:
            return self._create({k: v for k, v in fields.items() if v not in (None, "")})[ID]

    def edit_person(self, slate_id: str, **fields: Any) -> None:
        """Change a person as a user would; ``None`` or ``""`` clears a value."""
        with self.lock:
            self._update(self.people[slate_id], fields, clear_blank=True)

    def add_people(self, count: int, *, start: int = 0) -> None:
        """Create ``count`` people quickly (for benchmarks), a second apart back from now."""
        with self.lock:
            base = self.local_now() - timedelta(seconds=count)
            for i in range(start, start + count):
                guid = self._guid()
                self.people[guid] = {
                    ID: guid,
                    "first_name": f"First{i}",
                    "last_name": f"Last{i}",
                    "email": f"person{i}@example.edu",
                    "phone": f"617{200 + i // 10000 % 800:03d}{i % 10000:04d}",
                    UPDATED: base + timedelta(seconds=i - start),
                }

    def person(self, slate_id: str) -> dict[str, Any]:
        """A person as the query exports it."""
        with self.lock:
            return self._export(self.people[slate_id])

    def find(self, field: str, value: Any) -> dict[str, Any] | None:
        """The first person whose ``field`` is ``value``, as exported, or ``None``."""
        with self.lock:
            for person in self.people.values():
                if person.get(field) == value:
                    return self._export(person)
            return None

    def process_pending(self) -> int:
        """Process every accepted upload and every waiting SFTP file now, whatever the
        delay (Slate's "force pickup" and "force import"); return the rows imported."""
        with self.lock:
            return self._process(force=True)

    # --- records ------------------------------------------------------------------------------

    def _guid(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _create(self, fields: dict[str, Any]) -> dict[str, Any]:
        guid = self._guid()
        person = {ID: guid, **{k: str(v) for k, v in fields.items()}, UPDATED: self.local_now()}
        self.people[guid] = person
        return person

    def _update(self, person: dict[str, Any], fields: dict[str, Any], *, clear_blank: bool) -> None:
        for key, value in fields.items():
            if key in (ID, UPDATED):
                continue
            if value is None or value == "":
                if clear_blank:
                    person.pop(key, None)
                continue
            person[key] = str(value)
        person[UPDATED] = self.local_now()

    def _export(self, person: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if self.include_nulls:
            row |= {name: None for name in (*STANDARD, HUB_ID)}
        for key, value in person.items():
            row[key] = value.strftime(STAMP) if isinstance(value, datetime) else value
        return row

    # --- uploads ------------------------------------------------------------------------------

    def _process(self, *, force: bool = False) -> int:
        """Import what is due (everything with ``force``): queued posts and SFTP files."""
        now = self.clock.monotonic()
        imported = 0
        due = [q for q in self._queue if force or q[0] <= now]
        self._queue = [q for q in self._queue if not (force or q[0] <= now)]
        for _, source, data in due:
            imported += self._import(source, data)
        if self.sftp_root is not None and (
            force or now - self._last_scan >= self.scan_interval_seconds
        ):
            self._last_scan = now
            imported += self._scan(now, force)
        return imported

    def _scan(self, now: float, force: bool) -> int:
        imported = 0
        try:
            names = sorted(os.listdir(self.incoming))
        except FileNotFoundError:
            return 0
        for name in names:
            path = self.incoming / name
            if (
                name.startswith(".")
                or name.endswith(IGNORED_SUFFIXES)
                or not fnmatch.fnmatchcase(name, self.import_mask)
                or not path.is_file()
            ):
                continue
            first_seen = self._seen_files.setdefault(name, now)
            if not force and now < first_seen + self.processing_delay_seconds:
                continue
            data = path.read_bytes()
            imported += self._import(f"sftp:{name}", data)
            os.replace(path, self.processed / name)  # a same-named processed file is replaced
            self._seen_files.pop(name, None)
            self.counters["files"] += 1
        return imported

    def _import(self, source: str, data: bytes) -> int:
        try:
            text = data.decode("utf-8-sig")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        except (UnicodeDecodeError, csv.Error) as exc:
            self.import_log.append({"source": source, "row": None, "error": str(exc)})
            return 0
        imported = 0
        for number, row in enumerate(rows, 2):
            if None in row or any(v is None for v in row.values()):
                self.import_log.append(
                    {"source": source, "row": number, "error": "wrong number of cells"}
                )
                continue
            values = {k.strip(): v for k, v in row.items() if k and k.strip() != UPDATED}
            person = None
            guid = (values.pop(ID, "") or "").strip()
            if guid:
                person = self.people.get(guid)
                if person is None:
                    self.import_log.append(
                        {"source": source, "row": number, "error": f"no person {guid}"}
                    )
                    continue
            key = (values.get(self.match_field) or "").strip()
            if person is None and key:
                person = next(
                    (p for p in self.people.values() if p.get(self.match_field) == key), None
                )
            if person is None:
                self._create({k: v for k, v in values.items() if v != ""})
            else:
                self._update(person, values, clear_blank=False)
            imported += 1
        self.counters["rows_imported"] += imported
        return imported

    # --- routes -------------------------------------------------------------------------------

    def setup_routes(self) -> None:
        self.add_route("GET", QUERY_PATH, self._query)
        self.add_route("POST", IMPORT_PATH, self._upload)

    def _basic_ok(self, request: Request) -> bool:
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
        except ValueError:
            return False
        return user == self.username and password == self.password

    def _query(self, request: Request) -> Reply:
        self._process()
        query = request.query
        if not (self._basic_ok(request) or query.get("h") == self.user_token):
            return _html(401, "401 - Unauthorized")
        if query.get("cmd") != "service" or query.get("output") != "json":
            return _html(400, "400 - Bad Request")
        if query.get("id") != self.query_id:
            return _html(404, "404 - Query Not Found")
        since = None
        if query.get("since"):
            try:
                since = datetime.fromisoformat(query["since"].replace(" ", "T"))
            except ValueError:
                return _html(500, "500 - Conversion failed when converting date and/or time")
            if since.tzinfo is not None:  # Slate's datetime parameters are naive
                since = since.astimezone(self.timezone).replace(tzinfo=None)
        people = [p for p in self.people.values() if since is None or p[UPDATED] >= since]
        # The query's sort; without one, Slate's order is its own (here: by id).
        people.sort(key=(lambda p: (p[UPDATED], p[ID])) if self.sort_rows else (lambda p: p[ID]))
        self.counters["queries"] += 1
        self.counters["rows_served"] += len(people)
        return json_reply({"row": [self._export(p) for p in people]})

    def _upload(self, request: Request) -> Reply:
        self._process()
        if not self._basic_ok(request):
            return _html(401, "401 - Unauthorized")
        if request.query.get("cmd") != "load":
            return _html(400, "400 - Bad Request")
        if request.query.get("format") != self.format_id:
            return _html(404, "404 - Source Format Not Found")
        now = self.clock.monotonic()
        while self._posts and self._posts[0] + self.upload_rate_window_seconds <= now:
            self._posts.popleft()
        if len(self._posts) >= self.upload_rate_limit:
            self.counters["rate_limited"] += 1
            text = f"Rate limit exceeded. {RATE_SENTENCE}"
            return 429, {"Content-Type": "text/plain; charset=utf-8"}, text
        if not request.body:
            raise SimulatorError(400, "the upload is empty")
        self._posts.append(now)
        self.counters["posts"] += 1
        name = f"ws:{self.counters['posts']}"
        # Accepted now; imported once due, by a later request (or process_pending).
        self._queue.append((now + self.processing_delay_seconds, name, request.body))
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, "OK"

    def posts_in_window(self) -> list[float]:
        """Monotonic times of the posts still inside the rate window (for tests)."""
        with self.lock:
            return list(self._posts)


def local_stamp(moment: datetime, zone: str) -> str:
    """``moment`` (aware) as Slate writes it in ``zone``: ``2024-05-01T08:00:00``."""
    return moment.astimezone(ZoneInfo(zone)).strftime(STAMP)
