"""HubSpot CRM v3 (contacts), simulated: its wire protocol and its rules, on the simulator kit.

The kit (:mod:`daemon.kit.simkit`) serves HTTP on loopback and owns latency, random 5xx, dropped
connections, malformed bodies, one-shot faults and ``/_sim/reset|faults|state``. This module
adds what HubSpot does (facts from ``shared/research/hubspot_salesforce.md`` §1 and §4):

- auth: a private-app token that never expires, and OAuth access tokens that live
  ``token_ttl_seconds`` (1800); an unknown or expired token is a 401. The refresh-token grant
  is served at ``/oauth/v1/token`` and its successor ``/oauth/2026-03/token``; with
  ``rotate_refresh_tokens`` every grant returns a new refresh token and spends the old one.
  ``GET /oauth/authorize`` (app.hubspot.com's sign-in page) redirects to the client's loopback
  URL with a code (``authorize_answer``: allow, deny or a consent page), which the
  ``authorization_code`` grant takes once, within 10 minutes, for its client and redirect URL;
- ``GET /crm/v3/objects/contacts`` (``limit`` ≤ 100, opaque ``after``, ``archived=true``) and
  the single-record ``GET/PATCH/DELETE /crm/v3/objects/contacts/{id}``, ``POST`` to create;
- every record's ``properties`` carry ``hs_object_id``, ``createdate`` and
  ``lastmodifieddate``, whatever was asked for, as HubSpot's do;
- ``POST /crm/v3/objects/contacts/search``: filterGroups (≤ 5 groups, ≤ 10 filters each,
  ≤ 25 in all) and a top-level ``filters`` list, read as one more group; one sort,
  ``limit`` ≤ 200 (default 10), ``after`` an offset, a 400 once ``after`` reaches
  ``search_result_cap`` (10,000), its own rate (``search_rate_per_s``), an index that lags
  writes by ``indexing_lag_seconds``, and no archived records;
- ``batch/read|create|update|upsert|archive``: at most 100 inputs, 207 with ``errors[]`` and
  ``numErrors`` on partial failure; a duplicate email is a 409 ``CONFLICT``; values are
  strings and ``""`` clears one;
- ``POST /crm/v3/objects/contacts/merge``: the survivor lists ``hs_merged_object_ids``;
- ``/crm/v3/properties/contacts``: the catalogue, and custom properties;
- rate limits: ``rate_limit_per_10s`` requests per rolling 10 s and ``daily_limit`` per UTC day,
  a 429 with ``policyName`` and the ``X-HubSpot-RateLimit-*`` headers;
- error bodies shaped like HubSpot's: ``status``, ``message``, ``correlationId``, ``category``.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl

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
from plugins.hubspot.webhooks import WebhookSender

MAX_BATCH = 100
LIST_MAX_LIMIT = 100
SEARCH_DEFAULT_LIMIT = 10
SEARCH_MAX_LIMIT = 200
SEARCH_RESULT_CAP = 10_000
AUTH_CODE_SECONDS = 600.0  # how long an authorization code from the sign-in page is good for
MAX_FILTER_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 10, 25
TEN_SECONDS = 10.0
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
# In every record HubSpot returns, whatever ``properties`` asked for.
ALWAYS_RETURNED = ("hs_object_id", "createdate", "lastmodifieddate")
READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_merged_object_ids"})
# Properties whose values are times: filters compare them as epoch milliseconds.
DATETIME_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})
OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)
PROPERTY_TYPES = frozenset({"string", "number", "date", "datetime", "enumeration", "bool"})
FIELD_TYPES = frozenset(
    {
        "textarea",
        "text",
        "date",
        "file",
        "number",
        "select",
        "radio",
        "checkbox",
        "booleancheckbox",
        "calculation_equation",
        "phonenumber",
    }
)
FIRST_ID = 1001

_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Margaret",
    "John",
    "Katherine",
    "Dennis",
    "Shafi",
    "Leslie",
    "Mary",
    "Niklaus",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "Backus",
    "Johnson",
    "Ritchie",
    "Goldwasser",
    "Lamport",
    "Keller",
    "Wirth",
)
# Real, assigned NANP area codes: a phone library must parse the seeded numbers as valid US ones.
_AREA_CODES = (
    "212",
    "305",
    "312",
    "404",
    "415",
    "503",
    "512",
    "617",
    "646",
    "702",
    "713",
    "801",
    "206",
    "303",
    "602",
    "919",
)
_DOMAINS = ("example.org", "example.com", "example.net")


def iso_ms(moment: datetime) -> str:
    """HubSpot's timestamp form: ISO-8601 UTC with milliseconds and ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_time_ms(value: str) -> int:
    """Epoch milliseconds from what filters carry: ``"1714521600000"`` or an ISO-8601 time."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class HubSpotError(SimulatorError):
    """A HubSpot-shaped error: ``{"status": "error", message, correlationId, category}``."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.category = category
        self.errors = errors
        self.extra = extra or {}


def _default_catalogue() -> dict[str, dict[str, Any]]:
    def prop(name: str, label: str, type_: str = "string", field: str = "text", **more: Any):
        return {
            "name": name,
            "label": label,
            "type": type_,
            "fieldType": field,
            "groupName": "contactinformation",
            "description": "",
            "options": [],
            "hidden": False,
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": False,
            "hubspotDefined": True,
            "formField": type_ == "string",
            "modificationMetadata": {
                "archivable": False,
                "readOnlyDefinition": True,
                "readOnlyValue": name in READ_ONLY,
            },
            "createdAt": "2019-08-06T02:41:08.029Z",
            "updatedAt": "2019-08-06T02:41:08.029Z",
            "archived": False,
            **more,
        }

    return {
        p["name"]: p
        for p in (
            prop("firstname", "First Name"),
            prop("lastname", "Last Name"),
            prop("email", "Email"),
            prop("phone", "Phone Number", field="phonenumber"),
            prop("mobilephone", "Mobile Phone Number", field="phonenumber"),
            prop("company", "Company Name"),
            prop("hs_object_id", "Record ID", "number", "number"),
            prop("lastmodifieddate", "Last Modified Date", "datetime", "date"),
            prop("createdate", "Create Date", "datetime", "date"),
            prop("hs_merged_object_ids", "Merged Record IDs", "enumeration", "checkbox"),
        )
    }


