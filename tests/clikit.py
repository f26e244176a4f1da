"""What the command-line tests share: a test kept apart from outside settings and from the
logging the CLI configures, and a runner for commands against one hub file and one config
folder."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from daemon.cli import cli

# Settings the CLI reads from the environment: a test names its own or none.
OUTSIDE_SETTINGS = (
    "CONTACTSYNC_DATABASE_URL",
    "CONTACTSYNC_ETC",
    "CONTACTSYNC_STATE_DIR",
    "STATE_DIRECTORY",
)


@contextmanager
def isolated(monkeypatch: pytest.MonkeyPatch, *more: str) -> Iterator[None]:
    """No outside settings (nor the ``more`` variables), and logging put back as it was
    afterwards (the CLI reconfigures it)."""
    for name in (*OUTSIDE_SETTINGS, *more):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class Cli:
    """Runs commands against one hub file and one config folder (``instances/``, empty)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.etc = tmp_path / "etc"
        # A config folder holds contactsync.toml or instances/: an empty one is refused.
        (self.etc / "instances").mkdir(parents=True)
        self.db_url = f"sqlite:///{tmp_path / 'hub.db'}"
        self.runner = CliRunner()

    def obj(self) -> Any:
        """The click context object the command gets (``None``: the CLI builds its own)."""
        return None

    def __call__(self, *args: str, expect: int = 0) -> Result:
        result = self.runner.invoke(
            cli, ["--etc", str(self.etc), "--database-url", self.db_url, *args], obj=self.obj()
        )
        self.seen(result)
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
        return result

    def seen(self, result: Result) -> None:
        """Every result passes here before its exit code is checked."""

    def json(self, *args: str, expect: int = 0) -> Any:
        return json.loads(self(*args, "--json", expect=expect).stdout)


def listed_knobs(platform: str, simulator: type[Any]) -> str:
    """``contactsync simulate <platform> --list-knobs``, asserted to name every knob of
    ``simulator`` as a flag; its output."""
    listed = CliRunner().invoke(cli, ["simulate", platform, "--list-knobs"])
    assert listed.exit_code == 0, listed.output
    for knob in simulator.knob_options:
        assert "--" + knob.replace("_", "-") in listed.output
    return listed.output
