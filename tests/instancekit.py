"""Instance files for tests and benchmarks: the contact ``[[fields]]`` tables, and writing an
instance file then loading it.

Light on imports on purpose: the benchmarks' child processes use it too, and whatever it
imports counts in their peak RSS.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.config.instances import Instance, load_instance

HUB_CONTACT_FIELDS = ("first_name", "last_name", "email", "phone")


def contact_fields(first_name: str, last_name: str, email: str, phone: str) -> str:
    """The ``[[fields]]`` tables that map the hub's first name, last name, email and phone
    (in that order) to a platform's field names."""
    remotes = (first_name, last_name, email, phone)
    return "".join(
        f'[[fields]]\nhub = "{hub}"\nremote = "{remote}"\n'
        for hub, remote in zip(HUB_CONTACT_FIELDS, remotes, strict=True)
    )


def memory_fields(*, crm_id: bool = True) -> str:
    """The ``[[fields]]`` of the memory platform (tests/memremote.py) and of the engine
    benchmark's made-up one: the contact fields, and the CRM id as ``StudentId``."""
    fields = contact_fields("FirstName", "LastName", "Email", "Phone")
    return fields + ('[[fields]]\nhub = "crm_id"\nremote = "StudentId"\n' if crm_id else "")


def load_written(
    folder: Path, name: str, text: str, connectors: Mapping[str, type[Any]]
) -> Instance:
    """Write ``text`` as ``folder/<name>.toml`` (creating the folder) and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return load_instance(path, connectors)
