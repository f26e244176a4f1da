"""contactsync's sftp plugin: contact files (Ellucian Banner and Recruit extracts, CSV drops)
over SFTP or in a local folder.

There is no simulator: the tests run a real OpenSSH server (tests/sshd.py), and the ``local``
transport serves development and the demo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "sftp"`` use :class:`SftpConnector`."""
    # Imported here: loading the plugin list must not import paramiko.
    from plugins.sftp.connector import SftpConnector

    register(SftpConnector)
