"""Instance files: every mistake is a ConfigError naming the file, the key and the reason,
and the mapping is checked against the platform's field catalogue."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.config.instances import Direction, check_catalogue, load_instance, load_instances
from daemon.config.settings import ConfigError
from tests.memremote import CATALOGUE, MemoryConnector

CONNECTORS = {"memory": MemoryConnector}


def instance_file(etc: Path, name: str, body: str) -> Path:
    """Write ``etc/instances/<name>.toml`` and return its path."""
    folder = etc / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    """Load ``path`` and return the error it must raise."""
    with pytest.raises(ConfigError) as info:
        load_instance(path, CONNECTORS)
    error = info.value
    # Whatever the mistake, the message alone lets an operator find the line.
    assert error.path == str(path)
    assert str(path) in str(error) and error.key in str(error) and error.reason in str(error)
    return error


def test_a_valid_file_loads_with_its_defaults(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        """,
    )
    instance = load_instance(path, CONNECTORS)
    assert instance.name == "mem" and instance.connection == "mem"
    assert instance.direction is Direction.BOTH
    assert instance.settings.page_size == 3
    assert instance.connector_class is MemoryConnector


def test_unknown_top_level_key(tmp_path):
    path = instance_file(tmp_path, "mem", 'type = "memory"\npage_sise = 3\n')
    error = config_error(path)
    assert error.key == "page_sise"
    assert error.reason == "unknown key"


def test_unknown_hub_field(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        [[fields]]
        hub = "nickname"
        remote = "Nick"
        """,
    )
    error = config_error(path)
    # The same spelling as the engine's own checks of [[fields]] (fields[1].direction …).
    assert error.key == "fields[1].hub"
    assert "unknown hub field 'nickname'" in error.reason
    assert "custom:<name>" in error.reason


def test_custom_field_needs_a_name(tmp_path):
    path = instance_file(
        tmp_path, "mem", 'type = "memory"\n[[fields]]\nhub = "custom: "\nremote = "X"\n'
    )
    error = config_error(path)
    assert error.key == "fields[0].hub"
    assert "custom:" in error.reason


@pytest.mark.parametrize(
    ("instance_direction", "field_direction"),
    [("incoming", "outgoing"), ("outgoing", "incoming"), ("incoming", "both")],
)
def test_field_direction_must_fit_the_instance(tmp_path, instance_direction, field_direction):
    path = instance_file(
        tmp_path,
        "mem",
        f"""
        type = "memory"
        direction = "{instance_direction}"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        direction = "{field_direction}"
        """,
    )
    error = config_error(path)
    assert error.key == "fields[0].direction"
    assert error.reason == f"{field_direction} does not fit an {instance_direction} instance"


@pytest.mark.parametrize("hub_field", ["test_user", "invalid_phone", "updated_at"])
def test_hub_own_fields_cannot_be_mapped_incoming(tmp_path, hub_field):
    path = instance_file(
        tmp_path,
        "mem",
        f"""
        type = "memory"
        [[fields]]
        hub = "{hub_field}"
        remote = "CreatedBy"
        direction = "incoming"
        """,
    )
    error = config_error(path)
    assert error.key == "fields[0].direction"
    assert f"{hub_field} is the hub's own" in error.reason


def test_hub_own_field_inherits_both_and_is_refused_but_outgoing_is_fine(tmp_path):
    inherits = instance_file(
        tmp_path, "mem", 'type = "memory"\n[[fields]]\nhub = "test_user"\nremote = "Status"\n'
    )
    assert config_error(inherits).key == "fields[0].direction"
    outgoing = instance_file(
        tmp_path,
        "out",
        'type = "memory"\n[[fields]]\nhub = "id"\nremote = "Status"\ndirection = "outgoing"\n',
    )
    assert load_instance(outgoing, CONNECTORS).config.fields[0].direction is Direction.OUTGOING


def test_hub_id_may_be_mapped_incoming_as_a_match_key(tmp_path):
    path = instance_file(
        tmp_path, "mem", 'type = "memory"\n[[fields]]\nhub = "id"\nremote = "Status"\n'
    )
    assert load_instance(path, CONNECTORS).config.fields[0].direction is Direction.BOTH


def test_same_remote_field_mapped_twice_in_one_direction(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        [[fields]]
        hub = "preferred_name"
        remote = "FirstName"
        direction = "incoming"
        """,
    )
    error = config_error(path)
    assert error.key == "fields[1].remote"
    assert error.reason == "'FirstName' is already mapped incoming by fields[0]"


def test_same_hub_field_mapped_twice_in_one_direction(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "email"
        remote = "Email"
        direction = "outgoing"
        [[fields]]
        hub = "email"
        remote = "StudentId"
        direction = "outgoing"
        """,
    )
    error = config_error(path)
    assert error.key == "fields[1].hub"
    assert "already mapped outgoing by fields[0]" in error.reason


def test_one_remote_field_may_carry_one_field_each_way(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        direction = "incoming"
        [[fields]]
        hub = "preferred_name"
        remote = "FirstName"
        direction = "outgoing"
        """,
    )
    instance = load_instance(path, CONNECTORS)
    assert [f.hub for f in instance.mapped(Direction.INCOMING)] == ["first_name"]
    assert [f.hub for f in instance.mapped(Direction.OUTGOING)] == ["preferred_name"]


