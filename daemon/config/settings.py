"""Daemon settings from ``etc/contactsync.toml``, with environment overrides.

The config folder is ``--etc`` or ``CONTACTSYNC_ETC`` when given, else ``./etc``, else
``/etc/contactsync`` (a service install); :func:`find_config_folder` decides, and refuses
rather than guessing. Every mistake is a :class:`ConfigError` that names the file, the key and
the reason, so an operator never has to guess which line to fix.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from daemon.foundation.log import redact_text, register_secret

SETTINGS_FILE = "contactsync.toml"
INSTANCES_DIR = "instances"
DEFAULT_ETC_DIR = Path("etc")
SYSTEM_ETC_DIR = Path("/etc/contactsync")
SYSTEM_STATE_DIR = Path("/var/lib/contactsync")


class ConfigError(Exception):
    """A configuration file is invalid. ``str()`` names the file, the key and the reason."""

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + reason)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Strict):
    """``[database]``: where the hub lives."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: an SQLite file in the state folder.",
    )


class HubSettings(_Strict):
    """``[hub]``: how incoming values are normalised."""

    default_region: str = Field(
        default="US", description="Region for phones written without a country code."
    )
    batch_size: int = Field(default=1000, ge=1, le=50_000, description="Rows per commit.")

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r} (use an ISO code such as US)")
        return value


class DaemonSettings(_Strict):
    """``[daemon]``: how the long-running service behaves."""

    workers: int = Field(default=4, ge=1, le=64, description="Cycles running at once.")
    shutdown_grace_seconds: float = Field(
        default=30, gt=0, le=3600, description="How long SIGTERM waits for cycles to drain."
    )
    reload_debounce_ms: int = Field(
        default=500, ge=0, le=60_000, description="Quiet time before a config change applies."
    )
    wake_debounce_ms: int = Field(
        default=500, ge=0, le=60_000, description="A burst of hub writes becomes one push."
    )
    poll_interval_ms: int = Field(
        default=500, ge=50, le=60_000, description="SQLite: how often the outbox is polled."
    )
    misfire_grace_seconds: int = Field(
        default=300, ge=1, description="A cycle that missed its time still runs this late."
    )


class LogSettings(_Strict):
    """``[log]``: the JSON log and the sync log's retention."""

    level: str = Field(default="info", description="debug, info, warning or error.")
    retention_days: int = Field(
        default=90, ge=1, description="Sync-log rows older than this are pruned."
    )

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("level must be debug, info, warning, error or critical")
        return value


class HttpSettings(_Strict):
    """``[http]``: the HTTP API, served by ``contactsync run`` when enabled."""

    enabled: StrictBool = Field(
        default=False, description="Serve the HTTP API inside the daemon (`contactsync run`)."
    )
    bind: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to listen on; the default keeps it off the public interface.",
    )
    port: int = Field(default=8765, ge=0, le=65535, description="TCP port (0: any free one).")


