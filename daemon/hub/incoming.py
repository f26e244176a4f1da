"""The incoming rules: from raw records to per-record, per-field plans.

Every incoming path (CSV import, platform pulls, SFTP files) goes through this one module, so a
rule is implemented once. It works a batch at a time: :class:`BatchState` loads the contacts a
batch can touch with a few bulk queries, then :func:`plan_record` applies the rules to each
record in order, updating that state as it goes, so the second record of a batch sees what the
first one did. Nothing here writes; :mod:`daemon.hub.hubwrite` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Connection, or_, select

from daemon.foundation.dictionary import Code
from daemon.hub.fields import (
    CUSTOM_PREFIX,
    DEFAULT_FIELDS,
    HUB_ID,
    REQUIRED_FOR_CREATE,
    Action,
    FieldPlan,
    Schema,
    column_value,
    current_value,
    is_blank,
    plan_field,
)
from daemon.hub.normalize import InvalidValue, no_controls
from daemon.hub.store import Contact, CustomValue, Link, RunKey, new_contact_id


class NoMatch:
    """The type of :data:`NO_MATCH`: a sentinel, so it can never be mistaken for an id."""

    def __repr__(self) -> str:
        return "NO_MATCH"


NO_MATCH: Final = NoMatch()
"""What ``match_record`` returns to say "none of the candidates; this is a new contact"."""


_CONTACT = Contact.__table__
_LINK = Link.__table__
_CUSTOM_VALUE = CustomValue.__table__
_RUN_KEY = RunKey.__table__
CRM_KIND = "crm_id"


@dataclass(slots=True)
class IncomingRecord:
    """One record arriving from a platform or a file.

    ``fields`` maps hub field names to raw values: blank or ``None`` is skipped, ``UNSET``
    clears. ``linked_contact_id`` and ``last_exchanged`` come from the connection's link, when
    there is one; ``source`` says where the record came from (``{"file": …, "row": 12}``) and
    goes into the details of its sync-log rows.
    """

    fields: dict[str, Any]
    source: Mapping[str, Any] | None = None
    remote_id: str | None = None
    linked_contact_id: str | None = None
    last_exchanged: Mapping[str, Any] | None = None
    modified_at: datetime | None = None
    problems: list[Problem] = field(default_factory=list)  # found before the rules (mapping)
    raw: Any = None  # the platform's own record, for plugins that match on it


class Outcome(StrEnum):
    """What happened to a record as a whole."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    IGNORED = "ignored"  # matched a test user


@dataclass(slots=True)
class Problem:
    """One thing wrong with a record: a code, the field if any, and a message without PII."""

    code: Code
    message: str
    field: str | None = None


@dataclass(slots=True)
class RecordPlan:
    """The plan for one record: its outcome, the contact it lands on, and each field's plan."""

    record: IncomingRecord
    outcome: Outcome
    contact_id: str | None = None
    fields: list[FieldPlan] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # How an unlinked record found the existing contact it lands on (``crm_id``, a match
    # key, ``hook``); ``None`` when it came through its link or is a new contact.
    matched: str | None = None

    @property
    def changes(self) -> list[FieldPlan]:
        """The fields that will be written."""
        return [f for f in self.fields if f.action in (Action.SET, Action.CLEAR)]


@dataclass(slots=True)
class Prepared:
    """A record with each field validated, before the hub's state is consulted."""

    record: IncomingRecord
    hub_id: str | None
    fields: list[FieldPlan]
    problems: list[Problem]

    def planned(self, name: str) -> FieldPlan | None:
        for plan in self.fields:
            if plan.field == name:
                return plan
        return None

    def set_value(self, name: str) -> Any:
        plan = self.planned(name)
        return plan.value if plan is not None and plan.action is Action.SET else None


