"""The SFTP implementation of :class:`~daemon.kit.filetransport.FileTransport`, on paramiko.

- Host keys are checked against the configured ``known_hosts`` file and/or the configured
  ``host_key_fingerprint``; an unknown or changed key raises :class:`HostKeyRefused`.
  Nothing is ever added to a known_hosts file.
- One SSH connection serves the transport's whole life (a sync cycle). Before each operation
  a dropped connection is reopened once; an idempotent operation (list, stat, makedirs,
  remove, move) that fails on a dropped connection is retried once on a fresh one.
- Every wait has a timeout: TCP connect, SSH banner, authentication, and each SFTP request.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import BinaryIO, TypeVar

import paramiko

from daemon.foundation.clock import Clock
from daemon.kit.connector import AuthFailed, Unavailable
from daemon.kit.filetransport import (
    FileTransport,
    HostKeyRefused,
    RemoteFile,
    TransportSettings,
    inside_base,
    matches,
    temp_name,
)

T = TypeVar("T")
READ_BLOCK = 32768  # paramiko's largest single SFTP read
READ_AHEAD = 16  # blocks requested at once when streaming a file (bounded memory, pipelined)
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>`` of a public key, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _CheckHostKey(paramiko.MissingHostKeyPolicy):
    """A host key that known_hosts does not list: accepted only when it has the configured
    fingerprint; otherwise refused (paramiko's RejectPolicy, with our coded error)."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        actual = fingerprint(key)
        if self.expected is not None and actual == self.expected:
            return
        if self.expected is not None:
            raise HostKeyRefused(
                f"host key of {hostname} is {actual}, not the configured {self.expected}"
            )
        raise HostKeyRefused(
            f"host key of {hostname} ({key.get_name()} {actual}) is not in known_hosts; "
            "add it (ssh-keyscan, checked by hand) or set host_key_fingerprint"
        )


def load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    """A private key from its OpenSSH or PEM text (Ed25519, ECDSA or RSA)."""
    problem = "the private key is not an Ed25519, ECDSA or RSA key paramiko can read"
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise AuthFailed("the private key is encrypted: set passphrase") from None
        except (paramiko.SSHException, ValueError) as exc:
            # "checkints do not match": the key decrypted to garbage, a wrong passphrase.
            if any(w in str(exc).lower() for w in ("passphrase", "decrypt", "checkint")):
                problem = "the private key cannot be decrypted (wrong passphrase?)"
            continue
    raise AuthFailed(problem)


class SftpTransport(FileTransport):
    """Files under a base folder on an SFTP server."""

    def __init__(self, settings: TransportSettings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.base = settings.path or "/"
        self._key = None
        if settings.private_key is not None:
            passphrase = settings.passphrase.get_secret_value() if settings.passphrase else None
            self._key = load_private_key(settings.private_key.get_secret_value(), passphrase)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.connects = 0  # how many connections were opened (tests check reuse)
        self._connect()

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> None:
        settings = self.settings
        client = paramiko.SSHClient()
        if settings.known_hosts:
            try:
                client.load_host_keys(settings.known_hosts)
            except OSError as exc:
                raise HostKeyRefused(
                    f"known_hosts {settings.known_hosts} cannot be read: {exc.strerror}"
                ) from None
        client.set_missing_host_key_policy(_CheckHostKey(settings.host_key_fingerprint))
        timeout = settings.timeout_seconds
        where = f"{settings.host}:{settings.port}"
        try:
            client.connect(
                settings.host or "",
                port=settings.port,
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else None,
                pkey=self._key,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,  # only the configured credentials, never the daemon's own
                look_for_keys=False,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(
                f"host key of {where} changed: it is {fingerprint(exc.key)}, known_hosts says "
                f"{fingerprint(exc.expected_key)}; refusing to connect"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthFailed(f"SFTP server {where} refused the credentials: {exc}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise Unavailable(f"SFTP server {where} unreachable: {_describe(exc)}") from None
        self._client, self._sftp = client, sftp
        self.connects += 1

    def _alive(self) -> paramiko.SFTPClient:
        """The SFTP session, reopened if the connection dropped since the last operation."""
        if self._sftp is None or not self._connected():
            self._drop()
            self._connect()
        assert self._sftp is not None
        return self._sftp

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    def _call(self, operation: Callable[[paramiko.SFTPClient], T], *, retry: bool = True) -> T:
        """Run one SFTP operation; a dropped connection is reopened and, for an idempotent
        operation, tried once more. File errors (missing, permission, a server "Failure")
        pass through as :class:`OSError`."""
        for attempt in (1, 2):
            sftp = self._alive()
            try:
                return operation(sftp)
            except TimeoutError as exc:
                self._drop()  # a late answer would confuse the next request: start afresh
                raise Unavailable(f"SFTP request timed out: {_describe(exc)}") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if isinstance(exc, OSError) and self._connected():
                    raise  # the server answered: a file error, not a lost connection
                self._drop()
                if attempt == 2 or not retry:
                    raise Unavailable(f"SFTP connection lost: {_describe(exc)}") from None
        raise AssertionError("unreachable")

    def _connected(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _abs(self, path: str) -> str:
        return posixpath.join(self.base, inside_base(path))

    # --- the interface ----------------------------------------------------------------------

    def list(self, folder: str, pattern: str = "*") -> list[RemoteFile]:
        folder = inside_base(folder)
        entries = self._call(lambda sftp: sftp.listdir_attr(self._abs(folder)))
        found = [
            RemoteFile(e.filename, posixpath.join(folder, e.filename), e.st_size or 0, _mtime(e))
            for e in entries
            if matches(e.filename, pattern) and stat.S_ISREG(e.st_mode or 0)
        ]
        return sorted(found, key=lambda f: f.name)

    def stat(self, path: str) -> RemoteFile | None:
        path = inside_base(path)

        def lstat(sftp: paramiko.SFTPClient) -> paramiko.SFTPAttributes | None:
            try:
                return sftp.lstat(self._abs(path))
            except FileNotFoundError:
                return None

        attrs = self._call(lstat)
        if attrs is None or not stat.S_ISREG(attrs.st_mode or 0):
            return None
        return RemoteFile(posixpath.basename(path), path, attrs.st_size or 0, _mtime(attrs))

    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]:
        return self._open_read(inside_base(path))

    @contextmanager
    def _open_read(self, path: str) -> Iterator[BinaryIO]:
        handle = self._call(lambda sftp: sftp.open(self._abs(path), "rb"))
        raw = _PipelinedReader(handle)
        stream = io.BufferedReader(raw, buffer_size=READ_BLOCK * READ_AHEAD)
        try:
            yield stream  # type: ignore[misc]
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            self._drop()
            raise Unavailable(f"SFTP read of {path} failed: {_describe(exc)}") from None
        finally:
            # If the connection is gone, _alive() reopens it for the next operation.
            with suppress(OSError, EOFError, paramiko.SSHException):
                handle.close()

    def write_atomic(self, path: str, chunks: Iterable[bytes]) -> int:
        path = inside_base(path)
        target, temp = self._abs(path), self._abs(temp_name(path))
        sftp = self._alive()
        written = 0
        try:
            with sftp.open(temp, "wb") as fh:
                fh.set_pipelined(True)  # don't wait for each write's answer; errors come at close
                for chunk in chunks:
                    fh.write(chunk)
                    written += len(chunk)
            self._rename_over(sftp, temp, target)
        except BaseException as exc:
            try:
                if self._sftp is not None:
                    self._sftp.remove(temp)
            except (OSError, EOFError, paramiko.SSHException):
                pass  # a crash leaves a hidden .part file; no listing shows it
            if isinstance(exc, TimeoutError | EOFError | paramiko.SSHException) or (
                isinstance(exc, OSError) and not self._connected()
            ):
                self._drop()
                raise Unavailable(f"SFTP upload of {path} failed: {_describe(exc)}") from None
            raise
        return written

    @staticmethod
    def _rename_over(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
        """Rename replacing ``dst``: OpenSSH's posix-rename extension does it atomically;
        plain SFTP v3 rename refuses an existing target, so fall back to remove + rename."""
        try:
            sftp.posix_rename(src, dst)
        except OSError as exc:
            if exc.errno is not None and exc.errno != errno.EOPNOTSUPP:
                raise
            with suppress(FileNotFoundError):
                sftp.remove(dst)
            sftp.rename(src, dst)

    def move(self, src: str, dst: str, *, overwrite: bool = True) -> None:
        source, target = self._abs(src), self._abs(dst)

        def rename(sftp: paramiko.SFTPClient) -> None:
            if overwrite:
                self._rename_over(sftp, source, target)
                return
            # SFTP v3 rename fails when the target exists: exactly "no overwrite".
            try:
                sftp.lstat(target)
            except FileNotFoundError:
                sftp.rename(source, target)
                return
            raise FileExistsError(errno.EEXIST, "target exists", dst)

        self._call(rename)

    def makedirs(self, folder: str) -> None:
        folder = inside_base(folder)

        def mkdirs(sftp: paramiko.SFTPClient) -> None:
            current = self.base
            for part in [p for p in folder.split("/") if p]:
                current = posixpath.join(current, part)
                try:
                    attrs = sftp.stat(current)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(current)
                    except OSError:
                        if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                            raise
                    continue
                if not stat.S_ISDIR(attrs.st_mode or 0):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder", current)

        self._call(mkdirs)

    def remove(self, path: str) -> None:
        target = self._abs(path)

        def unlink(sftp: paramiko.SFTPClient) -> None:
            with suppress(FileNotFoundError):
                sftp.remove(target)

        self._call(unlink)

    def close(self) -> None:
        self._drop()


class _PipelinedReader(io.RawIOBase):
    """A raw stream over an SFTP file that asks for ``READ_AHEAD`` blocks in one round trip
    (paramiko's ``readv`` pipelines them), so reading over a slow link is not one round trip
    per 32 KB, and memory holds at most one window."""

    def __init__(self, handle: paramiko.SFTPFile) -> None:
        self.handle = handle
        self.offset = 0
        self.size = handle.stat().st_size or 0
        self._window: list[bytes] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if not self._window:
            if self.offset >= self.size:
                # The file may have grown since it was opened; plain reads find out.
                data = self.handle.read(READ_BLOCK)
                if not data:
                    return 0
                self._window = [data]
            else:
                chunks = [
                    (start, min(READ_BLOCK, self.size - start))
                    for start in range(
                        self.offset,
                        min(self.size, self.offset + READ_BLOCK * READ_AHEAD),
                        READ_BLOCK,
                    )
                ]
                self._window = [bytes(b) for b in self.handle.readv(chunks)]
                self._window.reverse()
        data = self._window.pop()
        count = min(len(buffer), len(data))
        buffer[:count] = data[:count]
        if count < len(data):
            self._window.append(data[count:])
        self.offset += count
        self.handle.seek(self.offset)
        return count


def _mtime(attrs: paramiko.SFTPAttributes) -> float:
    return float(attrs.st_mtime or 0)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


__all__ = ["SftpTransport", "fingerprint", "load_private_key"]
