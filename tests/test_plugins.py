"""The plugin system: hooks, the registry, blocking, the built-in transforms and ``plugins``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import click
import phonenumbers
import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st

from daemon import __version__
from daemon.cli import plugins as cli_plugins
from daemon.cli.plugins import plugins_command
from daemon.default_plugins import transforms as builtin
from daemon.engine.registry import (
    BLOCK_ENV,
    PluginError,
    Registry,
    describe_plugins,
    get_plugin_manager,
    notify,
    register_plugin,
)
from daemon.hookspecs import HOOKSPEC_VERSION, NO_MATCH, CycleKind, Winner, hookimpl
from daemon.hub.fields import UNSET
from daemon.kit.connector import Connector

BUILTIN_NAMES = {"year", "phone_10digit", "lowercase", "yes_no", "digits"}


class AcmeConnector(Connector):
    type = "acme"


class OtherAcmeConnector(Connector):
    type = "acme"


class ConnectorPlugin:
    """A plugin object (not a module) registering one connector class."""

    def __init__(self, connector_class: type[Connector]) -> None:
        self.connector_class = connector_class

    @hookimpl
    def register_connectors(self, register):
        register(self.connector_class)


CONNECTOR_MODULE = """
from daemon.kit.connector import Connector
from daemon.hookspecs import hookimpl


class Acme(Connector):
    type = "acme"


@hookimpl
def register_connectors(register):
    register(Acme)
"""

InstallDist = Callable[..., str]


@pytest.fixture(autouse=True)
def _no_blocked_plugins_from_the_environment(monkeypatch):
    monkeypatch.delenv(BLOCK_ENV, raising=False)


@pytest.fixture
def registry() -> Registry:
    return Registry.from_plugin_manager(get_plugin_manager())


@pytest.fixture
def install_dist(tmp_path: Path, monkeypatch) -> InstallDist:
    """Make a real (if tiny) installed distribution on sys.path: a .dist-info with entry points
    in the ``contactsync`` group, plus a plugin module. Returns the module's unique name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist: str, version: str, ep_name: str, source: str | None = CONNECTOR_MODULE):
        module = f"cs_test_plugin_{uuid.uuid4().hex[:8]}"
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[contactsync]\n{ep_name} = {module}\n")
        if source is not None:
            (tmp_path / f"{module}.py").write_text(source)
        return module

    return install


# --- registering ------------------------------------------------------------------------------


def test_a_plugin_object_registers_a_connector():
    pm = get_plugin_manager(entry_points=False)
    pm.register(ConnectorPlugin(AcmeConnector), name="acme")
    pm.check_pending()
    reg = Registry.from_plugin_manager(pm)
    assert reg.connectors == {"acme": AcmeConnector}
    assert reg.connector("acme") is AcmeConnector
    assert reg.sources["connector:acme"] == "(not installed: acme)"


def test_an_unknown_connector_type_names_the_known_ones():
    pm = get_plugin_manager(entry_points=False, plugins=[ConnectorPlugin(AcmeConnector)])
    with pytest.raises(PluginError, match=r"unknown connector type 'hubspot' \(known: acme\)"):
        Registry.from_plugin_manager(pm).connector("hubspot")


def test_two_connectors_claiming_one_type_name_both_plugins():
    pm = get_plugin_manager(entry_points=False)
    register_plugin(pm, ConnectorPlugin(AcmeConnector), name="first")
    register_plugin(pm, ConnectorPlugin(OtherAcmeConnector), name="second")
    with pytest.raises(PluginError) as info:
        Registry.from_plugin_manager(pm)
    message = str(info.value)
    assert "connector type 'acme' is registered twice" in message
    assert "(not installed: first)" in message
    assert "(not installed: second)" in message


def test_a_clash_with_an_installed_plugin_names_its_distribution():
    class MyYear:
        @hookimpl
        def register_transforms(self, register):
            register("year", str, str)

    pm = get_plugin_manager(plugins=[MyYear()])
    with pytest.raises(PluginError) as info:
        Registry.from_plugin_manager(pm)
    message = str(info.value)
    assert "transform 'year' is registered twice" in message
    assert f"contactsync {__version__} (plugin 'transforms')" in message
    assert "(not installed: " in message


