"""The shipped systemd unit, ``etc/systemd/contactsync.service``: the keys the daemon relies
on (notify, reload, watchdog, state folder, credentials) and its hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.config.settings import DaemonSettings

UNIT = Path(__file__).resolve().parent.parent / "etc" / "systemd" / "contactsync.service"


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections, each key's values in order (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key outside any section: {line!r}"
        assert "=" in line, f"not a key=value line: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def text() -> str:
    return UNIT.read_text()


@pytest.fixture(scope="module")
def service(text) -> dict[str, list[str]]:
    return parse(text)["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= missing"
    return service[key][-1]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_the_unit_has_its_sections(text):
    assert set(parse(text)) == {"Unit", "Service", "Install"}
    assert parse(text)["Install"]["WantedBy"] == ["multi-user.target"]


def test_notify_reload_watchdog_restart(service):
    assert one(service, "Type") == "notify"
    assert one(service, "ExecStart") == (
        "/opt/contactsync/.venv/bin/contactsync run --etc /etc/contactsync"
    )
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert seconds(one(service, "WatchdogSec")) > 0
    assert one(service, "Restart") == "on-failure"
    assert seconds(one(service, "RestartSec")) > 0


def test_stop_timeout_covers_the_shutdown_grace(service):
    grace = DaemonSettings().shutdown_grace_seconds
    assert seconds(one(service, "TimeoutStopSec")) > grace


def test_state_and_credentials(service, text):
    assert one(service, "StateDirectory") == "contactsync"
    assert one(service, "User") == "contactsync"
    # Credentials are shown by example (commented out: the names are the operator's).
    assert re.search(r"^#?\s*LoadCredential=[\w-]+:/", text, re.MULTILINE)
    assert "EnvironmentFile" in service


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_hardening(service, key, value):
    assert one(service, key) == value


def test_system_call_filter_allows_the_service_set(service):
    assert service["SystemCallFilter"][0] == "@system-service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_accepts_it(tmp_path, text):
    # The real ExecStart does not exist on a test machine; everything else is checked.
    unit = tmp_path / "contactsync.service"
    unit.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", text, flags=re.MULTILINE))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_memory_and_tasks_are_capped(service):
    """A hostile platform or file that gets past the daemon's own bounds meets the kernel's."""
    memory = one(service, "MemoryMax")
    match = re.fullmatch(r"(\d+)([KMG])", memory)
    assert match, memory
    megabytes = int(match.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[match.group(2)]
    assert 512 <= megabytes <= 4096  # room for large pages, far below a host's memory
    tasks = int(one(service, "TasksMax"))
    assert 64 <= tasks <= 1024