def prepare(record: IncomingRecord, schema: Schema) -> Prepared:
    """Validate each field of ``record`` on its own; no database access."""
    hub_id: str | None = None
    plans: list[FieldPlan] = []
    problems: list[Problem] = list(record.problems)
    # Only a linked record may skip validation: its contact exists and holds these values.
    last = (record.last_exchanged or {}) if record.linked_contact_id else {}
    for name, raw in record.fields.items():
        if name == HUB_ID:
            if not is_blank(raw):
                hub_id = str(raw).strip()
                try:
                    no_controls(hub_id)
                except InvalidValue as exc:
                    # Never looked up (PostgreSQL refuses NUL even in a query): an id no
                    # contact has, so rule 3 skips the record as it does an unknown id.
                    problems.append(Problem(exc.code, exc.message, name))
                    hub_id = ""
            continue
        if name in last and _same_as_exchanged(raw, last[name]):
            # The platform still holds exactly what was exchanged (a canonical value, so
            # validating it again could only give it back): rule 10 skips it, and a re-read
            # of an unchanged record costs no phone or email parsing.
            plans.append(FieldPlan(name, Action.SKIP, last[name], reason=_UNCHANGED_REMOTE))
            continue
        plan = plan_field(name, raw, schema)
        plans.append(plan)
        if plan.action is Action.REJECT:
            problems.append(Problem(plan.code or Code.INVALID_VALUE, plan.reason, name))
    return Prepared(record, hub_id, plans, problems)


_UNCHANGED_REMOTE = "unchanged on the platform"


def _same_as_exchanged(raw: Any, last: Any) -> bool:
    if last is None or is_blank(raw):
        return False
    if isinstance(raw, str):
        return isinstance(last, str) and raw.strip() == last
    return type(raw) is type(last) and raw == last


@dataclass(slots=True)
class Changes:
    """What a batch will write, accumulated while planning."""

    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_set: dict[tuple[str, int], str] = field(default_factory=dict)
    custom_clear: set[tuple[str, int]] = field(default_factory=set)
    run_keys: list[dict[str, str]] = field(default_factory=list)
    # Hub field names changed per contact: what the outbox fans out.
    changed_fields: dict[str, set[str]] = field(default_factory=dict)

    def touched(self, contact_id: str, field_name: str) -> None:
        self.changed_fields.setdefault(contact_id, set()).add(field_name)


RecordMatcher = Callable[[Any, Mapping[str, Any], list[Mapping[str, Any]]], Any]
"""``(record, hub_fields, candidates) -> contact id | NO_MATCH | None``: a plugin's say over
which contact an unlinked platform record is (``None``: the default rules)."""

ConflictResolver = Callable[..., str | None]
"""``(contact_id, field, hub_value, hub_changed_at, remote_value, remote_modified_at,
policy) -> "hub" | "remote" | None``: a plugin's say over a conflict (``None``: the policy)."""


