"""Running records through the incoming rules in committed batches.

The one driver behind CSV import, SFTP files and platform pulls: batch, prepare, load, plan,
write, log, commit. A batch is one transaction, so a crash never leaves a half-applied row, and
memory holds one batch at a time however long the input is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from daemon.foundation.clock import Cancelled
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub.fields import Schema
from daemon.hub.hubwrite import forget_run, write_changes
from daemon.hub.incoming import (
    BatchState,
    ConflictResolver,
    IncomingRecord,
    Outcome,
    RecordMatcher,
    RecordPlan,
    plan_record,
    prepare,
)
from daemon.hub.lease import LeaseBusy, LeaseLost
from daemon.hub.store import utcnow
from daemon.hub.synclog import SyncContext, SyncLogBuffer

log = get_logger("contactsync.ingest")

# A concurrent writer can take a phone or CRM id between our read and our write; the unique
# index then refuses the batch and we plan it again against the new state.
MAX_BATCH_ATTEMPTS = 3
MAX_REPORTED = 1000
"""Problems kept in a report; the sync log has them all."""


@dataclass(slots=True)
class ProblemReport:
    """One reported problem, for summaries and ``--json`` output."""

    code: str
    message: str
    field: str | None
    contact_id: str | None
    source: dict[str, Any]


@dataclass(slots=True)
class IngestReport:
    """The outcome of a run: counts per outcome and the first problems found."""

    run_id: str
    dry_run: bool
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[ProblemReport] = field(default_factory=list)
    problem_count: int = 0

    @property
    def summary(self) -> dict[str, int]:
        """Counts for every outcome, zeros included, plus the number of errors."""
        out = {str(o): self.counts.get(str(o), 0) for o in Outcome}
        out["errors"] = self.problem_count
        return out


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Successive lists of at most ``size`` items."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


BatchHook = Callable[[Connection, Any], None]


class Ingestor:
    """Applies incoming records to the hub, batch by batch, one transaction per batch.

    Use it as a context manager and call :meth:`batch` per page (pulls), or call :meth:`run`
    with any iterable (imports). ``on_plan`` sees every record's plan after its batch
    commits; the CLI prints dry runs from it. Pulls also give ``connection`` (links and echo
    suppression) and the conflict policy.
    """

    def __init__(
        self,
        engine: Engine,
        schema: Schema,
        context: SyncContext,
        *,
        batch_size: int = 1000,
        dry_run: bool = False,
        on_plan: Callable[[RecordPlan], None] | None = None,
        report: IngestReport | None = None,
        connection: str | None = None,
        conflict_policy: str = "newest",
        resolve_conflict: ConflictResolver | None = None,
        match_record: RecordMatcher | None = None,
        match_on: Sequence[str] = (),
        first_sync: str | None = None,
        quiet: Collection[str] = (),
    ) -> None:
        self.engine = engine
        # Codes planned and counted but not logged: a push's lookup re-reads records the
        # pull already logged.
        self.quiet = frozenset(quiet)
        self.match_on = tuple(match_on)
        self.first_sync = first_sync
        self.match_record = match_record
        self.schema = schema
        self.context = context
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.on_plan = on_plan
        self.report = report or IngestReport(context.run_id, dry_run)
        self.connection = connection
        self.conflict_policy = conflict_policy
        self.resolve_conflict = resolve_conflict
        self._conn: Connection | None = None
        self._outer: Any = None

    def __enter__(self) -> Ingestor:
        self._conn = self.engine.connect()
        if self.dry_run:
            # One transaction rolled back at the end: later batches still see what the
            # earlier ones would have done, and nothing is kept.
            self._outer = self._conn.begin()
        return self

    def __exit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            if self.dry_run:
                self._outer.rollback()
            else:
                with conn.begin():
                    forget_run(conn, self.context.run_id)
        finally:
            conn.close()

    def run(self, records: Iterable[IncomingRecord]) -> IngestReport:
        """Apply every record; return the report."""
        with self:
            for batch in chunked(records, self.batch_size):
                self.batch(batch)
        return self.report

    def batch(
        self,
        batch: list[IncomingRecord],
        *,
        before: BatchHook | None = None,
        after: BatchHook | None = None,
    ) -> list[RecordPlan]:
        """Plan and apply one batch in one transaction, setting poison records aside.

        ``before(conn, records)`` runs first inside the transaction (the engine attaches
        links there); ``after(conn, plans)`` runs last, before the commit (links, checkpoint).

        A record that cannot be applied (the database refuses it, or preparing, planning or
        writing it raises) must not hold back the others. The batch is tried once more as it
        is (a failure that does not come back sets nothing aside), then bisected in trial
        transactions that are rolled back, the first record whose prefix fails is set aside
        with a ``record-not-applied`` row, and the rest is applied in one transaction, so
        ``after`` still runs and the cursor moves on. One poison record in ``n`` costs about
        ``log2(n) + 3`` transactions. Failures that are not about a record (a lost
        connection or lease, a cancelled cycle, memory) are raised, as is a failure of the
        hooks themselves.
        """
        if self._conn is None:
            raise RuntimeError("use the Ingestor as a context manager")
        records = list(batch)
        poison: list[tuple[IncomingRecord, BaseException]] = []
        # Records before this index applied together in a trial (0: nothing proven yet).
        proven = 0
        hooks_ok = False
        retried = False
        while True:
            try:
                plans, buffer = self._commit(records, poison, before, after)
                break
            except BaseException as exc:
                if not records or not about_a_record(exc):
                    raise
                if not retried:
                    # Once more as it is first: a failure that does not come back was not
                    # the records' doing, and no good record may be set aside for it.
                    retried = True
                    log.info("batch_retried", run_id=self.context.run_id, error=type(exc).__name__)
                    continue
                index, cause, hooks_ok = self._bisect(records, proven, exc, hooks_ok, before, after)
                poison.append((records.pop(index), cause))
                proven = index
        if not self.dry_run:
            buffer.emit()
        self._count(plans)
        self._count_poison(poison)
        return plans

    def _commit(
        self,
        records: list[IncomingRecord],
        poison: list[tuple[IncomingRecord, BaseException]],
        before: BatchHook | None,
        after: BatchHook | None,
    ) -> tuple[list[RecordPlan], SyncLogBuffer]:
        """Apply ``records`` and commit, re-planning after a concurrent writer's conflict."""
        for attempt in range(1, MAX_BATCH_ATTEMPTS + 1):
            try:
                return self._apply(records, before, after, poison=poison, keep=True)
            except IntegrityError:
                if attempt == MAX_BATCH_ATTEMPTS:
                    raise
                log.info("batch_replanned", run_id=self.context.run_id, attempt=attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _bisect(
        self,
        records: list[IncomingRecord],
        proven: int,
        failure: BaseException,
        hooks_ok: bool,
        before: BatchHook | None,
        after: BatchHook | None,
    ) -> tuple[int, BaseException, bool]:
        """The index of the first record whose prefix fails, the error it gives, and whether
        the hooks are known to work. ``records[:proven]`` applied in a trial, all of them
        failed with ``failure``; each probe is a transaction rolled back."""
        good, bad, cause = proven, len(records), failure
        hooks_ok = hooks_ok or proven > 0
        while bad - good > 1:
            middle = (good + bad) // 2
            error = self._probe(records[:middle], before, after)
            if error is None:
                good, hooks_ok = middle, True
            else:
                bad, cause = middle, error
        if not hooks_ok:
            # Even the first record alone fails: make sure the hooks work without it.
            error = self._probe([], before, after)
            if error is not None:
                raise error
            hooks_ok = True
        return bad - 1, cause, hooks_ok

    def _probe(
        self, records: list[IncomingRecord], before: BatchHook | None, after: BatchHook | None
    ) -> BaseException | None:
        """Try ``records`` in a transaction that is rolled back; the error, if it failed."""
        try:
            self._apply(records, before, after, poison=[], keep=False)
        except BaseException as exc:
            if not about_a_record(exc):
                raise
            return exc
        return None

    def _apply(
        self,
        batch: list[IncomingRecord],
        before: BatchHook | None,
        after: BatchHook | None,
        *,
        poison: list[tuple[IncomingRecord, BaseException]],
        keep: bool,
    ) -> tuple[list[RecordPlan], SyncLogBuffer]:
        """Plan and write ``batch`` in one transaction; commit it if ``keep``, else roll back."""
        conn = self._conn
        assert conn is not None
        buffer = SyncLogBuffer(self.context)
        transaction = conn.begin_nested() if self.dry_run else conn.begin()
        try:
            now = utcnow()
            if before is not None:
                before(conn, batch)
            # After ``before``: the links it attaches let unchanged values skip validation.
            prepared = [prepare(record, self.schema) for record in batch]
            state = BatchState(
                conn,
                self.schema,
                self.context.run_id,
                now,
                connection=self.connection,
                conflict_policy=self.conflict_policy,
                resolve_conflict=self.resolve_conflict,
                match_record=self.match_record,
                match_on=self.match_on,
                first_sync=self.first_sync,
            )
            state.load(prepared)
            plans = [plan_record(p, state) for p in prepared]
            for plan in plans:
                for problem in plan.problems:
                    if problem.code in self.quiet:
                        continue
                    buffer.add(
                        problem.code,
                        problem.message,
                        contact_id=plan.contact_id,
                        remote_id=plan.record.remote_id,
                        field=problem.field,
                        **dict(plan.record.source or {}),
                    )
            for record, error in poison:
                buffer.add(
                    Code.RECORD_NOT_APPLIED,
                    not_applied_message(error),
                    contact_id=record.linked_contact_id,
                    remote_id=record.remote_id,
                    **dict(record.source or {}),
                )
            # In a dry run this writes into the savepoint of a transaction that is rolled
            # back, so the next batch plans against what this one would have done.
            write_changes(
                conn,
                state.changes,
                origin=self.context.instance or self.context.integration,
                exclude_connection=self.connection,
                now=now,
            )
            if after is not None:
                after(conn, plans)
            if not self.dry_run:
                buffer.write(conn)
        except BaseException:
            transaction.rollback()
            raise
        if keep:
            transaction.commit()
        else:
            transaction.rollback()
        return plans, buffer

    def _count(self, plans: list[RecordPlan]) -> None:
        report = self.report
        for plan in plans:
            report.counts[str(plan.outcome)] += 1
            if plan.matched is not None:
                # An existing contact found for an unlinked record: linked, not created.
                report.counts["linked"] += 1
            for problem in plan.problems:
                report.problem_count += 1
                if len(report.problems) < MAX_REPORTED:
                    report.problems.append(
                        ProblemReport(
                            str(problem.code),
                            problem.message,
                            problem.field,
                            plan.contact_id,
                            dict(plan.record.source or {}),
                        )
                    )
            if self.on_plan is not None:
                self.on_plan(plan)

    def _count_poison(self, poison: list[tuple[IncomingRecord, BaseException]]) -> None:
        report = self.report
        for record, error in poison:
            log.warning(
                "record_not_applied",
                run_id=self.context.run_id,
                remote_id=record.remote_id,
                error=type(error).__name__,
            )
            report.counts[str(Outcome.SKIPPED)] += 1
            report.problem_count += 1
            if len(report.problems) < MAX_REPORTED:
                report.problems.append(
                    ProblemReport(
                        str(Code.RECORD_NOT_APPLIED),
                        not_applied_message(error),
                        None,
                        record.linked_contact_id,
                        dict(record.source or {}),
                    )
                )


# Failures that say nothing about the record in hand: the batch as a whole must stop, and
# the next cycle tries it again.
_NOT_ABOUT_A_RECORD: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    LeaseLost,
    LeaseBusy,
    Cancelled,
    MemoryError,
)


def about_a_record(error: BaseException) -> bool:
    """Whether ``error`` may come from one record, so that setting records aside can help."""
    if not isinstance(error, Exception) or isinstance(error, _NOT_ABOUT_A_RECORD):
        return False
    return not (isinstance(error, DBAPIError) and error.connection_invalidated)


def not_applied_message(error: BaseException) -> str:
    """Why a record was not applied: the error class and, from a database, its SQLSTATE or
    SQLite error name. Never the error's text, which may quote values (personal data or a
    secret)."""
    if isinstance(error, DBAPIError):
        original = error.orig
        detail = getattr(original, "sqlstate", None) or getattr(original, "sqlite_errorname", None)
        reason = f"the database refused it ({type(original).__name__}"
        reason += f", {detail})" if detail else ")"
    else:
        reason = f"{type(error).__name__} while applying it"
    return f"record not applied: {reason}; the rest of the batch applied"
