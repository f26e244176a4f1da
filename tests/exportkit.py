"""Helpers for the export tests: contacts, messages, an export instance file, reading files."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from daemon.config.instances import Instance, load_instance
from daemon.engine.cycle import SyncEngine
from daemon.hub.mirror import mirror_instances
from daemon.hub.store import ExportBatch, Message
from plugins.export.exporter import COLUMNS, ConversationsExporter

CONNECTORS = {"conversations_export": ConversationsExporter}
NAME = "convo"
T0 = datetime(2026, 3, 1, 14, 30, 5, tzinfo=UTC)


def export_instance(etc: Path, transport: dict[str, Any] | Path, **settings: Any) -> Instance:
    """Write ``etc/instances/convo.toml`` and load it. ``transport`` is a local folder or a
    ``[settings.transport]`` table."""
    if isinstance(transport, Path):
        transport = {"kind": "local", "path": str(transport)}
    folder = etc / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['type = "conversations_export"', "[settings]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    lines.append("[settings.transport]")
    lines += [f"{key} = {toml_value(value)}" for key, value in transport.items()]
    path = folder / f"{NAME}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_instance(path, CONNECTORS)


def toml_value(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and lists are TOML; a dict is an inline table."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


def write_raw_instance(etc: Path, body: str) -> Path:
    folder = etc / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def engine_for(hub: Engine, instance: Instance) -> SyncEngine:
    """A sync engine with ``instance`` mirrored. No plugin manager: an export needs no
    transforms, and loading every installed plugin per test costs more than the test."""
    mirror_instances(hub, {instance.name: instance})
    return SyncEngine(hub)


def contact(hub: Engine, n: int, *, test_user: bool = False, crm: bool = True) -> str:
    from daemon.hub.contacts import save_contact

    values = {"first_name": f"First{n}", "last_name": f"Last{n}", "phone": f"202555{n:04d}"}
    if crm:
        values["crm_id"] = f"CRM{n}"
    return save_contact(hub, values, test_user=test_user or None)


def message(
    hub: Engine,
    contact_id: str,
    body: str,
    *,
    direction: str = "incoming",
    channel: str = "twilio",
    minutes: int = 0,
    campaign: tuple[str, str] | None = None,
    message_type: str | None = None,
) -> int:
    row = {
        "contact_id": contact_id,
        "channel": channel,
        "direction": direction,
        "body": body,
        "campaign_id": campaign[0] if campaign else None,
        "campaign_name": campaign[1] if campaign else None,
        "message_type": message_type,
        "sent_at": T0 + timedelta(minutes=minutes),
    }
    with hub.begin() as conn:
        return int(
            conn.execute(
                insert(Message.__table__).returning(Message.__table__.c.id), row
            ).scalar_one()
        )


def read_csv(path: Path) -> list[dict[str, str]]:
    """A written export file as dicts, after checking the header is exactly COLUMNS."""
    text = path.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == COLUMNS
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows[1:]]


def exported_files(folder: Path) -> list[Path]:
    """The visible CSV files in ``folder`` (no temporary uploads), by name."""
    return sorted(p for p in folder.glob("*.csv") if not p.name.startswith("."))


def all_rows(folder: Path) -> list[dict[str, str]]:
    return [row for path in exported_files(folder) for row in read_csv(path)]


def batches(hub: Engine) -> list[dict[str, Any]]:
    with hub.connect() as conn:
        table = ExportBatch.__table__
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def sync_log(hub: Engine) -> list[dict[str, Any]]:
    """Every sync-log row, in insertion order."""
    from tests.hubkit import log_rows  # imported here: bench/export.py loads this kit

    return log_rows(hub)
