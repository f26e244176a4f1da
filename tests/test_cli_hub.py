"""One hub, always explicit: which config folder and hub a command uses, the refusal where
there is none, ``contactsync init``, the root options on either side of the command, and staff
shells that lack the daemon's secrets."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from daemon.cli import App, cli, hoist_root_options, output
from daemon.cli.init import settings_reference
from daemon.config import settings as settings_module
from daemon.config.settings import SETTINGS_FILE, Settings, load_settings
from daemon.engine.registry import BLOCK_ENV, get_plugin_manager
from daemon.hookspecs import hookimpl
from tests.clikit import isolated
from tests.memremote import MemoryConnector

SECRET = "sk-live-Zq8SHELLKEY9921"
ADA = ("--first-name", "Ada", "--last-name", "Lovelace", "--phone", "(202) 555-0143")


class MemoryPlugin:
    """The in-memory connector, whose ``api_key`` is a secret."""

    @hookimpl
    def register_connectors(self, register):
        register(MemoryConnector)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No outside settings, no secret, a fresh working folder and no system config folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings_module, "SYSTEM_ETC_DIR", tmp_path / "no-system-etc")
    with isolated(monkeypatch, BLOCK_ENV, "MEM_KEY"):
        yield


def invoke(*args: str, expect: int = 0) -> Result:
    pm = get_plugin_manager(plugins=[MemoryPlugin()])
    result = CliRunner().invoke(cli, list(args), obj=App(pm=pm))
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return result


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# --- the refusal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("contacts", "add", *ADA),
        ("contacts", "list"),
        ("import", "people.csv"),
        ("status",),
        ("log",),
        ("fields", "list"),
    ],
)
def test_a_command_with_no_config_folder_refuses_and_creates_nothing(tmp_path, args):
    (tmp_path / "people.csv").write_text("first_name,last_name,phone\nA,B,2025550143\n")
    before = files_under(tmp_path)

    result = invoke(*args, expect=2)

    assert files_under(tmp_path) == before  # no var/, no contactsync.db
    message = " ".join(result.stderr.split())
    for fix in ("contactsync init", "--etc", "CONTACTSYNC_ETC", "--database-url"):
        assert fix in message
    assert "CONTACTSYNC_DATABASE_URL" in message
    assert result.stdout == ""


@pytest.mark.parametrize("hub", [(), ("--database-url", "sqlite:///named.db")])
def test_the_daemon_with_no_config_folder_refuses_and_creates_nothing(tmp_path, hub):
    # The daemon watches its folder's instances/: a hub named by URL is not enough to start.
    before = files_under(tmp_path)

    result = invoke(*hub, "run", expect=2)

    assert files_under(tmp_path) == before
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["event"] == "daemon_not_started"
    assert line["code"] == "config-invalid"
    assert "contactsync init" in line["reason"]


@pytest.mark.parametrize("made", [None, "empty", "unrelated"])
def test_a_mistyped_etc_is_an_error(tmp_path, made):
    folder = tmp_path / "etcc"
    if made:
        folder.mkdir()
    if made == "unrelated":
        (folder / "notes.txt").write_text("not a config")
    before = files_under(tmp_path)

    url = f"sqlite:///{tmp_path}/h.db"
    result = invoke("--etc", str(folder), "--database-url", url, "status", expect=2)

    assert str(folder) in result.stderr
    assert ("no such folder" if made is None else "not a config folder") in result.stderr
    assert files_under(tmp_path) == before


def test_a_mistyped_contactsync_etc_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTACTSYNC_ETC", str(tmp_path / "nowhere"))
    result = invoke("contacts", "list", expect=2)
    assert "CONTACTSYNC_ETC: no such folder" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("errors",),
        ("errors", "config-invalid"),
        ("plugins",),
        ("contacts", "--help"),
        ("simulate", "hubspot", "--list-knobs"),
    ],
)
def test_commands_that_need_no_hub_work_anywhere(tmp_path, args):
    before = files_under(tmp_path)
    invoke(*args)
    assert files_under(tmp_path) == before


def test_a_named_hub_needs_no_config_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'named.db'}"
    invoke("--database-url", url, "contacts", "add", *ADA)

    shown = json.loads(invoke("--database-url", url, "status", "--json").stdout)

    assert shown["hub"] == {"url": url, "named_by": "--database-url"}
    assert shown["config"] == {"folder": None, "named_by": None}
    assert not (tmp_path / "var").exists()


def test_the_environment_may_name_the_hub(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CONTACTSYNC_DATABASE_URL", url)
    shown = json.loads(invoke("status", "--json").stdout)
    assert shown["hub"] == {"url": url, "named_by": "CONTACTSYNC_DATABASE_URL"}


def test_status_never_shows_the_database_password(tmp_path):
    url = "postgresql://staff:hunter2-Pw@127.0.0.1:1/hub"
    result = invoke("--database-url", url, "status", "--json", expect=2)  # nothing listens
    assert "hunter2" not in result.stdout + result.stderr
    shown = App(database_url=url).whereabouts()
    assert "hunter2" not in json.dumps(shown)
    assert shown["hub"]["url"] == "postgresql://***@127.0.0.1:1/hub"


# --- init ------------------------------------------------------------------------------------


def test_init_then_commands_work_in_the_default_folder(tmp_path):
    result = invoke("init")
    assert "etc/contactsync.toml" in result.stdout
    assert (tmp_path / "etc" / "instances" / "README.md").is_file()

    added = json.loads(invoke("contacts", "add", *ADA, "--json").stdout)
    shown = json.loads(invoke("status", "--json").stdout)

    here = Path.cwd()
    assert shown["config"] == {"folder": str(here / "etc"), "named_by": "default"}
    assert shown["hub"] == {
        "url": f"sqlite:///{here / 'var' / 'contactsync.db'}",
        "named_by": "default: SQLite in the state folder",
    }
    assert (tmp_path / "var" / "contactsync.db").is_file()
    listed = json.loads(invoke("contacts", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [added["id"]]


def test_init_refuses_to_overwrite_unless_forced(tmp_path):
    folder = tmp_path / "conf"
    invoke("init", str(folder))
    (folder / SETTINGS_FILE).write_text("[hub]\nbatch_size = 7\n")

    result = invoke("init", str(folder), expect=1)
    assert "--force" in result.stderr
    assert load_settings(folder).hub.batch_size == 7

    invoke("init", str(folder), "--force")
    assert load_settings(folder).hub.batch_size == Settings().hub.batch_size


def test_init_writes_to_the_folder_etc_names(tmp_path):
    invoke("--etc", str(tmp_path / "site"), "init")
    assert (tmp_path / "site" / SETTINGS_FILE).is_file()


def _uncommented(text: str) -> str:
    """The reference with every ``# key = default`` line switched on (examples of unset
    settings left commented: switching them on would change the defaults)."""
    lines = []
    for line in text.splitlines():
        match = re.match(r"^# (\w+ = .*)$", line)
        if match and "unset by default" not in line:
            lines.append(match.group(1))
        else:
            lines.append(line)
    return "\n".join(lines)


def test_the_settings_reference_lists_every_setting_at_its_default():
    text = settings_reference()

    assert tomllib.loads(text) == {k: {} for k in ("database", "hub", "daemon", "log", "http")}
    switched_on = tomllib.loads(_uncommented(text))
    defaults = Settings().model_dump(exclude_none=True)
    assert switched_on == defaults
    listed = set(re.findall(r"^# (\w+) = ", text, flags=re.MULTILINE))
    for name, info in Settings.model_fields.items():
        if info.exclude:
            continue
        model = info.annotation
        nested = getattr(model, "model_fields", None)
        assert (set(nested) <= listed) if nested else (name in listed)


# --- the root options on either side ----------------------------------------------------------


def test_etc_and_database_url_work_before_or_after_the_command(tmp_path):
    etc = tmp_path / "site"
    invoke("init", str(etc))
    url = f"sqlite:///{tmp_path / 'h.db'}"

    def shown(*args: str) -> Any:
        return json.loads(invoke(*args).stdout)

    before = shown("--etc", str(etc), "--database-url", url, "status", "--json")
    after = shown("status", "--json", "--etc", str(etc), f"--database-url={url}")
    mixed = shown("--etc", str(etc), "status", "--database-url", url, "--json")

    assert before == after == mixed
    assert before["config"] == {"folder": str(etc), "named_by": "--etc"}
    assert before["hub"]["url"] == url


def test_hoisting_moves_only_the_root_options():
    assert hoist_root_options(["contacts", "add", "--etc", "x", "--first-name", "A"]) == [
        "--etc",
        "x",
        "contacts",
        "add",
        "--first-name",
        "A",
    ]
    assert hoist_root_options(["log", "--log-level=debug", "--", "--etc"]) == [
        "--log-level=debug",
        "log",
        "--",
        "--etc",
    ]
    assert hoist_root_options(["status", "--etc"]) == ["--etc", "status"]  # click says why


# --- staff shells without the daemon's secrets -------------------------------------------------


@pytest.fixture
def site(tmp_path) -> tuple[Path, str]:
    """A config folder with one memory instance whose key is ``{ env = "MEM_KEY" }``, and a
    hub; ``MEM_KEY`` is not set (the fixture above removed it)."""
    etc = tmp_path / "site"
    (etc / "instances").mkdir(parents=True)
    (etc / "instances" / "mem.toml").write_text(
        'type = "memory"\n[settings]\nremote = "shell"\napi_key = { env = "MEM_KEY" }\n'
        '[[fields]]\nhub = "first_name"\nremote = "first_name"\n'
    )
    return etc, f"sqlite:///{tmp_path / 'hub.db'}"


def quiet(result: Result) -> None:
    """No word about the secret on stderr (a warning, a config-invalid)."""
    assert "MEM_KEY" not in result.stderr
    assert "instance_file_invalid" not in result.stderr
    assert "config-invalid" not in result.stderr


def test_hub_commands_in_a_shell_without_the_secrets_are_quiet(site, tmp_path):
    etc, url = site
    base = ("--etc", str(etc), "--database-url", url)
    csv = tmp_path / "in.csv"
    csv.write_text("first_name,last_name,phone\nGrace,Hopper,2025550181\n")

    added = invoke(*base, "contacts", "add", *ADA, "--json")
    quiet(added)
    contact = json.loads(added.stdout)["id"]
    quiet(invoke(*base, "contacts", "edit", contact, "--email", "ada@example.edu"))
    quiet(invoke(*base, "import", str(csv)))
    quiet(invoke(*base, "log"))
    quiet(invoke(*base, "contacts", "list"))
    status = invoke(*base, "status", "--json")
    quiet(status)

    (row,) = json.loads(status.stdout)["instances"]
    assert row["state"] == "secret-unavailable"
    assert row["not_in_this_shell"] == [
        {"setting": "settings.api_key", "reason": "environment variable MEM_KEY is not set"}
    ]
    assert row["config_error"] is None
    # The instance was still mirrored: the hub writes above queued for its connection.
    assert row["outbox"]["pending"] >= 2


def test_status_tells_a_missing_secret_from_a_broken_file(site):
    etc, url = site
    (etc / "instances" / "broken.toml").write_text('type = "memory"\nbogus = 1\n')

    out = invoke("--etc", str(etc), "--database-url", url, "status").stdout

    assert re.search(r"broken .*config-invalid", out)
    assert re.search(r"mem .*secret-unavailable", out)
    assert "MEM_KEY is not set in this shell" in " ".join(out.split())


def test_with_the_secret_set_status_is_ok_and_never_reads_it(site, monkeypatch):
    etc, url = site
    monkeypatch.setenv("MEM_KEY", SECRET)
    result = invoke("--etc", str(etc), "--database-url", url, "status", "--json")
    (row,) = json.loads(result.stdout)["instances"]
    assert row["state"] == "ok" and row["not_in_this_shell"] == []
    assert SECRET not in result.stdout + result.stderr


def test_sync_without_the_secret_fails_naming_the_variable(site):
    etc, url = site
    result = invoke("--etc", str(etc), "--database-url", url, "sync", "mem", expect=2)
    assert "config-invalid" in result.stderr
    assert "settings.api_key" in result.stderr and "MEM_KEY is not set" in result.stderr


def test_sync_with_the_secret_resolves_it(site, monkeypatch):
    etc, url = site
    monkeypatch.setenv("MEM_KEY", SECRET)
    MemoryConnector.REMOTES.pop("shell", None)
    result = invoke("--etc", str(etc), "--database-url", url, "sync", "mem")
    assert SECRET not in result.stdout + result.stderr


# --- status at 100 columns --------------------------------------------------------------------


def _status_values(row: dict[str, Any]) -> list[str]:
    values = [v for v in (row["name"], row["type"], row["state"]) if v]
    for run in row["last_runs"].values():
        if run:
            values.append(run["outcome"])
    return values


def test_status_at_100_columns_breaks_no_word(site, monkeypatch):
    etc, url = site
    (etc / "instances" / "a-rather-long-instance-name.toml").write_text(
        'type = "memory"\n[settings]\nremote = "other"\n'
        '[[fields]]\nhub = "first_name"\nremote = "first_name"\n'
    )
    (etc / "instances" / "broken-salesforce-file.toml").write_text('type = "memory"\nbogus = 1\n')
    base = ("--etc", str(etc), "--database-url", url)
    invoke(*base, "contacts", "add", *ADA)
    MemoryConnector.REMOTES.pop("other", None)
    invoke(*base, "sync", "a-rather-long-instance-name")
    monkeypatch.setattr(output.console, "width", 100)

    out = invoke(*base, "status").stdout
    rows = json.loads(invoke(*base, "status", "--json").stdout)["instances"]

    assert max(len(line) for line in out.splitlines() if "│" in line) <= 100
    table = " ".join(line for line in out.splitlines() if "│" in line)
    words = " ".join(
        " ".join(cell.strip() for cell in line.split("│")) for line in out.splitlines()
    ).split()
    for row in rows:
        for value in _status_values(row):
            assert value in table
            assert value in words, f"{value!r} broken apart"
    monkeypatch.setattr(output.console, "width", 250)
    wide = invoke(*base, "status", "--wide").stdout
    for column in ("connection", "direction", "lease", "cursor"):
        assert column in wide and column not in out


def test_the_example_instance_init_writes_is_valid(tmp_path, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TOKEN", raising=False)
    invoke("init")
    readme = (tmp_path / "etc" / "instances" / "README.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
    (tmp_path / "etc" / "instances" / "hubspot.toml").write_text(example)

    result = CliRunner().invoke(cli, ["status", "--json"], obj=App(pm=get_plugin_manager()))

    (row,) = json.loads(result.stdout)["instances"]
    assert (row["type"], row["state"]) == ("hubspot", "secret-unavailable")
    assert "HUBSPOT_TOKEN" in row["not_in_this_shell"][0]["reason"]
