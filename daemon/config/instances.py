"""Instance files: ``etc/instances/<name>.toml``, one configured integration each.

```toml
type = "hubspot"              # a registered connector type
connection = "hubspot-main"   # the remote account; default: the instance's name
enabled = true
direction = "both"            # incoming | outgoing | both
conflict = "newest"           # newest | hub | platform
match_on = ["crm_id", "email", "phone"]  # how an unlinked record finds its contact
first_sync = "hub"            # hub | platform | newest: who wins a first exchange
create_remote = true          # may push create records that have no link
owns_crm_id = false           # the remote id is the hub's CRM id (one connection at most)

[schedule]
pull = "every 15m"            # or a crontab line: "0 */3 * * *"
push = "every 1m"
timezone = "America/New_York"

[[fields]]
hub = "first_name"
remote = "firstname"
direction = "both"            # default: the instance's; must fit it

[settings]                    # the connector's own Config; secrets by reference
access_token = { env = "HUBSPOT_TOKEN" }
```

Loading validates everything it can without the network and names the file, the key and the
reason for every mistake. Validating a file and resolving its secrets are separate steps:
``load_instances(..., secrets=False)`` checks each reference is there without reading it
(:func:`daemon.config.secrets.stand_in_tree`), for the commands that never build a connector;
the instance then says which secrets this process could not have (``unavailable_secrets``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
)

from daemon.config.secrets import SecretError, resolve_tree, stand_in_tree
from daemon.config.settings import INSTANCES_DIR, ConfigError, read_toml, validation_error
from daemon.hub.fields import CUSTOM_PREFIX, DEFAULT_FIELDS, HUB_ID, READABLE_FIELDS
from daemon.kit.connector import Connector, RemoteField
from daemon.kit.exporter import is_exporter

INSTANCE_DIR = INSTANCES_DIR
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_EVERY = re.compile(r"^every\s+(\d+)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Direction(StrEnum):
    """Which way data flows for an instance, or for one mapped field."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    BOTH = "both"

    def allows(self, other: Direction) -> bool:
        """Whether a field mapped ``other`` fits an instance of this direction."""
        return self is Direction.BOTH or other is self

    @property
    def pulls(self) -> bool:
        return self in (Direction.INCOMING, Direction.BOTH)

    @property
    def pushes(self) -> bool:
        return self in (Direction.OUTGOING, Direction.BOTH)


def interval_seconds(text: str) -> int | None:
    """Seconds of an ``every N<unit>`` schedule, or ``None`` for a crontab line."""
    match = _EVERY.match(text.strip().lower())
    if not match:
        return None
    digits = match.group(1).lstrip("0") or "0"
    # int() refuses over 4,300 digits; any count past 18 digits is absurd anyway, and reads as
    # a number large enough for the schedule check to refuse.
    count = int(digits) if len(digits) <= 18 else 10**18
    return count * _UNIT_SECONDS[match.group(2)[0]]


def check_time_zone(value: str) -> str:
    """``value`` if it names an IANA time zone (``America/New_York``), else ``ValueError``:
    a pydantic validator for any config's time zone."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


MAX_INTERVAL_DAYS = 366
"""The longest ``every N<unit>`` interval: a longer one is a typo, and one long enough
overflows the scheduler's date arithmetic (``every 99999999999999999d``)."""


def _check_schedule(text: str) -> str:
    """``text`` if the scheduler can run it: an interval of 1 second to
    :data:`MAX_INTERVAL_DAYS` days, or a crontab line that fires at least once."""
    seconds = interval_seconds(text)
    if seconds is not None:
        if seconds == 0:
            raise ValueError("an interval must be at least 1 second")
        if seconds > MAX_INTERVAL_DAYS * 86_400:
            raise ValueError(f"an interval must be at most {MAX_INTERVAL_DAYS} days")
        return text
    from datetime import UTC, datetime

    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"neither 'every N[smhd]' nor a crontab line: {exc}") from None
    # "0 0 31 2 *" (February 31st) parses but never fires: the cycle would never run.
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"the crontab line {text!r} never fires")
    return text