class Settings(_Strict):
    """The whole of ``etc/contactsync.toml``."""

    state_dir: Path | None = Field(
        default=None, description="Folder for the SQLite file and other state."
    )
    database: DatabaseSettings = DatabaseSettings()
    hub: HubSettings = HubSettings()
    daemon: DaemonSettings = DaemonSettings()
    log: LogSettings = LogSettings()
    http: HttpSettings = HttpSettings()

    # Not read from the file: where it came from, for resolving relative paths.
    etc_dir: Path = Field(default=Path("etc"), exclude=True)

    @property
    def resolved_state_dir(self) -> Path:
        """The state folder: env overrides, then systemd's ``STATE_DIRECTORY``, then the file."""
        env = os.environ.get("CONTACTSYNC_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
        if env:
            # systemd may pass several colon-separated folders; the first is ours.
            return Path(env.split(":")[0])
        if self.state_dir is None:
            # A system install (/etc/contactsync) keeps its state where systemd's
            # StateDirectory= puts it, so the CLI and the service open the same hub.
            if self.etc_dir.resolve().parent == Path("/etc"):
                return SYSTEM_STATE_DIR
            return self.etc_dir.parent / "var"
        return self.state_dir if self.state_dir.is_absolute() else self.etc_dir / self.state_dir

    @property
    def database_url(self) -> str:
        """The hub's URL: ``CONTACTSYNC_DATABASE_URL``, then the file, then embedded SQLite."""
        url = os.environ.get("CONTACTSYNC_DATABASE_URL") or self.database.url
        if url:
            register_url_password(url)  # a driver's error may quote the URL
            return url
        return f"sqlite:///{self.resolved_state_dir / 'contactsync.db'}"


def etc_dir(explicit: str | Path | None = None) -> Path:
    """The config folder: ``--etc``, then ``CONTACTSYNC_ETC``, then ``./etc``."""
    return Path(explicit or os.environ.get("CONTACTSYNC_ETC") or DEFAULT_ETC_DIR)


def is_config_folder(path: Path) -> bool:
    """Whether ``path`` is a config folder: a folder holding ``contactsync.toml`` or an
    ``instances/`` folder (or both). An empty or unrelated folder is not one, so a mistyped
    ``--etc`` is caught instead of quietly meaning "no instances"."""
    return path.is_dir() and ((path / SETTINGS_FILE).is_file() or (path / INSTANCES_DIR).is_dir())


class NoConfigFolder(ConfigError):
    """No config folder where one was named or expected; the message says how to fix it."""


_FIXES = (
    "create one with `contactsync init [DIR]`, name one with --etc DIR (or CONTACTSYNC_ETC), "
    "or name the hub with --database-url URL (or CONTACTSYNC_DATABASE_URL)"
)


def find_config_folder(
    explicit: str | Path | None, *, named_by: str = "--etc", database_url: str | None = None
) -> Path | None:
    """The config folder a command uses, or ``None`` when there is none but the hub is named
    (``database_url`` or ``CONTACTSYNC_DATABASE_URL``): then every setting is its default.

    ``explicit`` (``--etc`` or ``CONTACTSYNC_ETC``; ``named_by`` says which) must be a config
    folder (:func:`is_config_folder`). Without it: ``./etc``, then :data:`SYSTEM_ETC_DIR`, the
    first that is a config folder. Raises :class:`NoConfigFolder` rather than letting a
    command create a new, empty hub in whatever folder it was run from.
    """
    if explicit:
        folder = Path(explicit)
        if not folder.is_dir():
            raise NoConfigFolder(folder, "", f"{named_by}: no such folder; {_FIXES}")
        if not is_config_folder(folder):
            raise NoConfigFolder(
                folder,
                "",
                f"{named_by}: not a config folder (it has neither {SETTINGS_FILE} nor "
                f"{INSTANCES_DIR}/); {_FIXES}",
            )
        return folder
    for folder in (DEFAULT_ETC_DIR, SYSTEM_ETC_DIR):
        if is_config_folder(folder):
            return folder
    if database_url or os.environ.get("CONTACTSYNC_DATABASE_URL"):
        return None
    raise NoConfigFolder(
        DEFAULT_ETC_DIR,
        "",
        f"no config folder here (nor {SYSTEM_ETC_DIR}) and no hub named: {_FIXES}",
    )


def redacted_url(url: str) -> str:
    """A URL fit to print: its user-info masked (``postgresql://***@host/db``), the same
    redaction the JSON log applies to every string (:func:`daemon.foundation.log.redact_text`).
    A password SQLAlchemy reads out of a URL that is not valid RFC 3986 (a bare ``/`` in it)
    is registered as a secret first, so it is masked wherever it sits."""
    register_url_password(url)
    return redact_text(url)


def register_url_password(url: str) -> None:
    """Register the password of a database URL as a secret, so no message can show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return
    if password:
        register_secret(str(password))


def _describe(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file larger than this is refused unread: real ones are a few kilobytes."""
MAX_CONFIG_DEPTH = 16
"""Tables and arrays nested deeper than this are refused: real files nest three or four."""


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a :class:`ConfigError`.

    Whatever the bytes (another encoding, NUL bytes, nesting deep enough to exhaust the
    parser's stack, a folder or a symlink loop named ``*.toml``), the outcome is a
    :class:`ConfigError` naming the file, never an exception that would stop the daemon or
    print a traceback."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", f"larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            path, "", f"not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(path, "", f"nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    if _depth(data) > MAX_CONFIG_DEPTH:
        # Refused here, before validation and reload's comparisons walk it recursively.
        raise ConfigError(path, "", f"nested deeper than {MAX_CONFIG_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deeply ``value``'s tables and arrays nest, walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_CONFIG_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def validation_error(path: Path, exc: ValidationError) -> ConfigError:
    """The first problem in a pydantic error, as a :class:`ConfigError`."""
    first = exc.errors()[0]
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    return ConfigError(path, _describe(first["loc"]), reason)


def load_settings(etc: str | Path | None = None) -> Settings:
    """Load ``contactsync.toml`` from the config folder; a missing file means all defaults."""
    folder = etc_dir(etc)
    path = folder / SETTINGS_FILE
    data = read_toml(path) if path.exists() else {}
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(path, exc) from None
    settings.etc_dir = folder
    return settings
