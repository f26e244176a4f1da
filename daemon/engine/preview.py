"""The preview of a sync: what its pull and its push would do, counted, writing nothing.

A staff member about to run an instance's first sync on real data needs a few numbers before
saying yes: how many records will be linked to contacts the hub already holds, how many
contacts will be created on each side, how many differences the policy will settle, and what
will be skipped, by code. :func:`preview` runs the pull as a dry run, then the push as a dry
run that also plans what the first sync's seed would queue (every contact with no link that
the previewed pull does not link), and tallies the plans. The platform is only read (its
pages, and the push's lookup of records it already holds); the hub is left as it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from daemon.config.instances import Instance
from daemon.engine.cycle import CycleReport, SyncEngine
from daemon.engine.push import PushPlan
from daemon.foundation.dictionary import Code
from daemon.hub.incoming import Outcome, RecordPlan
from daemon.hub.runs import CycleKind
from daemon.hub.store import InstanceState

_STATE = InstanceState.__table__


@dataclass
class Preview:
    """The counts a sync would report, predicted.

    ``link``: platform records that will be linked to an existing contact (by the pull's
    matching, or by the push's lookup before it would create); ``create_in_hub`` and
    ``create_on_platform``: new contacts on each side; ``conflicts``: fields where the sides
    differ and the policy (``first_sync`` for a first link, ``conflict`` after) picks the
    value; ``skipped``: each ``sync-log`` row the sync would write but a conflict's, by code
    (a record skipped, a field refused, a contact not sent).
    """

    link: int = 0
    create_in_hub: int = 0
    create_on_platform: int = 0
    conflicts: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_sync: bool = False  # the push plans the first sync's seed too
    reports: list[CycleReport] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts for ``--json``."""
        return {
            "link": self.link,
            "create_in_hub": self.create_in_hub,
            "create_on_platform": self.create_on_platform,
            "conflicts": self.conflicts,
            "skipped": dict(sorted(self.skipped.items())),
            "first_sync": self.first_sync,
        }

    def add(self, plan: Any) -> None:
        """Tally one plan of either side."""
        if isinstance(plan, RecordPlan):
            self._pulled(plan)
        elif isinstance(plan, PushPlan):
            self._pushed(plan)

    def _pulled(self, plan: RecordPlan) -> None:
        if plan.matched is not None:
            self.link += 1
        if plan.outcome is Outcome.CREATED:
            self.create_in_hub += 1
        for problem in plan.problems:
            if problem.code is Code.SYNC_CONFLICT:
                self.conflicts += 1
            else:
                self.skipped[str(problem.code)] += 1

    def _pushed(self, plan: PushPlan) -> None:
        if plan.linked:
            self.link += 1
        elif plan.item is not None and plan.item.remote_id is None:
            # Updates are not counted: a first sync's first exchanges (the values the hub
            # keeps, the fields a platform lacks) are queued by the pull it only previews.
            self.create_on_platform += 1
        if plan.error is not None:
            self.skipped[str(plan.error[0])] += 1


def preview(
    engine: SyncEngine,
    instance: Instance,
    sides: Sequence[str],
    *,
    full: bool = False,
    on_plan: Callable[[Any], None] | None = None,
) -> Preview:
    """Dry-run ``sides`` (pull, then push) of ``instance`` and count what they would do.

    The push side of a first sync (no seed yet) plans the contacts the seed would queue; the
    contacts the previewed pull links are left out, as its links would leave them out.
    A side that fails ends the preview; its report says why."""
    result = Preview(first_sync=not _seeded(engine, instance.name))
    touched: set[str] = set()

    def seen(plan: Any) -> None:
        result.add(plan)
        if isinstance(plan, RecordPlan) and plan.contact_id is not None:
            touched.add(plan.contact_id)
        if on_plan is not None:
            on_plan(plan)

    for side in sides:
        exclude = None
        if side == CycleKind.PUSH and result.first_sync:
            exclude = frozenset(touched)
        report = engine.run(
            instance,
            side,
            full=full,
            dry_run=True,
            on_plan=seen,
            respect_backoff=False,
            preview_exclude=exclude,
        )
        result.reports.append(report)
        if report.outcome != "ok":
            break
    return result


def _seeded(engine: SyncEngine, name: str) -> bool:
    with engine.db.connect() as conn:
        stamp = conn.execute(select(_STATE.c.seeded_at).where(_STATE.c.instance == name)).scalar()
    return stamp is not None
