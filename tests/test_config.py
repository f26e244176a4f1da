"""Daemon settings: defaults, the file, environment overrides and the errors they raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config.settings import ConfigError, etc_dir, load_settings

REPO_ETC = Path(__file__).resolve().parent.parent / "etc"


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch):
    for name in (
        "CONTACTSYNC_DATABASE_URL",
        "CONTACTSYNC_ETC",
        "CONTACTSYNC_STATE_DIR",
        "STATE_DIRECTORY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def etc(tmp_path) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    return folder


def settings_file(etc: Path, text: str) -> Path:
    path = etc / "contactsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_everything_has_its_default(etc):
    settings = load_settings(etc)

    assert settings.hub.default_region == "US"
    assert settings.hub.batch_size == 1000
    assert settings.database.url is None
    assert settings.resolved_state_dir == etc.parent / "var"
    assert settings.database_url == f"sqlite:///{etc.parent / 'var' / 'contactsync.db'}"


def test_the_shipped_settings_file_is_valid_and_says_the_defaults(etc):
    shipped = load_settings(REPO_ETC)
    defaults = load_settings(etc)

    assert shipped.hub == defaults.hub
    assert shipped.database == defaults.database
    assert shipped.state_dir is None


def test_values_from_the_file(etc, tmp_path):
    settings_file(
        etc,
        f"""
state_dir = "{tmp_path / "state"}"
[database]
url = "postgresql://sync@db.example/hub"
[hub]
default_region = "gb"
batch_size = 250
""",
    )

    settings = load_settings(etc)

    assert settings.hub.default_region == "GB"  # upper-cased
    assert settings.hub.batch_size == 250
    assert settings.resolved_state_dir == tmp_path / "state"
    assert settings.database_url == "postgresql://sync@db.example/hub"


def test_the_database_url_environment_variable_wins_over_the_file(etc, monkeypatch):
    settings_file(etc, '[database]\nurl = "postgresql://from-file/hub"\n')
    monkeypatch.setenv("CONTACTSYNC_DATABASE_URL", "postgresql://from-env/hub")

    assert load_settings(etc).database_url == "postgresql://from-env/hub"


def test_without_a_url_the_hub_is_sqlite_in_the_state_folder(etc, tmp_path):
    settings_file(etc, f'state_dir = "{tmp_path / "st"}"\n')

    assert load_settings(etc).database_url == f"sqlite:///{tmp_path / 'st' / 'contactsync.db'}"


def test_a_relative_state_dir_is_read_from_the_config_folder(etc):
    settings_file(etc, 'state_dir = "state"\n')

    assert load_settings(etc).resolved_state_dir == etc / "state"


def test_state_dir_environment_overrides(etc, tmp_path, monkeypatch):
    settings_file(etc, f'state_dir = "{tmp_path / "from-file"}"\n')

    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'second'}")
    assert load_settings(etc).resolved_state_dir == tmp_path / "systemd"  # first of systemd's

    monkeypatch.setenv("CONTACTSYNC_STATE_DIR", str(tmp_path / "explicit"))
    settings = load_settings(etc)
    assert settings.resolved_state_dir == tmp_path / "explicit"
    assert settings.database_url == f"sqlite:///{tmp_path / 'explicit' / 'contactsync.db'}"


def test_the_config_folder_comes_from_the_option_then_the_environment(monkeypatch, tmp_path):
    assert etc_dir() == Path("etc")
    monkeypatch.setenv("CONTACTSYNC_ETC", str(tmp_path / "env-etc"))
    assert etc_dir() == tmp_path / "env-etc"
    assert etc_dir(tmp_path / "option-etc") == tmp_path / "option-etc"


def test_the_environment_names_the_config_folder_load_settings_reads(monkeypatch, etc):
    settings_file(etc, "[hub]\nbatch_size = 7\n")
    monkeypatch.setenv("CONTACTSYNC_ETC", str(etc))

    assert load_settings().hub.batch_size == 7


@pytest.mark.parametrize("region", ["XX", "USA", "Narnia"])
def test_an_unknown_region_is_a_config_error_naming_the_key(etc, region):
    path = settings_file(etc, f'[hub]\ndefault_region = "{region}"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(etc)

    error = caught.value
    assert error.key == "hub.default_region"
    assert error.path == str(path)
    assert region.upper() in error.reason
    assert str(path) in str(error)
    assert "hub.default_region" in str(error)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[hub]\nbatch_size = 0\n", "hub.batch_size"),
        ("[hub]\nbatch_size = 50001\n", "hub.batch_size"),
        ("[hub]\nbatch_size = 'lots'\n", "hub.batch_size"),
        ("state_dir = 3\n", "state_dir"),
        ("hub = 'US'\n", "hub"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_key(etc, text, key):
    settings_file(etc, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(etc)

    assert caught.value.key == key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[hub]\nregion = 'US'\n", "hub.region"),
        ("[database]\nurl = 'sqlite://'\npassword = 'x'\n", "database.password"),
        ("[server]\nport = 1\n", "server"),
    ],
)
def test_an_unknown_key_is_a_config_error_naming_it(etc, text, key):
    path = settings_file(etc, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(etc)

    assert (caught.value.key, caught.value.reason) == (key, "unknown key")
    assert str(caught.value) == f"{path}: {key}: unknown key"


def test_invalid_toml_is_a_config_error_naming_the_file(etc):
    path = settings_file(etc, "[hub\nbatch_size = 1\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(etc)

    assert caught.value.path == str(path)
    assert "TOML" in caught.value.reason


def test_a_system_install_keeps_state_in_var_lib(monkeypatch):
    from pathlib import Path

    from daemon.config.settings import Settings

    monkeypatch.delenv("CONTACTSYNC_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    settings = Settings(etc_dir=Path("/etc/contactsync"))
    assert settings.resolved_state_dir == Path("/var/lib/contactsync")
    assert Settings(etc_dir=Path("etc")).resolved_state_dir == Path("var")
