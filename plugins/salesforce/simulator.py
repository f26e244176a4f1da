"""A Salesforce org, simulated: REST, sObject Collections, Bulk API 2.0 and OAuth, on the kit.

The kit (:mod:`daemon.kit.simkit`) serves HTTP on loopback and owns latency, random 5xx, dropped
connections, malformed bodies, one-shot faults and ``/_sim/reset|faults|state``. This module
adds what Salesforce does (facts from ``shared/research/hubspot_salesforce.md`` §2 and §4):

- OAuth 2.0 at ``/services/oauth2/token``: client credentials (Basic or form), refresh token
  (rotated on use with ``rotate_refresh_tokens``), JWT bearer (RS256, checked against the
  connected app's certificate) and the web-server flow's authorization code (from
  ``/services/oauth2/authorize``, single-use, 15 minutes, PKCE S256 checked when sent).
  Answers carry ``instance_url`` and no ``expires_in``; a session lives
  ``session_timeout_seconds`` and then every call is a 401 ``INVALID_SESSION_ID``;
- ``query`` and ``queryAll`` with the SOQL subset of :mod:`plugins.salesforce.soql`, pages of
  ``query_batch_size`` (2,000; ``Sforce-Query-Options: batchSize=`` lowers it) followed by
  ``nextRecordsUrl``; ``queryAll`` also returns deleted rows (``IsDeleted = true``);
- ``sobjects/{Contact,Lead}/describe`` with custom ``__c`` and external-id fields, and
  ``limits``;
- the single-record sObject resource: create (POST ``sobjects/<Object>``, 201), read, update
  (PATCH, 204) and delete by Id, read and upsert by an external-id field (PATCH
  ``sobjects/<Object>/<Field>/<value>``: 201 when it created, 200 when it updated);
- every data resource with or without a trailing slash (``query/?q=`` as Salesforce's docs
  and simple-salesforce write it);
- sObject Collections: create (POST), update by ``id`` (PATCH) and upsert by an external-id
  field (PATCH ``composite/sobjects/<Object>/<Field>``), at most 200 records, HTTP 200 with
  per-record ``{id, success, errors[, created]}``, ``allOrNone`` rolling everything back;
- Bulk API 2.0 query jobs (``query``/``queryAll``; results as CSV pages with ``Sforce-Locator``
  and ``Sforce-NumberOfRecords``) and ingest jobs (insert/update/upsert; CSV upload,
  ``UploadComplete``, ``successfulResults``/``failedResults``/``unprocessedrecords``), each
  through ``Open → UploadComplete → InProgress → JobComplete``;
- the daily allowance: every API call counts (token grants do not) in a rolling 24 h,
  reported in ``Sforce-Limit-Info: api-usage=N/M``; once spent, a 403
  ``REQUEST_LIMIT_EXCEEDED``;
- errors are JSON arrays of ``{"message", "errorCode"}``; per-record ones use ``statusCode``.

Fault knobs of its own: ``shared_modstamp_count`` seeded records share one
``SystemModstamp`` (Salesforce stamps whole seconds, and bulk updates stamp thousands alike),
and ``late_commit_seconds`` makes every write land with a ``SystemModstamp`` that far in the
past (a long transaction committing behind a reader's cursor).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

import fastavro
import grpc

from daemon.sdk import (
    AuthorizationCodes,
    IssuedTokens,
    Reply,
    Request,
    Simulator,
    SimulatorError,
    json_reply,
    redirect_allowed,
)
from plugins.salesforce.pubsub import changeevent
from plugins.salesforce.pubsub.service import EventBus, PubSubService, serve
from plugins.salesforce.soql import SoqlError, parse, parse_datetime

API_VERSION = "v62.0"
MAX_COLLECTION = 200
QUERY_BATCH_MAX = 2000
QUERY_BATCH_MIN = 200
BULK_DEFAULT_PAGE = 50_000
DAY = 86_400.0
PREFIX = {"Contact": "003", "Lead": "00Q"}
USERNAME = "integration@sim.example.org"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
NA = "#N/A"  # Bulk CSV: sets a field to null (an empty cell leaves it alone)

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_AREA = ("212", "305", "312", "404", "415", "503", "512", "617", "646", "702", "713", "801")


def _field(
    name: str,
    type_: str,
    label: str,
    *,
    length: int = 0,
    nillable: bool = True,
    writable: bool = True,
    external: bool = False,
    custom: bool = False,
    defaulted: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": type_,
        "length": length,
        "nillable": nillable,
        "createable": writable,
        "updateable": writable,
        "filterable": True,
        "externalId": external,
        "unique": external,
        "idLookup": external or name == "Id",
        "custom": custom,
        "defaultedOnCreate": defaulted,
    }


def default_catalogue() -> dict[str, dict[str, dict[str, Any]]]:
    """The describe of Contact and Lead: standard fields, system fields, two custom ones."""
    system = [
        _field("Id", "id", "Contact ID", length=18, nillable=False, writable=False, defaulted=True),
        _field("IsDeleted", "boolean", "Deleted", nillable=False, writable=False, defaulted=True),
        _field("CreatedDate", "datetime", "Created Date", writable=False, defaulted=True),
        _field("LastModifiedDate", "datetime", "Last Modified Date", writable=False),
        _field("SystemModstamp", "datetime", "System Modstamp", writable=False, defaulted=True),
    ]
    people = [
        _field("FirstName", "string", "First Name", length=40),
        _field("LastName", "string", "Last Name", length=80, nillable=False),
        _field("Email", "email", "Email", length=80),
        _field("Phone", "phone", "Business Phone", length=40),
        _field("MobilePhone", "phone", "Mobile Phone", length=40),
        _field("Title", "string", "Title", length=128),
        _field("Mainstay_ID__c", "string", "Mainstay ID", length=64, external=True, custom=True),
        _field("Class_Year__c", "double", "Class Year", custom=True),
    ]
    contact = [*system, *people, _field("AccountId", "reference", "Account ID", length=18)]
    lead = [
        *system,
        *people,
        _field("Company", "string", "Company", length=255, nillable=False),
        _field("Status", "picklist", "Lead Status", length=40, nillable=False, defaulted=True),
    ]
    return {
        "Contact": {f["name"]: f for f in contact},
        "Lead": {f["name"]: f for f in lead},
    }


def sf_datetime(moment: datetime) -> str:
    """REST's datetime form: ``2024-05-01T10:00:00.000+0000``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def bulk_datetime(moment: datetime) -> str:
    """Bulk CSV's datetime form: ``2024-05-01T10:00:00.000Z``."""
    return sf_datetime(moment)[:-5] + "Z"


