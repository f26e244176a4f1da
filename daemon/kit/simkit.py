"""The simulator kit: what every platform simulator shares, so each one adds only its rules.

A simulator is a stateful fake of a platform that speaks its wire protocol over real HTTP on
loopback; the connector under test cannot tell it from the platform. Plugins import all of it
from :mod:`daemon.sdk` (``Simulator``, ``Request``, ``Reply``, ``json_reply``, ``error_reply``,
``SimulatorError``, ``Faults``, ``parse_duration``, ``IssuedTokens``). What the kit gives a
simulator:

**A server.** :meth:`Simulator.start` serves on ``127.0.0.1`` (port 0: a free one) from a
background thread, :meth:`Simulator.stop` stops it, and ``with Sim(...) as sim:`` does both;
:attr:`Simulator.url` is the base URL once started. Unknown paths answer 404, a known path with
another method 405.

**Routes.** ``add_route("GET", "/contacts/{id}", handler)`` in :meth:`Simulator.setup_routes`;
a handler takes a :class:`Request` (method, path, query, headers, body, params; ``.json()`` and
``.bearer_token()``) and returns a :data:`Reply`, a ``(status, headers, body)`` tuple:
:func:`json_reply` (data as JSON), :func:`error_reply` (``{"error": message}``), or a tuple of
its own (a body of bytes, text, or a dict or list sent as JSON; ``Content-Type`` defaults to
``application/json``). ``raise SimulatorError(404, "no such id")`` answers with
:func:`error_reply`; :meth:`Simulator.require_bearer` raises the 401 a platform would.
Handlers run one at a time under :attr:`Simulator.lock`, so platform rules need no locking of
their own; the server still serves requests concurrently, so latency overlaps as it would.

**Faults** (:class:`Faults`, at ``sim.faults``), drawn per request from an RNG seeded with
``seed``, so a failing run can be repeated:

- ``latency`` (seconds, or ``"150ms"``) added to every request, slept on the simulator's clock;
- ``error_rate``: the share of requests answered with a random 500, 502 or 503;
- ``drop_rate``: the share whose connection is closed without an answer;
- ``malformed_rate``: the share answered 200 with a body that starts like JSON and is not;
- ``rate_limit_rate``: the share answered 429 with ``Retry-After`` (as a one-shot
  ``rate_limit``), for chaos runs that mix throttling into the errors;
- ``retry_after``: the ``Retry-After`` (seconds) a one-shot ``rate_limit`` sends.

``latency`` and ``error_rate`` are constructor options too (``contactsync simulate --latency
--error-rate``); all of them change at run time with :meth:`Simulator.set_faults` or
``POST /_sim/faults {"error_rate": 0.2}``. Injected 429s and 5xx go through
:meth:`Simulator.fault_reply`, which a platform overrides to send its own error body.

**One-shot faults** spend themselves on the next request: ``rate_limit`` (a 429 with
``Retry-After``), ``server_error`` (a 500), ``malformed`` and ``drop``. Queue one with
``sim.inject("rate_limit")`` or ``POST /_sim/faults {"next": "rate_limit"}`` (a list queues
several). A platform adds its own in ``extra_one_shot_faults`` and either answers one itself in
:meth:`Simulator.take_one_shot` (return a :data:`Reply`) or leaves it queued for a rule to
spend with :meth:`Simulator.pop_fault` (the example's ``reject`` refuses the next pushed
record).

**Answers replaced** (for fuzzing a connector's parser through a real simulator): sign-in and
every other route keep working while :meth:`Simulator.replace_next` hands the next request to
one path (``"/crm/v3/objects/contacts"``) a body of the test's making, wrongly typed or
truncated as it may be. **Counts**: :attr:`Simulator.served` counts the statuses answered
(and ``"dropped"`` connections, and ``"injected 429"`` of the ``rate_limit_rate`` ones) since
the last reset, so a test can bound the 429s a client caused beyond those injected.

**Knobs**: the platform's own settings, declared once as a class attribute,
``knob_options = {"page_limit": (int, 100, "records per page")}`` (type, default, help). Each
becomes an attribute (``self.page_limit``), a constructor keyword, a flag of
``contactsync simulate NAME`` (``--page-limit 50``; a ``bool`` knob is ``--x``/``--no-x``;
``--list-knobs`` lists them) and a key of ``POST /_sim/NAME``. Values are converted to the
declared type by :func:`knob_value` (``"false"`` is false for a bool). Override
:meth:`Simulator.set_knob` for a knob that needs a clamp, and :meth:`Simulator.knobs_changed`
for one whose change must touch the records.

**State.** :meth:`Simulator.reset_state` builds the initial records from ``self.contacts`` and
``self.seed`` (at construction and on every reset; use an RNG of its own, so faults drawn
later never shift the data); :meth:`Simulator.reset` or ``POST /_sim/reset`` restores them and
the fault knobs. ``GET /_sim/state`` shows ``name``, ``requests``, ``faults`` and whatever
:meth:`Simulator.state` returns. :meth:`Simulator.credentials` is what a connector needs to
sign in, and :meth:`Simulator.describe` is the JSON line ``contactsync simulate`` prints.
A platform that issues expiring access tokens keeps them in an :class:`IssuedTokens`.

**The clock.** Every time the simulator reads (modification stamps, token expiry) and every
wait it makes should go through ``self.clock`` (the ``clock`` constructor option: the system
clock by default). In tests, hand it the suite's fake clock, the ``cs_clock`` fixture of
:mod:`daemon.testing`, and the simulator and the connector share one time that costs nothing
to advance::

    @pytest.fixture
    def simulator(cs_clock):
        with AcmeSimulator(contacts=10, seed=42, clock=cs_clock) as sim:
            yield sim
"""

