"""The file transport interface: the same checks on a local folder and on a real sshd, plus
what only SFTP has (host keys, credentials, reconnects, streaming big files)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sftpkit import transport_table

from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.kit.connector import AuthFailed, Unavailable
from daemon.kit.filetransport import (
    FileTransport,
    HostKeyRefused,
    LocalTransport,
    OutsideBase,
    RemoteFile,
    TransportSettings,
    clean_path,
    name_problem,
    open_transport,
    stable_files,
)
from daemon.kit.sftp import SftpTransport


@pytest.fixture(params=["local", "sftp"])
def transport(request, tmp_path) -> Iterator[tuple[FileTransport, Path]]:
    """A transport and the folder on disk it is based in."""
    if request.param == "local":
        with LocalTransport(tmp_path) as local:
            yield local, tmp_path
        return
    server = request.getfixturevalue("sshd_server")
    root = request.getfixturevalue("sftp_root")
    settings = TransportSettings.model_validate(
        transport_table(server, root, private_key=server.private_key)
    )
    with open_transport(settings) as remote:
        yield remote, root


def test_list_shows_regular_visible_matching_files_sorted(transport):
    t, root = transport
    (root / "in" / "sub").mkdir(parents=True)
    for name in ("b.csv", "a.csv", "c.txt", ".hidden.csv"):
        (root / "in" / name).write_text(name)
    os.symlink(root / "in" / "a.csv", root / "in" / "link.csv")
    files = t.list("in", "*.csv")
    assert [f.name for f in files] == ["a.csv", "b.csv"]
    assert files[0] == RemoteFile("a.csv", "in/a.csv", 5, files[0].mtime)
    assert [f.name for f in t.list("/in/")] == ["a.csv", "b.csv", "c.txt"]
    with pytest.raises(FileNotFoundError):
        t.list("missing")


def test_stat_and_read(transport):
    t, root = transport
    (root / "d").mkdir()
    (root / "d" / "x.bin").write_bytes(b"\x00\x01" * 10)
    assert t.stat("d/x.bin") == RemoteFile("x.bin", "d/x.bin", 20, t.stat("d/x.bin").mtime)
    assert t.stat("d/none") is None
    assert t.stat("d") is None  # a folder is not a file
    with t.open_read("d/x.bin") as fh:
        assert fh.read(3) == b"\x00\x01\x00"
        assert fh.read() == b"\x01\x00" * 8 + b"\x01"


def test_write_atomic_replaces_whole_and_leaves_no_temporary(transport):
    t, root = transport
    t.makedirs("out/deep")
    t.makedirs("out/deep")  # again: fine
    assert t.write_atomic("out/deep/f.csv", [b"one,", b"two"]) == 7
    assert t.write_atomic("out/deep/f.csv", iter([b"three"])) == 5
    assert (root / "out/deep/f.csv").read_bytes() == b"three"

    def failing() -> Iterator[bytes]:
        yield b"half of a file"
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        t.write_atomic("out/deep/f.csv", failing())
    assert (root / "out/deep/f.csv").read_bytes() == b"three"
    assert sorted(p.name for p in (root / "out/deep").iterdir()) == ["f.csv"]


def test_move_remove_and_overwrite(transport):
    t, root = transport
    (root / "a").mkdir()
    (root / "a" / "1.csv").write_text("one")
    (root / "a" / "2.csv").write_text("two")
    t.makedirs("a/done")
    t.move("a/1.csv", "a/done/1.csv")
    assert (root / "a/done/1.csv").read_text() == "one"
    with pytest.raises(FileExistsError):
        t.move("a/2.csv", "a/done/1.csv", overwrite=False)
    t.move("a/2.csv", "a/done/1.csv")
    assert (root / "a/done/1.csv").read_text() == "two"
    t.remove("a/done/1.csv")
    t.remove("a/done/1.csv")  # already gone: fine
    assert not (root / "a/done/1.csv").exists()


def test_paths_never_leave_the_base(transport):
    t, _ = transport
    with pytest.raises(OutsideBase, match="climbs") as refused:
        t.stat("x/../../etc/passwd")
    assert refused.value.code is Code.CONFIG_INVALID
    with pytest.raises(OutsideBase):
        t.list("in/../in")  # no climbing at all, not even back into the base
    assert clean_path("/a//b/./c") == "a/b/c"
    assert clean_path("/") == ""
    assert clean_path("a\\..\\b.csv") == "a\\..\\b.csv"  # a backslash is part of a name


def test_a_backslash_name_is_one_file_not_a_path(transport):
    """``a\\..\\b.csv`` on the far side is that file, never ``b.csv`` (the reported bug)."""
    t, root = transport
    (root / "in").mkdir()
    (root / "in" / "b.csv").write_text("the other file")
    (root / "in" / "a\\..\\b.csv").write_text("this file")
    listed = {f.name: f for f in t.list("in")}
    odd = listed["a\\..\\b.csv"]
    assert name_problem(odd.name) is not None  # a reader refuses to use it (file-malformed)
    with t.open_read(odd.path) as fh:
        assert fh.read() == b"this file"
    assert name_problem("b.csv") is None
    assert name_problem("a..b.csv") is None  # dots inside a name are data
    for bad in ("..", ".", "x/y.csv", "x\\y.csv", "x\x1b[31m.csv", ""):
        assert name_problem(bad) is not None, bad


@pytest.mark.parametrize("linked", ["in/processed", "out", "in"])
def test_local_refuses_a_folder_linked_out_of_the_base(tmp_path, linked):
    """``incoming/processed`` or ``outgoing`` linked outside: nothing lands there."""
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "in").mkdir(parents=True)
    outside.mkdir()
    (base / "in" / "a.csv").write_text("a")
    if linked == "in":
        (base / "in" / "a.csv").unlink()
        (base / "in").rmdir()
        (outside / "a.csv").write_text("a")
    os.symlink(outside, base / linked)
    with LocalTransport(base) as t:
        with pytest.raises(OutsideBase, match="outside the transport folder") as refused:
            if linked == "in/processed":
                t.move("in/a.csv", "in/processed/a.csv")
            elif linked == "out":
                t.write_atomic("out/x.csv", [b"pushed"])
            else:
                t.list("in")
        assert refused.value.code is Code.CONFIG_INVALID
        with pytest.raises(OutsideBase):
            t.makedirs(f"{linked}/deeper")
    assert sorted(p.name for p in outside.iterdir()) == (["a.csv"] if linked == "in" else [])


def test_local_refuses_a_file_linked_out_and_follows_links_within(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "in").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.csv").write_text("not ours")
    os.symlink(outside / "secret.csv", base / "in" / "secret.csv")
    (base / "real").mkdir()
    os.symlink(base / "real", base / "alias")  # a link that stays inside is fine
    with LocalTransport(base) as t:
        assert t.list("in") == []  # links are never listed
        with pytest.raises(OutsideBase):
            t.open_read("in/secret.csv").__enter__()
        with pytest.raises(OutsideBase):
            t.write_atomic("in/secret.csv", [b"overwrite"])
        assert t.write_atomic("alias/x.csv", [b"ok"]) == 2
    assert (outside / "secret.csv").read_text() == "not ours"
    assert (base / "real" / "x.csv").read_bytes() == b"ok"
    # The base itself may be a link (a mounted share): its target is the base.
    os.symlink(base, tmp_path / "share")
    with LocalTransport(tmp_path / "share") as t:
        assert [f.name for f in t.list("real")] == ["x.csv"]


def test_stable_files_leaves_a_growing_file_for_later(transport):
    t, root = transport
    (root / "in").mkdir()
    (root / "in" / "done.csv").write_text("complete")
    growing = root / "in" / "growing.csv"
    growing.write_text("part")

    class UploadingClock(FakeClock):
        def sleep(self, seconds, cancel=None):
            super().sleep(seconds, cancel)
            with growing.open("a") as fh:
                fh.write(" more")

    clock = UploadingClock()
    listed = t.list("in")
    assert [f.name for f in stable_files(t, listed, wait_seconds=5, clock=clock)] == ["done.csv"]
    assert clock.slept == 5
    assert stable_files(t, listed, wait_seconds=0, clock=clock) == listed


def test_a_missing_local_folder_is_unavailable(tmp_path):
    with pytest.raises(Unavailable):
        open_transport(TransportSettings(kind="local", path=str(tmp_path / "not-mounted")))


# --- SFTP only ------------------------------------------------------------------------------


def sftp(server, root, **overrides) -> SftpTransport:
    overrides.setdefault("private_key", server.private_key)
    settings = TransportSettings.model_validate(transport_table(server, root, **overrides))
    transport = open_transport(settings)
    assert isinstance(transport, SftpTransport)
    return transport


def test_one_connection_is_reused_and_a_dropped_one_reopened(sshd_server, sftp_root):
    (sftp_root / "f.csv").write_text("x")
    with sftp(sshd_server, sftp_root) as t:
        for _ in range(5):
            t.list("")
            t.stat("f.csv")
        assert t.connects == 1
        t._client.get_transport().close()  # the server or the network drops us
        assert [f.name for f in t.list("")] == ["f.csv"]
        assert t.connects == 2


def test_a_large_file_streams_intact(sshd_server, sftp_root):
    data = os.urandom(3_000_000)
    with sftp(sshd_server, sftp_root) as t:
        assert t.write_atomic("big.bin", (data[i : i + 65536] for i in range(0, len(data), 65536)))
        assert (sftp_root / "big.bin").read_bytes() == data
        with t.open_read("big.bin") as fh:
            parts = []
            while chunk := fh.read(100_000):
                parts.append(chunk)
        assert b"".join(parts) == data
        with t.open_read("big.bin") as fh:
            assert sum(len(line) for line in fh) == len(data)


def test_refused_credentials_and_an_unreachable_server(sshd_server, sftp_root, tmp_path):
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other} >/dev/null")
    with pytest.raises(AuthFailed) as refused:
        sftp(sshd_server, sftp_root, private_key=other.read_text())
    assert refused.value.code == "remote-auth-failed"
    encrypted = tmp_path / "encrypted_key"
    os.system(f"ssh-keygen -q -t ed25519 -N 's3cret-pass' -f {encrypted} >/dev/null")
    with pytest.raises(AuthFailed, match="passphrase"):
        sftp(sshd_server, sftp_root, private_key=encrypted.read_text())
    with pytest.raises(AuthFailed, match="passphrase"):
        sftp(sshd_server, sftp_root, private_key=encrypted.read_text(), passphrase="wrong-one")
    with pytest.raises(Unavailable):
        sftp(sshd_server, sftp_root, port=1, timeout_seconds=2)


def test_an_encrypted_key_with_its_passphrase_gets_in(sshd_server, sftp_root, tmp_path):
    """The server trusts one key; encrypt a copy of it and log in with the passphrase."""
    key = tmp_path / "key"
    key.write_text(sshd_server.private_key)
    key.chmod(0o600)
    os.system(f"ssh-keygen -q -p -N 'open-sesame' -f {key} >/dev/null")
    assert "open-sesame" not in key.read_text()
    with sftp(sshd_server, sftp_root, private_key=key.read_text(), passphrase="open-sesame") as t:
        assert t.list("") == []


def test_host_key_checks(sshd_server, sftp_root):
    empty = sftp_root / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRefused) as unknown:
        sftp(sshd_server, sftp_root, known_hosts=str(empty))
    assert unknown.value.code == "host-key-refused"
    assert sshd_server.host_key_fingerprint in unknown.value.message
    assert empty.read_text() == ""  # never added
    with sftp(
        sshd_server,
        sftp_root,
        known_hosts=None,
        host_key_fingerprint=sshd_server.host_key_fingerprint,
    ) as t:
        assert t.list("") == [RemoteFile("known_hosts", "known_hosts", 0, t.list("")[0].mtime)]


def test_a_server_that_accepts_and_never_answers_times_out(sshd_server, sftp_root):
    """A TCP peer that takes the connection and says nothing (a hung server, a firewall that
    swallows the banner) is remote-unavailable after timeout_seconds, not a hang."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    try:
        with pytest.raises(Unavailable) as hung:
            sftp(sshd_server, sftp_root, port=listener.getsockname()[1], timeout_seconds=0.5)
        assert hung.value.code == "remote-unavailable"
    finally:
        stop.set()
        thread.join(2)
        for peer in accepted:
            peer.close()
        listener.close()


