"""Ellucian Colleague behind Ethos Integration, simulated: persons v12 and change notifications.

The kit (:mod:`daemon.kit.simkit`) serves HTTP on loopback and owns latency, random 5xx, dropped
connections, malformed bodies, one-shot faults and ``/_sim/reset|faults|state``. This module
adds what Ethos and Colleague do (facts from ``shared/research/slate_colleague_sftp.md`` §2):

- auth: ``POST /auth`` with ``Authorization: Bearer <API key>`` answers a JWT as plain text,
  valid ``token_ttl_seconds`` (Ethos: 5 minutes; ``expirationMinutes`` 1-120 overrides it).
  A request with an expired or unknown JWT gets a 401;
- ``GET /api/persons``: offset/limit paging (a limit above ``x-max-page-size`` is clamped),
  ``x-total-count`` and ``x-max-page-size`` headers, ``criteria`` filters on roles, emails,
  credentials and names; versioned media types (an ``Accept`` naming another persons version
  is a 406), ``X-Media-Type`` on every answer;
- ``GET``/``PUT /api/persons/{guid}`` and ``POST /api/persons``: a PUT keeps the properties it
  omits and replaces every array it sends, as Colleague's partial merge does; a body id that
  differs from the URL's, or the nil GUID, is a 400; the Colleague person id (a credential) is
  assigned by Colleague and cannot be changed;
- ``GET /consume?lastProcessedID=&limit=`` (and ``HEAD``): messages with sequential ids, at
  most ``limit`` (1-1000) and ``consume_max_bytes`` (1 MB) per answer, ``x-remaining``; asking
  with ``lastProcessedID=N`` deletes every message up to N for good, and asking without it
  deletes the messages the previous call returned, as Ethos does. Every write publishes a
  message carrying the whole person (or only its id, with ``full_notifications`` off);
- errors shaped like Ethos's: ``{"errors": [{"code", "description", "message"}]}``.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from daemon.sdk import IssuedTokens, Reply, Request, Simulator, SimulatorError, json_reply

PERSONS_V12 = "application/vnd.hedtech.integration.v12+json"
CHANGE_NOTIFICATIONS_V2 = "application/vnd.hedtech.change-notifications.v2+json"
ERRORS_V2 = "application/vnd.hedtech.integration.errors.v2+json"
NIL_GUID = "00000000-0000-0000-0000-000000000000"
COLLEAGUE_ID = "colleaguePersonId"
MAX_CONSUME_LIMIT = 1000
STUDENT_ROLES = ("student", "prospectiveStudent")
STAFF_ROLES = ("employee", "vendor", "instructor")

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Perlman")
# Real NANP area codes, so a phone library reads the seeded numbers as valid US ones.
_AREA_CODES = ("212", "305", "312", "404", "415", "503", "512", "617", "646", "702")
# NANP exchanges start 2-9 and are not N11 or the fictional 555.
_EXCHANGES = [e for e in range(200, 1000) if e % 100 != 11 and e != 555]


class EthosError(SimulatorError):
    """An Ethos-shaped error answer."""

    def __init__(self, status: int, code: str, message: str, description: str = "") -> None:
        super().__init__(status, message)
        self.code = code
        self.description = description or message


def ethos_error_body(code: str, message: str, description: str = "") -> dict[str, Any]:
    """``{"errors": [{"code", "description", "message"}]}``, Ethos's v2 error shape."""
    return {"errors": [{"code": code, "description": description or message, "message": message}]}


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def iso(moment: datetime) -> str:
    """The ``published`` form of a message: ``2020-10-30 12:00:00.000Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class ColleagueSimulator(Simulator):
    """Colleague's persons (v12) through Ethos Integration: auth, persons, /consume.

    Tests drive it like a registrar would, with :meth:`add_person`, :meth:`edit_person` and
    :meth:`delete_person`; every change publishes a change notification.
    """

    name = "colleague"
    # The platform's own knobs, (type, default, help): the kit sets each as an attribute and
    # offers it as a flag (``--token-ttl-seconds 60``) and on ``POST /_sim/colleague``.
    knob_options: ClassVar[dict[str, tuple[type, Any, str]]] = {
        "token_ttl_seconds": (float, 300.0, "Lifetime of the JWT POST /auth returns."),
        "max_page_size": (int, 500, "x-max-page-size: larger persons limits are clamped."),
        "consume_max_bytes": (int, 1_000_000, "Payload cap of one /consume answer."),
        "full_notifications": (bool, True, "Messages carry the whole person (off: its id)."),
        "staff_share": (float, 0.2, "Share of seeded persons who are staff or vendors."),
    }

    # --- credentials --------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The Ethos application's API key (one application per consumer of its queue)."""
        return f"ethos-sim-{self.seed:08d}-4c1e-9a7b-apikey000000"

    def credentials(self) -> dict[str, Any]:
        return {"api_key": self.api_key}

    # --- state --------------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.persons: dict[str, dict[str, Any]] = {}  # guid -> person (v12 representation)
        self.by_colleague_id: dict[str, str] = {}  # colleaguePersonId -> guid
        self._order: list[str] = []  # listing order (Colleague's key order)
        self._filtered: dict[str, list[str]] = {}  # criteria text -> guids, until a write
        self.messages: deque[dict[str, Any]] = deque()
        self._next_message = 1
        self._delivered_through = 0  # the last id a /consume returned
        self._next_person = 1
        self._id_rng = random.Random(self.seed + 1)  # guids and tokens, not faults
        self.tokens = IssuedTokens(self.clock, wall=True)  # JWTs, expiring at their exp
        self.counters = {"token_grants": 0, "published": 0, "consumed": 0, "puts": 0}
        self.last_put: dict[str, Any] | None = None  # the body of the latest PUT, as sent
        self._seed_persons()

    def _seed_persons(self) -> None:
        rng = random.Random(self.seed)  # its own RNG: faults drawn later never shift the data
        for i in range(self.contacts):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            staff = rng.random() < self.staff_share
            roles = [rng.choice(STAFF_ROLES if staff else STUDENT_ROLES)]
            exchange = rng.choice(_EXCHANGES)
            mobile = f"{rng.choice(_AREA_CODES)}{exchange}{rng.randrange(10000):04d}"
            self._create(
                {
                    "names": [_name(first, last)],
                    "emails": [
                        {
                            "type": {"emailType": "personal"},
                            "preference": "primary",
                            "address": f"{first}.{last}.{i}@example.edu".lower(),
                        }
                    ],
                    "phones": [
                        {
                            "type": {"phoneType": "mobile"},
                            "countryCallingCode": "1",
                            "number": mobile,
                        },
                        {"type": {"phoneType": "home"}, "number": f"2125550{i % 1000:03d}"},
                    ],
                    "roles": [{"role": r, "startOn": "2024-08-26T00:00:00Z"} for r in roles],
                },
                publish=False,
            )

    def state(self) -> dict[str, Any]:
        return {
            "persons": len(self.persons),
            "queued_messages": len(self.messages),
            "next_message_id": self._next_message,
            "counters": dict(self.counters),
            "knobs": self.knobs(),
        }

    def add_person(
        self,
        first_name: str,
        last_name: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        roles: tuple[str, ...] = ("student",),
    ) -> dict[str, Any]:
        """Create a person as Colleague's own screens would; returns a copy of it."""
        person: dict[str, Any] = {
            "names": [_name(first_name, last_name)],
            "roles": [{"role": r} for r in roles],
        }
        if email:
            person["emails"] = [
                {"type": {"emailType": "personal"}, "preference": "primary", "address": email}
            ]
        if phone:
            person["phones"] = [{"type": {"phoneType": "mobile"}, "number": phone}]
        with self.lock:
            return _copy(self._create(person))

    def edit_person(self, key: str, **changes: Any) -> None:
        """Change a person (by guid or Colleague id) as a registrar would. Keys: first_name,
        last_name (the legal name), email (the primary email), phone (the mobile phone),
        roles (a list of role names); ``None`` removes an email or phone."""
        with self.lock:
            person = self.persons[self.by_colleague_id.get(key, key)]
            name = person["names"][0]
            if "first_name" in changes:
                name["firstName"] = changes["first_name"]
            if "last_name" in changes:
                name["lastName"] = changes["last_name"]
            name["fullName"] = f"{name.get('firstName', '')} {name.get('lastName', '')}".strip()
            if "email" in changes:
                emails = [e for e in person.get("emails", []) if e.get("preference") != "primary"]
                if changes["email"]:
                    emails.insert(
                        0,
                        {
                            "type": {"emailType": "personal"},
                            "preference": "primary",
                            "address": changes["email"],
                        },
                    )
                person["emails"] = emails
            if "phone" in changes:
                phones = [
                    p for p in person.get("phones", []) if p["type"].get("phoneType") != "mobile"
                ]
                if changes["phone"]:
                    phones.insert(0, {"type": {"phoneType": "mobile"}, "number": changes["phone"]})
                person["phones"] = phones
            if "roles" in changes:
                person["roles"] = [{"role": r} for r in changes["roles"]]
            self._changed(person, "updated")

    def delete_person(self, key: str) -> None:
        """Remove a person (by guid or Colleague id); publishes a ``deleted`` message."""
        with self.lock:
            guid = self.by_colleague_id.get(key, key)
            person = self.persons.pop(guid)
            self.by_colleague_id.pop(_colleague_id(person), None)
            self._order.remove(guid)
            self._filtered.clear()
            self._publish("deleted", guid, None)

    def person(self, key: str) -> dict[str, Any]:
        """A copy of one person, by guid or Colleague id."""
        with self.lock:
            return _copy(self.persons[self.by_colleague_id.get(key, key)])

    def publish_other(self, resource: str, resource_id: str, operation: str = "updated") -> None:
        """Publish a message about another resource (an application subscribed to several)."""
        with self.lock:
            self._publish(operation, resource_id, {"id": resource_id}, resource=resource)

    def expire_tokens(self) -> None:
        """Expire every JWT at once (a client must fetch a new one)."""
        with self.lock:
            self.tokens.expire_all()

    # --- records ------------------------------------------------------------------------------

    def _guid(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _create(self, person: dict[str, Any], *, publish: bool = True) -> dict[str, Any]:
        guid = self._guid()
        colleague_id = f"{self._next_person:07d}"
        self._next_person += 1
        person = {"id": guid, **{k: v for k, v in person.items() if k != "id"}}
        others = [c for c in person.get("credentials", []) if c.get("type") != COLLEAGUE_ID]
        person["credentials"] = [{"type": COLLEAGUE_ID, "value": colleague_id}, *others]
        self.persons[guid] = person
        self.by_colleague_id[colleague_id] = guid
        self._order.append(guid)
        self._filtered.clear()
        if publish:
            self._publish("created", guid, person)
        return person

    def _changed(self, person: dict[str, Any], operation: str) -> None:
        self._filtered.clear()
        self._publish(operation, person["id"], person)

    def _publish(
        self,
        operation: str,
        resource_id: str,
        content: dict[str, Any] | None,
        *,
        resource: str = "persons",
    ) -> None:
        message: dict[str, Any] = {
            "id": self._next_message,
            "published": iso(self.clock.now()),
            "publisher": {
                "applicationName": "Colleague",
                "id": "97d381ac-97c6-439c-8799-525334f2d908",
                "tenant": {"id": "328704a4", "alias": "sim", "name": "sim", "environment": "test"},
            },
            "resource": {"name": resource, "id": resource_id, "domain": "core"},
            "operation": operation,
        }
        if operation == "deleted" or content is None:
            # Ethos sends deletes with an empty contentType and no version.
            message["contentType"] = "empty"
        else:
            message["resource"]["version"] = PERSONS_V12
            message["contentType"] = "resource-representation"
            full = self.full_notifications or resource != "persons"
            message["content"] = _copy(content) if full else {"id": resource_id}
        self._next_message += 1
        self.messages.append(message)
        self.counters["published"] += 1

    def _matching(self, criteria: str | None) -> list[str]:
        """The guids a listing with ``criteria`` shows, in Colleague's order (cached until
        the next write: offset paging asks the same question once per page)."""
        if not criteria:
            return self._order
        cached = self._filtered.get(criteria)
        if cached is None:
            test = _criteria_test(criteria)
            cached = [g for g in self._order if test(self.persons[g])]
            self._filtered[criteria] = cached
        return cached

    # --- the API ------------------------------------------------------------------------------

    def setup_routes(self) -> None:
        self.add_route("POST", "/auth", self._ethos(self._auth, authenticated=False))
        self.add_route("GET", "/api/persons", self._ethos(self._list))
        self.add_route("POST", "/api/persons", self._ethos(self._post))
        self.add_route("GET", "/api/persons/{guid}", self._ethos(self._get))
        self.add_route("PUT", "/api/persons/{guid}", self._ethos(self._put))
        self.add_route("GET", "/consume", self._ethos(self._consume))
        self.add_route("HEAD", "/consume", self._ethos(self._consume_head))

    def _ethos(
        self, handler: Callable[[Request], Reply], *, authenticated: bool = True
    ) -> Callable[[Request], Reply]:
        def wrapped(request: Request) -> Reply:
            try:
                if authenticated:
                    self._authenticate(request)
                return handler(request)
            except EthosError as exc:
                body = ethos_error_body(exc.code, exc.message, exc.description)
                headers = {"Content-Type": "application/json", "X-Media-Type": ERRORS_V2}
                if exc.status == 401:
                    headers["WWW-Authenticate"] = "Bearer"
                return json_reply(body, exc.status, headers)

        return wrapped

    def _authenticate(self, request: Request) -> None:
        token = request.bearer_token()
        left = self.tokens.seconds_left(token)
        if left is None:
            raise EthosError(401, "Global.Unauthorized", "Unauthorized: unknown bearer token")
        if left <= 0:
            raise EthosError(401, "Global.Unauthorized", "Unauthorized: the token has expired")

    def _auth(self, request: Request) -> Reply:
        if request.bearer_token() != self.api_key:
            raise EthosError(401, "Global.Unauthorized", "Invalid API key")
        ttl = self.token_ttl_seconds
        minutes = request.query.get("expirationMinutes")
        if minutes:
            if not minutes.isdigit() or not 1 <= int(minutes) <= 120:
                raise EthosError(400, "Global.BadRequest", "expirationMinutes must be 1-120")
            ttl = int(minutes) * 60.0
        now = self.tokens.now()
        payload = {
            "sub": "sim-application",
            "iat": int(now),
            "exp": int(now + ttl),
            "jti": self._id_rng.getrandbits(64),
        }
        token = ".".join((_b64({"alg": "HS256", "typ": "JWT"}), _b64(payload), "c2ltdWxhdGVk"))
        self.tokens.issue(token, ttl)
        self.counters["token_grants"] += 1
        return 200, {"Content-Type": "text/plain"}, token

    @staticmethod
    def _check_accept(request: Request, wanted: str) -> None:
        accept = request.headers.get("Accept") or ""
        if "vnd.hedtech" in accept and wanted not in accept:
            raise EthosError(
                406,
                "Global.UnsupportedMediaType",
                f"Unsupported media type {accept!r}; this resource serves {wanted}",
            )

    def _list(self, request: Request) -> Reply:
        self._check_accept(request, PERSONS_V12)
        offset = _nonnegative(request.query.get("offset"), 0, "offset")
        limit = _nonnegative(request.query.get("limit"), self.max_page_size, "limit")
        limit = min(max(limit, 1), self.max_page_size)
        guids = self._matching(request.query.get("criteria"))
        page = [self.persons[g] for g in guids[offset : offset + limit]]
        headers = {
            "x-total-count": str(len(guids)),
            "x-max-page-size": str(self.max_page_size),
            "X-Media-Type": PERSONS_V12,
            "Content-Type": PERSONS_V12,
        }
        return 200, headers, json.dumps(page)

    def _found(self, guid: str) -> dict[str, Any]:
        person = self.persons.get(guid)
        if person is None:
            raise EthosError(404, "Global.NotFound", f"Person not found: {guid}")
        return person

    def _get(self, request: Request) -> Reply:
        self._check_accept(request, PERSONS_V12)
        return _person_reply(self._found(request.params["guid"]))

    def _post(self, request: Request) -> Reply:
        self._check_accept(request, PERSONS_V12)
        body = self._body(request)
        if body.get("id") not in (None, "", NIL_GUID):
            raise EthosError(400, "Global.BadRequest", "A new person's id must be the nil GUID")
        _validate(body, creating=True)
        person = self._create({k: v for k, v in body.items() if k != "credentials"})
        return _person_reply(person, 201)

    def _put(self, request: Request) -> Reply:
        self._check_accept(request, PERSONS_V12)
        guid = request.params["guid"]
        if guid == NIL_GUID:
            raise EthosError(400, "Global.BadRequest", "Nil GUID cannot be used in PUT operation.")
        body = self._body(request)
        if body.get("id") not in (None, "", guid):
            raise EthosError(400, "Global.BadRequest", "GUID not the same as in request body.")
        person = self._found(guid)
        self.last_put = _copy(body)
        _validate(body, creating=False)
        sent = body.get("credentials")
        if sent is not None and any(
            c.get("type") == COLLEAGUE_ID and c.get("value") != _colleague_id(person) for c in sent
        ):
            raise EthosError(400, "Validation.Exception", "colleaguePersonId cannot be changed")
        # Colleague's partial merge: what the body omits is kept; an array it sends replaces
        # the stored one whole (so a client that sends one phone wipes the others).
        for key, value in body.items():
            if key not in ("id", "credentials"):
                person[key] = value
        self.counters["puts"] += 1
        self._changed(person, "replaced")
        return _person_reply(person)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            raise EthosError(
                400, "Global.SchemaValidation.Error", "Errors parsing input JSON."
            ) from None
        if not isinstance(body, dict):
            raise EthosError(400, "Global.SchemaValidation.Error", "The body is not an object.")
        return body

    def _consume(self, request: Request) -> Reply:
        self._check_accept(request, CHANGE_NOTIFICATIONS_V2)
        limit = _nonnegative(request.query.get("limit"), MAX_CONSUME_LIMIT, "limit")
        if not 1 <= limit <= MAX_CONSUME_LIMIT:
            raise EthosError(400, "Global.BadRequest", "limit must be between 1 and 1000")
        raw = request.query.get("lastProcessedID")
        # Removing is for good: what is asked past now is never delivered again.
        through = _nonnegative(raw, 0, "lastProcessedID") if raw not in (None, "") else None
        if through is None:
            through = self._delivered_through
        while self.messages and self.messages[0]["id"] <= through:
            self.messages.popleft()
            self.counters["consumed"] += 1
        texts: list[str] = []
        size = 2
        last = through
        for message in self.messages:
            if len(texts) >= limit:
                break
            text = json.dumps(message)
            if texts and size + len(text) + 1 > self.consume_max_bytes:
                break
            texts.append(text)
            size += len(text) + 1
            last = message["id"]
        self._delivered_through = last
        headers = {
            "x-remaining": str(len(self.messages) - len(texts)),
            "Content-Type": CHANGE_NOTIFICATIONS_V2,
            "X-Media-Type": CHANGE_NOTIFICATIONS_V2,
        }
        return 200, headers, "[" + ",".join(texts) + "]"

    def _consume_head(self, request: Request) -> Reply:
        return 200, {"x-remaining": str(len(self.messages))}, b""


def _name(first: str, last: str) -> dict[str, Any]:
    return {
        "type": {"category": "legal"},
        "preference": "preferred",
        "fullName": f"{first} {last}",
        "firstName": first,
        "lastName": last,
    }


def _person_reply(person: Mapping[str, Any], status: int = 200) -> Reply:
    headers = {"X-Media-Type": PERSONS_V12, "Content-Type": PERSONS_V12}
    return status, headers, json.dumps(person)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def _colleague_id(person: Mapping[str, Any]) -> str:
    for credential in person.get("credentials") or []:
        if credential.get("type") == COLLEAGUE_ID:
            return str(credential.get("value"))
    return ""


def _nonnegative(raw: str | None, default: int, name: str) -> int:
    if raw in (None, ""):
        return default
    if not raw.isdigit():
        raise EthosError(400, "Global.BadRequest", f"{name} must be a non-negative integer")
    return int(raw)


def _validate(body: Mapping[str, Any], *, creating: bool) -> None:
    """Colleague's checks on a written person: a legal name with a last name (to create),
    and well-formed arrays of emails (an address with an @) and phones."""
    names = body.get("names")
    legal = isinstance(names, list) and any(
        isinstance(n, dict)
        and (n.get("type") or {}).get("category") == "legal"
        and str(n.get("lastName") or "").strip()
        for n in names
    )
    if (creating or names is not None) and not legal:
        raise EthosError(400, "Validation.Exception", "A legal name with a lastName is required")
    for email in body.get("emails") or []:
        address = str((email or {}).get("address") or "")
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise EthosError(400, "Validation.Exception", f"Invalid email address {address!r}")
    for phone in body.get("phones") or []:
        if not str((phone or {}).get("number") or "").strip():
            raise EthosError(400, "Validation.Exception", "A phone needs a number")


def _criteria_test(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for a ``criteria`` query value: every key must match (roles: any of the
    listed roles; emails: any address, case-insensitively; credentials; names)."""
    try:
        criteria = json.loads(text)
    except ValueError:
        raise EthosError(400, "Global.BadRequest", "criteria is not JSON") from None
    if not isinstance(criteria, dict):
        raise EthosError(400, "Global.BadRequest", "criteria must be a JSON object")
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for key, wanted in criteria.items():
        if not isinstance(wanted, list):
            raise EthosError(400, "Global.BadRequest", f"criteria {key} must be an array")
        if key == "roles":
            roles = {str(w.get("role")) for w in wanted if isinstance(w, dict)}
            tests.append(lambda p, r=roles: any(x.get("role") in r for x in p.get("roles") or []))
        elif key == "emails":
            addresses = {str(w.get("address", "")).lower() for w in wanted if isinstance(w, dict)}
            tests.append(
                lambda p, a=addresses: any(
                    str(e.get("address", "")).lower() in a for e in p.get("emails") or []
                )
            )
        elif key == "credentials":
            pairs = {(w.get("type"), str(w.get("value"))) for w in wanted if isinstance(w, dict)}
            tests.append(
                lambda p, c=pairs: any(
                    (x.get("type"), str(x.get("value"))) in c for x in p.get("credentials") or []
                )
            )
        elif key == "names":
            wanted_names = [w for w in wanted if isinstance(w, dict)]
            tests.append(
                lambda p, w=wanted_names: any(
                    all(n.get(k) == v for k, v in want.items() if k != "type")
                    for n in p.get("names") or []
                    for want in w
                )
            )
        else:
            raise EthosError(400, "Global.BadRequest", f"unsupported criteria {key!r}")
    return lambda person: all(test(person) for test in tests)
