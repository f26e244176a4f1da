"""The third-party path, proven end to end with tests/fixtures/contactsync-example.

The example is a separate distribution. It is built and installed with pip into a temporary
folder, never into the venv, and everything after that runs in subprocesses whose
``PYTHONPATH`` is that folder plus this checkout: the daemon must find the plugin through its
entry point alone (``CONTACTSYNC_PLUGINS`` is cleared), serve its simulator with
``contactsync simulate``, sync an instance against it, and the plugin's own contract suite
must pass. Nothing in contactsync names the example.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "fixtures" / "contactsync-example"
# Written against the previous release's docs: the simulator kit from daemon.simkit.
OLD_PATH_PLUGIN = ROOT / "tests" / "fixtures" / "contactsync-oldpath"
TOKEN_ENV = "EXAMPLE_TOKEN"
INSTANCE = """\
type = "example"
direction = "both"

[[fields]]
hub = "first_name"
remote = "first_name"
[[fields]]
hub = "last_name"
remote = "last_name"
[[fields]]
hub = "phone"
remote = "phone"
[[fields]]
hub = "email"
remote = "email"

[settings]
base_url = "{url}"
token = {{ env = "{env}" }}
"""


@dataclass
class Installed:
    """Where the example was installed and the environment that sees it."""

    site: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``contactsync ARGS`` in the plugin's environment; fails the test on a non-zero exit."""
        done = subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"contactsync {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)


def _pip_install(source: Path, target: Path) -> None:
    """``pip install --no-deps --target``: first with the venv's own setuptools and no index
    at all; where that setuptools cannot build wheels by itself (no ``wheel`` package), with
    build isolation from pip's configured index (a local one on these machines)."""
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target"]
    attempts = [
        [*base, str(target), "--no-build-isolation", "--no-index", str(source)],
        [*base, str(target), str(source)],
    ]
    outputs = []
    for command in attempts:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
        outputs.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        shutil.rmtree(target, ignore_errors=True)
    pytest.fail("pip could not install the example plugin:\n" + "\n".join(outputs))


