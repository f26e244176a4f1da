"""Fuzzing instance files (issue 16): whatever an ``etc/instances/*.toml`` holds, loading it
ends in an :class:`Instance` or that file's :class:`ConfigError` (``config-invalid``, a
message naming the file), never another exception; and a reload with such a file among good
ones keeps the good ones running and still picks up new good files.

:func:`load_instance` is fuzzed directly, not through :func:`load_instances`: the latter turns
any unforeseen exception into a vague error for safety, which would hide the very bugs this
suite is for. Inputs, from blind to well-formed: arbitrary bytes, TOML-ish text assembled from
TOML's own tokens, and valid TOML for every real connector type with its real settings keys
given random types (plus unknown keys, secret references and the instance keys).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import FUZZ, fuzz_settings, toml_document
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from daemon.config.instances import Instance, load_instance
from daemon.config.settings import ConfigError
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.foundation.dictionary import Code
from daemon.hub.database import make_engine
from daemon.hub.synclog_query import query_log
from daemon.runtime.reload import ConfigState
from tests.memremote import MemoryConnector

CONNECTORS: dict[str, Any] = {
    **Registry.from_plugin_manager(get_plugin_manager()).connectors,
    "memory": MemoryConnector,
}
GOOD = 'type = "memory"\n[settings]\nremote = "{remote}"\n'
_names = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-instances")


def load(folder: Path, data: bytes) -> Instance | ConfigError:
    """Load ``data`` as a fresh instance file: the instance, or the ConfigError it raised.
    Anything else propagates and fails the test, with hypothesis's minimal example."""
    path = folder / f"f{next(_names)}.toml"
    path.write_bytes(data)
    try:
        return load_instance(path, CONNECTORS)
    except ConfigError as error:
        assert error.reason.strip(), "a config error must say why"
        assert str(error).startswith(str(path)), "a config error must name its file"
        return error
    finally:
        path.unlink()


# --- inputs -----------------------------------------------------------------------------------