from __future__ import annotations

import functools
import json
import random
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from daemon.foundation.clock import SYSTEM_CLOCK, Clock

Body = bytes | str | Mapping[str, Any] | list[Any] | None
Reply = tuple[int, Mapping[str, str], Body]
"""What a handler returns: ``(status, headers, body)``. A body of bytes or text is sent as it
is, a dict or a list as JSON, ``None`` as nothing; ``Content-Type`` defaults to JSON."""
Handler = Callable[["Request"], Reply]

ONE_SHOT_FAULTS = frozenset({"rate_limit", "server_error", "malformed", "drop"})
CONTROL_PREFIX = "/_sim/"
# Looks like the start of a JSON document and then is not one: a parser must refuse it,
# rather than read a truncated answer as an empty one.
MALFORMED_BODY = b'{"contacts": [{"id": <html>\x00 upstream timed out'
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"150ms"``, ``"1s"``, ``"2m"`` or a bare number of seconds (``"0.15"``)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(text.lower())
        if not match:
            raise ValueError(f"not a duration: {text!r} (try 150ms, 0.15 or 1s)")
        number, unit = float(match.group(1)), match.group(2) or "s"
        value = number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    if value < 0:
        raise ValueError(f"a duration cannot be negative: {text!r}")
    return value


class SimulatorError(Exception):
    """A handler's way to answer with an error: ``raise SimulatorError(404, "no such id")``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Request:
    """One request as a handler sees it.

    ``method`` is upper case; ``path`` has no query string; ``query`` maps each parameter to
    its value (the last one when a key repeats; a blank value is ``""``); ``headers`` are as
    the client sent them; ``body`` is the raw bytes (``b""`` for none); ``params`` holds the
    route's ``{placeholders}`` (``/contacts/{id}`` gives ``params["id"]``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON; a 400 (as a platform would answer) when it is not."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise SimulatorError(400, "request body is not JSON") from None

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer …`` header, or ``None``."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def json_reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer (what most handlers return): ``json_reply({"contacts": rows})``, or with a
    status and headers, ``json_reply({"id": "c1"}, 201, {"Location": "/contacts/c1"})``."""
    return status, dict(headers or {}), json.dumps(data, default=str).encode()


def error_reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON error answer: ``{"error": message}``."""
    return json_reply({"error": message}, status, headers)