def test_one_class_registered_twice_is_not_a_clash():
    pm = get_plugin_manager(
        entry_points=False,
        plugins=[ConnectorPlugin(AcmeConnector), ConnectorPlugin(AcmeConnector)],
    )
    assert Registry.from_plugin_manager(pm).connectors == {"acme": AcmeConnector}


def test_registering_something_that_is_not_a_connector_is_an_error():
    class NotAConnector:
        type = "nope"

    pm = get_plugin_manager(entry_points=False, plugins=[ConnectorPlugin(NotAConnector)])
    with pytest.raises(PluginError, match=r"not a subclass of daemon\.sdk\.Connector"):
        Registry.from_plugin_manager(pm)


def test_a_connector_without_a_type_name_is_an_error():
    class Nameless(Connector):
        pass

    pm = get_plugin_manager(entry_points=False, plugins=[ConnectorPlugin(Nameless)])
    with pytest.raises(PluginError, match="Nameless has no type name"):
        Registry.from_plugin_manager(pm)


def test_a_register_hook_that_raises_names_its_plugin():
    class Broken:
        @hookimpl
        def register_connectors(self, register):
            raise RuntimeError("boom")

    pm = get_plugin_manager(entry_points=False)
    register_plugin(pm, Broken(), name="broken")
    with pytest.raises(PluginError, match=r"\(not installed: broken\): register_connectors failed"):
        Registry.from_plugin_manager(pm)


def test_two_installed_distributions_claiming_one_connector_type(install_dist):
    install_dist("contactsync-acme", "1.0", "acme")
    install_dist("acme-fork", "2.3", "acme_fork")
    pm = get_plugin_manager()
    with pytest.raises(PluginError) as info:
        Registry.from_plugin_manager(pm)
    message = str(info.value)
    assert "connector type 'acme' is registered twice" in message
    assert "contactsync-acme 1.0 (plugin 'acme')" in message
    assert "acme-fork 2.3 (plugin 'acme_fork')" in message


def test_an_installed_connector_plugin_is_described(install_dist):
    install_dist("contactsync-acme", "1.0", "acme")
    rows = {row["name"]: row for row in describe_plugins(get_plugin_manager())}
    assert rows["acme"]["distribution"] == "contactsync-acme"
    assert rows["acme"]["version"] == "1.0"
    assert rows["acme"]["connectors"] == ["acme"]
    assert "transforms" in rows  # the built-ins are still there


def test_a_plugin_that_fails_to_import_is_named(install_dist):
    install_dist("contactsync-broken", "0.1", "broken", source=None)
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "plugin 'broken' (contactsync-broken 0.1) could not be loaded" in message
    assert f"{BLOCK_ENV}=broken" in message
    get_plugin_manager(blocked={"broken"})  # and blocking it lets the rest load


def test_two_distributions_sharing_a_plugin_name_is_an_error(install_dist):
    install_dist("contactsync-extra-transforms", "1.0", "transforms")
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "plugin name 'transforms' is claimed by several distributions" in message
    assert "contactsync-extra-transforms 1.0" in message
    assert f"contactsync {__version__}" in message


# --- validation -------------------------------------------------------------------------------


def test_check_pending_catches_a_misspelled_hook():
    class Misspelled:
        @hookimpl
        def register_conectors(self, register):
            pass

    with pytest.raises(PluginError) as info:
        get_plugin_manager(entry_points=False, plugins=[Misspelled()])
    assert "unknown hook 'register_conectors'" in str(info.value)
    assert "did you mean 'register_connectors'?" in str(info.value)


def test_a_hookimpl_asking_for_an_argument_the_spec_lacks_is_refused():
    class WrongArgument:
        @hookimpl
        def sync_started(self, instance, colour):
            pass

    with pytest.raises(PluginError, match="colour"):
        get_plugin_manager(entry_points=False, plugins=[WrongArgument()])


# --- entry points and blocking ----------------------------------------------------------------


def test_builtin_transforms_come_through_the_entry_point(registry):
    assert set(registry.transforms) >= BUILTIN_NAMES
    assert registry.sources["transform:year"] == f"contactsync {__version__} (plugin 'transforms')"