def test_unknown_connector_type_lists_the_known_ones(tmp_path):
    path = instance_file(tmp_path, "mem", 'type = "salesfarce"\n')
    with pytest.raises(ConfigError) as info:
        load_instance(path, {"memory": MemoryConnector, "hubspot": MemoryConnector})
    error = info.value
    assert error.path == str(path) and error.key == "type"
    assert "'salesfarce'" in error.reason
    assert "hubspot, memory" in error.reason


@pytest.mark.parametrize(
    ("schedule", "key", "words"),
    [
        ('pull = "every now"', "schedule.pull", "neither 'every N[smhd]' nor a crontab line"),
        ('push = "every 0s"', "schedule.push", "at least 1 second"),
        ('deletes = "61 * * * *"', "schedule.deletes", "crontab"),
        ('timezone = "Mars/Olympus_Mons"', "schedule.timezone", "unknown time zone"),
        ("pull = 15", "schedule.pull", "string"),
        # Absurd schedules are refused at load, not left to fail when scheduled.
        ('pull = "every 99999999999999999d"', "schedule.pull", "at most 366 days"),
        ('export = "every 367d"', "schedule.export", "at most 366 days"),
        ('push = "every 9000000h"', "schedule.push", "at most 366 days"),
        ('pull = "every ' + "9" * 5000 + 's"', "schedule.pull", "at most 366 days"),
        ('deletes = "0 0 31 2 *"', "schedule.deletes", "never fires"),
    ],
)
def test_bad_schedule_and_unknown_timezone(tmp_path, schedule, key, words):
    path = instance_file(tmp_path, "mem", f'type = "memory"\n[schedule]\n{schedule}\n')
    error = config_error(path)
    assert error.key == key
    assert words in error.reason
    assert not error.reason.startswith("Value error")  # pydantic's prefix says nothing


def test_the_longest_interval_is_366_days_and_the_scheduler_takes_it(tmp_path):
    from daemon.runtime.scheduler import make_trigger

    path = instance_file(tmp_path, "mem", 'type = "memory"\n[schedule]\npull = "every 366d"\n')
    schedule = load_instance(path, CONNECTORS).config.schedule
    trigger = make_trigger(schedule.pull, schedule.timezone)
    now = datetime.now(UTC)
    assert trigger.get_next_fire_time(None, now) - now > timedelta(days=365)


@pytest.mark.parametrize("key", ["enabled", "create_remote", "owns_crm_id"])
@pytest.mark.parametrize("value", ['"yes"', '"true"', "1", '"on"'])
def test_booleans_are_strict(tmp_path, key, value):
    path = instance_file(tmp_path, "mem", f'type = "memory"\n{key} = {value}\n')
    error = config_error(path)
    assert error.key == key and "boolean" in error.reason


def test_valid_schedules_load(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [schedule]
        pull = "every 15m"
        push = "*/5 * * * *"
        timezone = "America/New_York"
        """,
    )
    schedule = load_instance(path, CONNECTORS).config.schedule
    assert (schedule.pull, schedule.push, schedule.timezone) == (
        "every 15m",
        "*/5 * * * *",
        "America/New_York",
    )


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ("page_size = 'three'", "settings.page_size", "integer"),
        ("pagesize = 3", "settings.pagesize", "unknown key"),
        ("remote = 7", "settings.remote", "string"),
    ],
)
def test_connector_settings_errors_are_reported_as_settings_key(tmp_path, settings, key, words):
    path = instance_file(tmp_path, "mem", f'type = "memory"\n[settings]\n{settings}\n')
    error = config_error(path)
    assert error.key == key
    assert words in error.reason


def test_a_field_without_direction_inherits_the_instance_direction(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        direction = "incoming"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        [[fields]]
        hub = "last_name"
        remote = "LastName"
        direction = "incoming"
        """,
    )
    instance = load_instance(path, CONNECTORS)
    assert [f.direction for f in instance.config.fields] == [Direction.INCOMING] * 2
    assert instance.mapped(Direction.OUTGOING) == []
    both = instance_file(
        tmp_path, "both", 'type = "memory"\n[[fields]]\nhub = "phone"\nremote = "Phone"\n'
    )
    assert load_instance(both, CONNECTORS).config.fields[0].direction is Direction.BOTH


def test_file_name_must_be_a_stable_instance_name(tmp_path):
    path = instance_file(tmp_path, "Bad Name", 'type = "memory"\n')
    error = config_error(path)
    assert "lower-case" in error.reason


def test_invalid_toml_names_the_file(tmp_path):
    path = instance_file(tmp_path, "mem", 'type = "memory\n')
    error = config_error(path)
    assert "not valid TOML" in error.reason


