"""Deprecated alias of the simulator kit, kept for one release: import from :mod:`daemon.sdk`.

The previous release's README told plugin authors ``from daemon.simkit import Simulator,
json_reply``. That line keeps working until the next release, with a ``DeprecationWarning``
(once, at import) naming the path to use instead. It re-exports only what ``daemon.sdk``
exports, so a plugin that switches its import gets exactly the same objects.
"""

from __future__ import annotations

import warnings

from daemon.sdk import (
    Faults,
    Reply,
    Request,
    Simulator,
    SimulatorError,
    error_reply,
    json_reply,
    parse_duration,
)

__all__ = [
    "Faults",
    "Reply",
    "Request",
    "Simulator",
    "SimulatorError",
    "error_reply",
    "json_reply",
    "parse_duration",
]

# stacklevel=2 names the plugin module that imported this one (the warnings machinery skips
# importlib's frames), so the author sees which file to change.
warnings.warn(
    "daemon.simkit is deprecated and will be removed in the next release; import the "
    "simulator kit from daemon.sdk instead (from daemon.sdk import Simulator, json_reply)",
    DeprecationWarning,
    stacklevel=2,
)