class HubSpotSimulator(Simulator):
    """HubSpot's CRM v3 contacts API. See the module docstring for the rules.

    Knobs (all keyword options; ``contactsync simulate hubspot`` passes the kit's four):
    ``contacts`` seeded records, ``latency``, ``error_rate``, ``seed``, ``clock``, and
    ``rate_limit_per_10s`` (100; 190 for Professional), ``daily_limit`` (250,000),
    ``search_rate_per_s`` (5), ``search_result_cap`` (10,000), ``indexing_lag_seconds`` (0),
    ``shared_lastmodified_count`` (0: that many seeded contacts share one lastmodifieddate),
    ``token_ttl_seconds`` (1800) and ``rotate_refresh_tokens`` (False).
    """

    name = "hubspot"
    extra_one_shot_faults: ClassVar[frozenset[str]] = frozenset()
    # The platform's own knobs, (type, default, help): the kit sets each as an attribute
    # and offers it as a flag (``--rate-limit-per-10s 190``) and on ``POST /_sim/hubspot``.
    knob_options: ClassVar[dict[str, tuple[type, Any, str]]] = {
        "rate_limit_per_10s": (int, 100, "Requests per rolling 10 s (190: Professional)."),
        "daily_limit": (int, 250_000, "Requests per UTC day."),
        "search_rate_per_s": (float, 5.0, "Search requests per second."),
        "search_result_cap": (int, SEARCH_RESULT_CAP, "Search answers 400 past this offset."),
        "indexing_lag_seconds": (float, 0.0, "Seconds before search sees a write."),
        "shared_lastmodified_count": (int, 0, "Seeded contacts sharing one lastmodifieddate."),
        "token_ttl_seconds": (float, 1800.0, "Lifetime of OAuth access tokens."),
        "rotate_refresh_tokens": (bool, False, "Each refresh grant returns a new refresh token."),
        "authorize_answer": (str, "allow", "The sign-in page: allow, deny or consent (a page)."),
        "redirect_uri": (str, "", "The app's registered redirect URL ('': any loopback URL)."),
        "webhook_url": (str, "", "Target URL of the app's webhooks ('': none are sent)."),
        "webhook_bad_signature_rate": (float, 0.0, "Share of webhook attempts signed wrongly."),
        "webhook_duplicate_rate": (float, 0.0, "Share of webhook events sent twice."),
        "webhook_retry_seconds": (float, 1.0, "First webhook retry delay (doubled each time)."),
    }

    # --- webhooks -----------------------------------------------------------------------------

    @property
    def webhooks(self) -> WebhookSender:
        """The webhook sender (plugins/hubspot/webhooks.py), made on first use."""
        sender = self.__dict__.get("_webhooks")
        if sender is None:
            sender = self.__dict__["_webhooks"] = WebhookSender(self.client_secret, seed=self.seed)
        sender.url = self.webhook_url
        sender.bad_signature_rate = self.webhook_bad_signature_rate
        sender.duplicate_rate = self.webhook_duplicate_rate
        sender.retry_seconds = self.webhook_retry_seconds
        return sender

    def _event(self, kind: str, object_id: str, **more: Any) -> None:
        if self.webhook_url and not getattr(self, "_seeding", False):
            source = getattr(self, "_change_source", "INTEGRATION")
            self.webhooks.event(kind, object_id, source, **more)

    def stop(self) -> None:
        sender = self.__dict__.pop("_webhooks", None)
        if sender is not None:
            sender.stop()
        super().stop()

    # --- credentials --------------------------------------------------------------------------

    @property
    def private_app_token(self) -> str:
        """The private-app token: accepted forever (HubSpot never expires them)."""
        return f"pat-na1-{self.seed:08d}-0000-4000-8000-hubspotsim00"

    @property
    def client_id(self) -> str:
        """The OAuth app's client id."""
        return f"sim-client-{self.seed}"

    @property
    def client_secret(self) -> str:
        """The OAuth app's client secret."""
        return f"sim-secret-{self.seed}"

    def credentials(self) -> dict[str, Any]:
        return {
            "access_token": self.private_app_token,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }

    # --- state --------------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.catalogue = _default_catalogue()
        self.merged_into: dict[str, str] = {}  # a merged-away id -> the surviving id
        # The search index: per id, versions (visible_from monotonic, public record or None).
        self._index: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        self._next_id = FIRST_ID
        # Every id ever created, ascending: listing and id-range searches walk it from a
        # bisect instead of sorting 100k records per page.
        self._order: list[int] = []
        self._id_rng = random.Random(self.seed + 1)  # correlation ids and tokens, not faults
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._daily: tuple[str, int] = ("", 0)
        # OAuth: access token -> monotonic expiry; the one live refresh token (or more, when
        # rotation is off and every grant returns the same).
        self.oauth_tokens = IssuedTokens(self.clock)
        self.refresh_token = self._token("refresh")
        self._refresh_tokens = {self.refresh_token}
        self.auth_codes = AuthorizationCodes(self.clock, ttl_seconds=AUTH_CODE_SECONDS)
        self.counters = {"search": 0, "rate_limited": 0, "token_grants": 0}
        self._seed_contacts()

    def _seed_contacts(self) -> None:
        self._seeding = True  # seeded contacts existed before: no webhooks for them
        try:
            self._seed_records()
        finally:
            self._seeding = False

    def _seed_records(self) -> None:
        rng = random.Random(self.seed)  # its own RNG: faults drawn later never shift the data
        shared = iso_ms(self.clock.now() - timedelta(days=1))
        for i in range(self.contacts):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            # NANP: the exchange starts 2-9 and is not N11 or the fictional 555.
            exchange = rng.choice([e for e in range(200, 1000) if e % 100 != 11 and e != 555])
            props = {
                "firstname": first,
                "lastname": last,
                "email": f"{first}.{last}.{i}@{rng.choice(_DOMAINS)}".lower(),
                "phone": f"+1{rng.choice(_AREA_CODES)}{exchange}{rng.randrange(10000):04d}",
            }
            stamp = shared if i < self.shared_lastmodified_count else None
            self._create(props, stamp=stamp, lag=False)

    def state(self) -> dict[str, Any]:
        return {
            "contacts": [self._public(r, None) for r in self._sorted(self.records.values())],
            "merged_into": dict(self.merged_into),
            "properties": sorted(self.catalogue),
            "counters": dict(self.counters),
            "knobs": self.knobs(),
        }

    # --- what a HubSpot user does (tests call these directly) ---------------------------------

    def add_contact(self, **properties: Any) -> str:
        """Create a contact as a HubSpot user would (no duplicate check); return its id."""
        with self.lock, self._by_user():
            return self._create(self._strings(properties))["id"]

    def edit_contact(self, contact_id: str, **properties: Any) -> None:
        """Change a contact as a user would; ``""`` or ``None`` clears a property."""
        with self.lock, self._by_user():
            self._update(self.records[contact_id], self._strings(properties))

    def delete_contact(self, contact_id: str) -> None:
        """Archive a contact (HubSpot's delete): gone from search, listed with archived=true."""
        with self.lock, self._by_user():
            self._archive(self.records[contact_id])

    def merge(self, primary: str, secondary: str) -> str:
        """Merge ``secondary`` into ``primary``; return the survivor's id (``primary``)."""
        with self.lock, self._by_user():
            return self._merge(primary, secondary)["id"]

    @contextlib.contextmanager
    def _by_user(self) -> Iterator[None]:
        """Changes made inside are a HubSpot user's (``changeSource: CRM``), not the API's."""
        self._change_source = "CRM"
        try:
            yield
        finally:
            self._change_source = "INTEGRATION"

    def share_lastmodified(self, ids: Iterable[str], stamp: str | None = None) -> str:
        """Give the contacts ``ids`` one ``lastmodifieddate`` (now by default); return it."""
        with self.lock:
            stamp = stamp or iso_ms(self.clock.now())
            for contact_id in ids:
                record = self.records[contact_id]
                record["updatedAt"] = record["properties"]["lastmodifieddate"] = stamp
                self._reindex(record)
            return stamp

    def expire_access_tokens(self) -> None:
        """Expire every OAuth access token at once (a client must refresh)."""
        with self.lock:
            self.oauth_tokens.expire_all()

    # --- records ------------------------------------------------------------------------------

    def _create(
        self, props: dict[str, str], *, stamp: str | None = None, lag: bool = True
    ) -> dict[str, Any]:
        contact_id = str(self._next_id)
        self._next_id += 1
        stamp = stamp or iso_ms(self.clock.now())
        clean = {k: v for k, v in props.items() if v != ""}
        record = {
            "id": contact_id,
            "properties": {
                **clean,
                "hs_object_id": contact_id,
                "createdate": stamp,
                "lastmodifieddate": stamp,
            },
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }
        self.records[contact_id] = record
        if not self._order or int(contact_id) > self._order[-1]:
            self._order.append(int(contact_id))
        else:
            bisect.insort(self._order, int(contact_id))
        self._reindex(record, lag=lag)
        self._event("contact.creation", contact_id, changeFlag="NEW")
        return record

    def _update(self, record: dict[str, Any], props: dict[str, str]) -> None:
        before = dict(record["properties"])
        for key, value in props.items():
            if value == "":  # "Properties values can be cleared by passing an empty string."
                record["properties"].pop(key, None)
            else:
                record["properties"][key] = value
        stamp = iso_ms(self.clock.now())
        record["updatedAt"] = record["properties"]["lastmodifieddate"] = stamp
        self._reindex(record)
        # HubSpot sends propertyChange only for a value that changed, one event per property.
        for key in props:
            after = record["properties"].get(key)
            if before.get(key) != after:
                self._event(
                    "contact.propertyChange",
                    record["id"],
                    propertyName=key,
                    propertyValue=after or "",
                )

    def _archive(self, record: dict[str, Any]) -> None:
        record["archived"] = True
        record["archivedAt"] = iso_ms(self.clock.now())
        self._reindex(record)
        self._event("contact.deletion", record["id"])

    def _merge(self, primary_id: str, secondary_id: str) -> dict[str, Any]:
        primary, secondary = self._live(primary_id), self._live(secondary_id)
        if primary is None or secondary is None or primary is secondary:
            raise HubSpotError(
                400, "Both contacts must exist, be distinct and not archived.", "VALIDATION_ERROR"
            )
        # The primary's values win; the secondary fills the gaps.
        for key, value in secondary["properties"].items():
            if key not in READ_ONLY:
                primary["properties"].setdefault(key, value)
        merged = [m for m in primary["properties"].get("hs_merged_object_ids", "").split(";") if m]
        merged += [secondary_id, *secondary.get("mergedIds", [])]
        primary["mergedIds"] = merged
        primary["properties"]["hs_merged_object_ids"] = ";".join(merged)
        for old in [secondary_id, *secondary.get("mergedIds", [])]:
            self.merged_into[old] = primary_id
        for old, into in list(self.merged_into.items()):
            if into == secondary_id:
                self.merged_into[old] = primary_id
        del self.records[secondary_id]
        self._index[secondary_id] = [(self.clock.monotonic(), None)]
        self._update(primary, {})
        self._event(
            "contact.merge",
            primary_id,
            primaryObjectId=int(primary_id),
            mergedObjectIds=[int(secondary_id)],
            newObjectId=int(primary_id),
        )
        return primary

    def _live(self, contact_id: str) -> dict[str, Any] | None:
        contact_id = self.merged_into.get(contact_id, contact_id)
        record = self.records.get(contact_id)
        return None if record is None or record["archived"] else record

    def _reindex(self, record: dict[str, Any], lag: bool = True) -> None:
        # Search sees a write only ``indexing_lag_seconds`` later; until then the older version.
        now = self.clock.monotonic()
        visible = now + (self.indexing_lag_seconds if lag else 0.0)
        snapshot = None if record["archived"] else _copy(record)
        versions = [v for v in self._index.get(record["id"], []) if v[0] > now]
        older = [v for v in self._index.get(record["id"], []) if v[0] <= now]
        self._index[record["id"]] = [*older[-1:], *versions, (visible, snapshot)]

    def _visible(self, contact_id: str, now: float) -> dict[str, Any] | None:
        """The version of a record that search sees now (``None``: none, or archived)."""
        seen = None
        for when, snap in self._index.get(contact_id, ()):
            if when <= now:
                seen = snap
        return seen

    def _ids_from(self, after: int) -> Iterable[int]:
        """Ids above ``after``, ascending."""
        order = self._order
        for i in range(bisect.bisect_right(order, after), len(order)):
            yield order[i]

    def _indexed(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        out = []
        for versions in self._index.values():
            seen = [snap for when, snap in versions if when <= now]
            if seen and seen[-1] is not None:
                out.append(seen[-1])
        return out

    def _by_property(self, prop: str, value: str) -> dict[str, Any] | None:
        if prop == "hs_object_id":
            return self._live(value)
        if prop == "email":
            value = value.lower()
        for record in self.records.values():
            have = record["properties"].get(prop)
            if (
                not record["archived"]
                and have is not None
                and (have.lower() if prop == "email" else have) == value
            ):
                return record
        return None

    @staticmethod
    def _sorted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(records, key=lambda r: int(r["id"]))

    def _public(self, record: dict[str, Any], wanted: Iterable[str] | None) -> dict[str, Any]:
        props = record["properties"]
        names = list(wanted) if wanted is not None else list(props)
        # Unknown names in a read are silently ignored; unset known ones come back null.
        shown = {n: props.get(n) for n in names if n in self.catalogue or n in props}
        # HubSpot always answers these three, whatever was asked for.
        for name in ALWAYS_RETURNED:
            shown.setdefault(name, props.get(name))
        out = {
            "id": record["id"],
            "properties": shown,
            "createdAt": record["createdAt"],
            "updatedAt": record["updatedAt"],
            "archived": record["archived"],
        }
        if record["archived"]:
            out["archivedAt"] = record.get("archivedAt")
        return out

    # --- validation ---------------------------------------------------------------------------

    @staticmethod
    def _strings(props: dict[str, Any]) -> dict[str, str]:
        # Values are strings on the wire; HubSpot stringifies numbers and booleans it is sent.
        out = {}
        for key, value in props.items():
            if value is None:
                out[key] = ""
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
            else:
                out[key] = str(value)
        return out

    def _check_props(self, props: Any) -> dict[str, str]:
        if not isinstance(props, dict):
            raise HubSpotError(400, "properties must be an object", "VALIDATION_ERROR")
        errors = []
        for name in props:
            if name not in self.catalogue:
                errors.append(
                    {
                        "message": f'Property "{name}" does not exist',
                        "code": "PROPERTY_DOESNT_EXIST",
                        "context": {"propertyName": [name]},
                    }
                )
            elif name in READ_ONLY:
                errors.append(
                    {
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "code": "READ_ONLY_VALUE",
                        "context": {"propertyName": [name]},
                    }
                )
        strings = self._strings(props)
        email = strings.get("email")
        if email and ("@" not in email or " " in email):
            errors.append(
                {
                    "message": f"Email address {email} is invalid",
                    "code": "INVALID_EMAIL",
                    "context": {"propertyName": ["email"]},
                }
            )
        if errors:
            messages = "; ".join(e["message"] for e in errors)
            raise HubSpotError(
                400,
                f"Property values were not valid: {messages}",
                "VALIDATION_ERROR",
                errors=errors,
            )
        return strings

    def _check_unique(self, props: dict[str, str], own_id: str | None) -> None:
        for name, value in props.items():
            unique = name == "email" or self.catalogue.get(name, {}).get("hasUniqueValue")
            if not unique or value == "":
                continue
            other = self._by_property(name, value.lower() if name == "email" else value)
            if other is not None and other["id"] != own_id:
                what = "Contact already exists" if name == "email" else f"{name} must be unique"
                raise HubSpotError(
                    409,
                    f"{what}. Existing ID: {other['id']}",
                    "CONFLICT",
                    extra={"context": {"id": [other["id"]]}},
                )

    def _id_property(self, name: str | None) -> str:
        name = name or "hs_object_id"
        if name not in ("hs_object_id", "email") and not self.catalogue.get(name, {}).get(
            "hasUniqueValue"
        ):
            raise HubSpotError(
                400, f"Property {name} is not a unique identifier property", "VALIDATION_ERROR"
            )
        return name

    # --- the request pipeline -----------------------------------------------------------------

    def _error_body(self, exc: HubSpotError) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "error",
            "message": exc.message,
            "correlationId": self._correlation_id(),
            "category": exc.category,
        }
        if exc.errors:
            body["errors"] = exc.errors
        body.update(exc.extra)
        return body

    def _correlation_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _token(self, kind: str) -> str:
        # Opaque and of realistic length (HubSpot's can reach 300 characters).
        bits = self._id_rng.getrandbits(192)
        return f"{kind[:2]}-na1-{bits:048x}"

    def _authenticate(self, request: Request) -> str:
        token = request.bearer_token()
        if token == self.private_app_token:
            return "private"
        left = self.oauth_tokens.seconds_left(token)
        if left is not None:
            if left > 0:
                return "oauth"
            raise HubSpotError(
                401,
                f"The OAuth token used to make this call expired {int(-left)} second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        raise HubSpotError(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication "
            "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
            "oauth-overview",
            "INVALID_AUTHENTICATION",
        )

    def _rate_headers(self, kind: str) -> dict[str, str]:
        remaining = max(0, self.rate_limit_per_10s - len(self._window))
        headers = {
            "X-HubSpot-RateLimit-Max": str(self.rate_limit_per_10s),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(TEN_SECONDS * 1000)),
            # The 2018 pair: per second, as HubSpot reported it (the burst spread over 10 s).
            "X-HubSpot-RateLimit-Secondly": str(max(1, self.rate_limit_per_10s // 10)),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(remaining // 10),
        }
        if kind == "private":  # OAuth calls carry no Daily headers (HubSpot changelog).
            day_used = self._daily[1]
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(0, self.daily_limit - day_used)
            )
        return headers

    def _rate_limit(self, kind: str, search: bool) -> dict[str, str]:
        now = self.clock.monotonic()
        while self._window and self._window[0] <= now - TEN_SECONDS:
            self._window.popleft()
        day = self.clock.now().astimezone(UTC).date().isoformat()
        if self._daily[0] != day:  # the daily limit resets at midnight (UTC here)
            self._daily = (day, 0)
        if self._daily[1] >= self.daily_limit:
            self.counters["rate_limited"] += 1
            raise self._too_many(
                "You have reached your daily limit.", "DAILY", self._rate_headers(kind)
            )
        if len(self._window) >= self.rate_limit_per_10s:
            self.counters["rate_limited"] += 1
            raise self._too_many(
                "You have reached your ten_secondly_rolling limit.",
                "TEN_SECONDLY_ROLLING",
                self._rate_headers(kind),
            )
        if search:
            # Search has its own, per-second limit, and its answers carry no rate headers.
            while self._search_window and self._search_window[0] <= now - 1.0:
                self._search_window.popleft()
            if len(self._search_window) >= self.search_rate_per_s:
                self.counters["rate_limited"] += 1
                raise self._too_many("You have reached your secondly limit.", "SECONDLY", {})
            self._search_window.append(now)
        self._window.append(now)
        self._daily = (day, self._daily[1] + 1)
        return {} if search else self._rate_headers(kind)

    def _too_many(self, message: str, policy: str, headers: dict[str, str]) -> HubSpotError:
        return HubSpotError(
            429,
            message,
            "RATE_LIMITS",
            extra={
                "errorType": "RATE_LIMIT",
                "policyName": policy,
                "requestId": self._correlation_id(),
            },
            headers={**headers, "Retry-After": "1" if policy != "DAILY" else "3600"},
        )

    def _api(self, handler: Callable[[Request], Reply], *, search: bool = False) -> Callable:
        """Wrap a CRM handler: auth, rate limits and their headers, HubSpot error bodies."""

        def wrapped(request: Request) -> Reply:
            headers: dict[str, str] = {}
            try:
                kind = self._authenticate(request)
                headers = self._rate_limit(kind, search)
                status, extra, body = handler(request)
                return status, {**headers, **extra}, body
            except HubSpotError as exc:
                return json_reply(self._error_body(exc), exc.status, {**headers, **exc.headers})

        return wrapped

    def fault_reply(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Injected faults in HubSpot's shape: a 429 names the ten-secondly policy."""
        if status == 429:
            error = self._too_many(
                "You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING", {}
            )
        else:
            error = HubSpotError(status, "An internal error occurred.", "INTERNAL_ERROR")
        return json_reply(self._error_body(error), status, {**error.headers, **(headers or {})})

    def setup_routes(self) -> None:
        base = "/crm/v3/objects/contacts"
        routes: list[tuple[str, str, Callable[[Request], Reply], bool]] = [
            ("GET", base, self._list, False),
            ("POST", base, self._create_one, False),
            ("POST", f"{base}/search", self._search, True),
            ("POST", f"{base}/batch/read", self._batch_read, False),
            ("POST", f"{base}/batch/create", self._batch_create, False),
            ("POST", f"{base}/batch/update", self._batch_update, False),
            ("POST", f"{base}/batch/upsert", self._batch_upsert, False),
            ("POST", f"{base}/batch/archive", self._batch_archive, False),
            ("POST", f"{base}/merge", self._merge_route, False),
            ("GET", f"{base}/{{id}}", self._get_one, False),
            ("PATCH", f"{base}/{{id}}", self._patch_one, False),
            ("DELETE", f"{base}/{{id}}", self._delete_one, False),
            ("GET", "/crm/v3/properties/contacts", self._properties, False),
            ("POST", "/crm/v3/properties/contacts", self._create_property, False),
            ("GET", "/crm/v3/properties/contacts/{name}", self._property, False),
            ("GET", "/account-info/v3/api-usage/daily/private-apps", self._usage, False),
        ]
        for method, path, handler, search in routes:
            self.add_route(method, path, self._api(handler, search=search))
        # Token grants need no bearer token and do not count against the API limits.
        self.add_route("POST", "/oauth/v1/token", self._token_grant)
        self.add_route("POST", "/oauth/2026-03/token", self._token_grant)
        # app.hubspot.com's sign-in page, served here on the API's host.
        self.add_route("GET", "/oauth/authorize", self._authorize)

    # --- OAuth --------------------------------------------------------------------------------

    def _token_grant(self, request: Request) -> Reply:
        form = dict(parse_qsl(request.body.decode(errors="replace"), keep_blank_values=True))
        if not form and request.body.strip().startswith(b"{"):
            form = {k: str(v) for k, v in (request.json() or {}).items()}

        def oauth_error(error: str, status: str, message: str) -> Reply:
            return json_reply(
                {
                    "status": status,
                    "message": message,
                    "correlationId": self._correlation_id(),
                    "error": error,
                    "error_description": message,
                },
                400,
            )

        grant = form.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return oauth_error(
                "unsupported_grant_type",
                "BAD_GRANT_TYPE",
                "grant_type must be refresh_token or authorization_code",
            )
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return oauth_error("invalid_client", "BAD_CLIENT_ID", "client_id or secret is wrong")
        if grant == "authorization_code":
            why = self.auth_codes.redeem(
                form.get("code", ""), form.get("client_id", ""), form.get("redirect_uri", "")
            )
            if why == "redirect_uri":
                return oauth_error(
                    "invalid_grant",
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match the one the auth code was issued for",
                )
            if why is not None:
                words = {"expired": "auth code is expired", "used": "auth code was already used"}
                return oauth_error(
                    "invalid_grant", "BAD_AUTH_CODE", words.get(why, "missing or unknown auth code")
                )
            # A new install's refresh token, live beside the others (each app install has one).
            sent = self._token("refresh")
            self._refresh_tokens.add(sent)
        else:
            sent = form.get("refresh_token", "")
            if sent not in self._refresh_tokens:
                return oauth_error(
                    "invalid_grant",
                    "BAD_REFRESH_TOKEN",
                    "refresh token is invalid, expired or revoked",
                )
            if self.rotate_refresh_tokens:
                self._refresh_tokens.discard(sent)
                sent = self.refresh_token = self._token("refresh")
                self._refresh_tokens.add(sent)
        self.counters["token_grants"] += 1
        access = self._token("access")
        self.oauth_tokens.issue(access, self.token_ttl_seconds)
        return json_reply(
            {
                "token_type": "bearer",
                "access_token": access,
                "refresh_token": sent,
                "expires_in": int(self.token_ttl_seconds),
            }
        )

    def _authorize(self, request: Request) -> Reply:
        """The sign-in page: with ``authorize_answer`` ``allow`` it redirects at once to
        ``redirect_uri?code=…&state=…`` (a browser login is out of scope); ``deny`` redirects
        with ``error=access_denied``; ``consent`` shows a page with both choices. A wrong
        client id or redirect URL is an error page, never a redirect."""
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id:
            return 400, {"Content-Type": "text/plain"}, "Invalid client_id: no such app."
        if not redirect_allowed(redirect_uri, self.redirect_uri):
            return 400, {"Content-Type": "text/plain"}, "The redirect_uri is not the app's."
        return self.auth_codes.answer(
            request,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            decision=query.get("decision") or self.authorize_answer,
        )

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _wanted(raw: str | list[str] | None) -> list[str]:
        if raw is None or raw == "":
            return list(DEFAULT_PROPERTIES)
        names = raw.split(",") if isinstance(raw, str) else list(raw)
        return [n.strip() for n in names if n.strip()]

    def _list(self, request: Request) -> Reply:
        limit = _int(request.query.get("limit"), 10, "limit")
        if not 1 <= limit <= LIST_MAX_LIMIT:
            raise HubSpotError(
                400, f"limit must be between 1 and {LIST_MAX_LIMIT}", "VALIDATION_ERROR"
            )
        archived = request.query.get("archived", "false").lower() == "true"
        after = _decode_cursor(request.query.get("after"))
        chosen: list[dict[str, Any]] = []
        for contact_id in self._ids_from(after):
            record = self.records.get(str(contact_id))
            if record is not None and record["archived"] == archived:
                chosen.append(record)
                if len(chosen) > limit:  # one more than the page: there is a next page
                    break
        wanted = self._wanted(request.query.get("properties"))
        page = chosen[:limit]
        body: dict[str, Any] = {"results": [self._public(r, wanted) for r in page]}
        if len(chosen) > limit:
            cursor = _encode_cursor(int(page[-1]["id"]))
            body["paging"] = {"next": {"after": cursor, "link": f"?after={cursor}"}}
        return json_reply(body)

    def _get_one(self, request: Request) -> Reply:
        prop = self._id_property(request.query.get("idProperty"))
        archived = request.query.get("archived", "false").lower() == "true"
        key = request.params["id"]
        if archived:
            record = self.records.get(key)
            record = record if record is not None and record["archived"] else None
        else:
            record = self._by_property(prop, key)
        if record is None:
            raise HubSpotError(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"
            )
        return json_reply(self._public(record, self._wanted(request.query.get("properties"))))

    def _search(self, request: Request) -> Reply:
        self.counters["search"] += 1
        body = request.json() or {}
        if not isinstance(body, dict):
            raise HubSpotError(400, "send a search request object", "VALIDATION_ERROR")
        limit = _int(body.get("limit"), SEARCH_DEFAULT_LIMIT, "limit")
        if not 0 <= limit <= SEARCH_MAX_LIMIT:
            raise HubSpotError(
                400, f"limit must be between 0 and {SEARCH_MAX_LIMIT}", "VALIDATION_ERROR"
            )
        after = _int(body.get("after"), 0, "after")
        if after >= self.search_result_cap:
            raise HubSpotError(
                400,
                f"There was a problem with the request. The search API "
                f"returns at most {self.search_result_cap} results per "
                "query.",
                "VALIDATION_ERROR",
            )
        groups = self._filter_groups(body)
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            raise HubSpotError(400, "Only one sort is supported.", "VALIDATION_ERROR")
        span = None if body.get("query") else _id_span(groups, sorts)
        if span is not None:
            return json_reply(self._search_ids(span, after, limit, body.get("properties")))
        found = [r for r in self._indexed() if self._matches(r, groups, body.get("query"))]
        if sorts:
            sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
            prop = sort.get("propertyName") or "hs_object_id"
            descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
            # Records without the property sort last either way; ties fall back to the id.
            present = [r for r in found if r["properties"].get(prop) is not None]
            absent = [r for r in found if r["properties"].get(prop) is None]
            present.sort(
                key=lambda r: (self._sort_key(prop, r["properties"][prop]), int(r["id"])),
                reverse=descending,
            )
            found = present + self._sorted(absent)
        else:
            found = self._sorted(found)
        page = found[after : after + limit]
        wanted = self._wanted(body.get("properties"))
        reply: dict[str, Any] = {
            "total": len(found),
            "results": [self._public(r, wanted) for r in page],
        }
        if after + limit < len(found) and limit > 0:
            reply["paging"] = {"next": {"after": str(after + limit)}}
        return json_reply(reply)

    def _search_ids(
        self, span: tuple[int, int], after: int, limit: int, properties: Any
    ) -> dict[str, Any]:
        """A search on ``hs_object_id`` bounds only, sorted by id: walked from a bisect.

        ``total`` counts the matches read plus the ids left in the range, an upper bound
        (HubSpot's own total is documented as approximate for large results)."""
        low, high = span
        now = self.clock.monotonic()
        found: list[dict[str, Any]] = []
        skipped = 0
        walked_to = high
        for contact_id in self._ids_from(low):
            if contact_id > high:
                break
            snapshot = self._visible(str(contact_id), now)
            if snapshot is None:
                continue
            if skipped < after:
                skipped += 1
                continue
            found.append(snapshot)
            if len(found) > limit:
                walked_to = contact_id
                break
        left = 0
        if len(found) > limit:
            order = self._order
            left = bisect.bisect_right(order, high) - bisect.bisect_right(order, walked_to)
        wanted = self._wanted(properties)
        reply: dict[str, Any] = {
            "total": skipped + len(found) + left,
            "results": [self._public(r, wanted) for r in found[:limit]],
        }
        if len(found) > limit and limit > 0:
            reply["paging"] = {"next": {"after": str(after + limit)}}
        return reply

    def _filter_groups(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The search's filter groups, checked against HubSpot's limits.

        Clients in the wild also send ``filters`` at the top level, beside ``filterGroups``.
        The research does not say how HubSpot combines the two, so the simulator reads the
        top-level list as one more group: its filters ANDed, the group ORed with the others
        (and counted against the same limits)."""
        groups = body.get("filterGroups") or []
        top = body.get("filters")
        if top:
            if not isinstance(groups, list) or not isinstance(top, list):
                raise HubSpotError(400, "filters must be a list", "VALIDATION_ERROR")
            groups = [*groups, {"filters": top}]
        self._check_filters(groups)
        return groups

    def _check_filters(self, groups: Any) -> None:
        if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
            raise HubSpotError(400, f"at most {MAX_FILTER_GROUPS} filterGroups", "VALIDATION_ERROR")
        total = 0
        for group in groups:
            filters = group.get("filters") or [] if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
                raise HubSpotError(
                    400, f"at most {MAX_FILTERS_PER_GROUP} filters per group", "VALIDATION_ERROR"
                )
            total += len(filters)
            for flt in filters:
                if not isinstance(flt, dict) or flt.get("operator") not in OPERATORS:
                    raise HubSpotError(400, f"Invalid filter {flt!r}", "VALIDATION_ERROR")
        if total > MAX_FILTERS:
            raise HubSpotError(400, f"at most {MAX_FILTERS} filters in all", "VALIDATION_ERROR")

    @staticmethod
    def _sort_key(prop: str, value: str) -> Any:
        if prop in DATETIME_PROPERTIES:
            return (0, parse_time_ms(value), "")
        if prop == "hs_object_id" or value.lstrip("-").isdigit():
            try:
                return (0, float(value), "")
            except ValueError:
                pass
        return (1, 0, value.lower())

    def _matches(self, record: dict[str, Any], groups: list[dict], query: Any) -> bool:
        props = record["properties"]
        if query:
            text = str(query).lower()
            fields = ("firstname", "lastname", "email", "phone", "mobilephone", "company")
            if not any(text in (props.get(f) or "").lower() for f in fields):
                return False
        if not groups:
            return True
        return any(all(self._filter(props, f) for f in g.get("filters") or []) for g in groups)

    def _filter(self, props: dict[str, str], flt: dict[str, Any]) -> bool:
        name, op = flt.get("propertyName", ""), flt["operator"]
        have = props.get(name)
        if op == "HAS_PROPERTY":
            return have is not None
        if op == "NOT_HAS_PROPERTY":
            return have is None
        if have is None:
            return op in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
        try:
            key = self._sort_key(name, have)
            conv = lambda v: self._sort_key(name, str(v))  # noqa: E731
            if op in ("IN", "NOT_IN"):
                inside = key in {conv(v) for v in flt.get("values") or []}
                return inside if op == "IN" else not inside
            if op == "BETWEEN":
                return conv(flt.get("value")) <= key <= conv(flt.get("highValue"))
            if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
                token = str(flt.get("value", "")).lower().strip("*")
                inside = token in have.lower()
                return inside if op == "CONTAINS_TOKEN" else not inside
            value = conv(flt.get("value"))
        except (ValueError, TypeError) as exc:
            raise HubSpotError(400, f"Invalid filter value: {exc}", "VALIDATION_ERROR") from None
        return {
            "EQ": key == value,
            "NEQ": key != value,
            "LT": key < value,
            "LTE": key <= value,
            "GT": key > value,
            "GTE": key >= value,
        }[op]

    # --- batches ------------------------------------------------------------------------------

    def _inputs(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        body = request.json()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise HubSpotError(400, 'send {"inputs": [...]}', "VALIDATION_ERROR")
        if len(inputs) > MAX_BATCH:
            raise HubSpotError(
                400,
                f"Batch input size must be less than or equal to "
                f"{MAX_BATCH}, but was {len(inputs)}.",
                "VALIDATION_ERROR",
                errors=[{"message": "too many inputs", "code": "TOO_MANY"}],
            )
        return body, inputs

    def _batch_reply(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok_status: int = 200
    ) -> Reply:
        stamp = iso_ms(self.clock.now())
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "requestedAt": stamp,
            "startedAt": stamp,
            "completedAt": stamp,
            "links": {},
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return json_reply(body, 207)
        return json_reply(body, ok_status)

    @staticmethod
    def _item_error(exc: HubSpotError, context: dict[str, Any] | None = None) -> dict[str, Any]:
        error = {
            "status": "error",
            "category": exc.category,
            "message": exc.message,
            "context": context or exc.extra.get("context", {}),
        }
        if exc.errors:
            error["errors"] = exc.errors
        return error

    def _batch_read(self, request: Request) -> Reply:
        body, inputs = self._inputs(request)
        prop = self._id_property(body.get("idProperty"))
        wanted = self._wanted(body.get("properties"))
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", "")) if isinstance(item, dict) else ""
            record = self._by_property(prop, key.lower() if prop == "email" else key)
            if record is None:
                missing.append(key)
            else:
                results.append(self._public(record, wanted))
        errors = []
        if missing:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects, they may be deleted "
                    "or not exist. Check that ids are valid.",
                    "context": {"ids": missing},
                }
            )
        return self._batch_reply(results, errors)

    def _batch_create(self, request: Request) -> Reply:
        _, inputs = self._inputs(request)
        trace_ids = [i.get("objectWriteTraceId") if isinstance(i, dict) else None for i in inputs]
        # Multi-status only when every input carries a unique objectWriteTraceId; otherwise
        # the first bad input fails the whole batch and nothing is created.
        per_input = all(trace_ids) and len(set(trace_ids)) == len(trace_ids)
        if not per_input:
            emails: dict[str, int] = {}
            for item in inputs:
                props = self._check_props(item.get("properties") if isinstance(item, dict) else 0)
                self._check_unique(props, None)
                email = props.get("email", "").lower()
                if email and email in emails:
                    raise HubSpotError(409, "Duplicate email in the batch: " + email, "CONFLICT")
                if email:
                    emails[email] = 1
        results, errors = [], []
        for item, trace in zip(inputs, trace_ids, strict=True):
            try:
                props = self._check_props(item.get("properties") if isinstance(item, dict) else 0)
                if "email" in props:
                    props["email"] = props["email"].lower()
                self._check_unique(props, None)
                results.append(self._public(self._create(props), None))
            except HubSpotError as exc:
                errors.append(self._item_error(exc, {"objectWriteTraceId": [trace]}))
        return self._batch_reply(results, errors, 201)

    def _batch_update(self, request: Request) -> Reply:
        body, inputs = self._inputs(request)
        results, errors = [], []
        for item in inputs:
            key = str(item.get("id", "")) if isinstance(item, dict) else ""
            try:
                prop = self._id_property(item.get("idProperty") or body.get("idProperty"))
                record = self._by_property(prop, key.lower() if prop == "email" else key)
                if record is None:
                    raise HubSpotError(404, f"Object {key} not found", "OBJECT_NOT_FOUND")
                props = self._check_props(item.get("properties"))
                if "email" in props:
                    props["email"] = props["email"].lower()
                self._check_unique(props, record["id"])
                self._update(record, props)
                results.append(self._public(record, None))
            except HubSpotError as exc:
                errors.append(self._item_error(exc, {"ids": [key]}))
        return self._batch_reply(results, errors)

    def _batch_upsert(self, request: Request) -> Reply:
        _, inputs = self._inputs(request)
        results, errors = [], []
        for item in inputs:
            key = str(item.get("id", "")) if isinstance(item, dict) else ""
            try:
                prop = item.get("idProperty")
                if not prop:
                    raise HubSpotError(400, "idProperty is required for upsert", "VALIDATION_ERROR")
                prop = self._id_property(prop)
                if prop == "email":
                    key = key.lower()
                props = self._check_props(item.get("properties"))
                if "email" in props:
                    props["email"] = props["email"].lower()
                record = self._by_property(prop, key)
                if record is None:
                    if prop == "hs_object_id":
                        raise HubSpotError(404, f"Object {key} not found", "OBJECT_NOT_FOUND")
                    props = {**props, prop: key}
                    self._check_unique(props, None)
                    results.append({**self._public(self._create(props), None), "new": True})
                else:
                    self._check_unique(props, record["id"])
                    self._update(record, props)
                    results.append({**self._public(record, None), "new": False})
            except HubSpotError as exc:
                errors.append(self._item_error(exc, {"ids": [key]}))
        return self._batch_reply(results, errors)

    def _batch_archive(self, request: Request) -> Reply:
        _, inputs = self._inputs(request)
        for item in inputs:
            record = self._live(str(item.get("id", ""))) if isinstance(item, dict) else None
            if record is not None:  # archiving a missing id is not an error on HubSpot
                self._archive(record)
        return 204, {}, None

    # --- single records -----------------------------------------------------------------------

    def _create_one(self, request: Request) -> Reply:
        body = request.json()
        props = self._check_props(body.get("properties") if isinstance(body, dict) else 0)
        if "email" in props:
            props["email"] = props["email"].lower()
        self._check_unique(props, None)
        return json_reply(self._public(self._create(props), None), 201)

    def _patch_one(self, request: Request) -> Reply:
        prop = self._id_property(request.query.get("idProperty"))
        key = request.params["id"]
        record = self._by_property(prop, key.lower() if prop == "email" else key)
        if record is None:
            raise HubSpotError(404, "Object not found.", "OBJECT_NOT_FOUND")
        body = request.json()
        props = self._check_props(body.get("properties") if isinstance(body, dict) else 0)
        if "email" in props:
            props["email"] = props["email"].lower()
        self._check_unique(props, record["id"])
        self._update(record, props)
        return json_reply(self._public(record, None))

    def _delete_one(self, request: Request) -> Reply:
        record = self._live(request.params["id"])
        if record is not None:
            self._archive(record)
        return 204, {}, None

    def _merge_route(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            raise HubSpotError(400, "send primaryObjectId and objectIdToMerge", "VALIDATION_ERROR")
        primary = str(body.get("primaryObjectId", ""))
        secondary = str(body.get("objectIdToMerge", ""))
        return json_reply(self._public(self._merge(primary, secondary), None))

    # --- properties and usage -----------------------------------------------------------------

    def _properties(self, request: Request) -> Reply:
        return json_reply({"results": list(self.catalogue.values())})

    def _property(self, request: Request) -> Reply:
        prop = self.catalogue.get(request.params["name"])
        if prop is None:
            raise HubSpotError(
                404, f"Unable to find property {request.params['name']}", "OBJECT_NOT_FOUND"
            )
        return json_reply(prop)

    def _create_property(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            raise HubSpotError(400, "send a property definition", "VALIDATION_ERROR")
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise HubSpotError(
                400, f"Missing required field(s): {', '.join(missing)}", "VALIDATION_ERROR"
            )
        name = str(body["name"])
        if name in self.catalogue:
            raise HubSpotError(409, f"A property named '{name}' already exists.", "CONFLICT")
        if body["type"] not in PROPERTY_TYPES or body["fieldType"] not in FIELD_TYPES:
            raise HubSpotError(
                400,
                f"Invalid type {body['type']!r} or fieldType {body['fieldType']!r}",
                "VALIDATION_ERROR",
            )
        stamp = iso_ms(self.clock.now())
        prop = {
            **_default_catalogue()["firstname"],
            **body,
            "hubspotDefined": False,
            "hasUniqueValue": bool(body.get("hasUniqueValue", False)),
            "modificationMetadata": {
                "archivable": True,
                "readOnlyDefinition": False,
                "readOnlyValue": False,
            },
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        self.catalogue[name] = prop
        return json_reply(prop, 201)

    def _usage(self, request: Request) -> Reply:
        tomorrow = self.clock.now().astimezone(UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        ) + timedelta(days=1)
        return json_reply(
            {
                "results": [
                    {
                        "name": "private-apps-api-calls-daily",
                        "usageLimit": self.daily_limit,
                        "currentUsage": self._daily[1],
                        "collectedAt": iso_ms(self.clock.now()),
                        "fetchStatus": "SUCCESS",
                        "resetsAt": iso_ms(tomorrow),
                    }
                ]
            }
        )

    def knobs_changed(self, names: list[str]) -> None:
        # A new shared_lastmodified_count gives that many existing contacts one stamp now.
        if "shared_lastmodified_count" in names:
            ids = [r["id"] for r in self._sorted(self.records.values())]
            self.share_lastmodified(ids[: self.shared_lastmodified_count])


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "properties": dict(record["properties"])}


def _int(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HubSpotError(400, f"{name} must be a number", "VALIDATION_ERROR") from None


def _encode_cursor(last_id: int) -> str:
    # Opaque, as HubSpot's list cursor is: clients must pass it back, not compute it.
    return base64.urlsafe_b64encode(f"{last_id}\n".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise HubSpotError(400, f"Invalid after cursor {cursor!r}", "VALIDATION_ERROR") from None


_ID_BOUNDS = {"GT": (1, 0), "GTE": (1, -1), "LT": (0, 0), "LTE": (0, 1), "EQ": (2, 0)}


def _id_span(groups: Any, sorts: Any) -> tuple[int, int] | None:
    """``(above, up_to)`` when a search is one group of ``hs_object_id`` bounds sorted by id
    (or unsorted), the shape of a keyset scan; ``None`` for anything else."""
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        return None
    if sorts:
        sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
        if sort.get("propertyName") != "hs_object_id":
            return None
        if str(sort.get("direction", "ASCENDING")).upper() != "ASCENDING":
            return None
    above, up_to = 0, 2**63
    for flt in groups[0].get("filters") or []:
        if flt.get("propertyName") != "hs_object_id" or flt.get("operator") not in _ID_BOUNDS:
            return None
        try:
            value = int(str(flt.get("value")))
        except ValueError:
            return None
        side, shift = _ID_BOUNDS[flt["operator"]]
        if side in (1, 2):  # a lower bound: ids above ``value + shift``
            above = max(above, value + shift if side == 1 else value - 1)
        if side in (0, 2):  # an upper bound
            up_to = min(up_to, value - 1 + shift if side == 0 else value)
    return above, up_to
