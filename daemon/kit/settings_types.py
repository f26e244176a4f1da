"""Setting types that connectors share, so that every plugin's ``[settings]`` refuses the
same mistakes with the same words at load time, before any request is made.

:data:`PlatformUrl` is the type of every setting that names where a platform answers
(``base_url``, ``login_url``, a token endpoint). A value that is not an http(s) URL with a
host would otherwise reach the HTTP client and fail as ``remote-unavailable``, retried cycle
after cycle, when it is a mistake in the file: as a type, it is ``config-invalid`` at load,
naming the key (``settings.base_url``).

These platforms are reached with credentials (tokens, keys, passwords), so plain ``http://``
is refused except to a loopback host (``127.0.0.1``, ``::1``, ``localhost``), where the
simulators answer and where nothing crosses a network.

:data:`RelativePath` is the type of every setting naming a folder inside a file transport's
base folder (``incoming_folder``, ``outgoing_folder``, an export's ``folder``), and
:data:`FileNamePart` of every setting that becomes part of a file's name (``file_prefix``).
A value that would climb out of the base (``../x``), start at the server's root (``/x``), or
put a folder into a file name (``../../x``) is ``config-invalid`` at load, naming the key,
rather than an ``internal-error`` when the first file is written.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without brackets) is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_platform_url(value: str) -> str:
    """``value`` if it is an ``https://`` URL with a host (``http://`` to loopback only),
    else ``ValueError`` saying what is wrong with it; a pydantic validator.

    The value is returned unchanged (clients strip a trailing ``/`` themselves). The error
    never repeats a value that carries credentials (``user:password@host``).
    """
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("a URL has no spaces and is not empty")
    if "://" not in value:
        raise ValueError(f"{value!r} is not a URL: write it with its scheme, https://{value}")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"the scheme {parts.scheme!r} is not http or https")
    if "@" in parts.netloc:
        # A password here would be logged with every request's URL.
        raise ValueError("credentials in the URL are refused; give them as settings")
    host = parts.hostname
    if not host:
        raise ValueError(f"{value!r} has no host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    if parts.query or parts.fragment:
        # Not repeated: a pasted query string may hold a token (Slate's ``h=``).
        raise ValueError("a base URL takes no ?query or #fragment; give the base URL only")
    if scheme == "http" and not is_loopback(host):
        raise ValueError(
            f"plain http:// to {host} would send the credentials in clear text; use https:// "
            "(http:// is accepted for loopback hosts only, where the simulators run)"
        )
    return value


PlatformUrl = Annotated[str, AfterValidator(check_platform_url)]
"""A setting naming where a platform answers: ``base_url: PlatformUrl = "https://…"``."""


# A Windows drive ("C:") is absolute too, whatever the transport's server runs.
_DRIVE = re.compile(r"^[A-Za-z]:")


def _refuse_control(value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters (a NUL, a newline, an escape) are refused")


def check_relative_path(value: str) -> str:
    """``value`` as a normalised relative POSIX folder path ("" is the base itself), if it
    stays inside the transport's base folder; else ``ValueError``; a pydantic validator.

    Refused: an absolute path (``/x``, ``\\x``, ``C:\\x``), any ``..`` part (even one that
    ``a/../b`` would resolve harmlessly: it is a mistake or a probe), control characters.
    A backslash counts as a separator, so ``..\\x`` is refused on every server."""
    _refuse_control(value)
    parts = value.replace("\\", "/")
    if parts.startswith("/") or _DRIVE.match(parts):
        raise ValueError(f"{value!r} is absolute; give a folder relative to the transport's path")
    if ".." in parts.split("/"):
        raise ValueError(f"{value!r} climbs out of the transport's folder ('..' is refused)")
    normal = posixpath.normpath(parts) if parts else "."
    return "" if normal == "." else normal


def check_file_name_part(value: str) -> str:
    """``value`` if it can be part of a file name (empty is fine): no ``/`` or ``\\``, not
    ``.`` or ``..``, no control characters; else ``ValueError``; a pydantic validator."""
    _refuse_control(value)
    if "/" in value or "\\" in value:
        raise ValueError(f"{value!r} holds a folder separator; a file name part takes none")
    if value in (".", ".."):
        raise ValueError(f"{value!r} is not a file name")
    return value


RelativePath = Annotated[str, AfterValidator(check_relative_path)]
"""A folder inside a file transport's base folder: ``outgoing_folder: RelativePath = "out"``."""

FileNamePart = Annotated[str, AfterValidator(check_file_name_part)]
"""Text that becomes part of a file's name: ``file_prefix: FileNamePart = "contacts"``."""