class BatchState:
    """The hub as one batch sees it: contacts loaded in bulk, then updated as records plan."""

    def __init__(
        self,
        conn: Connection,
        schema: Schema,
        run_id: str,
        now: datetime,
        *,
        connection: str | None = None,
        conflict_policy: str = "newest",
        resolve_conflict: ConflictResolver | None = None,
        match_record: RecordMatcher | None = None,
        match_on: Sequence[str] = (),
        first_sync: str | None = None,
    ) -> None:
        self.conn = conn
        self.match_record = match_record
        # Keys an unlinked platform record is matched on (empty: CRM id only, as for files),
        # and the policy for the values that differ when one is (None: the platform's apply).
        self.match_on = tuple(k for k in match_on if k in MATCH_KEYS)
        self.first_sync = first_sync
        self.schema = schema
        self.run_id = run_id
        self.now = now
        self.connection = connection
        self.conflict_policy = conflict_policy
        self.resolve_conflict = resolve_conflict
        # contact id -> the remote id it is linked to on this connection
        self.linked_remote: dict[str, str] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_crm: dict[str, str] = {}
        self.by_phone: dict[str, str] = {}
        self.by_email: dict[str, set[str]] = {}  # emails are not unique in the hub
        self.custom: dict[str, dict[int, str]] = {}
        self.seen_crm: set[str] = set()
        self.changes = Changes()

    def load(self, batch: Iterable[Prepared]) -> None:
        """Fetch every contact the batch may match or collide with, in three queries."""
        ids: set[str] = set()
        crms: set[str] = set()
        phones: set[str] = set()
        emails: set[str] = set()
        for prepared in batch:
            ids.update(x for x in (prepared.hub_id, prepared.record.linked_contact_id) if x)
            if crm := prepared.set_value("crm_id"):
                crms.add(crm)
            if phone := prepared.set_value("phone"):
                phones.add(phone)
            email = prepared.set_value("email")
            if email and "email" in self.match_on and not prepared.record.linked_contact_id:
                emails.add(email)
        conditions = []
        if ids:
            conditions.append(_CONTACT.c.id.in_(ids))
        if crms:
            conditions.append(_CONTACT.c.crm_id.in_(crms))
        if phones:
            conditions.append(_CONTACT.c.phone.in_(phones))
        if emails:
            conditions.append(_CONTACT.c.email.in_(emails))
        if conditions:
            for row in self.conn.execute(select(_CONTACT).where(or_(*conditions))).mappings():
                self._remember(dict(row))
        if self.by_id:
            query = select(_CUSTOM_VALUE).where(_CUSTOM_VALUE.c.contact_id.in_(self.by_id))
            for row in self.conn.execute(query):
                self.custom.setdefault(row.contact_id, {})[row.field_id] = row.value
            if self.connection is not None:
                query = select(_LINK.c.contact_id, _LINK.c.remote_id).where(
                    _LINK.c.connection == self.connection, _LINK.c.contact_id.in_(self.by_id)
                )
                self.linked_remote.update(
                    {r.contact_id: r.remote_id for r in self.conn.execute(query)}
                )
        if crms:
            query = select(_RUN_KEY.c.key).where(
                _RUN_KEY.c.run_id == self.run_id,
                _RUN_KEY.c.kind == CRM_KIND,
                _RUN_KEY.c.key.in_(crms),
            )
            self.seen_crm.update(self.conn.execute(query).scalars())

    def _remember(self, contact: dict[str, Any]) -> None:
        self.by_id[contact["id"]] = contact
        if contact["crm_id"]:
            self.by_crm[contact["crm_id"]] = contact["id"]
        if contact["phone"]:
            self.by_phone[contact["phone"]] = contact["id"]
        if contact["email"]:
            self.by_email.setdefault(contact["email"], set()).add(contact["id"])

    def mark_crm_seen(self, crm: str) -> None:
        if crm not in self.seen_crm:
            self.seen_crm.add(crm)
            self.changes.run_keys.append({"run_id": self.run_id, "kind": CRM_KIND, "key": crm})