def test_without_entry_points_nothing_is_registered():
    assert Registry.from_plugin_manager(get_plugin_manager(entry_points=False)).transforms == {}


def test_a_blocked_plugin_is_not_loaded():
    pm = get_plugin_manager(blocked={"transforms"})
    assert pm.get_plugin("transforms") is None
    assert pm.is_blocked("transforms")
    assert Registry.from_plugin_manager(pm).transforms == {}


def test_blocking_through_the_environment(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, " other , transforms")
    pm = get_plugin_manager()
    assert pm.is_blocked("transforms")
    assert Registry.from_plugin_manager(pm).transforms == {}


def test_blocking_by_distribution_name():
    pm = get_plugin_manager(blocked={"ContactSync"})
    assert pm.is_blocked("transforms")


# --- the other hooks --------------------------------------------------------------------------


def test_register_commands_adds_to_the_cli():
    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello() -> None:
                click.echo("hi")

    @click.group()
    def cli() -> None:
        pass

    pm = get_plugin_manager(entry_points=False, plugins=[Commands()])
    pm.hook.register_commands(cli=cli)
    assert CliRunner().invoke(cli, ["hello"]).output == "hi\n"


def test_observers_take_only_the_arguments_they_want():
    seen: list[tuple[str, str]] = []

    class Observer:
        @hookimpl
        def sync_finished(self, instance, counts):
            seen.append((instance, counts["created"]))

    pm = get_plugin_manager(entry_points=False, plugins=[Observer()])
    pm.hook.sync_finished(
        instance="hubspot-main",
        run_id="r1",
        direction=CycleKind.PULL,
        counts={"created": 3},
        duration_seconds=1.5,
        outcome="ok",
    )
    assert seen == [("hubspot-main", 3)]


def test_notify_isolates_a_failing_observer(caplog):
    calls: list[str] = []

    class Failing:
        @hookimpl
        def sync_error(self, instance):
            raise RuntimeError("observer bug")

    class Recording:
        @hookimpl
        def sync_error(self, instance, code):
            calls.append(f"{instance}:{code}")

    pm = get_plugin_manager(entry_points=False, plugins=[Recording(), Failing()])
    notify(
        pm,
        "sync_error",
        instance="sis",
        run_id="r1",
        direction=CycleKind.PULL,
        error="the platform timed out",
        code="remote-unavailable",
    )
    assert calls == ["sis:remote-unavailable"]  # the failing plugin ran first, and was survived


def test_match_record_first_non_none_answer_wins():
    class Abstains:
        @hookimpl
        def match_record(self, record, candidates):
            return None

    class NewContact:
        @hookimpl(trylast=True)
        def match_record(self, candidates):
            return NO_MATCH

    args = {"instance": "i", "record": None, "hub_fields": {}, "candidates": [{"id": "c1"}]}
    pm = get_plugin_manager(entry_points=False, plugins=[Abstains()])
    assert pm.hook.match_record(**args) is None  # None: the default rules decide
    register_plugin(pm, NewContact())
    assert pm.hook.match_record(**args) is NO_MATCH


def test_resolve_conflict_can_override_the_policy():
    class HubWinsForPhones:
        @hookimpl
        def resolve_conflict(self, field):
            return Winner.HUB if field == "phone" else None

    pm = get_plugin_manager(entry_points=False, plugins=[HubWinsForPhones()])
    args = {
        "instance": "i",
        "contact_id": "c1",
        "hub_value": "+12025550123",
        "hub_changed_at": datetime(2025, 1, 1),
        "remote_value": "+12025550124",
        "remote_modified_at": None,
        "policy": "newest",
    }
    assert pm.hook.resolve_conflict(field="phone", **args) == "hub"
    assert pm.hook.resolve_conflict(field="email", **args) is None


# --- the built-in transforms ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2027", "2027"),
        (2027, "2027"),
        (2027.0, "2027"),
        ("2027.0", "2027"),
        ("2027-05-15", "2027"),
        ("5/15/2027", "2027"),
        ("2027-05-15T10:00:00+00:00", "2027"),
        (date(2027, 5, 15), "2027"),
        ("Class of 2027", "2027"),
    ],
)
def test_year_reads_dates_and_year_ish_text(registry, raw, expected):
    assert registry.transform("year").to_hub(raw) == expected


