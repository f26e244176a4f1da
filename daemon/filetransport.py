"""Deprecated alias of the file transports, kept for one release: import from
:mod:`daemon.sdk`.

The previous release's SFTP plugin README told other plugins ``from daemon.filetransport
import TransportSettings, open_transport, stable_files``. That line keeps working until the
next release, with a ``DeprecationWarning`` (once, at import) naming the path to use instead;
the names are the very objects ``daemon.sdk`` exports.
"""

from __future__ import annotations

import warnings

from daemon.sdk import (
    FileTransport,
    HostKeyRefused,
    RemoteFile,
    TransportSettings,
    clean_path,
    open_transport,
    stable_files,
)

__all__ = [
    "FileTransport",
    "HostKeyRefused",
    "RemoteFile",
    "TransportSettings",
    "clean_path",
    "open_transport",
    "stable_files",
]

# stacklevel=2 names the plugin module that imported this one (see daemon/simkit.py).
warnings.warn(
    "daemon.filetransport is deprecated and will be removed in the next release; import the "
    "file transports from daemon.sdk instead (from daemon.sdk import open_transport)",
    DeprecationWarning,
    stacklevel=2,
)