def plan_record(prepared: Prepared, state: BatchState) -> RecordPlan:
    """Apply the incoming rules to one prepared record, in the order the design gives them."""
    record = prepared.record
    problems = list(prepared.problems)
    skipped = _skipper(record, prepared, problems)

    crm = prepared.set_value("crm_id")
    # Rule 11: within a run or file the first record with a CRM id wins.
    if crm is not None:
        if crm in state.seen_crm:
            return skipped(
                Code.DUPLICATE_CRM_ID, "an earlier record in this run has this CRM id", "crm_id"
            )
        state.mark_crm_seen(crm)

    # Rule 3: the link, then the hub id, then the CRM id; otherwise a new contact.
    contact: dict[str, Any] | None = None
    if record.linked_contact_id:
        contact = state.by_id.get(record.linked_contact_id)
        if contact is None:
            # The link's contact is gone: whatever was skipped as unchanged is needed again.
            prepared.fields = [_unskip(p) for p in prepared.fields]
    if contact is None and prepared.hub_id is not None:
        contact = state.by_id.get(prepared.hub_id)
        if contact is None:
            return skipped(Code.UNKNOWN_CONTACT_ID, "no contact has this hub id", HUB_ID)
    matched: str | None = None
    if contact is None and crm is not None and crm in state.by_crm:
        contact = state.by_id[state.by_crm[crm]]
        matched = CRM_KIND
    unlinked = record.remote_id is not None and not record.linked_contact_id
    candidates: dict[str, dict[str, Any]] = {}
    if contact is None and unlinked and state.match_on:
        contact, matched, candidates = _match_by_keys(prepared, state)
    if state.match_record is not None and unlinked:
        chosen = _plugin_match(prepared, contact, state, candidates)
        if chosen is not contact:
            contact, candidates = chosen, {}
            matched = "hook" if chosen is not None else None
    if contact is None and len(candidates) > 1:
        ids = ", ".join(sorted(candidates))
        return skipped(
            Code.AMBIGUOUS_MATCH,
            f"matches {len(candidates)} hub contacts by {'/'.join(state.match_on)}: {ids}",
        )

    # Rule 7: test users are left alone, bad values and all.
    if contact is not None and contact["test_user"]:
        return RecordPlan(record, Outcome.IGNORED, contact["id"], prepared.fields, [])

    contact_id = contact["id"] if contact is not None else None
    # One contact, one record per connection: a second remote record that matches a contact
    # already linked elsewhere on the connection must not take it over.
    if contact_id is not None and record.remote_id is not None:
        linked = state.linked_remote.get(contact_id)
        if linked is not None and linked != record.remote_id:
            return skipped(
                Code.DUPLICATE_CRM_ID,
                "the matching contact is linked to another record of this platform",
                "crm_id",
            )
    # Rule 5: a phone or CRM id held by another contact skips the whole record.
    # (An incoming phone equal to the contact's previous phone is rule 6's case, not this one.)
    phone = prepared.set_value("phone")
    held_by_other = phone is not None and state.by_phone.get(phone, contact_id) != contact_id
    if held_by_other and (contact is None or phone != contact["previous_phone"]):
        return skipped(Code.DUPLICATE_CONTACT, "another contact has this phone", "phone")
    if crm is not None and state.by_crm.get(crm, contact_id) != contact_id:
        return skipped(Code.DUPLICATE_CRM_ID, "another contact has this CRM id", "crm_id")

    if contact is None:
        return _plan_create(prepared, state, problems)
    # A CRM id match applies the platform's values, as it always has (the id says the
    # platform's record is the one the hub was loaded from); a match by key or by a plugin
    # is a first exchange between two independent copies, settled by ``first_sync``.
    first = matched is not None and matched != CRM_KIND
    plan = _plan_update(prepared, contact, state, problems, first=first)
    if matched is not None and plan.outcome in (Outcome.UPDATED, Outcome.UNCHANGED):
        plan.matched = matched
        if record.remote_id is not None:
            state.linked_remote[contact["id"]] = record.remote_id
    return plan


MATCH_KEYS: Final = ("crm_id", "email", "phone")
"""The hub fields ``match_on`` may name."""


def _match_by_keys(
    prepared: Prepared, state: BatchState
) -> tuple[dict[str, Any] | None, str | None, dict[str, dict[str, Any]]]:
    """The contact an unlinked record is, by the instance's match keys (the CRM id was tried).

    Each key with a value finds the contacts holding it, leaving out those already linked to
    another record of this connection. One contact found in all: it is the one (siblings
    sharing a parent's email are told apart by the phone). Otherwise several candidates
    make the record ambiguous. Returns ``(contact, key, candidates)``.
    """
    remote_id = prepared.record.remote_id
    found: list[tuple[str, set[str]]] = []
    for key in state.match_on:
        value = prepared.set_value(key)
        if value is None or key == CRM_KIND:
            continue
        if key == "email":
            ids = set(state.by_email.get(value, ()))
        else:
            holder = state.by_phone.get(value)
            ids = {holder} if holder else set()
        ids = {i for i in ids if state.linked_remote.get(i, remote_id) == remote_id}
        if ids:
            found.append((key, ids))
    if not found:
        return None, None, {}
    union = set().union(*(ids for _, ids in found))
    agreed = set.intersection(*(ids for _, ids in found))
    if len(agreed) == 1:
        (chosen,) = agreed
        return state.by_id[chosen], found[0][0], {}
    return None, None, {i: state.by_id[i] for i in union}


def _unskip(plan: FieldPlan) -> FieldPlan:
    if plan.action is Action.SKIP and plan.reason == _UNCHANGED_REMOTE:
        return FieldPlan(plan.field, Action.SET, plan.value)
    return plan


def _skipper(record: IncomingRecord, prepared: Prepared, problems: list[Problem]) -> Any:
    def skipped(code: Code, message: str, field_name: str | None = None) -> RecordPlan:
        problems.append(Problem(code, message + "; record skipped", field_name))
        return RecordPlan(record, Outcome.SKIPPED, None, prepared.fields, problems)

    return skipped


