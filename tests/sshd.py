"""A real OpenSSH server on loopback, for the SFTP tests (a pytest plugin: tests/conftest.py
loads it, so any test can ask for ``sshd_server``).

The fixture generates an Ed25519 host key and user key in a temporary folder, writes an
``sshd_config`` that lets only that user key in (as the current user, root or not: no PAM, no
strict modes, no privilege separation games), starts ``/usr/sbin/sshd -D -e`` on a free port
and waits until it answers with an SSH banner. Without sshd the tests skip with the reason,
or fail when ``CONTACTSYNC_REQUIRE_SERVICES=1`` (CI installs openssh-server).

Password authentication is not offered: sshd checks passwords through PAM or the shadow
file, and a throw-away test user cannot be added honestly without root on every machine.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = os.environ.get("CONTACTSYNC_TEST_SSHD", "/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@dataclass(frozen=True)
class SshdServer:
    """What a test needs to reach the server."""

    host: str
    port: int
    username: str
    private_key: str  # the user key's OpenSSH text
    private_key_path: Path
    host_key_fingerprint: str  # SHA256:... as ssh-keygen -lf prints it
    known_hosts: Path  # a known_hosts file listing the server's host key
    root: Path  # a folder on the server, to use as the transport's base path
    folder: Path  # the fixture's own temporary folder (keys, config, log)

    def transport_settings(self, path: Path | str | None = None, **overrides: object) -> dict:
        """A ``[settings.transport]`` table (as a dict) for this server, key auth."""
        table: dict[str, object] = {
            "kind": "sftp",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "private_key": self.private_key,
            "known_hosts": str(self.known_hosts),
            "path": str(path if path is not None else self.root),
            "timeout_seconds": 10,
            "stable_seconds": 0,
        }
        table.update(overrides)
        return table


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN, "-lf", str(public_key)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_banner(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()[-2000:]}")


def start_sshd(folder: Path) -> tuple[SshdServer, subprocess.Popen]:
    """Start a server whose files live in ``folder``; the caller stops the process."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key, user_key = folder / "host_ed25519", folder / "user_ed25519"
    _keygen(host_key, "contactsync-test-host")
    _keygen(user_key, "contactsync-test-user")
    root = folder / "root"
    root.mkdir()
    port = _free_port()
    log = folder / "sshd.log"
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {user_key}.pub",
                "PubkeyAuthentication yes",
                # For the password test's own account (.ci/services.sh); root's password is
                # locked, and PermitRootLogin below refuses it a password anyway.
                "PasswordAuthentication yes",
                "PermitEmptyPasswords no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",  # tmp folders are group/world writable on some machines
                "PermitRootLogin prohibit-password",  # CI runs as root; keys only
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "MaxStartups 50",
                "",
            ]
        )
    )
    public = (host_key.with_suffix(".pub")).read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        _wait_for_banner(port, process, log, timeout=10)
    except Exception:
        process.kill()
        process.wait()
        raise
    server = SshdServer(
        host="127.0.0.1",
        port=port,
        username=getpass.getuser(),
        private_key=user_key.read_text(),
        private_key_path=user_key,
        host_key_fingerprint=_fingerprint(host_key.with_suffix(".pub")),
        known_hosts=known_hosts,
        root=root,
        folder=folder,
    )
    return server, process


def stop_sshd(process: subprocess.Popen) -> None:
    """Stop the server started by :func:`start_sshd`."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A real OpenSSH server on 127.0.0.1 for the whole session (user key auth only)."""
    # pytest imported tests/conftest.py as the top-level module "conftest" (tests/ has no
    # __init__.py); importing it by that name reuses it rather than loading it twice.
    from conftest import require_service

    if not os.access(SSHD, os.X_OK):
        require_service("OpenSSH server", f"{SSHD} not found (apt-get install openssh-server)")
    # sshd refuses to start without its privilege-separation folder, even unprivileged.
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    try:
        server, process = start_sshd(tmp_path_factory.mktemp("sshd"))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        require_service("OpenSSH server", f"sshd did not start: {exc}")
    yield server
    stop_sshd(process)


@pytest.fixture
def sftp_root(sshd_server: SshdServer) -> Path:
    """A fresh, empty folder on the server for one test (the transport's base path)."""
    return _fresh(sshd_server.root)


_counter = iter(range(1_000_000))


def _fresh(root: Path) -> Path:
    folder = root / f"t{next(_counter)}"
    folder.mkdir()
    return folder
