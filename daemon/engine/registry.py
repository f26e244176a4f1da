"""The plugin manager: load the ``contactsync`` entry points and collect what they register.

Built-in plugins are published under the same entry-point group as third-party ones (see
``pyproject.toml``), so a built-in has no privilege a third party lacks and can be blocked the
same way: ``CONTACTSYNC_BLOCK_PLUGINS="transforms,hubspot"``. A name is an entry-point name
(what ``contactsync plugins`` shows) or a distribution name.

Mistakes surface when the manager is built, not halfway through a sync: a hook name that no
spec knows (``check_pending``), a plugin that fails to import, two plugins sharing an
entry-point name, and two connectors (or simulators) claiming one name are all a
:class:`PluginError` that names the distributions involved.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from daemon import hookspecs
from daemon.foundation.dictionary import Code
from daemon.foundation.log import get_logger
from daemon.hub.fields import UNSET
from daemon.kit.connector import Connector

ENTRY_POINT_GROUP = hookspecs.PROJECT
BLOCK_ENV = "CONTACTSYNC_BLOCK_PLUGINS"
PLUGINS_ENV = "CONTACTSYNC_PLUGINS"

TransformFunction = Callable[[Any], Any]
SimulatorFactory = Callable[..., Any]  # (contacts=, latency=, error_rate=, seed=) -> Simulator

log = get_logger("contactsync.plugins")


class PluginError(Exception):
    """The installed plugins cannot work together; the message names who is involved."""

    code = Code.CONFIG_INVALID


# --- the manager ------------------------------------------------------------------------------


def blocked_from_env(environ: Mapping[str, str] | None = None) -> set[str]:
    """The plugin names listed, comma-separated, in ``CONTACTSYNC_BLOCK_PLUGINS``."""
    raw = (os.environ if environ is None else environ).get(BLOCK_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager(
    blocked: set[str] | None = None,
    entry_points: bool = True,
    *,
    plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, the entry-point plugins and ``plugins`` registered.

    ``blocked`` adds to the names in ``CONTACTSYNC_BLOCK_PLUGINS``. ``entry_points=False``
    gives a bare manager (tests register their own plugins through ``plugins``).
    Raises :class:`PluginError` when a plugin cannot be loaded or implements an unknown hook.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    names = set(blocked or ()) | blocked_from_env()
    for name in names:
        pm.set_blocked(name)
    if entry_points:
        _load_entry_points(pm, names)
        for module_name in modules_from_env():
            if not pm.is_blocked(module_name):
                register_plugin(pm, _import_plugin(module_name), name=module_name)
    for plugin in plugins:
        register_plugin(pm, plugin)
    check_plugins(pm)
    return pm


def modules_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Plugin modules named, comma-separated, in ``CONTACTSYNC_PLUGINS``: a plugin under
    development, loaded by import path without being installed."""
    raw = (os.environ if environ is None else environ).get(PLUGINS_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def _import_plugin(module_name: str) -> object:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        # The usual newcomer's case: the module sits in a folder Python does not search.
        hint = (
            "; it must be importable: run from its folder with PYTHONPATH=. (or pip install "
            "-e its project)"
            if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]
            else ""
        )
        raise PluginError(
            f"plugin module {module_name!r} from {PLUGINS_ENV} could not be imported: "
            f"{type(exc).__name__}: {exc}{hint}"
        ) from exc