class SalesforceError(SimulatorError):
    """An error Salesforce answers with a JSON array: ``[{"message", "errorCode"}]``."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(status, message)
        self.code = code
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        """The wire form."""
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]


class _RecordError(Exception):
    """One record's failure in a collection or bulk job (``statusCode``, not ``errorCode``)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []

    def wire(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


AUTH_CODE_SECONDS = 900.0  # Salesforce's authorization codes last 15 minutes
_PARSED: dict[str, Any] = {}  # schema id -> fastavro's parsed schema (parsing costs ~1 ms)


def _avro_value(value: Any) -> Any:
    """A stored value as a change event carries it (datetimes as epoch milliseconds)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


_RSA_KEYS: dict[int, Any] = {}  # seed -> private key: generating one costs ~50 ms, so once


class SalesforceSimulator(Simulator):
    """A Salesforce org's REST and Bulk 2.0 APIs for Contact and Lead. See the module
    docstring for the rules; :attr:`knob_options` lists the knobs (each a
    ``contactsync simulate salesforce`` flag)."""

    name = "salesforce"
    _pubsub: tuple[grpc.Server, str] | None = None  # the Pub/Sub API, once started
    knob_options: ClassVar[dict[str, tuple[type, Any, str]]] = {
        "leads": (int, 0, "Seeded Lead records (contacts seeds Contact records)."),
        "daily_limit": (int, 100_000, "API calls per rolling 24 h (DailyApiRequests)."),
        "session_timeout_seconds": (float, 7200.0, "Lifetime of an access token (session)."),
        "rotate_refresh_tokens": (bool, False, "Each refresh grant returns a new refresh token."),
        "query_batch_size": (int, QUERY_BATCH_MAX, "Records per query page (200-2000)."),
        "shared_modstamp_count": (int, 0, "Seeded records sharing one SystemModstamp."),
        "late_commit_seconds": (float, 0.0, "Writes land stamped this far in the past."),
        "bulk_poll_steps": (int, 1, "Job status polls answered InProgress before JobComplete."),
        "bulk_page_size": (int, BULK_DEFAULT_PAGE, "Bulk results per page without maxRecords."),
        "authorize_answer": (str, "allow", "The login page: allow, deny or consent (a page)."),
        "redirect_uri": (str, "", "The connected app's callback URL ('': any loopback URL)."),
        "cdc_retention_seconds": (float, 3 * DAY, "Change events kept for replay (72 h)."),
        "cdc_keepalive_seconds": (float, 270.0, "A Subscribe with nothing to send answers empty."),
        "pubsub_port": (int, -1, "Serve the Pub/Sub API (gRPC) here too (0: any port; -1: no)."),
    }

    def set_knob(self, name: str, value: object) -> None:
        super().set_knob(name, value)
        if name == "query_batch_size":  # Salesforce's own bounds on batchSize
            self.query_batch_size = max(QUERY_BATCH_MIN, min(QUERY_BATCH_MAX, int(value)))

    # --- credentials ------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """The connected app's consumer key."""
        return f"3MVG9sim.consumer.key.{self.seed}"

    @property
    def client_secret(self) -> str:
        """The connected app's consumer secret."""
        return f"sim-consumer-secret-{self.seed:04d}-5F2A"

    @property
    def username(self) -> str:
        """The pre-authorised integration user (the JWT ``sub``)."""
        return USERNAME

    @property
    def private_key_pem(self) -> str:
        """The PEM private key whose certificate the connected app holds (JWT bearer)."""
        from cryptography.hazmat.primitives import serialization

        return (
            self._rsa_key()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )

    def _rsa_key(self) -> Any:
        key = _RSA_KEYS.get(self.seed)
        if key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = _RSA_KEYS[self.seed] = rsa.generate_private_key(65537, 2048)
        return key

    def credentials(self) -> dict[str, Any]:
        return {
            "login_url": self.url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
            "username": self.username,
            "private_key": self.private_key_pem,
        }

    # --- state ------------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.catalogue = default_catalogue()
        self.records: dict[str, dict[str, dict[str, Any]]] = {o: {} for o in self.catalogue}
        # Unique (external-id) field values of live records: (object, field, value) -> Id.
        self._unique: dict[tuple[str, str, Any], str] = {}
        self._serial = 0
        self._id_rng = random.Random(self.seed + 1)  # tokens and ids, never the fault draws
        self.sessions = IssuedTokens(self.clock)  # access tokens
        self.refresh_token = self._token("5Aep861")
        self._refresh_tokens = {self.refresh_token}
        self.auth_codes = AuthorizationCodes(self.clock, ttl_seconds=AUTH_CODE_SECONDS)
        self._calls: deque[float] = deque()  # monotonic times of counted calls (rolling 24 h)
        self._cursors: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        # Change Data Capture: every change below is also an event on this bus (not the seed:
        # those records predate any subscriber). Replaced on reset, so replay ids restart.
        self.bus = EventBus(lambda: self.clock.now().timestamp(), self.cdc_retention_seconds)
        self._cdc_schemas = self._change_event_schemas()
        self._publishing = False
        self._commits = 0
        self.counters = {
            "token_grants": 0,
            "queries": 0,
            "query_more": 0,
            "collections": 0,
            "sobject_writes": 0,
            "bulk_jobs": 0,
            "limit_refused": 0,
            "invalid_session": 0,
            "pubsub_subscribes": 0,
            "pubsub_events_sent": 0,
            "pubsub_schema_reads": 0,
            "pubsub_auth_refused": 0,
            "pubsub_replay_refused": 0,
        }
        self._seed_records()
        self._publishing = True

    def _seed_records(self) -> None:
        rng = random.Random(self.seed)  # its own RNG: faults drawn later never shift the data
        shared = self._stamp(self.clock.now() - timedelta(days=1))
        for obj, count in (("Contact", self.contacts), ("Lead", self.leads)):
            for i in range(count):
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                values: dict[str, Any] = {
                    "FirstName": first,
                    "LastName": last,
                    "Email": f"{first}.{last}.{i}@example.org".lower(),
                    "Phone": f"+1{rng.choice(_AREA)}{rng.randrange(200, 999)}"
                    f"{rng.randrange(10000):04d}",
                }
                if obj == "Lead":
                    values["Company"] = f"{last} College"
                stamp = shared if obj == "Contact" and i < self.shared_modstamp_count else None
                self._insert(obj, values, stamp=stamp)

    def state(self) -> dict[str, Any]:
        return {
            "objects": {o: len(r) for o, r in self.records.items()},
            "api_usage": self.api_usage(),
            "counters": dict(self.counters),
            "jobs": {j: job["state"] for j, job in self.jobs.items()},
            "knobs": self.knobs(),
        }

    def api_usage(self) -> int:
        """API calls counted in the rolling 24 h."""
        now = self.clock.monotonic()
        while self._calls and self._calls[0] <= now - DAY:
            self._calls.popleft()
        return len(self._calls)

    # --- what a Salesforce user does (tests call these directly) ----------------------------

    def add_record(self, obj: str = "Contact", **values: Any) -> str:
        """Create a record as a user would (no validation); return its Id."""
        with self.lock:
            return str(self._insert(obj, values)["Id"])

    def add_contact(self, **values: Any) -> str:
        """:meth:`add_record` for a Contact."""
        return self.add_record("Contact", **values)

    def edit_record(self, record_id: str, **values: Any) -> None:
        """Change a record as a user would; ``None`` clears a field."""
        with self.lock:
            self._apply(self._find(record_id), values)

    def delete_record(self, record_id: str) -> None:
        """Delete a record: to the recycle bin, so ``queryAll`` shows ``IsDeleted = true``."""
        with self.lock:
            self._delete(self._find(record_id))

    def undelete_record(self, record_id: str) -> None:
        """Restore a deleted record from the recycle bin (an ``UNDELETE`` change event)."""
        with self.lock:
            record = self._find(record_id)
            if not record["IsDeleted"]:
                raise ValueError(f"{record_id} is not deleted")
            record["IsDeleted"] = False
            self._index_unique(self._object_of(record_id), record, add=True)
            self._touch(record)
            self._change(record, "UNDELETE", record)

    def share_modstamp(self, ids: Iterable[str], stamp: datetime | None = None) -> datetime:
        """Give the records ``ids`` one ``SystemModstamp`` (now by default); return it."""
        with self.lock:
            moment = self._stamp(stamp or self.clock.now())
            for record_id in ids:
                self._find(record_id)["SystemModstamp"] = moment
            return moment

    def expire_sessions(self) -> None:
        """End every session at once (the next call with one is a 401 INVALID_SESSION_ID)."""
        with self.lock:
            self.sessions.expire_all()

    def record(self, record_id: str) -> dict[str, Any]:
        """A copy of one record's stored values (datetimes as ``datetime``)."""
        with self.lock:
            return dict(self._find(record_id))

    def find(self, obj: str = "Contact", **values: Any) -> list[dict[str, Any]]:
        """Copies of the live records whose fields equal ``values``."""
        with self.lock:
            return [
                dict(r)
                for r in self.records[obj].values()
                if not r["IsDeleted"] and all(r.get(k) == v for k, v in values.items())
            ]

    # --- records ----------------------------------------------------------------------------

    def _stamp(self, moment: datetime) -> datetime:
        # Salesforce stamps whole seconds: many records share one SystemModstamp.
        return moment.astimezone(UTC).replace(microsecond=0)

    def _now_stamp(self) -> datetime:
        return self._stamp(self.clock.now() - timedelta(seconds=self.late_commit_seconds))

    def _insert(
        self, obj: str, values: Mapping[str, Any], *, stamp: datetime | None = None
    ) -> dict[str, Any]:
        self._serial += 1
        record_id = f"{PREFIX[obj]}SIM{self._serial:012d}"
        moment = stamp or self._now_stamp()
        record: dict[str, Any] = {name: None for name in self.catalogue[obj]}
        record.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=moment,
            LastModifiedDate=moment,
            SystemModstamp=moment,
        )
        if obj == "Lead":
            record["Status"] = "Open - Not Contacted"
        record.update({k: v for k, v in values.items() if k in record})
        self.records[obj][record_id] = record
        self._index_unique(obj, record, add=True)
        self._change(record, "CREATE", record)
        return record

    def _apply(self, record: dict[str, Any], values: Mapping[str, Any]) -> None:
        obj = self._object_of(record["Id"])
        self._index_unique(obj, record, add=False)
        changed = [k for k, v in values.items() if k in record and record[k] != v]
        for key, value in values.items():
            record[key] = value
        self._index_unique(obj, record, add=True)
        self._touch(record)
        self._change(record, "UPDATE", [*changed, "LastModifiedDate", "SystemModstamp"])

    def _delete(self, record: dict[str, Any]) -> None:
        self._index_unique(self._object_of(record["Id"]), record, add=False)
        record["IsDeleted"] = True
        self._touch(record)
        self._change(record, "DELETE", [])

    def _unique_fields(self, obj: str) -> list[str]:
        return [n for n, spec in self.catalogue[obj].items() if spec["unique"]]

    def _index_unique(self, obj: str, record: Mapping[str, Any], *, add: bool) -> None:
        for name in self._unique_fields(obj):
            value = record.get(name)
            if value is None:
                continue
            key = (obj, name, value)
            if add and not record["IsDeleted"]:
                self._unique.setdefault(key, record["Id"])
            elif not add and self._unique.get(key) == record["Id"]:
                del self._unique[key]

    def _object_of(self, record_id: str) -> str:
        return next(o for o, prefix in PREFIX.items() if record_id.startswith(prefix))

    def _touch(self, record: dict[str, Any]) -> None:
        record["LastModifiedDate"] = record["SystemModstamp"] = self._now_stamp()

    # --- Change Data Capture (the Pub/Sub API) ----------------------------------------------

    def _change_event_schemas(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Topic -> (schema id, Avro schema) of each object's change events."""
        out = {}
        for obj, fields in self.catalogue.items():
            schema = changeevent.change_event_schema(
                obj, {name: spec["type"] for name, spec in fields.items()}
            )
            out[changeevent.topic_name(obj)] = (changeevent.schema_id(schema), schema)
        return out

    def _change(self, record: Mapping[str, Any], kind: str, fields: Iterable[str]) -> None:
        """Publish the change event of ``record``: for a create or undelete, ``fields`` is the
        whole record and the event carries every non-null value and no changed fields; for
        an update, the changed fields' values, bitmaps of them and of the fields nulled."""
        if not self._publishing:
            return
        obj = self._object_of(record["Id"])
        schema_id, schema = self._cdc_schemas[changeevent.topic_name(obj)]
        names = [n for n in fields if record.get(n) is not None or kind == "UPDATE"]
        values = {n: _avro_value(record.get(n)) for n in names}
        changed = changeevent.field_bitmaps(schema, names) if kind == "UPDATE" else []
        nulled = [n for n in names if record.get(n) is None] if kind == "UPDATE" else []
        stamp = record["SystemModstamp"] or self.clock.now()
        self._commits += 1
        header = {
            "entityName": obj,
            "recordIds": [record["Id"]],
            "changeType": kind,
            "changeOrigin": "com/salesforce/api/rest/" + API_VERSION[1:],
            "transactionKey": f"{self._commits:020x}",
            "sequenceNumber": 1,
            "commitTimestamp": int(stamp.timestamp() * 1000),
            "commitNumber": self._commits,
            "commitUser": "005SIM000000001",
            "nulledFields": changeevent.field_bitmaps(schema, nulled),
            "diffFields": [],
            "changedFields": changed,
        }
        body = io.BytesIO()
        fastavro.schemaless_writer(
            body,
            self._parsed_schema(schema_id, schema),
            changeevent.payload(schema, header, values),
        )
        self.bus.publish(changeevent.topic_name(obj), schema_id, body.getvalue())

    def _parsed_schema(self, schema_id: str, schema: dict[str, Any]) -> Any:
        parsed = _PARSED.get(schema_id)
        if parsed is None:
            parsed = _PARSED[schema_id] = fastavro.parse_schema(schema)
        return parsed

    @property
    def tenant_id(self) -> str:
        """The org id (``tenantid`` in Pub/Sub API metadata; also in the token's ``id``)."""
        return f"00DSIM{self.seed:09d}"

    def _pubsub_authorized(self, metadata: Mapping[str, str]) -> bool:
        with self.lock:
            left = self.sessions.seconds_left(metadata.get("accesstoken"))
            return (
                left is not None
                and left > 0
                and metadata.get("instanceurl", "").rstrip("/") == self.url
                and metadata.get("tenantid") == self.tenant_id
            )

    def start_pubsub(self, port: int = 0) -> str:
        """Serve the Pub/Sub API (gRPC, no TLS) on ``127.0.0.1:port``; return ``host:port``.
        Started on demand: most tests of the REST side never need it."""
        if self._pubsub is None:
            service = PubSubService(
                lambda: self.bus,
                lambda: {t: (i, json.dumps(s)) for t, (i, s) in self._cdc_schemas.items()},
                self._pubsub_authorized,
                tenant=self.tenant_id,
                keepalive_seconds=lambda: self.cdc_keepalive_seconds,
                latency=lambda: self.faults.latency,
                sleep=self.clock.sleep,
                counters=lambda: self.counters,
            )
            self._pubsub = serve(service, port)
        return self._pubsub[1]

    @property
    def pubsub_address(self) -> str:
        """``host:port`` of the Pub/Sub API (started by :meth:`start_pubsub`)."""
        if self._pubsub is None:
            raise RuntimeError("the Pub/Sub API is not started (start_pubsub())")
        return self._pubsub[1]

    def start(self, port: int = 0) -> SalesforceSimulator:
        super().start(port)
        if self.pubsub_port >= 0:
            self.start_pubsub(self.pubsub_port)
        return self

    def stop_pubsub(self) -> None:
        """Stop serving the Pub/Sub API: open Subscribe calls end at once (as when Salesforce
        drops a stream); :meth:`start_pubsub` with the same port serves it again."""
        if self._pubsub is not None:
            self._pubsub[0].stop(grace=0).wait(5)
            self._pubsub = None

    def stop(self) -> None:
        self.stop_pubsub()
        super().stop()

    def _find(self, record_id: str) -> dict[str, Any]:
        for obj, prefix in PREFIX.items():
            if record_id.startswith(prefix) and record_id in self.records[obj]:
                return self.records[obj][record_id]
        raise KeyError(record_id)

    def _object(self, name: str) -> str:
        for obj in self.catalogue:
            if obj.lower() == name.lower():
                return obj
        raise SalesforceError(404, "NOT_FOUND", f"The requested resource does not exist: {name}")

    # --- validation of writes ---------------------------------------------------------------

    def _clean(self, obj: str, values: Mapping[str, Any], *, bulk: bool = False) -> dict[str, Any]:
        """Validated field values (``_RecordError`` on the first problem)."""
        fields = self.catalogue[obj]
        by_lower = {k.lower(): k for k in fields}
        out: dict[str, Any] = {}
        for raw, value in values.items():
            if raw == "attributes" or (raw.lower() == "id"):
                continue
            name = by_lower.get(raw.lower())
            if name is None:
                raise _RecordError(
                    "INVALID_FIELD", f"No such column '{raw}' on sobject of type {obj}", [raw]
                )
            spec = fields[name]
            if not spec["updateable"]:
                raise _RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile "
                    "or permission set.",
                    [name],
                )
            if bulk:
                if value == "":
                    continue  # an empty cell leaves the field as it is
                if value == NA:
                    value = None
            out[name] = self._coerce(spec, value)
        return out

    def _coerce(self, spec: Mapping[str, Any], value: Any) -> Any:
        name, kind = spec["name"], spec["type"]
        if value is None or value == "":
            return None  # Salesforce stores an empty string as null
        if kind == "double":
            try:
                return float(value)
            except (TypeError, ValueError):
                raise _RecordError(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD",
                    f"{spec['label']}: value not of required type: {value}",
                    [name],
                ) from None
        if kind == "boolean":
            return str(value).lower() == "true" if not isinstance(value, bool) else value
        text = str(value)
        if kind == "email" and ("@" not in text or " " in text or text.startswith("@")):
            raise _RecordError(
                "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {text}", [name]
            )
        if spec["length"] and len(text) > spec["length"]:
            raise _RecordError(
                "STRING_TOO_LONG",
                f"{spec['label']}: data value too large: {text[:40]} (max length={spec['length']})",
                [name],
            )
        return text

    def _required_missing(self, obj: str, values: Mapping[str, Any]) -> None:
        missing = [
            name
            for name, spec in self.catalogue[obj].items()
            if spec["createable"]
            and not spec["nillable"]
            and not spec["defaultedOnCreate"]
            and values.get(name) in (None, "")
        ]
        if missing:
            raise _RecordError(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )  # fmt: skip

    def _by_external(self, obj: str, field: str, value: Any) -> list[dict[str, Any]]:
        record_id = self._unique.get((obj, field, value))
        return [self.records[obj][record_id]] if record_id else []

    def _check_unique(self, obj: str, values: Mapping[str, Any], own_id: str | None) -> None:
        for name in self._unique_fields(obj):
            value = values.get(name)
            other = self._unique.get((obj, name, value)) if value is not None else None
            if other is not None and other != own_id:
                raise _RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {name} duplicates value on record with id: {other}",
                    [name],
                )

    # --- one write, planned then applied (allOrNone needs the plan before any apply) --------

    def _plan(
        self, obj: str, op: str, raw: Mapping[str, Any], ext: str | None, *, bulk: bool = False
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        """``(kind, record, values)``: kind is ``insert`` or ``update``; raises _RecordError."""
        if not isinstance(raw, Mapping):
            raise _RecordError("JSON_PARSER_ERROR", "each record must be a JSON object")
        attributes = raw.get("attributes")
        if not bulk and op != "update" and isinstance(attributes, Mapping):
            declared = str(attributes.get("type") or obj)
            if declared.lower() != obj.lower():
                raise _RecordError("INVALID_TYPE", f"sObject type '{declared}' does not match")
        values = self._clean(obj, raw, bulk=bulk)
        if op == "update":
            record_id = str(raw.get("id") or raw.get("Id") or "")
            record = self.records[obj].get(record_id)
            if not record_id or not record_id.startswith(PREFIX[obj]):
                raise _RecordError("MALFORMED_ID", f"Id in record is not valid: {record_id!r}")
            if record is None:
                raise _RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            if record["IsDeleted"]:
                raise _RecordError("ENTITY_IS_DELETED", "entity is deleted")
            self._check_unique(obj, values, record_id)
            return "update", record, values
        if op == "upsert":
            assert ext is not None
            key = values.get(ext)
            if key in (None, ""):
                raise _RecordError(
                    "MISSING_ARGUMENT", f"{ext} not specified in an upsert call", [ext]
                )
            found = self._by_external(obj, ext, key)
            if len(found) > 1:
                ids = ", ".join(r["Id"] for r in found)
                raise _RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{ext}: more than one record found for external id field: [{ids}]",
                    [ext],
                )
            if found:
                self._check_unique(obj, values, found[0]["Id"])
                return "update", found[0], values
        self._required_missing(obj, values)
        self._check_unique(obj, values, None)
        return "insert", None, values

    def _commit(
        self, obj: str, kind: str, record: dict[str, Any] | None, values: Mapping[str, Any]
    ) -> tuple[str, bool]:
        if kind == "update":
            assert record is not None
            self._apply(record, values)
            return str(record["Id"]), False
        return str(self._insert(obj, values)["Id"]), True

    def _collection(
        self, obj_of: Callable[[Mapping[str, Any]], str], op: str, body: Any, ext: str | None
    ) -> list[dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "The request body needs records[]")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into "
                "this call",
            )
        all_or_none = bool(body.get("allOrNone", False))
        self.counters["collections"] += 1
        plans: list[tuple[str, dict[str, Any] | None, dict[str, Any]] | _RecordError] = []
        seen_keys: set[Any] = set()
        for raw in records:
            try:
                obj = obj_of(raw)
                plan = self._plan(obj, op, raw, ext)
                key = plan[2].get(ext) if ext else (plan[1] or {}).get("Id")
                if key is not None and key in seen_keys:
                    raise _RecordError(
                        "DUPLICATE_VALUE", f"Duplicate id in list: {key}", [ext or "Id"]
                    )
                if key is not None:
                    seen_keys.add(key)
                plans.append(plan)
            except _RecordError as exc:
                plans.append(exc)
            except SalesforceError as exc:
                plans.append(_RecordError(exc.code, exc.message))
        failed = any(isinstance(p, _RecordError) for p in plans)
        results: list[dict[str, Any]] = []
        for raw, plan in zip(records, plans, strict=True):
            if isinstance(plan, _RecordError):
                results.append({"success": False, "errors": [plan.wire()]})
                continue
            if failed and all_or_none:
                rolled = _RecordError(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was "
                    "using AllOrNone header",
                )
                results.append({"success": False, "errors": [rolled.wire()]})
                continue
            record_id, created = self._commit(obj_of(raw), *plan)
            result: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
            if op == "upsert":
                result["created"] = created
            results.append(result)
        if all_or_none and failed:
            for result in results:
                result.pop("id", None)
        return results

    # --- the request pipeline ---------------------------------------------------------------

    def _token(self, prefix: str) -> str:
        return f"{prefix}!{base64.urlsafe_b64encode(self._id_rng.randbytes(48)).decode()}"

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_usage()}/{self.daily_limit}"}

    def _api(self, handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
        """Wrap a data handler: the session, the daily allowance, Salesforce's error bodies."""

        def wrapped(request: Request) -> Reply:
            try:
                if not request.params.get("version", "v1.0").startswith("v"):
                    raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
                left = self.sessions.seconds_left(request.bearer_token())
                if left is None or left <= 0:
                    self.counters["invalid_session"] += 1
                    raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
                if self.api_usage() >= self.daily_limit:
                    self.counters["limit_refused"] += 1
                    raise SalesforceError(
                        403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                    )
                self._calls.append(self.clock.monotonic())
                status, headers, body = handler(request)
                return status, {**self._limit_header(), **headers}, body
            except SalesforceError as exc:
                return json_reply(exc.body(), exc.status, self._limit_header())
            except SoqlError as exc:
                return json_reply(
                    SalesforceError(400, exc.code, exc.message).body(), 400, self._limit_header()
                )

        return wrapped

    def setup_routes(self) -> None:
        self.add_route("POST", "/services/oauth2/token", self._token_route)
        self.add_route("GET", "/services/oauth2/authorize", self._authorize)
        base = "/services/data/{version}"
        routes: list[tuple[str, str, Callable[[Request], Reply]]] = [
            ("GET", "/query", lambda r: self._query(r, all_rows=False)),
            ("GET", "/queryAll", lambda r: self._query(r, all_rows=True)),
            ("GET", "/query/{locator}", self._query_more),
            ("GET", "/queryAll/{locator}", self._query_more),
            ("GET", "/limits", self._limits),
            ("GET", "/sobjects/{object}/describe", self._describe),
            # The single-record sObject resource (after describe: ``describe`` is no Id)
            ("POST", "/sobjects/{object}", self._sobject_create),
            ("GET", "/sobjects/{object}/{id}", self._sobject_get),
            ("PATCH", "/sobjects/{object}/{id}", self._sobject_update),
            ("DELETE", "/sobjects/{object}/{id}", self._sobject_delete),
            ("GET", "/sobjects/{object}/{field}/{value}", self._sobject_get_by_external),
            ("PATCH", "/sobjects/{object}/{field}/{value}", self._sobject_upsert),
            ("POST", "/composite/sobjects", self._collection_create),
            ("PATCH", "/composite/sobjects", self._collection_update),
            ("PATCH", "/composite/sobjects/{object}/{field}", self._collection_upsert),
            ("POST", "/jobs/query", self._query_job_create),
            ("GET", "/jobs/query/{job}", self._job_info),
            ("PATCH", "/jobs/query/{job}", self._job_patch),
            ("DELETE", "/jobs/query/{job}", self._job_delete),
            ("GET", "/jobs/query/{job}/results", self._query_job_results),
            ("POST", "/jobs/ingest", self._ingest_job_create),
            ("GET", "/jobs/ingest/{job}", self._job_info),
            ("PATCH", "/jobs/ingest/{job}", self._job_patch),
            ("DELETE", "/jobs/ingest/{job}", self._job_delete),
            ("PUT", "/jobs/ingest/{job}/batches", self._ingest_upload),
            ("GET", "/jobs/ingest/{job}/successfulResults", self._ingest_results),
            ("GET", "/jobs/ingest/{job}/failedResults", self._ingest_results),
            ("GET", "/jobs/ingest/{job}/unprocessedrecords", self._ingest_results),
        ]
        for method, path, handler in routes:
            wrapped = self._api(handler)
            # Salesforce serves every REST resource with or without a trailing slash, and its
            # own docs and simple-salesforce write the slash (``query/?q=``, ``limits/``,
            # ``sobjects/Contact/``): both forms, or the most-used client gets 404s.
            self.add_route(method, base + path, wrapped)
            self.add_route(method, base + path + "/", wrapped)

    # --- OAuth ------------------------------------------------------------------------------

    def _token_route(self, request: Request) -> Reply:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        grant = form.get("grant_type", "")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                return self._oauth_error("invalid_client", "invalid client credentials")
        rotated: str | None = None
        if grant == "client_credentials":
            if client_id != self.client_id:
                return self._oauth_error("invalid_client_id", "client identifier invalid")
            if secret != self.client_secret:
                return self._oauth_error("invalid_client", "invalid client credentials")
        elif grant == "refresh_token":
            if client_id != self.client_id:
                return self._oauth_error("invalid_client_id", "client identifier invalid")
            if secret != self.client_secret:
                return self._oauth_error("invalid_client", "invalid client credentials")
            token = form.get("refresh_token", "")
            if token not in self._refresh_tokens:
                return self._oauth_error("invalid_grant", "expired access/refresh token")
            if self.rotate_refresh_tokens:
                self._refresh_tokens.discard(token)
                rotated = self._token("5Aep861")
                self._refresh_tokens.add(rotated)
                self.refresh_token = rotated
        elif grant == "authorization_code":
            if client_id != self.client_id:
                return self._oauth_error("invalid_client_id", "client identifier invalid")
            if secret != self.client_secret:
                return self._oauth_error("invalid_client", "invalid client credentials")
            why = self.auth_codes.redeem(
                form.get("code", ""),
                client_id or "",
                form.get("redirect_uri", ""),
                form.get("code_verifier"),
            )
            if why == "redirect_uri":
                return self._oauth_error("redirect_uri_mismatch", "redirect_uri must match")
            if why == "verifier":
                return self._oauth_error("invalid_grant", "invalid code verifier")
            if why is not None:
                return self._oauth_error("invalid_grant", "invalid authorization code")
            rotated = self._token("5Aep861")  # the web-server flow's refresh token
            self._refresh_tokens.add(rotated)
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            problem = self._check_assertion(form.get("assertion", ""))
            if problem is not None:
                return problem
        else:
            return self._oauth_error("unsupported_grant_type", "grant type not supported")
        self.counters["token_grants"] += 1
        access = self._token(f"00DSIM{self.seed:09d}")
        self.sessions.issue(access, self.session_timeout_seconds)
        body: dict[str, Any] = {
            "access_token": access,
            "instance_url": self.url,
            "id": f"{self.url}/id/00DSIM{self.seed:09d}/005SIM000000001",
            "token_type": "Bearer",
            "issued_at": str(int(self.clock.now().timestamp() * 1000)),
            "signature": base64.b64encode(self._id_rng.randbytes(32)).decode(),
            "scope": "api refresh_token" if rotated or grant == "refresh_token" else "api",
        }
        if rotated:
            body["refresh_token"] = rotated
        return json_reply(body)

    def _authorize(self, request: Request) -> Reply:
        """The login page of the web-server flow: with ``authorize_answer`` ``allow`` it
        redirects at once to ``redirect_uri?code=…&state=…`` (a browser login is out of
        scope); ``deny`` redirects with ``error=access_denied``; ``consent`` shows a page with
        both choices. A wrong client id or callback URL is an error page, never a redirect."""
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if query.get("response_type") != "code":
            return 400, {"Content-Type": "text/plain"}, "error=unsupported_response_type"
        if query.get("client_id") != self.client_id:
            return 400, {"Content-Type": "text/plain"}, "error=invalid_client_id"
        if not redirect_allowed(redirect_uri, self.redirect_uri):
            return 400, {"Content-Type": "text/plain"}, "error=redirect_uri_mismatch"
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method", "S256") != "S256":
            return 400, {"Content-Type": "text/plain"}, "error=invalid_request"
        return self.auth_codes.answer(
            request,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            decision=query.get("decision") or self.authorize_answer,
            challenge=challenge,
            denied={"error": "access_denied", "error_description": "end-user denied authorization"},
        )

    def _oauth_error(self, error: str, description: str) -> Reply:
        return json_reply({"error": error, "error_description": description}, 400)

    def _check_assertion(self, assertion: str) -> Reply | None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        try:
            head, payload, signature = assertion.split(".")
            header = json.loads(b64(head))
            claims = json.loads(b64(payload))
            if header.get("alg") != "RS256":
                return self._oauth_error("invalid_grant", "invalid assertion")
            self._rsa_key().public_key().verify(
                b64(signature),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature, TypeError):
            return self._oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.client_id:
            return self._oauth_error("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != self.username:
            return self._oauth_error("invalid_grant", "user hasn't approved this consumer")
        if claims.get("aud") not in (*LOGIN_AUDIENCES, self.url):
            return self._oauth_error("invalid_grant", "audience is invalid")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < (
            self.clock.now().timestamp()
        ):
            return self._oauth_error("invalid_grant", "expired authorization code")
        return None

    # --- query ------------------------------------------------------------------------------

    def _public(self, obj: str, version: str, record: Mapping[str, Any], fields: list[str]):
        out: dict[str, Any] = {
            "attributes": {
                "type": obj,
                "url": f"/services/data/{version}/sobjects/{obj}/{record['Id']}",
            }
        }
        for name in fields:
            value = record.get(name)
            out[name] = sf_datetime(value) if isinstance(value, datetime) else value
        return out

    def _query(self, request: Request, *, all_rows: bool) -> Reply:
        query = parse(request.query.get("q", ""), self.catalogue)
        self.counters["queries"] += 1
        pool = [r for r in self.records[query.obj].values() if all_rows or not r["IsDeleted"]]
        rows = query.run(pool)
        if query.count:
            return json_reply({"totalSize": len(rows), "done": True, "records": []})
        version = request.params["version"]
        public = [self._public(query.obj, version, r, query.fields) for r in rows]
        return self._query_page(request, version, self._token("01gSIM")[:18], public, 0)

    def _query_page(
        self, request: Request, version: str, locator: str, rows: list[dict[str, Any]], at: int
    ) -> Reply:
        size = self.query_batch_size
        option = request.headers.get("Sforce-Query-Options") or ""
        for part in option.split(","):
            key, _, value = part.strip().partition("=")
            if key.lower() == "batchsize" and value.isdigit():
                size = max(QUERY_BATCH_MIN, min(size, int(value)))
        chunk = rows[at : at + size]
        body: dict[str, Any] = {"totalSize": len(rows), "done": at + size >= len(rows)}
        if body["done"]:
            self._cursors.pop(locator, None)
        else:
            self._cursors[locator] = (version, rows)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{at + size}"
        body["records"] = chunk
        return json_reply(body)

    def _query_more(self, request: Request) -> Reply:
        locator, _, offset = request.params["locator"].rpartition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset.isdigit():
            raise SalesforceError(
                400, "INVALID_QUERY_LOCATOR", "invalid query locator", None
            )  # fmt: skip
        self.counters["query_more"] += 1
        return self._query_page(request, cursor[0], locator, cursor[1], int(offset))

    def _limits(self, request: Request) -> Reply:
        used = self.api_usage()
        return json_reply(
            {"DailyApiRequests": {"Max": self.daily_limit, "Remaining": self.daily_limit - used}}
        )

    def _describe(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        return json_reply(
            {
                "name": obj,
                "label": obj,
                "custom": False,
                "keyPrefix": PREFIX[obj],
                "queryable": True,
                "fields": list(self.catalogue[obj].values()),
            }
        )

    # --- sObject Collections ----------------------------------------------------------------

    def _type_of(self, raw: Mapping[str, Any]) -> str:
        attributes = raw.get("attributes") if isinstance(raw, Mapping) else None
        declared = attributes.get("type") if isinstance(attributes, Mapping) else None
        if not declared:
            raise _RecordError("INVALID_TYPE", "each record needs attributes.type")
        try:
            return self._object(str(declared))
        except SalesforceError:
            message = f"sObject type '{declared}' is not supported."
            raise _RecordError("INVALID_TYPE", message) from None

    def _collection_create(self, request: Request) -> Reply:
        return json_reply(self._collection(self._type_of, "insert", request.json(), None))

    def _collection_update(self, request: Request) -> Reply:
        def obj_of(raw: Mapping[str, Any]) -> str:
            if not isinstance(raw, Mapping):
                return self._type_of(raw)
            record_id = str(raw.get("id") or raw.get("Id") or "")
            for obj, prefix in PREFIX.items():
                if record_id.startswith(prefix):
                    return obj
            return self._type_of(raw)

        return json_reply(self._collection(obj_of, "update", request.json(), None))

    def _collection_upsert(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        ext = self._external_field(obj, request.params["field"])
        return json_reply(self._collection(lambda raw: obj, "upsert", request.json(), ext))

    def _external_field(self, obj: str, name: str) -> str:
        for field, spec in self.catalogue[obj].items():
            if field.lower() == name.lower() and (spec["externalId"] or field == "Id"):
                return field
        raise SalesforceError(
            400,
            "INVALID_FIELD",
            f"Field name provided, {name} is not an External ID or indexed field for {obj}",
        )

    # --- the single-record sObject resource -------------------------------------------------
    # ``sobjects/<Object>/<Id>`` and ``sobjects/<Object>/<ExternalField>/<value>``: what
    # simple-salesforce's ``sf.Contact.create/get/update/upsert/delete`` call. A write is one
    # collection item whose failure is the whole answer: a 400 with the usual error array.

    def _sobject_write(
        self, obj: str, op: str, raw: Mapping[str, Any], ext: str | None = None
    ) -> tuple[str, bool]:
        self.counters["sobject_writes"] += 1
        try:
            plan = self._plan(obj, op, raw, ext)
        except _RecordError as exc:
            raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        return self._commit(obj, *plan)

    def _body_record(self, request: Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "The request body must be an object")
        return body

    def _live_record(self, obj: str, record_id: str) -> dict[str, Any]:
        record = self.records[obj].get(record_id)
        if record is None:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _one_record(self, request: Request, obj: str, record: Mapping[str, Any]) -> Reply:
        wanted = request.query.get("fields")
        fields = list(self.catalogue[obj])
        if wanted:
            by_lower = {f.lower(): f for f in fields}
            fields = []
            for name in wanted.split(","):
                if name.strip().lower() not in by_lower:
                    raise SalesforceError(
                        400, "INVALID_FIELD", f"No such column '{name.strip()}' on entity {obj}"
                    )
                fields.append(by_lower[name.strip().lower()])
        return json_reply(self._public(obj, request.params["version"], record, fields))

    def _sobject_create(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        record_id, _ = self._sobject_write(obj, "insert", self._body_record(request))
        return json_reply({"id": record_id, "success": True, "errors": []}, 201)

    def _sobject_get(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        return self._one_record(request, obj, self._live_record(obj, request.params["id"]))

    def _sobject_update(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        record_id = request.params["id"]
        self._live_record(obj, record_id)
        # The Id is the URL's: one in the body is ignored, as Salesforce does.
        values = {k: v for k, v in self._body_record(request).items() if k.lower() != "id"}
        self._sobject_write(obj, "update", {**values, "Id": record_id})
        return 204, {}, None

    def _sobject_delete(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        self._delete(self._live_record(obj, request.params["id"]))
        return 204, {}, None

    def _sobject_get_by_external(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        ext = self._external_field(obj, request.params["field"])
        found = self._by_external(obj, ext, unquote(request.params["value"]))
        if not found:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return self._one_record(request, obj, found[0])

    def _sobject_upsert(self, request: Request) -> Reply:
        obj = self._object(request.params["object"])
        ext = self._external_field(obj, request.params["field"])
        raw = {**self._body_record(request), ext: unquote(request.params["value"])}
        record_id, created = self._sobject_write(obj, "upsert", raw, ext)
        # API 46.0 on: 201 with a body when it created, 200 with a body when it updated.
        body = {"id": record_id, "success": True, "errors": [], "created": created}
        return json_reply(body, 201 if created else 200)

    # --- Bulk API 2.0 -----------------------------------------------------------------------

    def _job(self, request: Request, kind: str) -> dict[str, Any]:
        job = self.jobs.get(request.params["job"])
        if job is None or job["jobType"] != kind:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _new_job(self, kind: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        self.counters["bulk_jobs"] += 1
        job_id = f"750SIM{len(self.jobs) + 1:012d}"
        now = sf_datetime(self.clock.now())
        job: dict[str, Any] = {
            "id": job_id,
            "createdById": "005SIM000000001",
            "createdDate": now,
            "systemModstamp": now,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(API_VERSION[1:]),
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
            "jobType": kind,
            "_polls": 0,
            **extra,
        }
        self.jobs[job_id] = job
        return job

    def _job_view(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def _query_job_create(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise SalesforceError(400, "INVALIDJOB", "a query job needs query and operation")
        operation = body.get("operation", "query")
        if operation not in ("query", "queryAll"):
            raise SalesforceError(400, "INVALIDJOB", f"unknown operation {operation!r}")
        query = parse(body["query"], self.catalogue)
        if query.count:
            raise SalesforceError(400, "INVALIDJOB", "Bulk API 2.0 does not support COUNT()")
        everything = operation == "queryAll"
        pool = [r for r in self.records[query.obj].values() if everything or not r["IsDeleted"]]
        rows = query.run(pool)
        job = self._new_job(
            "V2Query",
            {
                "operation": operation,
                "object": query.obj,
                "state": "UploadComplete",
                "_fields": query.fields,
                "_ids": [r["Id"] for r in rows],  # the snapshot: rendered when read
            },
        )
        return json_reply(self._job_view(job))

    def _advance(self, job: dict[str, Any]) -> None:
        if job["state"] in ("UploadComplete", "InProgress"):
            job["_polls"] += 1
            if job["_polls"] > self.bulk_poll_steps:
                job["state"] = "JobComplete"
                if job["jobType"] == "V2Query":
                    job["numberRecordsProcessed"] = len(job["_ids"])
            else:
                job["state"] = "InProgress"
            job["systemModstamp"] = sf_datetime(self.clock.now())

    def _job_info(self, request: Request) -> Reply:
        kind = "V2Query" if "/jobs/query/" in request.path else "V2Ingest"
        job = self._job(request, kind)
        self._advance(job)
        return json_reply(self._job_view(job))

    def _job_patch(self, request: Request) -> Reply:
        kind = "V2Query" if "/jobs/query/" in request.path else "V2Ingest"
        job = self._job(request, kind)
        state = (request.json() or {}).get("state")
        if state == "Aborted" and job["state"] not in ("JobComplete", "Failed"):
            job["state"] = "Aborted"
        elif state == "UploadComplete" and kind == "V2Ingest" and job["state"] == "Open":
            self._process_ingest(job)
            job["state"] = "UploadComplete"
        else:
            raise SalesforceError(
                400, "INVALIDJOBSTATE", f"cannot move a {job['state']} job to {state}"
            )
        return json_reply(self._job_view(job))

    def _job_delete(self, request: Request) -> Reply:
        kind = "V2Query" if "/jobs/query/" in request.path else "V2Ingest"
        job = self._job(request, kind)
        del self.jobs[job["id"]]
        return 204, {}, None

    def _csv(self, header: list[str], rows: Iterable[list[Any]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
        return out.getvalue()

    def _bulk_value(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return bulk_datetime(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def _query_job_results(self, request: Request) -> Reply:
        job = self._job(request, "V2Query")
        if job["state"] != "JobComplete":
            raise SalesforceError(400, "INVALIDJOBSTATE", f"the job is {job['state']}")
        locator = request.query.get("locator") or ""
        try:
            start = int(base64.b64decode(locator).decode()) if locator else 0
            size = int(request.query.get("maxRecords") or self.bulk_page_size)
        except ValueError:
            raise SalesforceError(400, "INVALID_LOCATOR", "invalid locator") from None
        ids = job["_ids"][start : start + max(1, size)]
        table = self.records[job["object"]]
        text = self._csv(
            job["_fields"],
            ([self._bulk_value(table[i].get(f)) for f in job["_fields"]] for i in ids),
        )
        end = start + len(ids)
        nxt = base64.b64encode(str(end).encode()).decode() if end < len(job["_ids"]) else "null"
        headers = {
            "Content-Type": "text/csv",
            "Sforce-Locator": nxt,
            "Sforce-NumberOfRecords": str(len(ids)),
        }
        return 200, headers, text

    def _ingest_job_create(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            raise SalesforceError(400, "INVALIDJOB", "an ingest job needs object and operation")
        obj = self._object(str(body.get("object") or ""))
        operation = body.get("operation")
        if operation not in ("insert", "update", "upsert"):
            raise SalesforceError(400, "INVALIDJOB", f"unsupported operation {operation!r}")
        extra: dict[str, Any] = {"object": obj, "operation": operation, "state": "Open"}
        if operation == "upsert":
            extra["externalIdFieldName"] = self._external_field(
                obj, str(body.get("externalIdFieldName") or "")
            )
        extra["contentUrl"] = f"services/data/{request.params['version']}/jobs/ingest/"
        job = self._new_job("V2Ingest", {**extra, "_upload": []})
        job["contentUrl"] += f"{job['id']}/batches"
        return json_reply(self._job_view(job))

    def _ingest_upload(self, request: Request) -> Reply:
        job = self._job(request, "V2Ingest")
        if job["state"] != "Open":
            raise SalesforceError(400, "INVALIDJOBSTATE", "the job is not Open for uploads")
        job["_upload"].append(request.body.decode("utf-8"))
        return 201, {}, None

    def _process_ingest(self, job: dict[str, Any]) -> None:
        obj, op = job["object"], job["operation"]
        ext = job.get("externalIdFieldName")
        done: list[list[Any]] = []
        failed: list[list[Any]] = []
        header: list[str] = []
        for text in job.pop("_upload"):
            reader = csv.reader(io.StringIO(text))
            header = next(reader, [])
            for row in reader:
                raw = dict(zip(header, row, strict=False))
                try:
                    plan = self._plan(obj, op, raw, ext, bulk=True)
                    record_id, created = self._commit(obj, *plan)
                    done.append([record_id, "true" if created else "false", *row])
                except _RecordError as exc:
                    record_id = raw.get("Id") or raw.get("id") or ""
                    failed.append([record_id, f"{exc.code}:{exc.message}", *row])
        job["_header"] = header
        job["_done"], job["_failed"] = done, failed
        job["numberRecordsProcessed"] = len(done) + len(failed)
        job["numberRecordsFailed"] = len(failed)

    def _ingest_results(self, request: Request) -> Reply:
        job = self._job(request, "V2Ingest")
        if job["state"] not in ("JobComplete", "Failed", "Aborted"):
            raise SalesforceError(400, "INVALIDJOBSTATE", f"the job is {job['state']}")
        header = job.get("_header", [])
        if "successfulResults" in request.path:
            text = self._csv(["sf__Id", "sf__Created", *header], job.get("_done", []))
        elif "failedResults" in request.path:
            text = self._csv(["sf__Id", "sf__Error", *header], job.get("_failed", []))
        else:
            text = self._csv(header, [])
        return 200, {"Content-Type": "text/csv"}, text


def parse_sf_datetime(text: str) -> datetime:
    """A datetime as Salesforce writes it (REST or Bulk form), aware UTC."""
    return parse_datetime(text)