class Schedule(BaseModel):
    """``[schedule]``: when the pull, push, deletion-scan and export cycles run."""

    model_config = ConfigDict(extra="forbid")

    pull: str = "every 15m"
    push: str = "every 1m"
    deletes: str = "every 24h"
    export: str = "every 3h"  # exporters (daemon.engine.export_cycle) only: their one cycle
    timezone: str = "UTC"

    @field_validator("pull", "push", "deletes", "export")
    @classmethod
    def _valid(cls, value: str) -> str:
        return _check_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_time_zone(value)


class FieldMap(BaseModel):
    """One ``[[fields]]`` entry: a hub field, a remote field, a direction, a transform."""

    model_config = ConfigDict(extra="forbid")

    hub: str
    remote: str = Field(min_length=1)
    direction: Direction | None = None  # unset: the instance's direction
    transform: str | None = None

    @field_validator("hub")
    @classmethod
    def _known_hub_field(cls, value: str) -> str:
        if value.startswith(CUSTOM_PREFIX):
            if not value[len(CUSTOM_PREFIX) :].strip():
                raise ValueError("a custom field needs a name after 'custom:'")
            return value
        if value not in READABLE_FIELDS:
            raise ValueError(
                f"unknown hub field {value!r}; use one of {', '.join(READABLE_FIELDS)} "
                "or custom:<name>"
            )
        return value


class InstanceConfig(BaseModel):
    """One instance file, before the connector's own settings are validated."""

    # Booleans are strict (StrictBool): ``enabled = "yes"`` is refused, not read as true.
    model_config = ConfigDict(extra="forbid")

    type: str
    connection: str | None = None
    enabled: StrictBool = True
    direction: Direction = Direction.BOTH
    conflict: Literal["newest", "hub", "platform"] = "newest"
    # How an unlinked platform record finds the hub contact it is (None: the connector's
    # default, ``Connector.match_on``); and who wins the values that differ when it does.
    match_on: list[Literal["crm_id", "email", "phone"]] | None = None
    first_sync: Literal["hub", "platform", "newest"] = "hub"
    create_remote: StrictBool = True
    owns_crm_id: StrictBool = False
    max_attempts: int = Field(default=5, ge=1, le=100)
    push_batch_size: int = Field(default=100, ge=1, le=10_000)
    # A write the platform confirms later (a Slate upload) not seen by a pull within this
    # many seconds is logged remote-unconfirmed.
    confirm_within_seconds: int = Field(default=21_600, ge=1)
    # Batches in flight at once, for connectors whose push is thread-safe
    # (``capabilities.concurrent_push``); the connector's rate limiter still paces them.
    push_concurrency: int = Field(default=4, ge=1, le=32)
    schedule: Schedule = Schedule()
    fields: list[FieldMap] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    """A loaded, validated instance: its config and its connector's settings."""

    name: str
    path: Path
    config: InstanceConfig
    settings: Any  # the connector's Config instance
    connector_class: type[Connector]
    # Loaded without its secrets (secrets=False): settings holds stand-ins, never handed to
    # a connector. unavailable_secrets: dotted key -> why this process could not resolve it.
    secrets_resolved: bool = True
    unavailable_secrets: Mapping[str, str] = field(default_factory=dict)

    @property
    def connection(self) -> str:
        return self.config.connection or self.name

    @property
    def direction(self) -> Direction:
        return self.config.direction

    def hub_row(self) -> dict[str, Any]:
        """The columns of this instance's row in the hub (:mod:`daemon.hub.mirror`)."""
        return {
            "type": self.config.type,
            "connection": self.connection,
            # An exporter's connection takes no outbox rows (the fan-out reads this).
            "direction": "export" if is_exporter(self.connector_class) else str(self.direction),
            "enabled": self.config.enabled,
        }

    def mapped(self, direction: Direction) -> list[FieldMap]:
        """The field maps that carry data in ``direction`` (incoming or outgoing)."""
        return [f for f in self.config.fields if f.direction.allows(direction)]


