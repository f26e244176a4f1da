"""``contactsync check``: prove an instance's connector works and its mapping fits the platform.

The mapping must also carry what creating a record needs, each way (:func:`missing_mappings`):
a pulling instance maps the hub's first name, last name and phone, without which every new
record is skipped (``blank-required-data-in-record``); a pushing instance that may create
maps what the platform needs to create (the connector's ``required_mappings`` and the
``required`` fields of its catalogue), without which every new contact is refused
(``missing-remote-required-field``). Loading does not refuse such a file: the instance still
updates the records it links, and every record it cannot create gets its own sync-log row,
so it never fails silently. ``check`` is where the gap is named before the first sync.

A check runs the connector the way a cycle would: with the connection's lease held and the
connector state the daemon keeps (a refresh token the platform rotated lives there, not in
config). Without the state a check could fail on a stale token, or rotate it and leave the
daemon holding a dead one; without the lease it could race a running cycle for that token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update

from daemon.config.instances import Direction, Instance, check_catalogue
from daemon.engine.mapping import Mapper, MappingError, Transform
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger, redact_text
from daemon.hub import lease
from daemon.hub.database import insert_ignore
from daemon.hub.fields import REQUIRED_FOR_CREATE
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.connector import (
    Connector,
    ConnectorContext,
    ConnectorError,
    FieldGroup,
    RemoteField,
    RequiredMappings,
)
from daemon.kit.exporter import is_exporter

log = get_logger("contactsync.checks")
_STATE = InstanceState.__table__
LEASE_WAIT_SECONDS = 10.0


@dataclass
class CheckResult:
    """How an instance's check went: each problem with its code, and the catalogue size."""

    instance: str
    problems: list[dict[str, Any]] = field(default_factory=list)
    remote_fields: int | None = None  # how many fields describe() reported

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, code: Code | None, message: str) -> None:
        """Note a problem; the message is redacted of every registered secret."""
        self.problems.append({"code": str(code) if code else None, "message": redact_text(message)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "ok": self.ok,
            "problems": list(self.problems),
            "remote_fields": self.remote_fields,
        }


def check_instance(
    db: Engine,
    instance: Instance,
    transforms: Mapping[str, Transform],
    *,
    owner: str | None = None,
    wait: float = LEASE_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """Check one valid instance: its transforms, the connector's capabilities against the
    instance's direction, then ``check()``, ``describe()`` and the mapping against the
    catalogue. Never raises for a connector's failure; the connector is always closed."""
    result = CheckResult(instance.name)
    try:
        Mapper(instance, transforms)
    except MappingError as exc:
        result.problem(Code.CONFIG_INVALID, str(exc))
    capabilities = instance.connector_class.capabilities
    # An exporter runs export cycles only, whatever its direction says.
    exporter = is_exporter(instance.connector_class)
    if instance.direction.pulls and not capabilities.pull and not exporter:
        result.problem(Code.CONFIG_INVALID, f"{instance.config.type} cannot pull; make it outgoing")
    if instance.direction.pushes and not capabilities.push and not exporter:
        result.problem(Code.CONFIG_INVALID, f"{instance.config.type} cannot push; make it incoming")
    # Before the network: what the declarations say holds even when the platform is down.
    for problem in missing_mappings(instance):
        result.problem(Code.CONFIG_INVALID, problem)
    owner = owner or lease.owner_id()
    if not _acquire(db, instance.connection, owner, wait, sleep):
        result.problem(
            None,
            f"connection {instance.connection!r} is busy: another run holds its lease; "
            "try again when it ends",
        )
        return result
    try:
        _run_connector(db, instance, result)
    finally:
        lease.release(db, instance.connection, owner)
    return result


def missing_mappings(instance: Instance) -> list[str]:
    """What the instance leaves unmapped that creating a record needs, by the declarations
    alone (no network): one message per direction naming the direction and the fields, none
    when nothing is missing.

    Incoming: the hub's :data:`~daemon.hub.fields.REQUIRED_FOR_CREATE` and the connector's
    declared ``incoming`` hub fields. Outgoing, for an instance that may create
    (``create_remote`` and ``capabilities.create``): the declared ``outgoing`` remote fields.
    An exporter maps no contacts and needs nothing.
    """
    connector = instance.connector_class
    if is_exporter(connector):
        return []
    needs = connector.required_mappings_for(instance.settings)
    kind = instance.config.type
    problems = []
    if instance.direction.pulls:
        mapped = {f.hub for f in instance.mapped(Direction.INCOMING)}
        hub_missing = RequiredMappings.missing(REQUIRED_FOR_CREATE, mapped)
        if hub_missing:
            problems.append(
                f"incoming: hub field {_names(hub_missing)} not mapped; the hub needs "
                f"{', '.join(REQUIRED_FOR_CREATE)} to create a contact, so every new record "
                f"would be skipped ({Code.BLANK_REQUIRED_DATA}): add [[fields]] for them"
            )
        own = [g for g in RequiredMappings.missing(needs.incoming, mapped) if g not in hub_missing]
        if own:
            problems.append(
                f"incoming: hub field {_names(own)} not mapped; {kind} needs it: add "
                "[[fields]] for it"
            )
    problems += _outgoing_problem(instance, needs.outgoing)
    return problems


def missing_catalogue_mappings(instance: Instance, catalogue: Sequence[RemoteField]) -> list[str]:
    """The same for the ``required`` fields of the platform's catalogue (``describe()``)
    that the connector's declaration does not already name: an org's own required field
    (a Salesforce custom field that is not nillable) is caught too."""
    if is_exporter(instance.connector_class):
        return []
    declared = instance.connector_class.required_mappings_for(instance.settings).outgoing
    named = {n for g in declared for n in ((g,) if isinstance(g, str) else g)}
    return _outgoing_problem(
        instance, [f.name for f in catalogue if f.required and f.name not in named]
    )


def _outgoing_problem(instance: Instance, groups: Sequence[FieldGroup]) -> list[str]:
    """One message for the ``groups`` no outgoing field map feeds, if the instance may
    create records on the platform."""
    creates = instance.config.create_remote and instance.connector_class.capabilities.create
    if not (instance.direction.pushes and creates):
        return []
    mapped = {f.remote for f in instance.mapped(Direction.OUTGOING)}
    missing = list(dict.fromkeys(RequiredMappings.missing(groups, mapped)))
    if not missing:
        return []
    kind = instance.config.type
    return [
        f"outgoing: nothing mapped to {kind}'s {_names(missing)}; {kind} needs it to create a "
        f"record, so every new contact would be refused ({Code.MISSING_REMOTE_REQUIRED_FIELD}): "
        "map a hub field to it, or set create_remote = false"
    ]


def _names(groups: Sequence[tuple[str, ...]]) -> str:
    """``first_name, phone`` or ``one of (email, firstname)``: a group is any one of its
    fields."""
    return ", ".join(g[0] if len(g) == 1 else f"one of ({', '.join(g)})" for g in groups)


def _acquire(
    db: Engine, name: str, owner: str, wait: float, sleep: Callable[[float], None]
) -> bool:
    # A push cycle holds the lease for seconds; waiting a little beats failing the check.
    deadline = time.monotonic() + wait
    while not lease.acquire(db, name, owner, utcnow()):
        if time.monotonic() >= deadline:
            return False
        sleep(0.5)
    return True


def _run_connector(db: Engine, instance: Instance, result: CheckResult) -> None:
    state = _load_state(db, instance.name)
    before = dict(state)
    connector: Connector | None = None
    try:
        connector = instance.connector_class(
            instance.settings, ConnectorContext(instance.name, state)
        )
        connector.check()
        catalogue = connector.describe()
        result.remote_fields = len(catalogue)
        for problem in check_catalogue(instance, catalogue):
            result.problem(Code.CONFIG_INVALID, problem)
        # The catalogue's own required fields, beyond the declared ones reported before.
        for problem in missing_catalogue_mappings(instance, catalogue):
            result.problem(Code.CONFIG_INVALID, problem)
    except ConnectorError as exc:
        result.problem(exc.code, exc.message)
    except Exception as exc:  # a plugin's bug is a finding, not a crash of the CLI
        log.exception("check_crashed", instance=instance.name)
        result.problem(Code.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        if connector is not None:
            try:
                connector.close()
            except Exception:
                log.exception("connector_close_failed", instance=instance.name)
        if state != before:
            _save_state(db, instance.name, state)


def _load_state(db: Engine, name: str) -> dict[str, Any]:
    with db.connect() as conn:
        value = conn.execute(
            select(_STATE.c.connector_state).where(_STATE.c.instance == name)
        ).scalar()
    return dict(value or {})


def _save_state(db: Engine, name: str, state: dict[str, Any]) -> None:
    with db.begin() as conn:
        conn.execute(
            insert_ignore(_STATE, conn.dialect.name), [{"instance": name, "connector_state": {}}]
        )
        conn.execute(
            update(_STATE).where(_STATE.c.instance == name).values(connector_state=dict(state))
        )
