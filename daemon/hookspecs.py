"""The plugin contract: every hook a contactsync plugin may implement.

A plugin is a module (or any object) with functions decorated ``@hookimpl`` and named after the
hooks below, published under the ``contactsync`` entry-point group::

    [project.entry-points.contactsync]
    hubspot = "contactsync_hubspot"

The built-in plugins register through that same group, so they use nothing a third party
cannot. An implementation may accept only the arguments it needs, which is also why new
arguments can be added to a hook without breaking existing plugins.

Per-instance pulls and pushes are methods of the connector class, not hooks: one instance's
work never fans out to every plugin.

``HOOKSPEC_VERSION`` changes when this contract does: the minor number when a hook or an
argument is added (old plugins keep working), the major number when one is removed or changes
meaning.

History: 1.0 the first contract; 1.1 added ``register_simulators``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pluggy import HookimplMarker, HookspecMarker

from daemon.hub.incoming import NO_MATCH, NoMatch

if TYPE_CHECKING:
    import click

    from daemon.kit.connector import Connector, RemoteRecord
    from daemon.kit.simkit import Simulator

__all__ = ["HOOKSPEC_VERSION", "NO_MATCH", "PROJECT", "NoMatch", "Winner", "hookimpl", "hookspec"]

PROJECT: Final = "contactsync"
HOOKSPEC_VERSION: Final = "1.1"  # 1.1 added register_simulators

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

    The class must subclass :class:`daemon.kit.connector.Connector` and set a ``type``; instance
    files name that type (``type = "hubspot"``). Two plugins claiming one type is an error
    that names both distributions, so pick a distinctive name.
    """


@hookspec
def register_transforms(
    register: Callable[[str, Callable[[Any], Any], Callable[[Any], Any]], None],
) -> None:
    """Register value transforms: call ``register(name, to_hub, to_remote)`` for each.

    A mapping entry names one (``transform = "year"``) to convert a value both ways.
    ``to_hub`` turns the platform's value into the hub's form and ``to_remote`` the hub's
    canonical value into the platform's; each raises ``ValueError`` on a value it cannot
    convert, which rejects that field only. Blank values and ``UNSET`` never reach them.
    """


@hookspec
def register_simulators(register: Callable[[str, Callable[..., Simulator]], None]) -> None:
    """Register platform simulators: call ``register(name, factory)`` once per simulator.

    ``factory(contacts=, latency=, error_rate=, seed=)`` (an int, seconds, a probability and
    an int) returns a :class:`daemon.kit.simkit.Simulator`, not yet started; a subclass of it is
    such a factory. ``contactsync simulate NAME`` starts it, and the contract tests and
    benchmarks use it. Name it after the connector type it fakes. Two plugins claiming one
    name is an error, as for connectors. Added in hookspec version 1.1.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``contactsync`` command line: ``@cli.command()`` inside the hook."""


# --- lifecycle and observers ------------------------------------------------------------------
# Observers are told, not asked: their return value is ignored and an exception they raise is
# logged, never allowed to stop a sync.


@hookspec
def startup(settings: Any) -> None:
    """The daemon has loaded its settings and is about to schedule the first cycles.

    ``settings`` is the daemon's :class:`daemon.config.settings.Settings`.
    """


@hookspec
def shutdown(reason: str) -> None:
    """The daemon is stopping (``reason``: ``"signal"``, ``"error"`` or ``"exit"``).

    Keep it short: the service manager's grace time is running.
    """


@hookspec
def instance_configured(instance: str, connector_type: str, new: bool) -> None:
    """An instance file was loaded: ``new`` for a first load, otherwise a changed one."""


@hookspec
def instance_removed(instance: str, connector_type: str) -> None:
    """An instance file was removed; its schedule is gone and its links are kept."""


@hookspec
def sync_started(instance: str, run_id: str, direction: str) -> None:
    """A pull (``direction="incoming"``) or push (``"outgoing"``) cycle started."""


@hookspec
def sync_finished(
    instance: str,
    run_id: str,
    direction: str,
    counts: Mapping[str, int],
    duration_seconds: float,
) -> None:
    """A cycle ended; ``counts`` holds the outcome totals (``created``, ``updated`` …).

    A cycle that rejected some records still finishes; only a failed cycle calls
    ``sync_error`` instead.
    """


@hookspec
def sync_error(
    instance: str,
    run_id: str,
    direction: str,
    error: BaseException,
    code: str,
) -> None:
    """A cycle stopped on ``error``; ``code`` is its dictionary code (``remote-auth-failed`` …).

    The error's message has already been redacted of registered secrets when logged; do not
    send its attributes anywhere without the same care.
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

    ``hub_fields`` are the record's mapped values in canonical hub form; ``candidates`` are
    the contacts the default matcher found (each a mapping with ``id``, ``crm_id``, ``phone``,
    ``email`` …). Return a candidate's ``id`` to link it, :data:`NO_MATCH` to treat the record
    as a new contact, or ``None`` to leave the decision to the default rules. The first plugin
    that returns something other than ``None`` decides.
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

    Values are canonical hub-form values; times are aware UTC (``None`` where a platform has
    none). ``policy`` is the instance's configured policy. Return :class:`Winner` (``"hub"``
    or ``"remote"``), or ``None`` to apply the policy. The first non-``None`` answer decides.
    """
