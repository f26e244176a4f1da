"""The replay-id checkpoint of a change stream, kept in the connector's state.

The engine persists ``ConnectorContext.state`` (the instance's ``connector_state`` row in the
hub) after every cycle, so a checkpoint written there survives a restart or a kill -9. The
id is stored per topic, as hex (the state is JSON), under ``salesforce_cdc``:

    {"salesforce_cdc": {"/data/ContactChangeEvent": {"replay_id": "00000000000004d2",
                                                    "saved_at": "2026-12-07T06:30:00+00:00"}}}

Save an event's replay id only after the changes it names are in the hub (the targeted pull
committed): a crash in between replays the event, which is harmless; the reverse would lose
it. A value that is not hex (a hand-edited or damaged state) reads as no checkpoint, and the
stream starts at its ``start`` preset: the scheduled pull covers the difference.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

STATE_KEY = "salesforce_cdc"


class ReplayCheckpoint:
    """Read and write one topic's replay id in a connector state dict."""

    def __init__(self, state: MutableMapping[str, Any], topic: str) -> None:
        self.state = state
        self.topic = topic

    def load(self) -> bytes | None:
        """The saved replay id, or None (never saved, or unreadable)."""
        topics = self.state.get(STATE_KEY)
        entry = topics.get(self.topic) if isinstance(topics, dict) else None
        text = entry.get("replay_id") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not text:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None

    def save(self, replay_id: bytes | None, now: datetime) -> None:
        """Record ``replay_id`` (None or empty clears it: after a RESYNC the old one is void)."""
        topics = self.state.get(STATE_KEY)
        if not isinstance(topics, dict):
            topics = self.state[STATE_KEY] = {}
        if not replay_id:
            topics.pop(self.topic, None)
            return
        topics[self.topic] = {"replay_id": replay_id.hex(), "saved_at": now.isoformat()}

    def saved_at(self) -> str | None:
        """When the checkpoint was last written (ISO 8601), for ``status``."""
        topics = self.state.get(STATE_KEY)
        entry = topics.get(self.topic) if isinstance(topics, dict) else None
        value = entry.get("saved_at") if isinstance(entry, dict) else None
        return value if isinstance(value, str) else None
