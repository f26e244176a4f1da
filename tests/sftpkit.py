"""Helpers for the sftp plugin's tests: instance files against the test sshd, CSV text."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any

from sshd import SshdServer

from daemon.config.instances import Instance, load_instance
from plugins.sftp.connector import SftpConnector

CONNECTORS: dict[str, type] = {"sftp": SftpConnector}


def toml_value(value: Any) -> str:
    """A scalar or a flat list/dict as TOML (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(str(value))


def transport_table(server: SshdServer, root: Path, **overrides: Any) -> dict[str, Any]:
    """``[settings.transport]`` for the test server; the key by reference, as config must."""
    table = server.transport_settings(root)
    table["private_key"] = {"file": str(server.private_key_path)}
    table.update(overrides)
    return table


def write_instance(
    etc: Path,
    name: str,
    transport: dict[str, Any],
    *,
    settings: dict[str, Any] | None = None,
    top: str = "",
    fields: str = "",
    connectors: dict[str, type] | None = None,
) -> Instance:
    """Write ``etc/instances/<name>.toml`` for an sftp instance and load it."""
    folder = etc / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    lines = ['type = "sftp"', textwrap.dedent(top), "[settings]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (settings or {}).items()]
    lines.append("[settings.transport]")
    lines += [f"{k} = {toml_value(v)}" for k, v in transport.items() if v is not None]
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(fields))
    return load_instance(path, connectors or CONNECTORS)


def csv_text(*rows: str) -> bytes:
    """Rows joined with CRLF, as UTF-8."""
    return ("\r\n".join(rows) + "\r\n").encode()


def read_csv(data: bytes) -> list[dict[str, str]]:
    """A CSV file's rows as dicts (header keys)."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