def _plan_create(prepared: Prepared, state: BatchState, problems: list[Problem]) -> RecordPlan:
    record = prepared.record
    # Rule 4: a new contact needs a first name, a last name and a phone.
    missing = [name for name in REQUIRED_FOR_CREATE if prepared.set_value(name) is None]
    if missing:
        problems.append(
            Problem(
                Code.BLANK_REQUIRED_DATA,
                f"a new contact needs {', '.join(missing)}; record skipped",
                missing[0],
            )
        )
        return RecordPlan(record, Outcome.SKIPPED, None, prepared.fields, problems)

    contact_id = new_contact_id()
    stamp = state.now.isoformat()
    row: dict[str, Any] = {
        "id": contact_id,
        "crm_id": None,
        "enrollment_id": None,
        "first_name": None,
        "last_name": None,
        "preferred_name": None,
        "phone": None,
        "email": None,
        "archived": False,
        "test_user": False,
        "invalid_phone": False,
        "previous_phone": None,
        "created_at": state.now,
        "updated_at": state.now,
        "changed_at": {},
    }
    # Rule 10: the first sync of a record applies every mapped field. Values a link remembers
    # describe a contact the hub does not hold, so they must not drop any (rule 4 was checked
    # on all of them).
    plans = list(prepared.fields)
    for plan in plans:
        if plan.action is not Action.SET:
            continue
        if plan.field.startswith(CUSTOM_PREFIX):
            field_id = state.schema.custom[plan.field[len(CUSTOM_PREFIX) :]].id
            state.changes.custom_set[(contact_id, field_id)] = plan.value
        else:
            column, value = column_value(plan.field, plan)
            row[column] = value
        row["changed_at"][plan.field] = stamp
    state.changes.created[contact_id] = row
    state.changes.changed_fields[contact_id] = {p.field for p in plans if p.action is Action.SET}
    state._remember(row)
    if record.remote_id is not None:
        state.linked_remote[contact_id] = record.remote_id
    return RecordPlan(record, Outcome.CREATED, contact_id, plans, problems)


def _plan_update(
    prepared: Prepared,
    contact: dict[str, Any],
    state: BatchState,
    problems: list[Problem],
    *,
    first: bool = False,
) -> RecordPlan:
    record = prepared.record
    contact_id = contact["id"]
    custom = state.custom.setdefault(contact_id, {})
    plans: list[FieldPlan] = []
    explicit_archive = False
    for plan in prepared.fields:
        plan = _against_last_exchanged(plan, record)
        if plan.action in (Action.SET, Action.CLEAR):
            if plan.field in ("active", "archived"):
                explicit_archive = True
            plan = _against_current(plan, contact, custom, state.schema)
        if plan.action in (Action.SET, Action.CLEAR) and record.last_exchanged is not None:
            plan = _resolve_conflict(plan, record, contact, custom, state, problems)
        elif plan.action in (Action.SET, Action.CLEAR) and first and state.first_sync:
            plan = _first_exchange(plan, record, contact, custom, state, problems)
        if (
            plan.action is Action.SET
            and plan.field == "phone"
            and plan.value == contact.get("previous_phone")
        ):
            # Rule 6: don't undo a newer hub-side phone change; apply everything else.
            problems.append(
                Problem(Code.CONTACT_OUT_OF_SYNC, "phone equals the previous phone; kept", "phone")
            )
            plan = FieldPlan(
                plan.field,
                Action.SKIP,
                plan.value,
                code=Code.CONTACT_OUT_OF_SYNC,
                reason="previous phone",
            )
        plans.append(plan)

    # Rule 8: a record for an archived contact un-archives it, unless it says otherwise.
    if contact["archived"] and not explicit_archive:
        plans.append(FieldPlan("active", Action.SET, True, reason="record for archived contact"))

    changes = [p for p in plans if p.action in (Action.SET, Action.CLEAR)]
    if not changes:
        return RecordPlan(record, Outcome.UNCHANGED, contact_id, plans, problems)

    update = state.changes.created.get(contact_id) or state.changes.updated.setdefault(
        contact_id, {"id": contact_id}
    )
    stamp = state.now.isoformat()
    changed_at = dict(contact.get("changed_at") or {})
    for plan in changes:
        changed_at[plan.field] = stamp
        state.changes.touched(contact_id, plan.field)
        if plan.field.startswith(CUSTOM_PREFIX):
            field_id = state.schema.custom[plan.field[len(CUSTOM_PREFIX) :]].id
            key = (contact_id, field_id)
            if plan.action is Action.SET:
                custom[field_id] = plan.value
                state.changes.custom_set[key] = plan.value
                state.changes.custom_clear.discard(key)
            else:
                custom.pop(field_id, None)
                state.changes.custom_set.pop(key, None)
                state.changes.custom_clear.add(key)
            continue
        column, value = column_value(plan.field, plan)
        _reindex(state, contact, column, value)
        contact[column] = value
        update[column] = value
        if column == "phone":
            # A new or cleared number has not failed delivery yet.
            contact["invalid_phone"] = update["invalid_phone"] = False
    contact["changed_at"] = update["changed_at"] = changed_at
    contact["updated_at"] = update["updated_at"] = state.now
    return RecordPlan(record, Outcome.UPDATED, contact_id, plans, problems)


