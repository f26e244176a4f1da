"""Secrets by reference: config names where a secret lives, never the secret itself.

A reference is a one-key table in TOML:

```toml
token = { env = "HUBSPOT_TOKEN" }              # an environment variable
token = { file = "/etc/contactsync/hubspot" }  # a file (trailing newline stripped)
token = { credential = "hubspot-token" }       # a systemd credential (LoadCredential=)
```

Every resolved value is registered with the log redactor before anyone can print it.

Resolving is left to the commands that build a connector (``sync``, ``check``, ``run``,
``auth``). The others load instance files with :func:`stand_in_tree`: each reference is
replaced by :data:`STAND_IN` and only checked for being there (a variable set, a file
readable), its value never read, so a staff shell without the daemon's secrets works quietly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from daemon.foundation.log import register_secret

REFERENCE_KINDS = ("env", "file", "credential")
STAND_IN = "(secret not resolved)"
"""What a reference becomes when an instance file is loaded without its secrets: a non-empty
string, so a connector's "this secret is required" checks still pass. It never reaches a
connector: only commands that resolve secrets build one."""


class SecretError(ValueError):
    """A reference that cannot be resolved; the message names the reference, not a value."""


def reveal(secret: SecretStr | None) -> str | None:
    """The value of an optional config secret (``None`` when it is not set), for handing to a
    client. The value was registered with the log redactor when the config resolved it."""
    return secret.get_secret_value() if secret is not None else None


def is_reference(value: Any) -> bool:
    """Whether ``value`` is a ``{env|file|credential = "…"}`` table."""
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and next(iter(value)) in REFERENCE_KINDS
        and isinstance(next(iter(value.values())), str)
    )


def resolve(reference: Mapping[str, str]) -> str:
    """The secret a reference points at."""
    kind, name = next(iter(reference.items()))
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} is not set")
    elif kind == "file":
        value = _read(Path(name), f"file {name}")
    else:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise SecretError(
                f"credential {name!r}: CREDENTIALS_DIRECTORY is not set (use LoadCredential=)"
            )
        value = _read(Path(folder) / name, f"credential {name!r}")
    register_secret(value)
    return value


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"{what} cannot be read: {exc.strerror}") from None


def resolve_tree(data: Any, path: str = "") -> tuple[Any, set[str]]:
    """Resolve every reference in a config tree; return it and the dotted keys that were
    references (so a secret field given as plain text can be refused)."""
    if is_reference(data):
        try:
            return resolve(data), {path}
        except SecretError as exc:
            raise SecretError(f"{path}: {exc}") from None
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        refs: set[str] = set()
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            out[key], found = resolve_tree(value, child)
            refs |= found
        return out, refs
    return data, set()


def describe(reference: Mapping[str, str]) -> str:
    """Where a reference points, for messages: ``environment variable X``, ``file /p``…"""
    kind, name = next(iter(reference.items()))
    return {"env": f"environment variable {name}", "file": f"file {name}"}.get(
        kind, f"credential {name!r}"
    )


def unavailable(reference: Mapping[str, str]) -> str | None:
    """Why the secret a reference points at cannot be had in this process (``None`` if it
    can), found without reading it: a variable not set, a file not readable."""
    kind, name = next(iter(reference.items()))
    if kind == "env":
        return None if name in os.environ else f"environment variable {name} is not set"
    if kind == "file":
        readable = os.path.isfile(name) and os.access(name, os.R_OK)
        return None if readable else f"file {name} cannot be read"
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return f"credential {name!r}: CREDENTIALS_DIRECTORY is not set (use LoadCredential=)"
    path = Path(folder) / name
    readable = path.is_file() and os.access(path, os.R_OK)
    return None if readable else f"credential {name!r} cannot be read"


def stand_in_tree(data: Any, path: str = "") -> tuple[Any, set[str], dict[str, str]]:
    """Like :func:`resolve_tree`, without reading a secret: every reference becomes
    :data:`STAND_IN`. Returns the tree, the dotted keys that were references, and for each
    reference that could not be resolved here, why (:func:`unavailable`)."""
    if is_reference(data):
        reason = unavailable(data)
        return STAND_IN, {path}, ({path: reason} if reason else {})
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        refs: set[str] = set()
        missing: dict[str, str] = {}
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            out[key], found, lacking = stand_in_tree(value, child)
            refs |= found
            missing |= lacking
        return out, refs, missing
    return data, set(), {}