def register_plugin(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> None:
    """Register ``plugin`` (a module or an object with ``@hookimpl`` methods) by hand.

    Without ``name``, a module goes by its module name and an object by its class name
    (``Name-2`` for a second one), so messages never show pluggy's numeric default.
    """
    if name is None and not hasattr(plugin, "__name__"):
        base = type(plugin).__name__
        name, n = base, 1
        while name in dict(pm.list_name_plugin()):
            n += 1
            name = f"{base}-{n}"
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{plugin_label(pm, exc.plugin)}: {exc}") from exc
    except ValueError as exc:  # pluggy: that name or object is already registered
        raise PluginError(f"cannot register {name or plugin!r}: {exc}") from exc


def check_plugins(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()``, with the plugin's distribution and a likely spelling named."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        message = f"{plugin_label(pm, exc.plugin)}: {exc}"
        unknown = re.search(r"unknown hook '([^']+)'", str(exc))
        if unknown:
            known = [n for n in vars(pm.hook) if not n.startswith("_") and _has_spec(pm, n)]
            close = difflib.get_close_matches(unknown.group(1), known, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            message += f" (hookspec version {hookspecs.HOOKSPEC_VERSION})"
        raise PluginError(message) from exc


def _has_spec(pm: pluggy.PluginManager, name: str) -> bool:
    caller = getattr(pm.hook, name, None)
    return caller is not None and caller.has_spec()


def _normalise(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    blocked_dists = {_normalise(name) for name in blocked}
    owners: dict[str, dict[str, str]] = {}  # entry-point name -> normalised dist -> shown name
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                owners.setdefault(ep.name, {})[_normalise(dist_name)] = (
                    f"{dist_name} {dist.version}"
                )
    for ep_name, dists in sorted(owners.items()):
        if blocked_dists & set(dists):
            pm.set_blocked(ep_name)
        if pm.is_blocked(ep_name):
            continue
        # pluggy would silently load only the first of two plugins sharing a name.
        if len(dists) > 1:
            raise PluginError(
                f"plugin name {ep_name!r} is claimed by several distributions: "
                f"{', '.join(sorted(dists.values()))}; uninstall all but one (blocking "
                f"the name, {BLOCK_ENV}={ep_name}, blocks them all)"
            )
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep_name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {ep_name!r} ({_only(dists)}): {exc}") from exc
        except Exception as exc:  # an import error in someone else's code
            raise PluginError(
                f"plugin {ep_name!r} ({_only(dists)}) could not be loaded: "
                f"{type(exc).__name__}: {exc}; block it with {BLOCK_ENV}={ep_name}"
            ) from exc


def _only(dists: Mapping[str, str]) -> str:
    return next(iter(dists.values()))


def plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    """How messages name a plugin: ``"dist 1.2 (plugin 'name')"``, or
    ``"(not installed: name)"`` for one registered by hand."""
    name = pm.get_name(plugin) or pm.get_canonical_name(plugin)
    dist = _distributions(pm).get(id(plugin))
    if dist is None:
        return f"(not installed: {name})"
    return f"{dist[0]} {dist[1]} (plugin {name!r})"


def _distributions(pm: pluggy.PluginManager) -> dict[int, tuple[str, str]]:
    # Keyed by id(): a plugin object need not be hashable.
    return {
        id(plugin): (dist.project_name, dist.version) for plugin, dist in pm.list_plugin_distinfo()
    }


# --- what the plugins register ----------------------------------------------------------------


class Transform:
    """A registered value transform: ``to_hub`` and ``to_remote`` with blanks passed through.

    Blank values (``None``, ``""``) and ``UNSET`` mean "skip" and "clear" whatever the
    transform, so they are never handed to the plugin's functions. A conversion that fails
    raises ``ValueError``; a plugin's ``TypeError`` on an unexpected value is turned into one.
    """

    __slots__ = ("_to_hub", "_to_remote", "name", "source")

    def __init__(
        self, name: str, to_hub: TransformFunction, to_remote: TransformFunction, source: str = ""
    ) -> None:
        self.name = name
        self.source = source
        self._to_hub = to_hub
        self._to_remote = to_remote

    def to_hub(self, value: Any) -> Any:
        """The platform's ``value`` in the hub's form."""
        return self._apply(self._to_hub, value)

    def to_remote(self, value: Any) -> Any:
        """The hub's ``value`` in the platform's form."""
        return self._apply(self._to_remote, value)

    def _apply(self, function: TransformFunction, value: Any) -> Any:
        if value is None or value == "" or value == UNSET:
            return value
        try:
            return function(value)
        except ValueError:
            raise
        except (TypeError, ArithmeticError):
            # The value itself stays out of the message: it may be personal data.
            raise ValueError(
                f"transform {self.name!r} cannot convert a {type(value).__name__}"
            ) from None

    def __repr__(self) -> str:
        return f"Transform({self.name!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class _Registration:
    kind: str  # "connector", "transform" or "simulator"
    name: str
    value: Any
    plugin: object
    label: str


@dataclass
class _Collected:
    registrations: list[_Registration] = field(default_factory=list)
    problems: list[tuple[str, list[object]]] = field(default_factory=list)  # message, plugins

    def problem(self, message: str, *plugins: object) -> None:
        self.problems.append((message, list(plugins)))


def _collect(pm: pluggy.PluginManager) -> _Collected:
    """Call the register_* hooks one plugin at a time, so each registration knows its plugin."""
    found = _Collected()

    def connector_register(plugin: object, label: str) -> Callable[..., None]:
        def register(connector_class: type[Connector]) -> None:
            if not (isinstance(connector_class, type) and issubclass(connector_class, Connector)):
                found.problem(
                    f"{label}: register_connectors got {connector_class!r}, "
                    "not a subclass of daemon.sdk.Connector",
                    plugin,
                )
            elif not (isinstance(connector_class.type, str) and connector_class.type):
                found.problem(f"{label}: {connector_class.__name__} has no type name", plugin)
            else:
                found.registrations.append(
                    _Registration("connector", connector_class.type, connector_class, plugin, label)
                )

        return register

    def transform_register(plugin: object, label: str) -> Callable[..., None]:
        def register(name: str, to_hub: TransformFunction, to_remote: TransformFunction) -> None:
            if not (isinstance(name, str) and name):
                found.problem(f"{label}: register_transforms got a blank name", plugin)
            elif not (callable(to_hub) and callable(to_remote)):
                found.problem(f"{label}: transform {name!r} needs two callables", plugin)
            else:
                transform = Transform(name, to_hub, to_remote, source=label)
                found.registrations.append(
                    _Registration("transform", name, transform, plugin, label)
                )

        return register

    def simulator_register(plugin: object, label: str) -> Callable[..., None]:
        def register(name: str, factory: SimulatorFactory) -> None:
            if not (isinstance(name, str) and name):
                found.problem(f"{label}: register_simulators got a blank name", plugin)
            elif not callable(factory):
                found.problem(f"{label}: simulator {name!r} needs a callable factory", plugin)
            else:
                found.registrations.append(_Registration("simulator", name, factory, plugin, label))

        return register

    for hook_name, make in (
        ("register_connectors", connector_register),
        ("register_transforms", transform_register),
        ("register_simulators", simulator_register),
    ):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                continue  # a wrapper observes the others; it registers nothing itself
            label = plugin_label(pm, impl.plugin)
            register = make(impl.plugin, label)
            kwargs = {"register": register} if "register" in impl.argnames else {}
            try:
                impl.function(**kwargs)
            except Exception as exc:
                found.problem(
                    f"{label}: {hook_name} failed: {type(exc).__name__}: {exc}", impl.plugin
                )

    _find_duplicates(found)
    return found


def _find_duplicates(found: _Collected) -> None:
    first: dict[tuple[str, str], _Registration] = {}
    for reg in found.registrations:
        earlier = first.setdefault((reg.kind, reg.name), reg)
        if earlier is not reg and not _same(earlier, reg):
            what = {"connector": "connector type"}.get(reg.kind, reg.kind)
            found.problem(
                f"{what} {reg.name!r} is registered twice: by {earlier.label} and by {reg.label}; "
                f"uninstall or block one ({BLOCK_ENV}=NAME)",
                earlier.plugin,
                reg.plugin,
            )


def _same(a: _Registration, b: _Registration) -> bool:
    # One class (or function pair) registered by two routes is one connector, not a clash.
    if a.kind in ("connector", "simulator"):
        return a.value is b.value
    return a.value._to_hub is b.value._to_hub and a.value._to_remote is b.value._to_remote


@dataclass(frozen=True)
class Registry:
    """The connector classes, transforms and simulator factories the plugins registered,
    by name.

    Build it with :meth:`from_plugin_manager`; ``sources`` says which plugin registered each
    entry (``"connector:hubspot"`` -> ``"contactsync-hubspot 1.2 (plugin 'hubspot')"``).
    """

    connectors: Mapping[str, type[Connector]]
    transforms: Mapping[str, Transform]
    sources: Mapping[str, str]
    simulators: Mapping[str, SimulatorFactory] = field(default_factory=dict)

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Registry:
        """Call every register_* hook; raise :class:`PluginError` on any clash or bad entry."""
        found = _collect(pm)
        if found.problems:
            raise PluginError("\n".join(message for message, _ in found.problems))
        connectors: dict[str, type[Connector]] = {}
        transforms: dict[str, Transform] = {}
        simulators: dict[str, SimulatorFactory] = {}
        sources: dict[str, str] = {}
        for reg in found.registrations:
            if reg.kind == "connector":
                connectors[reg.name] = reg.value
            elif reg.kind == "simulator":
                simulators[reg.name] = reg.value
            else:
                transforms[reg.name] = reg.value
            sources.setdefault(f"{reg.kind}:{reg.name}", reg.label)
        return cls(
            dict(sorted(connectors.items())),
            dict(sorted(transforms.items())),
            sources,
            dict(sorted(simulators.items())),
        )

    def connector(self, type_name: str) -> type[Connector]:
        """The connector class for ``type_name``; :class:`PluginError` names the known ones."""
        try:
            return self.connectors[type_name]
        except KeyError:
            known = ", ".join(self.connectors) or "none installed"
            raise PluginError(f"unknown connector type {type_name!r} (known: {known})") from None

    def simulator(self, name: str) -> SimulatorFactory:
        """The simulator factory called ``name``; :class:`PluginError` names the known ones."""
        try:
            return self.simulators[name]
        except KeyError:
            known = ", ".join(self.simulators) or "none installed"
            raise PluginError(f"unknown simulator {name!r} (known: {known})") from None

    def transform(self, name: str) -> Transform:
        """The transform called ``name``; :class:`PluginError` names the known ones."""
        try:
            return self.transforms[name]
        except KeyError:
            known = ", ".join(self.transforms) or "none installed"
            raise PluginError(f"unknown transform {name!r} (known: {known})") from None


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """One dict per registered plugin, for ``contactsync plugins``.

    Keys: ``name``, ``distribution`` and ``version`` (``None`` when registered by hand),
    ``hooks``, ``connectors``, ``transforms``, ``simulators`` and ``problems`` (clashes this
    plugin is part of). Unlike :meth:`Registry.from_plugin_manager` it never raises on a
    clash, so the command that diagnoses one still works.
    """
    found = _collect(pm)
    dists = _distributions(pm)
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        mine = [r for r in found.registrations if r.plugin is plugin]
        rows.append(
            {
                "name": name,
                "distribution": dist[0] if dist else None,
                "version": dist[1] if dist else None,
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or ()),
                "connectors": sorted(r.name for r in mine if r.kind == "connector"),
                "transforms": sorted(r.name for r in mine if r.kind == "transform"),
                "simulators": sorted(r.name for r in mine if r.kind == "simulator"),
                "problems": [
                    msg for msg, plugins in found.problems if any(p is plugin for p in plugins)
                ],
            }
        )
    return rows


def notify(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> None:
    """Call an observer hook (``sync_started`` …) on every plugin, keeping a promise the
    hookspecs make: one plugin's exception is logged and never stops the sync or the others."""
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # pluggy's LIFO order
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception:
            log.exception(
                "plugin_hook_failed",
                hook=hook_name,
                plugin=plugin_label(pm, impl.plugin),
                code=str(Code.INTERNAL_ERROR),
                instance=kwargs.get("instance"),
            )


def blocked_plugins(pm: pluggy.PluginManager) -> list[str]:
    """The names blocked on ``pm``, sorted."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is None)