def _reindex(state: BatchState, contact: dict[str, Any], column: str, value: Any) -> None:
    index = state.by_phone if column == "phone" else state.by_crm if column == "crm_id" else None
    if index is None:
        return
    old = contact[column]
    if old is not None and index.get(old) == contact["id"]:
        del index[old]
    if value is not None:
        index[value] = contact["id"]


def _against_last_exchanged(plan: FieldPlan, record: IncomingRecord) -> FieldPlan:
    # Rule 10: a remote value equal to the last one exchanged is not applied again, so a value
    # cleared in the hub is not refilled by an unrelated remote edit.
    last = record.last_exchanged
    if last is None or plan.field not in last or plan.action not in (Action.SET, Action.CLEAR):
        return plan
    incoming = plan.value if plan.action is Action.SET else None
    if incoming == last[plan.field]:
        return FieldPlan(plan.field, Action.SKIP, plan.value, reason=_UNCHANGED_REMOTE)
    return plan


def _against_current(
    plan: FieldPlan, contact: Mapping[str, Any], custom: Mapping[int, str], schema: Schema
) -> FieldPlan:
    if plan.field.startswith(CUSTOM_PREFIX):
        field_id = schema.custom[plan.field[len(CUSTOM_PREFIX) :]].id
        current = custom.get(field_id)
    elif plan.field in DEFAULT_FIELDS:
        current = current_value(contact, plan.field)
    else:
        return plan
    incoming = plan.value if plan.action is Action.SET else None
    if plan.field == "active" and plan.action is Action.CLEAR:
        incoming = True
    if incoming == current:
        return FieldPlan(plan.field, Action.SKIP, plan.value, reason="unchanged")
    return plan


def _hub_value(
    plan: FieldPlan, contact: Mapping[str, Any], custom: Mapping[int, str], schema: Schema
) -> Any:
    if plan.field.startswith(CUSTOM_PREFIX):
        return custom.get(schema.custom[plan.field[len(CUSTOM_PREFIX) :]].id)
    return current_value(contact, plan.field)


def _resolve_conflict(
    plan: FieldPlan,
    record: IncomingRecord,
    contact: Mapping[str, Any],
    custom: Mapping[int, str],
    state: BatchState,
    problems: list[Problem],
) -> FieldPlan:
    """Both sides changed the field since the last exchange: the policy (or a plugin) picks.

    The platform changed it (``plan`` survived the last-exchanged check); the hub changed it
    too when its value differs from the last exchanged one as well.
    """
    last = record.last_exchanged or {}
    if plan.field not in last:
        return plan
    hub_value = _hub_value(plan, contact, custom, state.schema)
    if hub_value == last[plan.field]:
        return plan
    remote_value = plan.value if plan.action is Action.SET else None
    stamp = (contact.get("changed_at") or {}).get(plan.field)
    hub_time = datetime.fromisoformat(stamp) if stamp else None
    remote_time = record.modified_at or state.now  # no platform time: the time it was pulled
    winner = None
    if state.resolve_conflict is not None:
        winner = state.resolve_conflict(
            contact["id"],
            plan.field,
            hub_value,
            hub_time,
            remote_value,
            remote_time,
            state.conflict_policy,
        )
    if winner is None:
        if state.conflict_policy == "hub":
            winner = "hub"
        elif state.conflict_policy == "platform":
            winner = "remote"
        else:
            winner = "remote" if hub_time is None or remote_time > hub_time else "hub"
    kept = "the platform's" if str(winner) == "remote" else "the hub's"
    problems.append(
        Problem(
            Code.SYNC_CONFLICT,
            f"both sides changed {plan.field}; {kept} value kept ({state.conflict_policy})",
            plan.field,
        )
    )
    if str(winner) == "remote":
        return plan
    return FieldPlan(
        plan.field,
        Action.SKIP,
        plan.value,
        code=Code.SYNC_CONFLICT,
        reason="conflict: the hub's value wins",
    )


