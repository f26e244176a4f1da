"""Hostile config files: whatever bytes an instance file or ``contactsync.toml`` holds, the
outcome is that file's ``config-invalid`` (a sync-log row and a JSON line, or exit 2 for the
daemon's own settings), never a crash, a traceback, or a reload that stops seeing new files.

Each hostile kind is built by :data:`HOSTILE`; the daemon test starts ``contactsync run`` with
two of them among good files and adds a bad and then a good file while it runs.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from daemon.cli import App, cli
from daemon.config import settings as settings_module
from daemon.config.instances import load_instances
from daemon.config.settings import ConfigError, load_settings, read_toml
from daemon.engine.registry import BLOCK_ENV, get_plugin_manager
from daemon.foundation.dictionary import Code
from daemon.hub.synclog_query import query_log
from daemon.runtime.reload import ConfigState
from tests.clikit import isolated
from tests.daemonkit import DaemonProcess, daemon_settings, instance_toml
from tests.enginekit import CONNECTORS, write_instance
from tests.test_cli_hub import MemoryPlugin

GOOD = 'type = "memory"\n[settings]\nremote = "good"\n'


def _deep(depth: int) -> bytes:
    return b"type = 'memory'\nx = " + b"[" * depth + b"]" * depth + b"\n"


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path)


def _folder(path: Path) -> None:
    path.mkdir()


# name -> (how to make the file, words its reason must hold)
HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "latin1": (lambda p: p.write_bytes(b"# Caf\xe9\n" + GOOD.encode()), "not UTF-8"),
    "deep": (lambda p: p.write_bytes(_deep(100_000)), "nested deeper"),
    # Parses without exhausting the stack, then would be walked recursively downstream.
    "fairly-deep": (lambda p: p.write_bytes(_deep(200)), "nested deeper"),
    "nul": (lambda p: p.write_bytes(b'type = "mem\x00ory"\n'), "not valid TOML"),
    "loop": (_symlink_loop, "cannot be read"),
    "folder": (_folder, "cannot be read"),
    "huge": (lambda p: p.write_bytes(b"#" * (2 * 1024 * 1024)), "larger than"),
}


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    (folder / "instances").mkdir(parents=True)
    return folder


# --- the loader -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_file_is_that_files_config_error(etc: Path, kind: str) -> None:
    make, words = HOSTILE[kind]
    make(etc / "instances" / "bad.toml")
    write_instance(etc, "good")
    loaded = load_instances(etc, CONNECTORS)
    assert sorted(loaded.instances) == ["good"]
    error = loaded.errors["bad"]
    assert error.path.endswith("bad.toml") and words in error.reason


def test_read_toml_names_the_line_of_a_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(b'type = "memory"\n# Caf\xe9\n')
    with pytest.raises(ConfigError, match=r"byte 0xe9 on line 2"):
        read_toml(path)


@pytest.mark.parametrize("kind", ["latin1", "deep", "nul"])
def test_a_hostile_settings_file_is_a_config_error(etc: Path, kind: str) -> None:
    make, words = HOSTILE[kind]
    make(etc / "contactsync.toml")
    with pytest.raises(ConfigError, match=words):
        load_settings(etc)


# --- hot reload -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["latin1", "deep", "loop"])
def test_reload_after_a_hostile_file_still_picks_up_new_good_files(
    etc: Path, sqlite_engine, kind: str
) -> None:
    write_instance(etc, "alpha")
    state = ConfigState(etc, sqlite_engine, CONNECTORS)
    assert state.reload().added == ["alpha"]
    HOSTILE[kind][0](etc / "instances" / "bad.toml")
    result = state.reload()  # raised before the fix: every later reload failed
    assert sorted(result.invalid) == ["bad"] and result.unchanged == ["alpha"]
    write_instance(etc, "beta")
    result = state.reload()
    assert result.added == ["beta"] and sorted(result.invalid) == ["bad"]
    rows = query_log(sqlite_engine, code=str(Code.CONFIG_INVALID))
    assert [r["instance"] for r in rows] == ["bad"]  # reported once, not on every reload


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings_module, "SYSTEM_ETC_DIR", tmp_path / "no-system-etc")
    with isolated(monkeypatch, BLOCK_ENV, "MEM_KEY"):
        yield


def invoke(etc: Path, *args: str) -> Result:
    pm = get_plugin_manager(plugins=[MemoryPlugin()])
    db = f"sqlite:///{etc.parent / 'hub.db'}"
    return CliRunner().invoke(cli, ["--etc", str(etc), "--database-url", db, *args], obj=App(pm=pm))


@pytest.mark.parametrize("kind", ["latin1", "deep"])
def test_check_and_status_name_the_bad_file_without_a_traceback(
    etc: Path, cli_env: None, kind: str
) -> None:
    write_instance(etc, "good")
    HOSTILE[kind][0](etc / "instances" / "bad.toml")
    check = invoke(etc, "check")
    assert check.exception is None or isinstance(check.exception, SystemExit)
    assert "Traceback" not in check.output + check.stderr
    assert "bad.toml" in check.output + check.stderr
    assert HOSTILE[kind][1] in check.output + check.stderr
    checked = json.loads(invoke(etc, "check", "--json").stdout)
    assert "bad" in json.dumps(checked) and HOSTILE[kind][1] in json.dumps(checked)
    status = invoke(etc, "status")
    assert status.exit_code == 0, status.output
    assert "Traceback" not in status.output + status.stderr


def test_a_hostile_settings_file_exits_2_with_a_clear_message(etc: Path, cli_env: None) -> None:
    HOSTILE["latin1"][0](etc / "contactsync.toml")
    result = invoke(etc, "status")
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr and "Traceback" not in result.output + result.stderr


# --- the daemon -----------------------------------------------------------------------------


def test_the_daemon_runs_the_good_instances_beside_hostile_files(tmp_path: Path) -> None:
    """``contactsync run`` with bad files among good ones: it starts, runs the good one,
    logs each bad one as config-invalid, and a bad file then a good file added while it
    runs: the good one is picked up."""
    etc = tmp_path / "etc"
    instances = etc / "instances"
    instances.mkdir(parents=True)
    (etc / "contactsync.toml").write_text(
        daemon_settings(reload_debounce_ms=50, shutdown_grace_seconds=5), encoding="utf-8"
    )
    (instances / "alpha.toml").write_text(instance_toml(tmp_path / "alpha.json"))
    HOSTILE["latin1"][0](instances / "latin.toml")
    HOSTILE["deep"][0](instances / "deep.toml")
    daemon = DaemonProcess(
        etc, tmp_path, database_url=f"sqlite:///{tmp_path / 'hub.db'}", env={"MEM_KEY": "k"}
    ).start()
    try:
        daemon.wait_log("daemon_started")
        daemon.wait_log("sync_cycle", instance="alpha", direction="pull", outcome="ok")
        for name in ("latin", "deep"):
            daemon.wait_log("sync_error", code="config-invalid", instance=name)
        HOSTILE["loop"][0](instances / "loop.toml")
        daemon.wait_log("sync_error", code="config-invalid", instance="loop")
        (instances / "beta.toml").write_text(instance_toml(tmp_path / "beta.json"))
        daemon.wait_log("sync_cycle", instance="beta", direction="pull", outcome="ok")
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    finally:
        daemon.stop()
    assert not daemon.logged("daemon_crashed") and not daemon.logged("config_reload_failed")
    assert all(isinstance(json.loads(line), dict) for line in daemon.lines())


def test_the_daemon_refuses_a_hostile_settings_file_with_exit_2(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    HOSTILE["deep"][0](etc / "contactsync.toml")
    daemon = DaemonProcess(etc, tmp_path, database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    daemon.start()
    try:
        assert daemon.wait(timeout=30) == 2
    finally:
        daemon.stop()
    refused = daemon.logged("daemon_not_started", code="config-invalid")
    assert refused and "nested deeper" in refused[0]["reason"]


# --- folder settings ------------------------------------------------------------------------

LOCAL = '[settings.transport]\nkind = "local"\npath = "/srv/files"\n'
SLATE = 'base_url = "https://slate.example.edu"\nquery_id = "q"\ntoken = { env = "SLATE_TOKEN" }\n'
FOLDER_CASES = [
    ("sftp", "", 'file_prefix = "../../x"', "settings.file_prefix", "folder separator"),
    ("sftp", "", 'file_prefix = "..\\\\x"', "settings.file_prefix", "folder separator"),
    ("sftp", "", 'outgoing_folder = "/etc"', "settings.outgoing_folder", "absolute"),
    ("sftp", "", 'incoming_folder = "in/../../x"', "settings.incoming_folder", "'..'"),
    ("sftp", "", 'processed_folder = "..\\\\done"', "settings.processed_folder", "'..'"),
    ("sftp", "", 'error_folder = "C:\\\\err"', "settings.error_folder", "absolute"),
    ("sftp", "", 'outgoing_folder = "out\\u0000"', "settings.outgoing_folder", "control"),
    ("slate", SLATE, 'folder = "../mainstay"', "settings.folder", "'..'"),
    ("slate", SLATE, 'file_prefix = "a/b"', "settings.file_prefix", "folder separator"),
    ("conversations_export", "", 'folder = "/var/tmp"', "settings.folder", "absolute"),
    ("conversations_export", "", 'folder = "a/../../x"', "settings.folder", "'..'"),
]


@pytest.fixture(scope="module")
def plugin_connectors() -> dict:
    from daemon.engine.registry import Registry

    return Registry.from_plugin_manager(get_plugin_manager()).connectors


@pytest.mark.parametrize(("kind", "base", "line", "key", "words"), FOLDER_CASES)
def test_a_traversal_looking_folder_setting_is_config_invalid_at_load(
    etc: Path, plugin_connectors: dict, kind: str, base: str, line: str, key: str, words: str
) -> None:
    path = etc / "instances" / "files.toml"
    path.write_text(f'type = "{kind}"\n[settings]\n{base}{line}\n{LOCAL}', encoding="utf-8")
    loaded = load_instances(etc, plugin_connectors, secrets=False)
    error = loaded.errors["files"]
    assert (error.key, words in error.reason) == (key, True), error


@pytest.mark.parametrize(
    ("kind", "base", "line"),
    [
        ("sftp", "", 'outgoing_folder = "drops/out/"\nfile_prefix = "contacts.v2"'),
        ("slate", SLATE, 'folder = "mainstay"\nfile_prefix = "mainstay_contact"'),
        ("conversations_export", "", 'folder = ""'),
    ],
)
def test_fitting_folder_settings_load_normalised(
    etc: Path, plugin_connectors: dict, kind: str, base: str, line: str
) -> None:
    path = etc / "instances" / "files.toml"
    path.write_text(f'type = "{kind}"\n[settings]\n{base}{line}\n{LOCAL}', encoding="utf-8")
    loaded = load_instances(etc, plugin_connectors, secrets=False)
    assert not loaded.errors, loaded.errors
    settings = loaded.instances["files"].settings
    if kind == "sftp":
        assert settings.outgoing_folder == "drops/out"  # the trailing / is gone


# --- check agrees with sync on the file id column ------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "instances"


def _local_copy(text: str, files: Path) -> str:
    """An sftp instance file with its transport swapped for a local folder."""
    head = text.split("[settings.transport]")[0]
    return head + f'[settings.transport]\nkind = "local"\npath = "{files}"\n'


@pytest.mark.parametrize(
    "body",
    [
        (EXAMPLES / "banner.toml").read_text(encoding="utf-8"),
        'type = "sftp"\ndirection = "both"\n[settings]\npreset = "mainstay"\n',
    ],
    ids=["banner-example", "mainstay-both"],
)
def test_check_passes_a_file_instance_that_maps_its_id_column_both_ways(
    etc: Path, cli_env: None, body: str
) -> None:
    """The id column is how an outgoing row is keyed (push writes it on every row), so a
    both-ways map onto it is no read-only violation: check agrees with sync."""
    files = etc.parent / "files"
    for folder in ("incoming", "outgoing"):
        (files / folder).mkdir(parents=True)
    (etc / "instances" / "files.toml").write_text(_local_copy(body, files), encoding="utf-8")
    result = invoke(etc, "check", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report
    assert "read-only" not in result.stdout