def _install(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Installed:
    """The distribution in ``folder`` built from a copy (so no build files land in the repo)
    and installed into a temporary site, with a work folder and an environment that sees it."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip("pip is not available in this interpreter")
    base = tmp_path_factory.mktemp(folder.name)
    source = base / "src"
    shutil.copytree(
        folder, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = base / "site"
    _pip_install(source, site)
    work = base / "work"
    (work / "etc" / "instances").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
        CONTACTSYNC_ETC=str(work / "etc"),
        CONTACTSYNC_DATABASE_URL=f"sqlite:///{work / 'hub.db'}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return Installed(site, work, env)


@dataclass
class Served:
    """A running ``contactsync simulate``: its JSON line, and its stderr once it stopped."""

    line: dict[str, Any]
    stderr: str = ""


@contextlib.contextmanager
def _simulate(installed: Installed, *args: str) -> Iterator[Served]:
    """``contactsync simulate ARGS`` running until the block ends (then SIGTERM)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon", "simulate", *args],
        env=installed.env,
        cwd=installed.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served({})
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        line = process.stdout.readline() if ready else ""
        if not line:
            process.kill()
            _, err = process.communicate(timeout=5)
            pytest.fail(f"contactsync simulate printed no JSON line; stderr:\n{err}")
        served.line = json.loads(line)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, served.stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, served.stderr = process.communicate()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The example plugin, installed."""
    return _install(tmp_path_factory, EXAMPLE)


@pytest.fixture(scope="module")
def simulator(installed: Installed) -> Iterator[dict[str, Any]]:
    """``contactsync simulate example --contacts 25`` running; yields its JSON line."""
    with _simulate(installed, "example", "--contacts", "25") as served:
        yield served.line


def test_the_plugin_is_discovered_through_its_entry_point(installed: Installed) -> None:
    data = installed.json("plugins", "--json")
    plugins = {p["name"]: p for p in data["plugins"]}
    assert "example" in plugins, f"example not discovered: {sorted(plugins)}"
    example = plugins["example"]
    assert example["distribution"] == "contactsync-example"
    assert example["connectors"] == ["example"]
    assert example.get("simulators", ["example"]) == ["example"]
    assert {"register_connectors", "register_simulators"} <= set(example["hooks"])
    assert data["problems"] == []
    # Discovery came from the installed metadata in the temporary folder, not the repo.
    assert list(installed.site.glob("contactsync_example-*.dist-info/entry_points.txt"))


def test_simulate_prints_url_and_credentials(simulator: dict[str, Any]) -> None:
    assert simulator["name"] == "example"
    assert simulator["url"].startswith("http://127.0.0.1:")
    assert simulator["credentials"]["token"]
    state = httpx.get(f"{simulator['url']}/_sim/state", timeout=5).json()
    assert len(state["contacts"]) == 25


def test_sync_against_the_simulator(installed: Installed, simulator: dict[str, Any]) -> None:
    url, token = simulator["url"], simulator["credentials"]["token"]
    httpx.post(f"{url}/_sim/reset", timeout=5).raise_for_status()
    instance = installed.work / "etc" / "instances" / "example.toml"
    instance.write_text(INSTANCE.format(url=url, env=TOKEN_ENV), encoding="utf-8")
    installed.env[TOKEN_ENV] = token
    # A hub contact made before the sync goes out in its push.
    installed.run(
        *("contacts", "add", "--first-name", "Hedy", "--last-name", "Lamarr"),
        *("--phone", "+12025550199", "--email", "hedy@example.org"),
    )

    started = time.monotonic()
    result = installed.json("sync", "example", "--json")
    assert [r["outcome"] for r in result["reports"]] == ["ok", "ok"], result
    assert time.monotonic() - started < 30

    contacts = installed.json("contacts", "list", "--json", "--limit", "100")
    assert len(contacts) == 26
    assert {"frances.allen.0@example.org", "hedy@example.org"} <= {c["email"] for c in contacts}

    remote = httpx.get(f"{url}/_sim/state", timeout=5).json()["contacts"]
    pushed = [r for r in remote if r["email"] == "hedy@example.org"]
    assert len(pushed) == 1 and pushed[0]["external_id"], remote[-1]
    assert len(remote) == 26  # the pulled records were not echoed back as new ones


def test_the_plugins_contract_suite_passes(installed: Installed) -> None:
    # Only the test file is copied: the package must come from the installed distribution,
    # and daemon.testing from contactsync's pytest11 entry point.
    suite = installed.work / "contract"
    suite.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE / "tests" / "test_contract.py", suite / "test_contract.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_contract.py"],
        env=installed.env,
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"contract suite failed:\n{done.stdout}\n{done.stderr}"
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_a_plugin_written_against_the_last_releases_docs_still_works(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # `from daemon.simkit import Simulator, json_reply`, as the previous README said: the
    # plugin loads through its entry point, its simulator serves, and the author is told
    # (once, pointing at their own file) which path to use instead.
    old = _install(tmp_path_factory, OLD_PATH_PLUGIN)
    old.env["PYTHONWARNINGS"] = "default::DeprecationWarning"  # shown outside __main__ too
    plugins = {p["name"]: p for p in old.json("plugins", "--json")["plugins"]}
    assert plugins["oldpath"]["hooks"] == ["register_simulators"], plugins.get("oldpath")

    with _simulate(old, "oldpath", "--contacts", "3") as served:
        answer = httpx.get(f"{served.line['url']}/greeting", timeout=5)
        assert answer.status_code == 200
        assert answer.json() == {"greeting": "hello", "contacts": 3}

    warnings = [line for line in served.stderr.splitlines() if "DeprecationWarning" in line]
    assert len(warnings) == 1, served.stderr
    assert "daemon.simkit is deprecated" in warnings[0] and "daemon.sdk" in warnings[0]
    assert "contactsync_oldpath" in warnings[0], "the warning should point at the plugin's file"
