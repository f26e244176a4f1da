"""Secrets by reference: config names where a secret lives, never the secret itself.

A reference is a one-key table in TOML:

```toml
token = { env = "HUBSPOT_TOKEN" }              # an environment variable
token = { file = "/etc/contactsync/hubspot" }  # a file (trailing newline stripped)
token = { credential = "hubspot-token" }       # a systemd credential (LoadCredential=)
```

Every resolved value is registered with the log redactor before anyone can print it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from daemon.foundation.log import register_secret

REFERENCE_KINDS = ("env", "file", "credential")


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
