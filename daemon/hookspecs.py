"""The plugin contract: every hook a contactsync plugin may implement.

A plugin is a module (or any object) with functions decorated ``@hookimpl`` and named after the
hooks below, published under the ``contactsync`` entry-point group::

    [project.entry-points.contactsync]
    hubspot = "contactsync_hubspot"

The built-in plugins register through that same group, so they use nothing a third party
cannot. An implementation may accept only the arguments it needs, which is also why new
arguments can be added to a hook without breaking existing plugins.

Per-instance pulls and pushes are methods of the connector class, not hooks: one instance's
work never fans out to every plugin. So are change hints (SDK 1.3): a webhook is verified by the
instance's connector class (``Connector.receive_webhook``, ``capabilities.webhooks``) and a
change stream is held open by its connector (``Connector.stream``, ``capabilities.streams``);
a hook would hand one platform's signed request to every plugin. Both only name records: the
daemon reads them through ``Connector.read`` and the ordinary pull path (see
:mod:`daemon.kit.changes`). The observers see the targeted pull as a ``pull`` whose
``counts`` carry ``hinted``, the number of ids it was woken for.

``HOOKSPEC_VERSION`` changes when this contract does: the minor number when a hook or an
argument is added or a doc is corrected to what the daemon already did (old plugins keep
working), the major number when one is removed or changes meaning.

History:

- 1.0: the first contract.
- 1.1: added ``register_simulators``.
- 1.2: the observer hooks say what the engine has always sent. ``direction`` is a
  :class:`CycleKind` (``pull``, ``push``, ``deletes``, ``export``), not ``incoming`` or
  ``outgoing``; ``sync_error``'s ``error`` is the redacted message (a ``str``), not the
  exception; a failed cycle calls ``sync_error`` and then ``sync_finished``, not one instead of
  the other. ``sync_finished`` gained ``outcome``. The argument keeps its name ``direction``
  so that every 1.x observer keeps working (renaming it to ``kind`` would break a hookimpl
  that names it, a 2.0 change for a doc fix).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pluggy import HookimplMarker, HookspecMarker

from daemon.hub.incoming import NO_MATCH, NoMatch
from daemon.hub.runs import CycleKind

if TYPE_CHECKING:
    import click

    from daemon.kit.connector import Connector, RemoteRecord
    from daemon.kit.simkit import Simulator

__all__ = [
    "HOOKSPEC_VERSION",
    "NO_MATCH",
    "PROJECT",
    "CycleKind",
    "NoMatch",
    "Winner",
    "hookimpl",
    "hookspec",
]

PROJECT: Final = "contactsync"
HOOKSPEC_VERSION: Final = "1.2"  # see the History in the module docstring

hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


class Winner(StrEnum):
    """What ``resolve_conflict`` returns: the side whose value is kept."""

    HUB = "hub"
    REMOTE = "remote"


# --- registration -----------------------------------------------------------------------------


@hookspec
def register_connectors(register: Callable[[type[Connector]], None]) -> None:
    """Register connector classes: call ``register(ConnectorClass)`` once per class.

    Called once, when the plugin manager is built.

    :param register: Takes a class that subclasses :class:`daemon.kit.connector.Connector`
        and sets a ``type``; instance files name that type (``type = "hubspot"``). Two plugins
        claiming one type is an error that names both distributions, so pick a distinctive
        name.

    .. versionadded:: 1.0
    """


@hookspec
def register_transforms(
    register: Callable[[str, Callable[[Any], Any], Callable[[Any], Any]], None],
) -> None:
    """Register value transforms: call ``register(name, to_hub, to_remote)`` for each.

    A mapping entry names one (``transform = "year"``) to convert a value both ways.

    :param register: Takes the transform's ``name``, ``to_hub`` (the platform's value to the
        hub's form) and ``to_remote`` (the hub's canonical value to the platform's). Each
        function raises ``ValueError`` on a value it cannot convert, which rejects that field
        only. Blank values and ``UNSET`` never reach them.

    .. versionadded:: 1.0
    """


@hookspec
def register_simulators(register: Callable[[str, Callable[..., Simulator]], None]) -> None:
    """Register platform simulators: call ``register(name, factory)`` once per simulator.

    ``contactsync simulate NAME`` starts one, and the contract tests and benchmarks use them.

    :param register: Takes a ``name`` (the connector type it fakes) and a ``factory``:
        ``factory(contacts=, latency=, error_rate=, seed=)`` (an int, seconds, a probability
        and an int) returns a :class:`daemon.kit.simkit.Simulator`, not yet started; a
        subclass of it is such a factory. Two plugins claiming one name is an error, as for
        connectors.

    .. versionadded:: 1.1
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``contactsync`` command line: ``@cli.command()`` inside the hook.

    :param cli: The ``contactsync`` :class:`click.Group`.

    .. versionadded:: 1.0
    """


# --- lifecycle and observers ------------------------------------------------------------------
# Observers are told, not asked: their return value is ignored and an exception they raise is
# logged, never allowed to stop a sync or the other observers (``daemon.engine.registry.notify``).
# tests/test_hook_contract.py holds every call the daemon makes to these signatures and values.


@hookspec
def startup(settings: Any) -> None:
    """The daemon has loaded its settings and is about to schedule the first cycles.

    Called once per daemon process, before any ``instance_configured``.

    :param settings: The daemon's :class:`daemon.config.settings.Settings`.

    .. versionadded:: 1.0
    """


@hookspec
def shutdown(reason: str) -> None:
    """The daemon is stopping, after its running cycles ended or its grace time ran out.

    Keep it short: the service manager's grace time is running.

    :param reason: ``"signal"`` (a stop signal: SIGTERM or SIGINT) or ``"error"`` (the
        daemon's main loop crashed and it exits with status 1).

    .. versionadded:: 1.0
    """


@hookspec
def instance_configured(instance: str, connector_type: str, new: bool) -> None:
    """An instance file was loaded and the instance (re)scheduled.

    :param instance: The instance's name (its file's name without ``.toml``).
    :param connector_type: The file's ``type``, the connector type it uses.
    :param new: ``True`` for a first load (at startup or a file added since), ``False`` for a
        changed file.

    .. versionadded:: 1.0
    """


@hookspec
def instance_removed(instance: str, connector_type: str) -> None:
    """An instance file was removed; its schedule is gone and its links are kept.

    :param instance: The removed instance's name.
    :param connector_type: The type it had (``""`` if the daemon never loaded it).

    .. versionadded:: 1.0
    """


# A cycle that runs calls sync_started, then, if it failed, sync_error, then always
# sync_finished. A cycle that never starts (the connection is busy, the instance backs off)
# calls none of them.


@hookspec
def sync_started(instance: str, run_id: str, direction: CycleKind) -> None:
    """A cycle of ``instance`` started: it holds the connection's lease, and is about to
    build the connector and record the run.

    :param instance: The instance's name.
    :param run_id: The run's id, on every log line and sync-log row of the cycle
        (``contactsync log --run ID``).
    :param direction: What the cycle does, a :class:`CycleKind`: ``"pull"``, ``"push"``,
        ``"deletes"`` (a deletion scan) or ``"export"``. A ``StrEnum``, so comparing it with
        those strings works. (Before hookspec 1.2 this said ``"incoming"``/``"outgoing"``,
        which the engine never sent.)

    .. versionadded:: 1.0
    .. versionchanged:: 1.2 ``direction`` documented as the :class:`CycleKind` it always was.
    """


@hookspec
def sync_finished(
    instance: str,
    run_id: str,
    direction: CycleKind,
    counts: Mapping[str, int],
    duration_seconds: float,
    outcome: str,
) -> None:
    """A cycle that started has ended, whatever its outcome; always the cycle's last call.

    A failed cycle calls ``sync_error`` first and then this, with ``outcome="failed"``. A dry
    run (``contactsync sync --dry-run``) calls ``sync_started`` and this too, but never
    ``sync_error``: it records nothing.

    :param instance: The instance's name.
    :param run_id: The run's id, as given to ``sync_started``.
    :param direction: The cycle's :class:`CycleKind`, as given to ``sync_started``.
    :param counts: The cycle's totals by outcome (``created``, ``updated``, ``skipped``,
        ``sent``, ``messages`` …; str to int, only the non-zero ones). A cycle that failed or
        was interrupted may report none of the work it committed before stopping: the sync
        log has that.
    :param duration_seconds: Wall time from the start of the cycle, in seconds.
    :param outcome: ``"ok"`` (a cycle that rejected some records is still ``ok``),
        ``"failed"`` (``sync_error`` was called just before, unless a dry run) or
        ``"interrupted"`` (cancelled by a shutdown or a removed instance, or the lease was
        lost to another process).

    .. versionadded:: 1.0
    .. versionchanged:: 1.2 ``outcome`` added.
    """


@hookspec
def sync_error(
    instance: str,
    run_id: str,
    direction: CycleKind,
    error: str,
    code: str,
) -> None:
    """A cycle failed; ``sync_finished`` (``outcome="failed"``) follows at once.

    Called after the failure was recorded in the sync log and before the run is closed.
    An interrupted cycle (cancelled, lease lost) is not a failure and does not call it.

    :param instance: The instance's name.
    :param run_id: The run's id, as given to ``sync_started``.
    :param direction: The cycle's :class:`CycleKind`, as given to ``sync_started``.
    :param error: The error's message, the text the sync log and ``contactsync log`` show,
        already redacted of registered secrets (a plugin's own crash reads
        ``"TypeName: message"``). A ``str``, not the exception: the cycle is over.
    :param code: Its dictionary code (``remote-auth-failed``, ``config-invalid``,
        ``internal-error`` …; ``contactsync errors CODE`` explains one).

    .. versionadded:: 1.0
    .. versionchanged:: 1.2 ``error`` documented as the ``str`` it always was.
    """


# --- decisions a plugin may take over ---------------------------------------------------------


@hookspec(firstresult=True)
def match_record(
    instance: str,
    record: RemoteRecord,
    hub_fields: Mapping[str, Any],
    candidates: Sequence[Mapping[str, Any]],
) -> str | NoMatch | None:
    """Choose which hub contact an unlinked remote record belongs to.

    Stops at first non-None result: the first plugin that returns something other than
    ``None`` decides.

    :param instance: The pulling instance's name.
    :param record: The remote record (:class:`daemon.kit.connector.RemoteRecord`).
    :param hub_fields: The record's mapped values in canonical hub form.
    :param candidates: The contacts the default matcher found (the CRM id's contact, the
        contacts the instance's ``match_on`` keys found, the holder of the record's phone),
        each a mapping with ``id``, ``crm_id``, ``phone``, ``email`` …. Choosing one among
        several settles what would otherwise be ``ambiguous-match``; the values that differ
        are then settled by the instance's ``first_sync``.
    :return: A candidate's ``id`` to link it, :data:`NO_MATCH` to treat the record as a new
        contact, or ``None`` to leave the decision to the default rules.

    .. versionadded:: 1.0
    """


@hookspec(firstresult=True)
def resolve_conflict(
    instance: str,
    contact_id: str,
    field: str,
    hub_value: Any,
    hub_changed_at: datetime | None,
    remote_value: Any,
    remote_modified_at: datetime | None,
    policy: str,
) -> Winner | None:
    """Decide a field that both sides changed since the last exchange.

    Stops at first non-None result: the first non-``None`` answer decides.

    :param instance: The instance's name.
    :param contact_id: The hub contact's id.
    :param field: The hub field's name.
    :param hub_value: The hub's value, in canonical hub form.
    :param hub_changed_at: When the hub's value changed, aware UTC (``None`` if unknown).
    :param remote_value: The platform's value, in canonical hub form.
    :param remote_modified_at: When the platform's record changed, aware UTC (``None`` where
        the platform has no such time).
    :param policy: The instance's configured ``conflict`` policy.
    :return: A :class:`Winner` (``"hub"`` or ``"remote"``), or ``None`` to apply the policy.

    .. versionadded:: 1.0
    """
