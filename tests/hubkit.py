"""Small helpers the hub tests share: run records through the incoming rules, read state back.

Not a fixture module: plain functions taking an engine, so Hypothesis tests can use them on an
engine they build themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

from daemon.hub.contacts import add_custom_field, get_contact, load_schema, save_contact
from daemon.hub.incoming import IncomingRecord, RecordPlan
from daemon.hub.ingest import Ingestor, IngestReport
from daemon.hub.store import Contact, CustomValue, Outbox, RunKey, SyncLog
from daemon.hub.synclog import SyncContext, new_run_id

CONTACT = Contact.__table__
CUSTOM_VALUE = CustomValue.__table__
SYNC_LOG = SyncLog.__table__
RUN_KEY = RunKey.__table__
OUTBOX = Outbox.__table__

# Valid US numbers in several spellings, with their E.164 form.
ADA_PHONE, ADA_E164 = "(202) 555-0143", "+12025550143"
GRACE_PHONE, GRACE_E164 = "202.555.0181", "+12025550181"
ALAN_PHONE, ALAN_E164 = "+1 415 555 0199", "+14155550199"
KATE_PHONE, KATE_E164 = "617-555-0112", "+16175550112"

CUSTOM_FIELDS = {
    "Class Year": "number",
    "Application Status": "text",
    "Deposit Date": "date",
    "First Gen": "boolean",
}


class Run:
    """The result of one ingest: the report, every record's plan, and the run's context."""

    def __init__(self, report: IngestReport, plans: list[RecordPlan], context: SyncContext):
        self.report = report
        self.plans = plans
        self.context = context

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def outcomes(self) -> list[str]:
        return [str(p.outcome) for p in self.plans]


def define_custom_fields(engine: Engine, fields: dict[str, str] | None = None) -> None:
    """Define the custom fields the tests use."""
    for name, field_type in (fields or CUSTOM_FIELDS).items():
        add_custom_field(engine, name, field_type)


def ingest(
    engine: Engine,
    records: Iterable[IncomingRecord | dict[str, Any]],
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    integration: str = "test",
    **options: Any,
) -> Run:
    """Run ``records`` (records, or bare field dicts) through the incoming rules.

    ``options`` go to :class:`Ingestor` as they are (``connection``, ``conflict_policy`` …), so a
    test reaches the rules a platform pull uses without the engine around them."""
    context = SyncContext(integration, "incoming", new_run_id(), "test-instance")
    plans: list[RecordPlan] = []
    ingestor = Ingestor(
        engine,
        load_schema(engine),
        context,
        batch_size=batch_size,
        dry_run=dry_run,
        on_plan=plans.append,
        **options,
    )
    items = (r if isinstance(r, IncomingRecord) else IncomingRecord(dict(r)) for r in records)
    report = ingestor.run(items)
    return Run(report, plans, context)


def seed(engine: Engine, values: dict[str, str], **flags: Any) -> str:
    """A contact created as staff would (hub-side); returns its id."""
    return save_contact(engine, values, **flags)


def contact(engine: Engine, key: str) -> dict[str, Any]:
    """A contact's row plus ``custom`` (display name → value); fails when there is none."""
    view = get_contact(engine, key)
    assert view is not None, f"no contact {key!r}"
    return {**view.row, "custom": view.custom}


def contact_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CONTACT)).scalar_one()


def log_rows(engine: Engine, run_id: str | None = None) -> list[dict[str, Any]]:
    """Sync-log rows in insertion order, optionally of one run."""
    query = select(SYNC_LOG).order_by(SYNC_LOG.c.id)
    if run_id is not None:
        query = query.where(SYNC_LOG.c.run_id == run_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def outbox_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every outbox row."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(OUTBOX)).mappings()]


def log_codes(engine: Engine, run_id: str | None = None) -> list[tuple[str, str | None]]:
    """(code, field) of each sync-log row, in insertion order."""
    return [(r["code"], (r["details"] or {}).get("field")) for r in log_rows(engine, run_id)]


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every contact row and custom value, for "nothing else changed" comparisons."""
    with engine.connect() as conn:
        contacts = {
            r["id"]: dict(r)
            for r in conn.execute(select(CONTACT).order_by(CONTACT.c.id)).mappings()
        }
        custom = sorted(
            (r.contact_id, r.field_id, r.value) for r in conn.execute(select(CUSTOM_VALUE))
        )
    return {"contacts": contacts, "custom": custom}


def table_count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def truncate(engine: Engine) -> None:
    """Empty every table (for Hypothesis examples sharing one engine)."""
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())