@dataclass
class Faults:
    """The fault knobs (see the module docstring). Rates are probabilities per request, drawn
    from the seeded RNG; ``next`` is a queue of one-shot faults, each spent by one request.
    ``GET /_sim/state`` shows them under ``"faults"``."""

    latency: float = 0.0  # seconds added to every request
    error_rate: float = 0.0  # answer a random 5xx
    drop_rate: float = 0.0  # close the connection without answering
    malformed_rate: float = 0.0  # answer 200 with a body that is not JSON
    rate_limit_rate: float = 0.0  # answer 429 with Retry-After
    retry_after: float = 1.0  # the Retry-After a one-shot rate_limit sends
    next: list[str] = field(default_factory=list)
    # One-shot faults a platform simulator adds to the kit's (the example's "reject").
    _extra_one_shots: frozenset[str] = field(default=frozenset(), repr=False)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (what ``POST /_sim/faults`` receives); ``ValueError`` on nonsense.

        ``{"next": "rate_limit"}`` (or a list) queues one-shot faults after those queued.
        """
        for key, value in changes.items():
            if key == "next":
                queued = [value] if isinstance(value, str) else list(value)
                unknown = [f for f in queued if f not in self.one_shot_names()]
                if unknown:
                    known = sorted(self.one_shot_names())
                    raise ValueError(f"unknown one-shot fault(s) {unknown}; known: {known}")
                self.next.extend(queued)
            elif key == "latency":
                self.latency = parse_duration(value)
            elif key in ("error_rate", "drop_rate", "malformed_rate", "rate_limit_rate"):
                rate = float(value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"{key} must be between 0 and 1, not {value!r}")
                setattr(self, key, rate)
            elif key == "retry_after":
                self.retry_after = parse_duration(value)
            else:
                raise ValueError(f"unknown fault knob {key!r}")

    def one_shot_names(self) -> frozenset[str]:
        """The one-shot faults this simulator knows (a platform may add its own)."""
        return self._extra_one_shots | ONE_SHOT_FAULTS

    def as_dict(self) -> dict[str, Any]:
        """The knobs as ``GET /_sim/state`` shows them."""
        data = asdict(self)
        data.pop("_extra_one_shots")
        return data


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    raw: str


def _compile(path: str) -> re.Pattern[str]:
    # "/contacts/{id}" -> a regex with a named group that stops at the next slash.
    parts = re.split(r"\{(\w+)\}", path)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


def knob_value(kind: type, value: Any) -> Any:
    """``value`` as a knob of type ``kind``; a boolean also from ``"true"``/``"1"``/``"yes"``
    (``bool("false")`` would be true). ``ValueError`` or ``TypeError`` when it is not one."""
    if kind is bool and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return kind(value)


class Simulator:
    """Base of every platform simulator. See the module docstring for what it provides.

    Constructor options are the ones ``contactsync simulate`` passes to every simulator
    factory: ``contacts`` (records to seed), ``latency`` (seconds or ``"150ms"``),
    ``error_rate`` and ``seed``; a ``clock`` may be injected by tests; and the platform's own
    knobs, as declared in :attr:`knob_options`.

    A subclass sets :attr:`name` (and maybe :attr:`extra_one_shot_faults` and
    :attr:`knob_options`) and overrides :meth:`setup_routes`, :meth:`reset_state`,
    :meth:`state` and :meth:`credentials`. It may read ``self.contacts``, ``self.seed``,
    ``self.clock``, ``self.lock`` (held around every handler), ``self.faults``, ``self.rng``
    (the fault RNG) and ``self.requests`` (platform requests served since the last reset).
    """

    name: ClassVar[str] = "simulator"
    # One-shot faults a platform adds to the kit's (the example adds "reject").
    extra_one_shot_faults: ClassVar[frozenset[str]] = frozenset()
    # The platform's own knobs, (type, default, help) by keyword: each becomes an attribute,
    # a flag of ``contactsync simulate NAME`` and a key of ``POST /_sim/NAME``.
    knob_options: ClassVar[dict[str, tuple[type, Any, str]]] = {}

    def __init__(
        self,
        *,
        contacts: int = 0,
        latency: float | str = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        **knobs: Any,
    ) -> None:
        unknown = sorted(set(knobs) - set(self.knob_options))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no knob(s) {unknown}")
        # Set before reset_state(), which may read them.
        for knob, (_kind, default, _text) in self.knob_options.items():
            self.set_knob(knob, knobs.get(knob, default))
        self.contacts = contacts
        self.seed = seed
        self.clock = clock
        self.lock = threading.RLock()
        self._initial_faults = Faults(
            latency=parse_duration(latency),
            error_rate=float(error_rate),
            _extra_one_shots=frozenset(self.extra_one_shot_faults),
        )
        self.faults = self._fresh_faults()
        self.rng = random.Random(seed)
        self.requests = 0
        self.served: Counter[int | str] = Counter()
        self._replacements: list[tuple[str | None, str, Reply, int]] = []
        self._routes: list[_Route] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_route("POST", "/_sim/reset", self._control_reset)
        self.add_route("POST", "/_sim/faults", self._control_faults)
        self.add_route("GET", "/_sim/state", self._control_state)
        if self.knob_options:
            self.add_route("POST", CONTROL_PREFIX + self.name, self._control_knobs)
        self.setup_routes()
        with self.lock:
            self.reset_state()

    # --- what a platform simulator provides -------------------------------------------------

    def setup_routes(self) -> None:
        """Register the platform's routes with :meth:`add_route`."""

    def reset_state(self) -> None:
        """Build the initial records from ``self.contacts`` and ``self.seed`` (called under
        the lock, at construction and on every reset)."""

    def state(self) -> dict[str, Any]:
        """The platform's state for ``GET /_sim/state`` (records, counters …)."""
        return {}

    def credentials(self) -> dict[str, Any]:
        """What a connector needs to sign in (a token, a client id …)."""
        return {}

    def set_knob(self, name: str, value: Any) -> None:
        """Set the knob ``name`` to ``value`` converted to its declared type (at construction
        and on ``POST /_sim/<name>``). A platform overrides it for a knob that needs more: a
        clamp, a derived attribute."""
        setattr(self, name, knob_value(self.knob_options[name][0], value))

    def knobs_changed(self, names: list[str]) -> None:
        """Called under the lock after ``POST /_sim/<name>`` set the knobs ``names``, for a
        knob whose change must also touch the records."""

    def knobs(self) -> dict[str, Any]:
        """The platform's knobs as they are now (a platform puts them in its :meth:`state`)."""
        return {knob: getattr(self, knob) for knob in self.knob_options}

    def take_one_shot(self, fault: str) -> Reply | None:
        """Answer a platform-specific one-shot fault; ``None`` leaves it queued for the
        platform's rules (the example's ``reject`` is spent by the next pushed record)."""
        return None

    # --- routes and helpers -------------------------------------------------------------------

    def fault_reply(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """The answer to an injected 429 or 5xx. A platform overrides it so that its faults
        carry its own error body and headers, which its clients parse."""
        return error_reply(status, message, headers)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler``; ``{name}`` in ``path`` matches one segment."""
        self._routes.append(_Route(method.upper(), _compile(path), handler, path))

    def require_bearer(self, request: Request, token: str) -> None:
        """A 401, as a platform answers a missing or wrong token, unless ``token`` was sent."""
        if request.bearer_token() != token:
            raise SimulatorError(
                401, "invalid or missing bearer token", {"WWW-Authenticate": "Bearer"}
            )

    def pop_fault(self, name: str) -> bool:
        """Spend a queued one-shot fault ``name`` if there is one (for platform rules)."""
        with self.lock:
            if name in self.faults.next:
                self.faults.next.remove(name)
                return True
            return False

    # --- control ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Restore the initial records and fault knobs, and forget queued one-shot faults."""
        with self.lock:
            self.faults = self._fresh_faults()
            self.rng = random.Random(self.seed)
            self.requests = 0
            self.served = Counter()
            self._replacements = []
            self.reset_state()

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs, as ``POST /_sim/faults`` does: ``set_faults(error_rate=0.5)``."""
        with self.lock:
            self.faults.update(changes)

    def inject(self, fault: str) -> None:
        """Queue a one-shot fault for the next request (``"rate_limit"``, ``"drop"`` …)."""
        self.set_faults(next=fault)

    def replace_next(
        self, path: str, body: Body, *, status: int = 200, method: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests to ``path`` (exactly, no query string; any method
        unless ``method``) with ``body`` and ``status`` instead of the route's answer. Bytes
        go out as they are, so a test can send what no platform rule would produce."""
        with self.lock:
            upper = method.upper() if method else None
            reply: Reply = (status, {"Content-Type": "application/json"}, body)
            self._replacements.append((upper, path, reply, times))

    def _replacement(self, request: Request) -> Reply | None:
        with self.lock:
            for index, (method, path, reply, times) in enumerate(self._replacements):
                if path == request.path and method in (None, request.method):
                    if times <= 1:
                        del self._replacements[index]
                    else:
                        self._replacements[index] = (method, path, reply, times - 1)
                    return reply
        return None

    def count_served(self, status: int | str) -> None:
        """Count one answer (its status, or ``"dropped"``) in :attr:`served`."""
        with self.lock:
            self.served[status] += 1

    def describe(self) -> dict[str, Any]:
        """The JSON line ``contactsync simulate`` prints: name, base URL and credentials."""
        return {"name": self.name, "url": self.url, "credentials": self.credentials()}

    def _fresh_faults(self) -> Faults:
        initial = self._initial_faults
        return Faults(**{**vars(initial), "next": []})

    def _control_reset(self, request: Request) -> Reply:
        self.reset()
        return json_reply({"reset": True})

    def _control_faults(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            return error_reply(400, "send a JSON object of fault knobs")
        try:
            self.faults.update(body)
        except (ValueError, TypeError) as exc:
            return error_reply(400, str(exc))
        return json_reply({"faults": self.faults.as_dict()})

    def _control_knobs(self, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            return error_reply(400, "send a JSON object of knobs")
        unknown = sorted(set(body) - set(self.knob_options))
        if unknown:
            return error_reply(
                400, f"unknown knob(s) {unknown}; known: {sorted(self.knob_options)}"
            )
        try:
            for knob, value in body.items():
                self.set_knob(knob, value)
        except (ValueError, TypeError) as exc:
            return error_reply(400, str(exc))
        self.knobs_changed(list(body))
        return json_reply({"knobs": self.knobs()})

    def _control_state(self, request: Request) -> Reply:
        return json_reply(
            {
                "name": self.name,
                "requests": self.requests,
                "faults": self.faults.as_dict(),
                **self.state(),
            }
        )

    # --- the server ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``; only once started."""
        if self._server is None:
            raise RuntimeError(f"{self.name} simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> Simulator:
        """Serve on ``127.0.0.1:port`` (0: a free port) from a background thread."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", port), _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"simulator-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle(self, request: Request) -> Reply | None:
        """Answer one request: control endpoints, then faults, then the platform's route.

        ``None`` means "drop the connection without answering".
        """
        control = request.path.startswith(CONTROL_PREFIX)
        if not control:
            with self.lock:
                self.requests += 1
                latency = self.faults.latency
            if latency > 0:
                # Outside the lock: slow requests overlap, as they would on the platform.
                self.clock.sleep(latency)
            fault = self._draw_fault()
            if fault == "drop":
                return None
            if fault is not None:
                return fault
            replaced = self._replacement(request)
            if replaced is not None:
                return replaced
        route, params, allowed = self._match(request)
        if route is None:
            if allowed:
                return error_reply(405, f"{request.method} not allowed on {request.path}")
            return error_reply(404, f"no route {request.method} {request.path}")
        request.params = params
        with self.lock:
            try:
                return route.handler(request)
            except SimulatorError as exc:
                return error_reply(exc.status, exc.message, exc.headers)

    def _draw_fault(self) -> Reply | str | None:
        with self.lock:
            faults = self.faults
            for queued in list(faults.next):
                if queued in ONE_SHOT_FAULTS:
                    faults.next.remove(queued)
                    return self._one_shot(queued)
                reply = self.take_one_shot(queued)
                if reply is not None:
                    faults.next.remove(queued)
                    return reply
            # One draw per knob, always in this order, so a seed repeats a run exactly.
            drop, error, malformed = self.rng.random(), self.rng.random(), self.rng.random()
            if drop < faults.drop_rate:
                return "drop"
            if error < faults.error_rate:
                return self.fault_reply(self.rng.choice((500, 502, 503)), "simulated server error")
            if malformed < faults.malformed_rate:
                return 200, {"Content-Type": "application/json"}, MALFORMED_BODY
            # Drawn only when set, so the draws of every run without it stay as they were.
            if faults.rate_limit_rate > 0 and self.rng.random() < faults.rate_limit_rate:
                self.served["injected 429"] += 1  # told apart from the platform's own 429s
                return self._one_shot("rate_limit")
            return None

    def _one_shot(self, fault: str) -> Reply | str:
        if fault == "drop":
            return "drop"
        if fault == "rate_limit":
            seconds = self.faults.retry_after
            text = str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"
            return self.fault_reply(429, "rate limit exceeded", {"Retry-After": text})
        if fault == "server_error":
            return self.fault_reply(500, "simulated server error")
        return 200, {"Content-Type": "application/json"}, MALFORMED_BODY

    def _match(self, request: Request) -> tuple[_Route | None, dict[str, str], bool]:
        allowed = False
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return route, match.groupdict(), True
            allowed = True
        return None, {}, allowed


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection never blocks stop()
    allow_reuse_address = True


def _make_handler(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real platforms and httpx use
        server_version = f"contactsync-sim/{simulator.name}"
        timeout = 30  # an idle keep-alive connection is closed rather than kept forever
        # Headers and body leave in two writes: with Nagle on, the body waits for the
        # client's delayed ACK, and every loopback request took ~40 ms instead of ~1 ms.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            request = Request(
                method=self.command,
                path=split.path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers={k: v for k, v in self.headers.items()},
                body=body,
            )
            try:
                reply = simulator.handle(request)
            except Exception as exc:  # a bug in a simulator is a 500, not a hung client
                reply = error_reply(500, f"simulator bug: {type(exc).__name__}: {exc}")
            if reply is None:
                simulator.count_served("dropped")
                self.close_connection = True
                return
            status, headers, payload = reply
            if not request.path.startswith(CONTROL_PREFIX):
                simulator.count_served(status)
            data = _encode(payload)
            self.send_response(status)
            sent = {k.lower() for k in headers}
            for key, value in headers.items():
                self.send_header(key, value)
            if "content-type" not in sent:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: a simulator's access log would drown the test output."""

    return _Handler


def _encode(payload: Body) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, default=str).encode()


class IssuedTokens:
    """The access tokens a simulator has issued, each with its expiry on the simulator's clock.

    A platform's sign-in route calls :meth:`issue`; its bearer check asks :meth:`seconds_left`
    and answers a 401 in its own words for ``None`` (never issued) or a value ``<= 0`` (expired);
    a test ends every token at once with :meth:`expire_all`, so the client must sign in again.
    Expiries run on the clock's ``monotonic()``, or with ``wall=True`` on ``now()`` in epoch
    seconds, for a platform whose tokens carry their expiry (a JWT's ``exp``). The simulator
    calls these under its lock, like every platform rule.
    """

    def __init__(self, clock: Clock, *, wall: bool = False) -> None:
        self.clock = clock
        self.wall = wall
        self._expiry: dict[str, float] = {}

    def now(self) -> float:
        """The time expiries are measured in (epoch seconds with ``wall``, else monotonic)."""
        return self.clock.now().timestamp() if self.wall else self.clock.monotonic()

    def issue(self, token: str, ttl_seconds: float) -> float:
        """Accept ``token`` for ``ttl_seconds`` from now; returns its expiry."""
        expiry = self._expiry[token] = self.now() + ttl_seconds
        return expiry

    def seconds_left(self, token: str | None) -> float | None:
        """How long ``token`` stays valid (``<= 0``: expired), or ``None`` if never issued."""
        expiry = self._expiry.get(token or "")
        return None if expiry is None else expiry - self.now()

    def expire_all(self) -> None:
        """Expire every token issued so far (they stay known: a 401 says "expired")."""
        now = self.now()
        self._expiry = {token: min(expiry, now) for token, expiry in self._expiry.items()}

    def __len__(self) -> int:
        return len(self._expiry)


@dataclass
class HostileAnswer:
    """What a :class:`HostileServer` sends to every request until told otherwise.

    ``kind`` is one of:

    - ``"huge"``: a JSON document of ``size`` bytes, sent with its ``Content-Length``
      (``lie_length=True`` leaves the length out and sends it chunked, as a proxy would);
    - ``"endless"``: a chunked JSON array that never ends, until the client hangs up;
    - ``"drip"``: the status and headers at once, then one byte of the body every
      ``interval`` seconds, ``size`` bytes in all;
    - ``"headers"``: the status line, then the *headers* one byte every ``interval`` seconds
      (``size`` bytes of them), so no body is ever reached;
    - ``"gzip"``: ``Content-Encoding: gzip`` (``deflate`` with ``encoding="deflate"``), a
      body of about ``size // 1000`` bytes that inflates to ``size`` zero bytes (a bomb);
    - ``"records"``: ``{"results": [...]}`` with ``count`` small records;
    - ``"deep"``: a JSON array nested ``depth`` levels deep;
    - ``"body"``: ``body`` as it is (a wrongly typed answer, a 5,000-digit id).
    """

    kind: str = "body"
    size: int = 0
    count: int = 0
    depth: int = 0
    interval: float = 0.0
    lie_length: bool = False
    body: bytes = b"{}"
    status: int = 200
    encoding: str = "gzip"


class HostileServer:
    """A platform that is broken or hostile on purpose, on loopback: huge, endless,
    slow-drip, deeply nested or wrongly typed answers (:class:`HostileAnswer`), to prove that
    the kit's bounds hold for every connector. ``ssl_context`` serves HTTPS with it (a
    self-signed certificate, for the TLS refusal). Bodies are generated as they are sent, so
    the server itself stays small whatever it sends."""

    CHUNK = 64 * 1024

    def __init__(self, answer: HostileAnswer | None = None, ssl_context: Any = None) -> None:
        self.answer = answer or HostileAnswer()
        self.requests = 0
        self._ssl_context = ssl_context
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (``http://`` or ``https://127.0.0.1:PORT``) once started."""
        assert self._server is not None, "start the server first"
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HostileServer:
        """Serve from a background thread on a free port."""
        self._server = _Server(("127.0.0.1", 0), _hostile_handler(self))
        if self._ssl_context is not None:
            self._server.socket = self._ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns at once, tests stay quick
            name="contactsync-hostile",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; endless and dripping answers end at their next write."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def chunks(self) -> tuple[int | None, Any]:
        """The body's length (``None``: chunked) and an iterator of its pieces."""
        answer = self.answer
        if answer.kind == "huge":
            return (None if answer.lie_length else answer.size), _padded(answer.size, self.CHUNK)
        if answer.kind == "endless":
            return None, _endless(self._stop, self.CHUNK)
        if answer.kind == "drip":
            return answer.size, _drip(self._stop, answer.size, answer.interval)
        if answer.kind == "gzip":
            pieces = _bomb(answer.size, answer.encoding)
            return sum(len(piece) for piece in pieces), iter(pieces)
        if answer.kind == "records":
            return None, _records(answer.count)
        if answer.kind == "deep":
            data = b"[" * answer.depth + b"]" * answer.depth
            return len(data), iter([data])
        return len(answer.body), iter([answer.body])


def _padded(size: int, chunk: int) -> Any:
    head, tail = b'{"results": [], "pad": "', b'"}'
    left = max(0, size - len(head) - len(tail))
    yield head
    while left > 0:
        piece = min(chunk, left)
        yield b"x" * piece
        left -= piece
    yield tail


def _endless(stop: threading.Event, chunk: int) -> Any:
    yield b'{"results": ['
    record = b'{"id": "1", "properties": {}},' * (chunk // 30)
    while not stop.is_set():
        yield record


def _drip(stop: threading.Event, size: int, interval: float) -> Any:
    for _ in range(size):
        if stop.wait(interval):
            return
        yield b" "


@functools.lru_cache(maxsize=4)
def _bomb(size: int, encoding: str) -> tuple[bytes, ...]:
    """A gzip (or zlib ``deflate``) body inflating to ``size`` zero bytes (whole MiBs), built
    without compressing them: each MiB ends in a full flush, so every MiB after the first
    compresses to the same ~1 KB, which is repeated (the pieces share one bytes object)."""
    mib = bytes(1 << 20)
    count = max(1, size >> 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    repeat = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush()
    if encoding == "deflate":  # RFC 9110's "deflate" is the zlib format
        adler = 1
        for _ in range(count):
            adler = zlib.adler32(mib, adler)
        head, tail = b"\x78\xda", struct.pack(">I", adler)
    else:
        crc = 0
        for _ in range(count):
            crc = zlib.crc32(mib, crc)
        head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        tail = struct.pack("<II", crc, (count << 20) & 0xFFFFFFFF)
    return (head + first, *([repeat] * (count - 1)), end + tail)


def _records(count: int) -> Any:
    yield b'{"results": ['
    batch: list[bytes] = []
    for number in range(1, count + 1):
        batch.append(
            b'{"id": "%d", "properties": {"email": "r%d@example.edu", "firstname": "F%d", '
            b'"lastmodifieddate": "2025-01-06T10:00:00Z"}}' % (number, number, number)
        )
        if len(batch) == 1000 or number == count:
            yield b",".join(batch) + (b"," if number < count else b"")
            batch = []
    yield b"]}"


def _hostile_handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            server.requests += 1
            if server.answer.kind == "headers":
                self._drip_headers()
                return
            size, pieces = server.chunks()
            self.send_response(server.answer.status)
            self.send_header("Content-Type", "application/json")
            if server.answer.kind == "gzip":
                self.send_header("Content-Encoding", server.answer.encoding)
            if size is None:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                for piece in pieces:
                    if size is None:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                    self.wfile.flush()
                if size is None:
                    self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client gave up on the answer: that is the point
                self.close_connection = True
            # A bomb's client hangs up unread (a reset), not waiting for the next request.
            self.close_connection |= server.answer.kind == "gzip"

        def _drip_headers(self) -> None:
            answer = server.answer
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for byte in _drip(server._stop, answer.size, answer.interval):
                    self.wfile.write(byte.replace(b" ", b"x"))
                    self.wfile.flush()
                self.wfile.write(b"\r\nContent-Length: 2\r\n\r\n{}")
            except OSError:  # the client gave up waiting for the headers
                pass
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silent, as the simulators are."""

    return _Handler
