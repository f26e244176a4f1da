"""Shared settings for the fuzz suite (``tests/test_fuzz_*.py``).

Two hypothesis profiles, applied per test with ``@FUZZ`` rather than loaded globally, so the
other property tests of the suite keep their own settings:

- ``fuzz-ci`` (the default): derandomized, a modest number of examples, no example database,
  so a failure in CI repeats on every machine and each file stays within a few seconds;
- ``fuzz``: ten times the examples and a random seed, for hand runs:
  ``HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest tests/test_fuzz_csv.py``.

A test scales its own count with :func:`fuzz_settings` when one example is costly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from hypothesis import HealthCheck, settings

PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-ci"
_BASE = {
    "deadline": None,  # loopback servers and SQLite commits vary in time; never flaky
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("fuzz-ci", derandomize=True, database=None, max_examples=40, **_BASE)
settings.register_profile("fuzz", max_examples=400, **_BASE)


def fuzz_settings(examples: int) -> settings:
    """The active fuzz profile with ``examples`` examples in CI (ten times as many under
    ``HYPOTHESIS_PROFILE=fuzz``)."""
    scale = 10 if PROFILE == "fuzz" else 1
    return settings(settings.get_profile(PROFILE), max_examples=examples * scale)


FUZZ = fuzz_settings(40)


def _key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": "nan", "inf": "inf", "-inf": "-inf"}[str(value)]
        return repr(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)


def toml_document(top: dict[str, Any], tables: dict[str, dict[str, Any]]) -> str:
    """A TOML document: ``top`` keys, then one ``[table]`` per entry of ``tables``."""
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