TOML_TOKENS = [
    "type",
    "=",
    '"hubspot"',
    '"memory"',
    '"sftp"',
    "[settings]",
    "[[fields]]",
    "[schedule]",
    "hub",
    "remote",
    "direction",
    '"both"',
    "enabled",
    "true",
    "1979-05-27T07:32:00Z",
    "{",
    "}",
    "[",
    "]",
    ",",
    ".",
    '"""',
    "'''",
    "#",
    "\n",
    "\r\n",
    "\r",
    "\t",
    " ",
    "\x00",
    "\ufeff",
    "0x7f",
    "1e400",
    "inf",
    "nan",
    "-0",
    "9" * 40,
    '"\\u0000"',
    '"\\ud800"',
    "\\",
    "'",
    "settings.transport",
    "base_url",
    '"http://u:p@h"',
    "every",
    '"every 99999999999999999d"',
]
toml_ish = st.lists(st.sampled_from(TOML_TOKENS) | st.text(max_size=8), max_size=60).map(
    lambda parts: " ".join(parts).encode("utf-8", "surrogatepass")
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "UNSET", "every 5m", "daily at 25:00", "../../x", "http://a:b@c"])
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.dates()
)
values = st.recursive(
    scalars.filter(lambda v: v is not None),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
secret_refs = st.sampled_from(
    [{"env": "CONTACTSYNC_FUZZ_UNSET"}, {"file": "/nonexistent/secret"}, {"credential": "x"}, {}]
)


@st.composite
def instance_documents(draw: st.DrawFn) -> str:
    """Valid TOML naming a real connector, with its real settings keys given random values."""
    kind = draw(st.sampled_from(sorted(CONNECTORS)))
    known = list(CONNECTORS[kind].Config.model_fields)
    keys = draw(st.lists(st.sampled_from(known) | st.text(min_size=1, max_size=8), max_size=6))
    settings = {key: draw(values | secret_refs) for key in keys}
    top: dict[str, Any] = {"type": kind}
    for key in draw(
        st.lists(
            st.sampled_from(
                [
                    "enabled",
                    "direction",
                    "conflict",
                    "match_on",
                    "max_attempts",
                    "schedule",
                    "owns_crm_id",
                    "push_batch_size",
                    "fields",
                    "connection",
                    "create_remote",
                    "junk",
                ]
            ),
            max_size=4,
        )
    ):
        top[key] = draw(values)
    if draw(st.booleans()):
        top["fields"] = [
            {
                "hub": draw(st.sampled_from(["first_name", "phone", "custom:X", "id", "nope"])),
                "remote": draw(st.text(max_size=5)),
                **({"direction": draw(values)} if draw(st.booleans()) else {}),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
    return toml_document(top, {"settings": settings})


# --- the loader -------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_load_or_are_that_files_config_error(folder: Path, data: bytes) -> None:
    load(folder, data)


@FUZZ
@given(data=toml_ish)
def test_toml_ish_text_loads_or_is_that_files_config_error(folder: Path, data: bytes) -> None:
    load(folder, data)


@fuzz_settings(150)
@given(document=instance_documents())
def test_valid_toml_with_random_settings_loads_or_is_a_config_error(
    folder: Path, document: str
) -> None:
    load(folder, document.encode())


# --- the reload -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('hub') / 'hub.db'}")
    yield engine
    engine.dispose()


@fuzz_settings(25)
@given(
    data=st.binary(max_size=200) | toml_ish | instance_documents().map(str.encode),
    generation=st.integers(0, 10**6),
)
def test_a_reload_with_any_file_keeps_the_good_ones_and_sees_new_ones(
    tmp_path_factory: pytest.TempPathFactory, hub: Engine, data: bytes, generation: int
) -> None:
    etc = tmp_path_factory.mktemp("etc")
    instances = etc / "instances"
    instances.mkdir()
    (instances / "alpha.toml").write_text(GOOD.format(remote="alpha"))
    state = ConfigState(etc, hub, CONNECTORS)
    assert state.reload().added == ["alpha"]
    alpha = state.instances["alpha"]

    (instances / "fuzzed.toml").write_bytes(data)
    (instances / "beta.toml").write_text(GOOD.format(remote=f"beta-{generation}"))
    before = len(query_log(hub, code=str(Code.CONFIG_INVALID), instance="fuzzed", limit=10**6))
    result = state.reload()  # never raises, whatever the file holds
    assert state.instances["alpha"] is alpha and result.unchanged == ["alpha"]
    assert "beta" in result.added
    if "fuzzed" in result.invalid:
        error = result.invalid["fuzzed"]
        assert "could not be loaded" not in error.reason, f"an unforeseen exception: {error}"
        rows = query_log(hub, code=str(Code.CONFIG_INVALID), instance="fuzzed", limit=10**6)
        assert len(rows) == before + 1 and rows[0]["message"], "one config-invalid row"
    else:
        assert "fuzzed" in state.instances
    (instances / "gamma.toml").write_text(GOOD.format(remote="gamma"))
    assert state.reload().added == ["gamma"]  # a later reload still sees new good files


def test_the_fuzz_inputs_reach_past_the_parser(folder: Path) -> None:
    """Guard against a strategy that only ever yields parse errors, which would test
    nothing beyond ``tomllib``: enough generated documents get to the settings checks."""
    reasons = []
    for document in _examples(instance_documents(), 60):
        outcome = load(folder, document.encode())
        if isinstance(outcome, ConfigError):
            reasons.append(outcome.key)
    assert sum(1 for key in reasons if key.startswith("settings")) >= 5, reasons


def _examples(strategy: st.SearchStrategy[str], count: int) -> list[str]:
    found: list[str] = []

    @fuzz_settings(count)
    @given(strategy)
    def collect(value: str) -> None:
        found.append(value)

    collect()
    return found