def load_instance(
    path: Path, connectors: Mapping[str, type[Connector]], *, secrets: bool = True
) -> Instance:
    """Read and validate one instance file; raise :class:`ConfigError`.

    ``secrets=False`` validates without resolving a secret: references become stand-ins and
    one this process cannot resolve is listed in ``unavailable_secrets``, not an error."""
    name = path.stem
    if not _NAME.match(name):
        raise ConfigError(path, "", "file name must be lower-case letters, digits, - or _")
    data = read_toml(path)
    try:
        config = InstanceConfig.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, exc) from None
    connector_class = connectors.get(config.type)
    if connector_class is None:
        known = ", ".join(sorted(connectors)) or "none installed"
        raise ConfigError(path, "type", f"no connector of type {config.type!r} ({known})")
    for field_map in config.fields:
        if field_map.direction is None:
            field_map.direction = config.direction
    _check_directions(path, config)
    unavailable: dict[str, str] = {}
    if secrets:
        try:
            raw_settings, references = resolve_tree(config.settings, "settings")
        except SecretError as exc:
            key, _, reason = str(exc).partition(": ")
            raise ConfigError(path, key, reason) from None
    else:
        raw_settings, references, unavailable = stand_in_tree(config.settings, "settings")
    try:
        settings = connector_class.Config.model_validate(raw_settings)
    except ValidationError as exc:
        raise _invalid(path, exc, "settings.") from None
    for key, value in _settings_items(settings, "settings"):
        if isinstance(value, SecretStr) and key not in references:
            raise ConfigError(
                path,
                key,
                'a secret must be a reference: { env = "VAR" }, { file = "/path" } '
                'or { credential = "name" }',
            )
    _add_default_fields(path, config, connector_class, settings)
    return Instance(name, path, config, settings, connector_class, secrets, unavailable)


def _settings_items(model: BaseModel, prefix: str) -> list[tuple[str, Any]]:
    """Every ``(dotted key, value)`` of the settings, nested tables included
    (``settings.transport.password``)."""
    items: list[tuple[str, Any]] = []
    for key, value in model:
        if isinstance(value, BaseModel):
            items.extend(_settings_items(value, f"{prefix}.{key}"))
        else:
            items.append((f"{prefix}.{key}", value))
    return items


def _add_default_fields(
    path: Path, config: InstanceConfig, connector_class: type[Connector], settings: Any
) -> None:
    """Append the field maps a connector proposes from its settings (the sftp plugin's
    column presets: ``default_fields(settings) -> [{"hub": …, "remote": …}, …]``) for every
    hub field the file's own ``[[fields]]`` do not map; the file's entries win. A proposal for
    one direction (a transform only outgoing values need) is dropped where it does not fit."""
    proposer = getattr(connector_class, "default_fields", None)
    if proposer is None:
        return
    listed = {f.hub for f in config.fields}
    for raw in proposer(settings):
        try:
            field_map = FieldMap.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(path, exc, "settings.") from None
        if field_map.hub in listed:
            continue
        if field_map.direction is None:
            field_map.direction = config.direction
        elif not config.direction.allows(field_map.direction):
            continue  # a one-way proposal the instance's direction does not carry
        config.fields.append(field_map)
    _check_directions(path, config)


