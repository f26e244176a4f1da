"""``contactsync check`` knows what a platform needs, and a URL setting that is not an http(s)
URL is ``config-invalid`` at load.

The HubSpot cases run the real command against the HubSpot simulator over HTTP; the other
platforms' declarations are checked on loaded instance files (``missing_mappings`` needs no
network), and every URL-bearing plugin's URL setting is loaded with each kind of mistake.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config.instances import load_instance
from daemon.config.settings import ConfigError
from daemon.engine.checks import missing_catalogue_mappings, missing_mappings
from daemon.kit.connector import RemoteField
from daemon.kit.settings_types import check_platform_url
from plugins.colleague.connector import ColleagueConnector
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.connector import SalesforceConnector
from plugins.slate.connector import SlateConnector
from tests import clikit
from tests.clikit import isolated

ROOT = Path(__file__).resolve().parent.parent
TOKEN_ENV = "TEST_CHECK_TOKEN"
TOKEN = "sk-check-Zq8TOKEN5521"


def fields(*pairs: tuple[str, str]) -> str:
    """``[[fields]]`` tables for ``(hub, remote)`` pairs."""
    return "".join(f'[[fields]]\nhub = "{h}"\nremote = "{r}"\n' for h, r in pairs)


HUBSPOT_ALL = fields(
    ("first_name", "firstname"), ("last_name", "lastname"), ("phone", "phone"), ("email", "email")
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with isolated(monkeypatch):
        yield


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(seed=5, contacts=3) as simulator:
        yield simulator


@pytest.fixture
def run(tmp_path: Path) -> clikit.Cli:
    return clikit.Cli(tmp_path)


def hubspot_file(run: clikit.Cli, sim: HubSpotSimulator, body: str, settings: str = "") -> None:
    """``etc/instances/hs.toml`` for the simulator, with ``body`` before ``[settings]``."""
    folder = run.etc / "instances"
    folder.mkdir(exist_ok=True)
    (folder / "hs.toml").write_text(
        'type = "hubspot"\n'
        + textwrap.dedent(body)
        + f'\n[settings]\nbase_url = "{sim.url}"\naccess_token = {{ env = "{TOKEN_ENV}" }}\n'
        + settings
    )


def problems(run: clikit.Cli, expect: int) -> list[dict[str, Any]]:
    (result,) = run.json("check", "hs", expect=expect)
    return result["problems"]


# --- what a platform needs mapped --------------------------------------------------------------


def test_check_fails_an_incoming_hubspot_instance_that_cannot_create_contacts(
    run, sim, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, sim.private_app_token)
    # The instance: only email comes in, so every new record would be skipped.
    hubspot_file(run, sim, 'direction = "incoming"\n' + fields(("email", "email")))

    (problem,) = problems(run, expect=1)

    assert problem["code"] == "config-invalid"
    message = problem["message"]
    assert message.startswith("incoming:")
    for name in ("first_name", "last_name", "phone"):
        assert name in message
    assert "email" not in message.split(";")[0]  # the mapped field is not named missing
    printed = run("check", "hs", expect=1).stdout
    assert "config-invalid" in printed and "last_name" in printed

    hubspot_file(run, sim, 'direction = "incoming"\n' + HUBSPOT_ALL)
    (result,) = run.json("check", "hs")
    assert result["ok"] is True and result["problems"] == []


def test_check_names_only_the_fields_still_missing(run, sim, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, sim.private_app_token)
    mapped = fields(("first_name", "firstname"), ("email", "email"))
    hubspot_file(run, sim, 'direction = "incoming"\n' + mapped)

    (problem,) = problems(run, expect=1)

    named = problem["message"].split(";")[0]
    assert "last_name" in named and "phone" in named and "first_name" not in named


def test_check_fails_an_outgoing_hubspot_instance_without_email(run, sim, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, sim.private_app_token)
    no_email = fields(("first_name", "firstname"), ("last_name", "lastname"), ("phone", "phone"))
    hubspot_file(run, sim, 'direction = "outgoing"\n' + no_email)

    (problem,) = problems(run, expect=1)

    assert problem["code"] == "config-invalid"
    assert problem["message"].startswith("outgoing:") and "email" in problem["message"]

    # An instance that never creates records needs nothing to create them.
    hubspot_file(run, sim, 'direction = "outgoing"\ncreate_remote = false\n' + no_email)
    assert run.json("check", "hs")[0]["ok"] is True

    # Without the upsert by email, HubSpot creates with any one of email, first or last name.
    hubspot_file(run, sim, 'direction = "outgoing"\n' + no_email, "upsert_by_email = false\n")
    assert run.json("check", "hs")[0]["ok"] is True
    hubspot_file(
        run,
        sim,
        'direction = "outgoing"\n' + fields(("phone", "phone")),
        "upsert_by_email = false\n",
    )
    (problem,) = problems(run, expect=1)
    assert "one of (email, firstname, lastname)" in problem["message"]


def test_a_both_ways_instance_is_held_to_both_directions(run, sim, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, sim.private_app_token)
    hubspot_file(run, sim, fields(("first_name", "firstname")))

    found = problems(run, expect=1)

    assert sorted(p["message"].split(":")[0] for p in found) == ["incoming", "outgoing"]
    assert all(p["code"] == "config-invalid" for p in found)


def test_the_mapping_is_named_even_when_the_platform_is_down(run, sim):
    # A wrong token: check() fails, and the declared gap is still reported next to it.
    hubspot_file(run, sim, 'direction = "incoming"\n' + fields(("email", "email")))

    found = problems(run, expect=1)

    codes = sorted(p["code"] for p in found)
    assert codes == ["config-invalid", "remote-auth-failed"]
    printed = run("check", "hs", expect=1).stdout + run("check", "hs", expect=1).stderr
    assert TOKEN not in printed


def load(tmp_path: Path, connector: type[Any], text: str, name: str = "inst") -> Any:
    folder = tmp_path / "instances"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return load_instance(path, {connector.type: connector})


SALESFORCE = """
type = "salesforce"
direction = "outgoing"
{fields}
[settings]
login_url = "https://myschool.my.salesforce.com"
client_id = "app"
client_secret = {{ env = "TEST_CHECK_TOKEN" }}
object = "{object}"
"""


@pytest.mark.parametrize(
    ("object_", "mapped", "missing"),
    [
        ("Contact", [("first_name", "FirstName")], ["LastName"]),
        ("Contact", [("last_name", "LastName")], []),
        ("Lead", [("last_name", "LastName")], ["Company"]),
        ("Lead", [("last_name", "LastName"), ("custom:School", "Company")], []),
    ],
)
def test_salesforce_needs_last_name_and_a_lead_its_company(tmp_path, object_, mapped, missing):
    text = SALESFORCE.format(fields=fields(*mapped), object=object_)
    instance = load(tmp_path, SalesforceConnector, text)

    found = missing_mappings(instance)

    if not missing:
        assert found == []
    else:
        (problem,) = found
        assert problem.startswith("outgoing:") and "salesforce's" in problem
        for name in missing:
            assert name in problem.split(";")[0]


def test_colleague_needs_a_last_name_to_create_a_person(tmp_path):
    text = """
    type = "colleague"
    direction = "outgoing"
    [[fields]]
    hub = "first_name"
    remote = "firstName"
    [settings]
    api_key = { env = "TEST_CHECK_TOKEN" }
    """
    instance = load(tmp_path, ColleagueConnector, text)
    (last,) = ColleagueConnector.required_mappings.outgoing

    (problem,) = missing_mappings(instance)

    assert problem.startswith("outgoing:") and repr(last)[1:-1] in problem


def test_the_catalogue_adds_required_fields_the_declaration_does_not_name(tmp_path):
    text = SALESFORCE.format(fields=fields(("last_name", "LastName")), object="Contact")
    instance = load(tmp_path, SalesforceConnector, text)
    catalogue = [
        RemoteField("LastName", required=True),
        RemoteField("Campus__c", required=True),  # the org's own rule
        RemoteField("Email"),
    ]

    (problem,) = missing_catalogue_mappings(instance, catalogue)

    assert "Campus__c" in problem and "LastName" not in problem


# --- URL settings ------------------------------------------------------------------------------


def _example_connector() -> type[Any]:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "contactsync-example"))
    try:
        from contactsync_example.connector import ExampleConnector
    finally:
        sys.path.pop(0)
    return ExampleConnector


URL_PLUGINS = {
    "hubspot": (HubSpotConnector, "base_url", 'access_token = { env = "TEST_CHECK_TOKEN" }'),
    "salesforce": (
        SalesforceConnector,
        "login_url",
        'client_id = "app"\nclient_secret = { env = "TEST_CHECK_TOKEN" }',
    ),
    "slate": (
        SlateConnector,
        "base_url",
        'query_id = "q"\ntoken = { env = "TEST_CHECK_TOKEN" }\nupload = "web"\n'
        'format_id = "f"\nusername = "svc"\npassword = { env = "TEST_CHECK_TOKEN" }',
    ),
    "colleague": (ColleagueConnector, "base_url", 'api_key = { env = "TEST_CHECK_TOKEN" }'),
    # contactsync auth's sign-in page: a URL setting like the others.
    "hubspot-authorize": (
        HubSpotConnector,
        "authorize_url",
        'access_token = { env = "TEST_CHECK_TOKEN" }',
    ),
    "example": (None, "base_url", 'token = { env = "TEST_CHECK_TOKEN" }'),
}

BAD_URLS = {
    "no scheme": ("api.hubapi.com", "https://api.hubapi.com"),
    "ftp": ("ftp://files.example.edu", "not http or https"),
    "space": ("https://api.example.edu/a b", "no spaces"),
    "empty host": ("https://", "no host"),
    "empty": ("", "not empty"),
    "plain http off loopback": ("http://api.example.edu", "clear text"),
    "credentials in it": ("https://user:pw@api.example.edu", "credentials"),
}


def url_instance(tmp_path: Path, platform: str, url: str) -> Any:
    connector, key, settings = URL_PLUGINS[platform]
    connector = connector or _example_connector()
    text = f'type = "{connector.type}"\n[settings]\n{key} = "{url}"\n{settings}\n'
    return load(tmp_path, connector, text, name=platform)


@pytest.mark.parametrize("platform", sorted(URL_PLUGINS))
@pytest.mark.parametrize("mistake", sorted(BAD_URLS))
def test_a_url_setting_that_is_no_http_url_is_invalid_at_load(tmp_path, platform, mistake):
    url, words = BAD_URLS[mistake]
    with pytest.raises(ConfigError) as info:
        url_instance(tmp_path, platform, url)

    error = info.value
    assert error.key == f"settings.{URL_PLUGINS[platform][1]}"
    assert words in error.reason
    assert "pw" not in str(error)  # a password in a URL is never repeated


@pytest.mark.parametrize("platform", sorted(URL_PLUGINS))
@pytest.mark.parametrize(
    "url",
    ["https://my.example.edu", "https://my.example.edu:8443/api/", "http://127.0.0.1:40123"],
)
def test_https_urls_and_loopback_http_load(tmp_path, platform, url):
    if platform == "salesforce" and "127.0.0.1" not in url:
        url = "https://myschool.my.salesforce.com"  # client_credentials needs a My Domain
    instance = url_instance(tmp_path, platform, url)
    assert getattr(instance.settings, URL_PLUGINS[platform][1]) == url


@pytest.mark.parametrize(
    "url", ["http://localhost:8080", "http://[::1]:9000", "http://127.0.0.5", "HTTPS://X.EDU"]
)
def test_loopback_names_and_an_upper_case_scheme_are_accepted(url):
    assert check_platform_url(url) == url


def test_a_url_without_a_scheme_is_config_invalid_for_check_and_status(run):
    folder = run.etc / "instances"
    folder.mkdir(exist_ok=True)
    path = folder / "hs.toml"
    path.write_text(
        'type = "hubspot"\n[settings]\nbase_url = "api.hubapi.com"\n'
        f'access_token = {{ env = "{TOKEN_ENV}" }}\n'
    )

    (result,) = run.json("check", "hs", expect=2)

    assert result["config_error"]["key"] == "settings.base_url"
    assert result["problems"][0]["code"] == "config-invalid"
    assert "https://api.hubapi.com" in result["config_error"]["reason"]


SFTP = """
type = "sftp"
direction = "incoming"
[settings]
preset = "{preset}"
columns = {columns}
[settings.transport]
kind = "local"
path = "{path}"
"""


@pytest.mark.parametrize("preset", ["mainstay", "banner", "recruit"])
def test_the_sftp_presets_map_what_the_hub_needs_and_a_dropped_column_is_named(tmp_path, preset):
    from plugins.sftp.connector import SftpConnector

    text = SFTP.format(preset=preset, columns="{}", path=tmp_path)
    assert missing_mappings(load(tmp_path, SftpConnector, text)) == []

    dropped = SFTP.format(preset=preset, columns='{ phone = "" }', path=tmp_path)
    (problem,) = missing_mappings(load(tmp_path, SftpConnector, dropped))
    assert problem.startswith("incoming:") and "phone" in problem.split(";")[0]


EXAMPLES = sorted((ROOT / "examples" / "instances").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_instance_file_maps_what_creating_records_needs(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a newcomer copies must pass check's mapping rules.
    from daemon.engine.registry import Registry, get_plugin_manager
    from tests.test_examples import SECRETS

    for name in SECRETS:
        monkeypatch.setenv(name, f"example-{name.lower()}")
    connectors = Registry.from_plugin_manager(get_plugin_manager()).connectors
    copy = tmp_path / example.name
    copy.write_text(example.read_text())

    assert missing_mappings(load_instance(copy, connectors)) == []


def test_the_daemon_logs_a_url_without_a_scheme_as_config_invalid_and_never_calls_it(
    tmp_path: Path, sqlite_engine: Any
) -> None:
    # The daemon's load path (the reload every start and file change goes through): one
    # config-invalid sync-log row naming the key, and no instance to cycle on.
    from daemon.foundation.dictionary import Code
    from daemon.hub.synclog_query import query_log
    from daemon.runtime.reload import ConfigState

    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "instances" / "hs.toml").write_text(
        'type = "hubspot"\n[settings]\nbase_url = "api.hubapi.com"\n'
        f'access_token = {{ env = "{TOKEN_ENV}" }}\n'
    )
    state = ConfigState(etc, sqlite_engine, {"hubspot": HubSpotConnector})

    result = state.reload()

    assert "hs" in result.invalid and "hs" not in state.instances
    (row,) = query_log(sqlite_engine, code=str(Code.CONFIG_INVALID))
    assert row["instance"] == "hs" and row["details"]["key"] == "settings.base_url"
    assert "https://api.hubapi.com" in row["details"]["reason"]