def _first_exchange(
    plan: FieldPlan,
    record: IncomingRecord,
    contact: Mapping[str, Any],
    custom: Mapping[int, str],
    state: BatchState,
    problems: list[Problem],
) -> FieldPlan:
    """A record just matched to an existing contact holds another value than the hub: the
    first-exchange policy (``first_sync``, or a ``resolve_conflict`` plugin) picks the value
    both sides keep. A field blank in the hub is simply filled; one blank on the platform
    is sent by the push that follows."""
    hub_value = _hub_value(plan, contact, custom, state.schema)
    if hub_value is None:
        return plan
    policy = state.first_sync or "hub"
    stamp = (contact.get("changed_at") or {}).get(plan.field)
    hub_time = datetime.fromisoformat(stamp) if stamp else contact.get("updated_at")
    remote_time = record.modified_at or state.now
    remote_value = plan.value if plan.action is Action.SET else None
    winner = None
    if state.resolve_conflict is not None:
        winner = state.resolve_conflict(
            contact["id"], plan.field, hub_value, hub_time, remote_value, remote_time, policy
        )
    if winner is None:
        winner = _policy_winner(policy, hub_time, remote_time)
    kept = "the platform's" if str(winner) == "remote" else "the hub's"
    problems.append(
        Problem(
            Code.SYNC_CONFLICT,
            f"first exchange: the sides differ on {plan.field}; {kept} value kept "
            f"(first_sync = {policy})",
            plan.field,
        )
    )
    if str(winner) == "remote":
        return plan
    return FieldPlan(
        plan.field, Action.SKIP, plan.value, code=Code.SYNC_CONFLICT, reason=HUB_WON_FIRST
    )


HUB_WON_FIRST: Final = "first exchange: the hub's value wins"
"""The reason of a field the first exchange keeps from the hub: the push sends it."""


def _policy_winner(policy: str, hub_time: datetime | None, remote_time: datetime) -> str:
    """``"hub"`` or ``"remote"`` by a policy; ``newest`` compares the change times (a hub
    value with no time loses: the platform's dated one is the better evidence)."""
    if policy == "hub":
        return "hub"
    if policy == "platform":
        return "remote"
    if hub_time is not None and hub_time.tzinfo is None:
        hub_time = hub_time.replace(tzinfo=remote_time.tzinfo)
    return "remote" if hub_time is None or remote_time > hub_time else "hub"


def _plugin_match(
    prepared: Prepared,
    contact: dict[str, Any] | None,
    state: BatchState,
    found: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Let a ``match_record`` plugin choose among the contacts the default rules found: the
    default match, the contacts the match keys found, and the holder of the record's phone."""
    candidates: list[dict[str, Any]] = [contact] if contact is not None else []
    candidates += [c for c in (found or {}).values() if c not in candidates]
    phone_holder = state.by_phone.get(prepared.set_value("phone") or "")
    if phone_holder is not None and state.by_id[phone_holder] not in candidates:
        candidates.append(state.by_id[phone_holder])
    hub_fields = {p.field: p.value for p in prepared.fields if p.action is Action.SET}
    choice = state.match_record(  # type: ignore[misc]
        prepared.record.raw, hub_fields, [dict(c) for c in candidates]
    )
    if choice is None:
        return contact
    if choice is NO_MATCH:
        return None
    chosen = state.by_id.get(str(choice))
    # Only a candidate may be chosen: anything else would bypass the uniqueness rules.
    return chosen if chosen in candidates else contact