def _invalid(path: Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first problem of a pydantic error, keyed the way the other checks of this file
    spell keys (``fields[1].hub``, not pydantic's ``fields.1.hub``), without pydantic's
    "Value error, " prefix."""
    error = validation_error(path, exc)
    key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", error.key)
    reason = error.reason.removeprefix("Value error, ")
    return ConfigError(path, prefix + key, reason)


def _check_directions(path: Path, config: InstanceConfig) -> None:
    seen: dict[tuple[str, str], int] = {}
    for index, field_map in enumerate(config.fields):
        key = f"fields[{index}]"
        if not config.direction.allows(field_map.direction):
            raise ConfigError(
                path,
                f"{key}.direction",
                f"{field_map.direction} does not fit an {config.direction} instance",
            )
        hub_name = field_map.hub
        # The hub id may come in (it is a match key: design §2 rule 3); test_user,
        # invalid_phone and the timestamps are set by the hub alone.
        hub_own = (
            hub_name not in DEFAULT_FIELDS
            and hub_name != HUB_ID
            and not hub_name.startswith(CUSTOM_PREFIX)
        )
        if hub_own and field_map.direction.pulls:
            # id, test_user, timestamps…: the hub sets these, a platform never does.
            raise ConfigError(
                path, f"{key}.direction", f"{hub_name} is the hub's own; map it outgoing"
            )
        for side in (("hub", hub_name), ("remote", field_map.remote)):
            for direction in ("incoming", "outgoing"):
                pulls = direction == "incoming" and field_map.direction.pulls
                pushes = direction == "outgoing" and field_map.direction.pushes
                if not (pulls or pushes):
                    continue
                marker = (f"{side[0]}:{direction}", side[1])
                if marker in seen:
                    raise ConfigError(
                        path,
                        f"{key}.{side[0]}",
                        f"{side[1]!r} is already mapped {direction} by fields[{seen[marker]}]",
                    )
                seen[marker] = index


def check_catalogue(instance: Instance, catalogue: list[RemoteField]) -> list[str]:
    """Problems of the mapping against the connector's ``describe()``: unknown remote
    fields, read-only fields mapped outgoing. An empty list means the mapping fits."""
    if not catalogue:
        return []
    by_name = {f.name: f for f in catalogue}
    problems = []
    for index, field_map in enumerate(instance.config.fields):
        remote = by_name.get(field_map.remote)
        if remote is None:
            problems.append(
                f"fields[{index}].remote: the platform has no field {field_map.remote!r}"
            )
        elif remote.read_only and field_map.direction.pushes:
            problems.append(
                f"fields[{index}].direction: {field_map.remote!r} is read-only on "
                "the platform; map it incoming"
            )
    return problems


@dataclass
class LoadResult:
    """Every instance file in the folder: the good ones, and an error for each bad one."""

    instances: dict[str, Instance]
    errors: dict[str, ConfigError]


def load_instances(
    etc: Path, connectors: Mapping[str, type[Connector]], *, secrets: bool = True
) -> LoadResult:
    """Load ``etc/instances/*.toml``; one bad file never hides the others. ``secrets=False``:
    validate without resolving secrets (:func:`load_instance`)."""
    folder = etc / INSTANCE_DIR
    result = LoadResult({}, {})
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        try:
            result.instances[path.stem] = load_instance(path, connectors, secrets=secrets)
        except ConfigError as exc:
            result.errors[path.stem] = exc
        except Exception as exc:
            # A bug this loader or a connector's Config did not foresee still makes only
            # this file invalid; its message is left out, it may quote a secret.
            result.errors[path.stem] = ConfigError(
                path, "", f"could not be loaded ({type(exc).__name__}); check its contents"
            )
    owners = [i for i in result.instances.values() if i.config.owns_crm_id]
    connections = sorted({i.connection for i in owners})
    if len(connections) > 1:
        # Only one connection may own the CRM id; refuse all but the first, loudly.
        for instance in owners:
            if instance.connection != connections[0]:
                del result.instances[instance.name]
                result.errors[instance.name] = ConfigError(
                    instance.path,
                    "owns_crm_id",
                    f"connection {connections[0]!r} already maps its remote id onto crm_id",
                )
    return result
