"""contactsync's export plugin: Mainstay's conversations export, one way, exactly once.

contactsync loads this module through the ``contactsync`` entry point ``export`` (see
pyproject.toml) and calls the hook below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.sdk import hookimpl


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Instance files with ``type = "conversations_export"`` use
    :class:`~plugins.export.exporter.ConversationsExporter`."""
    from plugins.export.exporter import ConversationsExporter

    register(ConversationsExporter)