def test_only_one_connection_may_own_the_crm_id(tmp_path):
    instance_file(tmp_path, "alpha", 'type = "memory"\nowns_crm_id = true\n')
    # Two instances of one connection sharing ownership is one owner, not two.
    instance_file(
        tmp_path, "alpha-out", 'type = "memory"\nconnection = "alpha"\nowns_crm_id = true\n'
    )
    second = instance_file(tmp_path, "beta", 'type = "memory"\nowns_crm_id = true\n')
    instance_file(tmp_path, "gamma", 'type = "memory"\n')
    instance_file(tmp_path, "broken", 'type = "memory"\nbogus = 1\n')

    result = load_instances(tmp_path, CONNECTORS)

    assert sorted(result.instances) == ["alpha", "alpha-out", "gamma"]
    assert sorted(result.errors) == ["beta", "broken"]
    error = result.errors["beta"]
    assert error.path == str(second) and error.key == "owns_crm_id"
    assert "'alpha' already maps its remote id onto crm_id" in error.reason
    assert result.errors["broken"].key == "bogus"


def test_load_instances_of_a_missing_folder_is_empty(tmp_path):
    result = load_instances(tmp_path / "nowhere", CONNECTORS)
    assert result.instances == {} and result.errors == {}


def test_check_catalogue_reports_unknown_and_read_only_fields(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        [[fields]]
        hub = "enrollment_id"
        remote = "CreatedBy"
        [[fields]]
        hub = "email"
        remote = "EmailAddress"
        [[fields]]
        hub = "last_name"
        remote = "Status"
        """,
    )
    instance = load_instance(path, CONNECTORS)
    problems = check_catalogue(instance, list(CATALOGUE))
    assert problems == [
        "fields[1].direction: 'CreatedBy' is read-only on the platform; map it incoming",
        "fields[2].remote: the platform has no field 'EmailAddress'",
    ]


def test_check_catalogue_refuses_a_read_only_field_mapped_outgoing_only(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        direction = "outgoing"
        [[fields]]
        hub = "id"
        remote = "CreatedBy"
        """,
    )
    problems = check_catalogue(load_instance(path, CONNECTORS), list(CATALOGUE))
    assert problems == [
        "fields[0].direction: 'CreatedBy' is read-only on the platform; map it incoming"
    ]


def test_check_catalogue_accepts_a_fitting_mapping_and_read_only_incoming(tmp_path):
    path = instance_file(
        tmp_path,
        "mem",
        """
        type = "memory"
        [[fields]]
        hub = "first_name"
        remote = "FirstName"
        [[fields]]
        hub = "enrollment_id"
        remote = "CreatedBy"
        direction = "incoming"
        """,
    )
    instance = load_instance(path, CONNECTORS)
    assert check_catalogue(instance, list(CATALOGUE)) == []
    # A connector that cannot describe its fields gives nothing to check against.
    assert check_catalogue(instance, []) == []


# --- validating without resolving secrets ------------------------------------------------------


def secret_file(etc: Path, reference: str) -> Path:
    return instance_file(
        etc,
        "mem",
        f"""\
        type = "memory"
        [settings]
        api_key = {reference}
        """,
    )


def test_without_secrets_a_file_loads_and_names_what_this_shell_lacks(tmp_path, monkeypatch):
    monkeypatch.delenv("MEM_KEY_NOT_HERE", raising=False)
    path = secret_file(tmp_path, '{ env = "MEM_KEY_NOT_HERE" }')

    instance = load_instance(path, CONNECTORS, secrets=False)

    assert not instance.secrets_resolved
    assert instance.unavailable_secrets == {
        "settings.api_key": "environment variable MEM_KEY_NOT_HERE is not set"
    }
    with pytest.raises(ConfigError) as info:  # resolving it is still the error it was
        load_instance(path, CONNECTORS)
    assert (info.value.key, info.value.reason) == (
        "settings.api_key",
        "environment variable MEM_KEY_NOT_HERE is not set",
    )


def test_without_secrets_no_secret_is_read(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("sk-live-FILEVALUE771\n")
    monkeypatch.setenv("MEM_KEY_HERE", "sk-live-ENVVALUE772")
    read: list[object] = []
    monkeypatch.setattr("daemon.config.secrets.resolve", lambda ref: read.append(ref) or "x")
    for reference in ('{ env = "MEM_KEY_HERE" }', f'{{ file = "{key}" }}'):
        instance = load_instance(secret_file(tmp_path, reference), CONNECTORS, secrets=False)
        assert instance.unavailable_secrets == {}
        assert "VALUE77" not in instance.settings.api_key.get_secret_value()
    assert read == []


def test_without_secrets_an_unreadable_file_is_unavailable_and_a_bad_file_still_invalid(
    tmp_path,
):
    missing = tmp_path / "nowhere"
    path = secret_file(tmp_path, f'{{ file = "{missing}" }}')
    instance = load_instance(path, CONNECTORS, secrets=False)
    assert instance.unavailable_secrets == {"settings.api_key": f"file {missing} cannot be read"}

    instance_file(tmp_path, "bad", 'type = "memory"\nmax_attempts = 0\n')
    loaded = load_instances(tmp_path, CONNECTORS, secrets=False)
    assert set(loaded.instances) == {"mem"} and set(loaded.errors) == {"bad"}