def test_a_password_gets_in_and_a_wrong_one_is_auth_failed(sshd_server, tmp_path):
    """Password authentication against the real sshd, with the account .ci/run creates."""
    import pwd
    import shutil
    import tempfile

    from tests.conftest import require_service

    login = os.environ.get("CONTACTSYNC_TEST_SFTP_LOGIN")
    if not login:
        require_service(
            "an SFTP password account", "set CONTACTSYNC_TEST_SFTP_LOGIN=user:password (.ci/run)"
        )
    user, _, password = (login or "").partition(":")
    # A folder the account may use: pytest's own temp tree is private to the test's user.
    folder = Path(tempfile.mkdtemp(prefix="contactsync-sftp-pw-"))
    account = pwd.getpwnam(user)
    os.chown(folder, account.pw_uid, account.pw_gid)
    base = {
        "kind": "sftp",
        "host": sshd_server.host,
        "port": sshd_server.port,
        "username": user,
        "host_key_fingerprint": sshd_server.host_key_fingerprint,
        "path": str(folder),
        "timeout_seconds": 10,
        "stable_seconds": 0,
    }
    try:
        settings = TransportSettings.model_validate({**base, "password": password})
        with open_transport(settings) as transport:
            transport.write_atomic("hello.csv", [b"id,name\n", b"1,Ada\n"])
            assert [f.name for f in transport.list("")] == ["hello.csv"]
        assert (folder / "hello.csv").read_bytes() == b"id,name\n1,Ada\n"
        wrong = TransportSettings.model_validate({**base, "password": password + "-wrong"})
        with pytest.raises(AuthFailed) as refused:
            open_transport(wrong)
        assert password not in str(refused.value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
