"""File transports: one interface over an SFTP server and a local folder.

File-based integrations (the ``sftp`` plugin, the conversations ``export``, Slate's SFTP
uploads) read and write files through :class:`FileTransport`. Every path is relative to the
transport's base folder (``[settings.transport] path``) and written in POSIX form
(``incoming/a.csv``); a path that climbs out of the base (``..``) is refused. Only ``/``
separates folders: a backslash is part of a name (``a\\..\\b.csv`` is one file's name, never a
way up), and :func:`name_problem` says which listed names a reader should refuse to use.
The local folder resolves every path (symlinks included) and refuses one that ends outside
its base with :class:`OutsideBase` (``config-invalid``: a folder setting, or a folder linked
out of the base).

The promises every implementation keeps:

- ``list`` returns regular files only, sorted by name, matched with :func:`fnmatch.fnmatchcase`;
  hidden names (a leading ``.``) are left out, as a shell glob leaves them out, which is also
  what keeps our own in-flight uploads out of a listing.
- ``open_read`` streams: a 1 GB file never sits in memory.
- ``write_atomic`` writes a hidden temporary name in the target's folder and renames it over
  the target, so a reader sees the old file or the whole new one, never half of one.
- Connection errors raise :class:`~daemon.kit.connector.Unavailable`, refused credentials
  :class:`~daemon.kit.connector.AuthFailed`, an unknown or changed host key :class:`HostKeyRefused`;
  file-level errors (missing file, permission) are :class:`OSError`.

A transport is a context manager and holds one connection for its life (a sync cycle).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator

from daemon.foundation.clock import SYSTEM_CLOCK, Clock
from daemon.foundation.dictionary import Code
from daemon.foundation.log import register_secret
from daemon.kit.connector import ConnectorConfig, ConnectorError, Unavailable

TEMP_PREFIX = "."
TEMP_SUFFIX = ".part"


class OutsideBase(ConnectorError):
    """A path resolves outside the transport's base folder (a folder linked elsewhere, a
    setting that climbs out): refused before any byte is read or written there."""

    code: ClassVar[Code] = Code.CONFIG_INVALID


class HostKeyRefused(ConnectorError):
    """The server's host key is unknown, or differs from the one configured: the connection
    is refused (a changed key may be a man in the middle; keys are never added on their own)."""

    code: ClassVar[Code] = Code.HOST_KEY_REFUSED


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One regular file as a transport lists it."""

    name: str  # base name
    path: str  # full path within the transport (posix, relative to the base folder)
    size: int
    mtime: float  # seconds since the epoch


