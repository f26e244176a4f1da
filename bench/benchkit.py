"""What the benchmarks share: the peak-RSS reading and queueing every contact for a push."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, insert, literal, select, update


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def edit_and_queue_all(engine: Engine, connection: str) -> None:
    """Change every contact's last name and queue them all for ``connection``, in two
    statements, as a burst of hub edits would."""
    from daemon.outbox import PENDING
    from daemon.store import Contact, Outbox, utcnow

    contact = Contact.__table__
    now = utcnow()
    columns = {
        "fields": literal('["last_name"]'),
        "origin": literal("bench"),
        "version": literal(1),
        "attempts": literal(0),
        "state": literal(PENDING),
        "next_attempt_at": literal(now),
        "created_at": literal(now),
        "updated_at": literal(now),
    }
    with engine.begin() as conn:
        conn.execute(update(contact).values(last_name=contact.c.last_name + "X"))
        conn.execute(
            insert(Outbox.__table__).from_select(
                ["connection", "contact_id", *columns],
                select(literal(connection), contact.c.id, *columns.values()),
            )
        )