@pytest.mark.parametrize("raw", ["27", "2026-2027", "soon", 1850, 2027.5, True, [2027]])
def test_year_refuses_what_is_not_one_year(registry, raw):
    with pytest.raises(ValueError):
        registry.transform("year").to_hub(raw)


def test_phone_10digit(registry):
    phone = registry.transform("phone_10digit")
    assert phone.to_hub("(202) 555-0123") == "+12025550123"
    assert phone.to_hub("202.555.0123") == "+12025550123"
    assert phone.to_remote("+12025550123") == "2025550123"
    with pytest.raises(ValueError):
        phone.to_remote("+442071838750")  # a London number has no 10-digit US form
    with pytest.raises(ValueError):
        phone.to_hub("12345")


def test_yes_no(registry):
    yes_no = registry.transform("yes_no")
    assert yes_no.to_hub("Y") == "true"
    assert yes_no.to_hub("n") == "false"
    assert yes_no.to_remote(True) == "Y"
    assert yes_no.to_remote("false") == "N"
    with pytest.raises(ValueError):
        yes_no.to_hub("maybe")


def test_lowercase_and_digits(registry):
    assert registry.transform("lowercase").to_hub(" Pat@Example.EDU ") == "pat@example.edu"
    assert registry.transform("digits").to_hub("900-12-3456") == "900123456"
    assert registry.transform("digits").to_remote(42) == "42"
    with pytest.raises(ValueError):
        registry.transform("digits").to_hub("n/a")


@pytest.mark.parametrize("name", sorted(BUILTIN_NAMES))
@pytest.mark.parametrize("blank", [None, "", UNSET])
def test_blanks_and_unset_pass_through_untouched(registry, name, blank):
    transform = registry.transform(name)
    assert transform.to_hub(blank) == blank
    assert transform.to_remote(blank) == blank


def test_a_plugin_transforms_type_error_becomes_a_value_error():
    class Fragile:
        @hookimpl
        def register_transforms(self, register):
            register("fragile", lambda v: v + 1, lambda v: v - 1)

    pm = get_plugin_manager(entry_points=False, plugins=[Fragile()])
    fragile = Registry.from_plugin_manager(pm).transform("fragile")
    assert fragile.to_hub(1) == 2
    with pytest.raises(ValueError, match="'fragile' cannot convert a str"):
        fragile.to_hub("secret-ish value")


# Round trips: for a canonical hub value, to_hub(to_remote(value)) gives it back.


@given(st.integers(builtin.YEAR_MIN, builtin.YEAR_MAX).map(str))
def test_year_round_trips(value):
    assert builtin.year(builtin.year(value)) == value


@given(
    st.sampled_from(["202", "212", "312", "415", "617", "713", "919"]),
    st.integers(200, 999),
    st.integers(0, 9999),
)
def test_phone_10digit_round_trips(area, exchange, line):
    e164 = f"+1{area}{exchange}{line:04d}"
    assume(phonenumbers.is_valid_number(phonenumbers.parse(e164)))
    assert builtin.phone_to_hub(builtin.phone_to_10digit(e164)) == e164


@given(st.sampled_from(["true", "false"]))
def test_yes_no_round_trips(value):
    assert builtin.yes_no_to_hub(builtin.yes_no_to_remote(value)) == value


@given(st.text(min_size=1).map(str.lower).filter(lambda s: s == s.strip().lower()))
def test_lowercase_round_trips(value):
    assert builtin.lowercase(builtin.lowercase(value)) == value


@given(st.from_regex(r"[0-9]{1,20}", fullmatch=True))
def test_digits_round_trips(value):
    assert builtin.digits(builtin.digits(value)) == value


# --- contactsync plugins ----------------------------------------------------------------------


