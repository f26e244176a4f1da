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
"""

from __future__ import annotations

import ipaddress
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