class FileTransport(ABC):
    """Files in one base folder, on an SFTP server or on local disk."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def list(self, folder: str, pattern: str = "*") -> list[RemoteFile]:
        """Regular, non-hidden files directly in ``folder`` whose name matches ``pattern``,
        sorted by name. A missing folder raises :class:`FileNotFoundError`."""

    @abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """The file at ``path``, or ``None`` when there is none (or it is not a regular file)."""

    @abstractmethod
    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A binary stream of the file, read as it is consumed."""

    @abstractmethod
    def write_atomic(self, path: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to a temporary name in ``path``'s folder, then rename it over
        ``path``; return the bytes written. On failure the temporary file is removed (as far
        as the connection allows) and ``path`` is untouched."""

    @abstractmethod
    def move(self, src: str, dst: str, *, overwrite: bool = True) -> None:
        """Rename ``src`` to ``dst`` (atomic on one server). With ``overwrite=False`` an
        existing ``dst`` raises :class:`FileExistsError`."""

    @abstractmethod
    def makedirs(self, folder: str) -> None:
        """Create ``folder`` and its parents; an existing folder is fine."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete the file at ``path``; a missing file is fine (cleanup after a crash)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the transport is not used again."""


def clean_path(path: str) -> str:
    """``path`` normalised to a relative POSIX path within the base ("" is the base itself).

    A leading ``/`` means the base, not the server's root: every path is inside the base.
    Only ``/`` separates parts (a backslash is data, part of a name), and no part may be
    ``..``: a path never climbs, not even back into the base (``incoming/../x``), so a
    listed name ``..`` can never turn a file's path into another file's.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {path!r} climbs with '..'; paths stay inside the base folder")
    return "/".join(parts)


def inside_base(path: str) -> str:
    """:func:`clean_path`, with a climbing path refused as :class:`OutsideBase` (a coded
    ``config-invalid``, not a crash): what every transport operation calls."""
    try:
        return clean_path(path)
    except ValueError as exc:
        raise OutsideBase(str(exc)) from None


def name_problem(name: str) -> str | None:
    """Why a file name a server listed cannot be used as one file's name, or ``None``.

    A name is data. One that holds ``/`` or ``\\`` (a folder separator on some server), is
    ``.`` or ``..``, or holds a control character could be read as a path, or print as
    something else, so a reader refuses it (``file-malformed``) rather than guess.
    """
    if name in ("", ".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name:
        return "the name holds a folder separator ('/' or '\\'); rename the file"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "the name holds a control character; rename the file"
    return None


def temp_name(path: str) -> str:
    """The hidden temporary name ``write_atomic`` uploads under, in ``path``'s folder."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f"{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def matches(name: str, pattern: str) -> bool:
    """Whether a listed name is shown for ``pattern`` (hidden names never are)."""
    return not name.startswith(".") and fnmatch.fnmatchcase(name, pattern)


class LocalTransport(FileTransport):
    """A local folder: development, the demo, and a mounted share."""

    def __init__(self, base: str | Path) -> None:
        self.base = Path(base).expanduser()
        if not self.base.is_dir():
            # A missing folder (a share not mounted) is the platform being down.
            raise Unavailable(f"local transport folder {self.base} does not exist")
        # The base itself may be a link (a mounted share): what it points at is the base.
        self._real_base = self.base.resolve()

    def _abs(self, path: str) -> Path:
        """``path`` under the base, refused (:class:`OutsideBase`) when it resolves outside:
        every folder on the way, and the file itself when it is a link, is followed first,
        so ``incoming/processed`` linked to ``/etc`` cannot receive a file."""
        relative = inside_base(path)
        target = self.base / relative
        real = target.resolve()  # non-strict: a file about to be written need not exist
        if not real.is_relative_to(self._real_base):
            raise OutsideBase(
                f"{relative or '.'!r} resolves to {real}, outside the transport folder "
                f"{self._real_base}; a folder there is linked out of it"
            )
        return target

    def list(self, folder: str, pattern: str = "*") -> list[RemoteFile]:
        folder = inside_base(folder)
        found = []
        with os.scandir(self._abs(folder)) as entries:
            for entry in entries:
                if not matches(entry.name, pattern) or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                path = posixpath.join(folder, entry.name)
                found.append(RemoteFile(entry.name, path, st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: f.name)

    def stat(self, path: str) -> RemoteFile | None:
        path = inside_base(path)
        try:
            st = self._abs(path).lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return RemoteFile(posixpath.basename(path), path, st.st_size, st.st_mtime)

    @contextmanager
    def _open(self, path: str) -> Iterator[BinaryIO]:
        with self._abs(path).open("rb") as fh:
            yield fh

    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]:
        return self._open(path)

    def write_atomic(self, path: str, chunks: Iterable[bytes]) -> int:
        path = inside_base(path)
        target = self._abs(path)
        temp = self._abs(temp_name(path))
        written = 0
        try:
            with temp.open("wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    written += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())  # the rename must not publish a file still in the cache
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return written

    def move(self, src: str, dst: str, *, overwrite: bool = True) -> None:
        source, target = self._abs(src), self._abs(dst)
        if overwrite:
            os.replace(source, target)
            return
        # A hard link fails when the target exists: an exclusive rename without a race.
        os.link(source, target)
        source.unlink()

    def makedirs(self, folder: str) -> None:
        self._abs(folder).mkdir(parents=True, exist_ok=True)

    def remove(self, path: str) -> None:
        target = self._abs(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # never reached by the plugins; tidy for tests
        else:
            target.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release."""


def stable_files(
    transport: FileTransport,
    files: Sequence[RemoteFile],
    *,
    wait_seconds: float,
    clock: Clock,
) -> list[RemoteFile]:
    """The files whose size and mtime did not change across ``wait_seconds``.

    An SFTP server cannot tell a finished upload from one still arriving, so a file is only
    read once it has stood still. The others (still growing, or gone) are left for the next
    cycle. With ``wait_seconds <= 0`` every file counts as stable.
    """
    if not files or wait_seconds <= 0:
        return list(files)
    clock.sleep(wait_seconds)
    stable = []
    for before in files:
        now = transport.stat(before.path)
        if now is not None and now.size == before.size and now.mtime == before.mtime:
            stable.append(now)
    return stable


class TransportSettings(ConnectorConfig):
    """Where files live: the nested ``[settings.transport]`` table of an instance file.

    ``kind = "local"`` uses a folder on this machine (``path``); ``kind = "sftp"`` needs
    ``host`` and ``username``, a ``password`` or a ``private_key`` (the key's text, by
    reference: ``private_key = { file = "/etc/contactsync/id_ed25519" }``), and a
    ``known_hosts`` file or the server's ``host_key_fingerprint`` (``SHA256:…`` as
    ``ssh-keygen -lf`` prints it).
    """

    kind: Literal["sftp", "local"] = "sftp"
    path: str = "/"  # the base folder; every path is relative to it
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    private_key: SecretStr | None = None
    passphrase: SecretStr | None = None
    known_hosts: str | None = None
    host_key_fingerprint: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    stable_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> TransportSettings:
        if self.kind == "local":
            return self
        if not self.host or not self.username:
            raise ValueError("an sftp transport needs host and username")
        if self.password is None and self.private_key is None:
            raise ValueError("an sftp transport needs a password or a private_key")
        if not self.known_hosts and not self.host_key_fingerprint:
            raise ValueError(
                "an sftp transport needs known_hosts (a file) or host_key_fingerprint "
                "(SHA256:... as ssh-keygen -lf prints it); host keys are never trusted blindly"
            )
        if self.host_key_fingerprint and not self.host_key_fingerprint.startswith("SHA256:"):
            raise ValueError("host_key_fingerprint must be the SHA256:... form")
        return self


def open_transport(settings: TransportSettings, *, clock: Clock | None = None) -> FileTransport:
    """A connected transport for ``settings`` (SFTP connects now, so errors surface here)."""
    for secret in (settings.password, settings.private_key, settings.passphrase):
        if secret is not None:
            register_secret(secret.get_secret_value())
    if settings.kind == "local":
        return LocalTransport(settings.path)
    from daemon.kit.sftp import SftpTransport  # paramiko is imported only when SFTP is used

    return SftpTransport(settings, clock=clock or SYSTEM_CLOCK)