def test_plugins_json_lists_the_builtin_plugin():
    result = CliRunner().invoke(plugins_command, ["--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["hookspec_version"] == HOOKSPEC_VERSION
    assert data["problems"] == []
    (transforms,) = [p for p in data["plugins"] if p["name"] == "transforms"]
    assert transforms["distribution"] == "contactsync"
    assert transforms["hooks"] == ["register_transforms"]
    assert set(transforms["transforms"]) >= BUILTIN_NAMES


def test_plugins_reports_a_clash_and_exits_2(monkeypatch):
    def clashing(**_: object):
        return get_plugin_manager(
            plugins=[ConnectorPlugin(AcmeConnector), ConnectorPlugin(OtherAcmeConnector)]
        )

    monkeypatch.setattr(cli_plugins, "get_plugin_manager", clashing)
    result = CliRunner().invoke(plugins_command, ["--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert len(data["problems"]) == 1
    assert "connector type 'acme' is registered twice" in data["problems"][0]
    acme = [p for p in data["plugins"] if p["connectors"] == ["acme"]]
    assert len(acme) == 2 and all(p["problems"] for p in acme)


def test_plugins_table_shows_the_hookspec_version():
    result = CliRunner().invoke(plugins_command, [])
    assert result.exit_code == 0
    assert f"hookspec version {HOOKSPEC_VERSION}" in result.stdout
    assert "transforms" in result.stdout


def test_describe_plugins_for_a_plugin_registered_by_hand():
    pm = get_plugin_manager(entry_points=False, plugins=[ConnectorPlugin(AcmeConnector)])
    (row,) = describe_plugins(pm)
    assert row["name"] == "ConnectorPlugin"  # a class name, not pluggy's numeric default
    assert row["distribution"] is None and row["version"] is None
    assert row["connectors"] == ["acme"]
    assert row["hooks"] == ["register_connectors"]


def test_a_plugin_module_named_in_the_environment_is_loaded(monkeypatch):
    from daemon.engine.registry import PluginError, Registry, get_plugin_manager

    monkeypatch.setenv("CONTACTSYNC_PLUGINS", "tests.memplugin")
    registry = Registry.from_plugin_manager(get_plugin_manager())
    assert "memory" in registry.connectors
    monkeypatch.setenv("CONTACTSYNC_PLUGINS", "tests.no_such_plugin_module")
    with pytest.raises(PluginError, match="no_such_plugin_module"):
        get_plugin_manager()


# --- the plugin-author surface: sdk version and --schema ----------------------------------------


def test_plugins_shows_the_sdk_version_next_to_the_hookspec_version():
    from daemon.sdk import SDK_VERSION

    result = CliRunner().invoke(plugins_command, ["--json"])
    assert json.loads(result.stdout)["sdk_version"] == SDK_VERSION
    table = CliRunner().invoke(plugins_command, [])
    assert f"hookspec version {HOOKSPEC_VERSION}, sdk version {SDK_VERSION}" in table.stdout


def test_plugins_schema_prints_a_connectors_config_schema(monkeypatch):
    from tests.memremote import MemoryConnector

    monkeypatch.setattr(
        cli_plugins,
        "get_plugin_manager",
        lambda **_: get_plugin_manager(plugins=[ConnectorPlugin(MemoryConnector)]),
    )
    result = CliRunner().invoke(plugins_command, ["--schema", "memory"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    # A secret is described as the reference an instance file holds, never as a string.
    (secret,) = [s for s in schema["properties"]["api_key"]["anyOf"] if "$ref" in s]
    reference = schema["$defs"][secret["$ref"].rsplit("/", 1)[1]]
    shapes = [(s["required"], s["properties"][s["required"][0]]) for s in reference["oneOf"]]
    assert [(keys, prop["type"]) for keys, prop in shapes] == [
        (["env"], "string"),
        (["file"], "string"),
        (["credential"], "string"),
    ]
    assert "password" not in result.stdout


def test_plugins_schema_of_an_unknown_type_exits_2_naming_the_known_ones(monkeypatch):
    monkeypatch.setattr(
        cli_plugins,
        "get_plugin_manager",
        lambda **_: get_plugin_manager(
            entry_points=False, plugins=[ConnectorPlugin(AcmeConnector)]
        ),
    )
    result = CliRunner().invoke(plugins_command, ["--schema", "nope"])
    assert result.exit_code == 2
    assert "unknown connector type 'nope' (known: acme)" in result.stderr
