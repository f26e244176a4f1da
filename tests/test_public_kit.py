"""Plugins reach contactsync through one door: ``daemon.sdk`` (and ``daemon.testing`` in tests).

import-linter holds the built-in plugins to that at the package level; this walk reads every
``import`` and ``from … import`` statement of the plugins' source with :mod:`ast`, wherever it
stands (inside a function, under ``if TYPE_CHECKING``, in ``importlib.import_module("…")``),
so it also covers the third-party example, which import-linter does not see, and it tells the
author which ``daemon.sdk`` name to import instead. The deprecated aliases of the previous
release (``daemon.simkit`` …) are refused here too: they are for plugins written before it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import daemon.sdk

ROOT = Path(__file__).resolve().parent.parent
# Every folder whose Python files are plugin code, built-in or third-party.
PLUGIN_SOURCES = (
    ROOT / "plugins",
    ROOT / "daemon" / "default_plugins",
    ROOT / "tests" / "fixtures" / "contactsync-example",
)
PUBLIC = "daemon.sdk"
TEST_KIT = "daemon.testing"  # the pytest plugin: allowed in a plugin's tests only
# The aliases daemon/simkit.py etc. keep for one release; no maintained plugin uses them.
DEPRECATED_ALIASES = ("daemon.simkit", "daemon.connector", "daemon.filetransport")
SDK_NAMES = frozenset(daemon.sdk.__all__)


@dataclass(frozen=True)
class BadImport:
    """One import of a ``daemon`` module other than the public ones, and what to use."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}; {self.advice()}"

    def advice(self) -> str:
        exported = [n for n in self.names if n in SDK_NAMES]
        missing = [n for n in self.names if n not in SDK_NAMES]
        parts = []
        if exported:
            parts.append(f"use `from {PUBLIC} import {', '.join(exported)}`")
        if missing:
            parts.append(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in {PUBLIC}: "
                "ask for it to be exported there rather than importing an internal module"
            )
        return "; ".join(parts) or f"import the names you use from {PUBLIC}"


def is_test_file(path: Path) -> bool:
    """A plugin's own test code, which may import ``daemon.testing`` too."""
    return path.name.startswith("test_") or path.name == "conftest.py" or "tests" in path.parts


def bad_imports(path: Path) -> list[BadImport]:
    """Every import in ``path`` of a ``daemon`` module a plugin must not use."""
    allowed = {PUBLIC, TEST_KIT} if is_test_file(path) else {PUBLIC}
    found: list[BadImport] = []
    # ast.walk visits every node: imports inside functions, classes and `if TYPE_CHECKING`.
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        for module, names in _imported(node):
            if (module == "daemon" or module.startswith("daemon.")) and module not in allowed:
                found.append(BadImport(path, node.lineno, module, names))
    return found


def _imported(node: ast.AST) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names taken from it)`` for an import statement or a literal
    ``importlib.import_module("…")`` / ``__import__("…")`` call; ``[]`` for anything else."""
    if isinstance(node, ast.Import):
        return [(alias.name, ()) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module is None:  # relative: inside the plugin's own package
            return []
        if node.module == "daemon":  # `from daemon import kit, sdk`: each is a module
            return [(f"daemon.{alias.name}", ()) for alias in node.names]
        return [(node.module, tuple(alias.name for alias in node.names))]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [(node.args[0].value, ())]
    return []


def plugin_files() -> list[Path]:
    """The Python files of every plugin source folder, build leftovers excluded."""
    files = []
    for folder in PLUGIN_SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if not {"build", "__pycache__"} & set(path.parts) and ".egg-info" not in str(path):
                files.append(path)
    return files


def test_plugins_import_only_the_public_kit() -> None:
    files = plugin_files()
    # A walk that found nothing would pass whatever the plugins import.
    for folder in PLUGIN_SOURCES:
        assert any(folder in path.parents for path in files), f"no Python file under {folder}"
    assert any(path.name == "client.py" for path in files)
    problems = [str(bad) for path in files for bad in bad_imports(path)]
    assert not problems, "plugins must import only daemon.sdk:\n" + "\n".join(problems)


def test_the_walk_reads_every_kind_of_import_and_names_the_sdk_name(tmp_path: Path) -> None:
    plugin = tmp_path / "acme" / "connector.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "from __future__ import annotations\n"  # 1
        "import importlib\n"  # 2
        "from typing import TYPE_CHECKING\n"  # 3
        "from daemon.sdk import Page\n"  # 4: fine
        "from daemon.kit.http import HttpSession, json_body\n"  # 5
        "from . import wire\n"  # 6: fine, the plugin's own
        "if TYPE_CHECKING:\n"  # 7
        "    from daemon.engine.cycle import SyncEngine\n"  # 8
        "def later():\n"  # 9
        "    import daemon.foundation.log\n"  # 10
        "    from daemon import kit\n"  # 11
        "    return importlib.import_module('daemon.hub.store')\n"  # 12
        "from daemon.simkit import Simulator\n"  # 13: the deprecated alias
        "from daemon.testing import ConnectorContract\n",  # 14: not in plugin code
        encoding="utf-8",
    )
    found = {bad.line: str(bad) for bad in bad_imports(plugin)}
    assert sorted(found) == [5, 8, 10, 11, 12, 13, 14]
    assert found[5] == (
        f"{plugin}:5: imports daemon.kit.http; use `from daemon.sdk import HttpSession, json_body`"
    )
    assert "SyncEngine is not in daemon.sdk" in found[8]
    assert found[10].endswith("import the names you use from daemon.sdk")
    assert "imports daemon.kit;" in found[11] and "imports daemon.hub.store;" in found[12]
    assert "use `from daemon.sdk import Simulator`" in found[13]
    assert "ConnectorContract is not in daemon.sdk" in found[14]

    # The same statements in a plugin's test file may use the test kit, and nothing else.
    test_file = tmp_path / "acme" / "tests" / "test_contract.py"
    test_file.parent.mkdir()
    test_file.write_text(plugin.read_text(encoding="utf-8"), encoding="utf-8")
    assert sorted(bad.line for bad in bad_imports(test_file)) == [5, 8, 10, 11, 12, 13]


@pytest.mark.parametrize("alias", DEPRECATED_ALIASES)
def test_a_deprecated_alias_warns_and_hands_out_the_sdks_objects(alias: str) -> None:
    # A fresh interpreter, so the module's import (and its warning) really happens; with
    # warnings as errors the import fails, and the message names the path to use.
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", f"import {alias}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode != 0 and "DeprecationWarning" in done.stderr, done.stderr
    assert f"{alias} is deprecated" in done.stderr and "from daemon.sdk import" in done.stderr

    # Here only the names matter: each is the very object daemon.sdk exports.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(alias)
    assert module.__all__, alias
    for name in module.__all__:
        assert getattr(module, name) is getattr(daemon.sdk, name), f"{alias}.{name}"


def test_the_readmes_plugin_examples_import_only_the_public_kit(tmp_path: Path) -> None:
    # What the README teaches is what plugins copy: its Python examples in "Writing a
    # plugin" go through the same walk (as test code, so daemon.testing is allowed).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Writing a plugin") :]
    section = section[: section.index("\n## ", 1)]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    assert len(blocks) >= 4, "the section should show the connector, simulator, hooks and tests"
    problems = []
    for number, code in enumerate(blocks, 1):
        snippet = tmp_path / "tests" / f"test_readme_{number}.py"
        snippet.parent.mkdir(exist_ok=True)
        snippet.write_text(code, encoding="utf-8")
        problems += [str(bad) for bad in bad_imports(snippet)]
    assert not problems, "the README teaches an internal import:\n" + "\n".join(problems)


def test_the_readme_names_everything_daemon_sdk_exports() -> None:
    # A newcomer learns the kit from the README's list, not from the source: a name added to
    # daemon.sdk without a word there is a name nobody finds.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("**What `daemon.sdk` exports**") :]
    listed = listed[: listed.index("\n\n", listed.index("\n- "))]
    named = set(re.findall(r"`(\w+)`", listed))
    assert sorted(SDK_NAMES - named) == [], "add these to the README's list of the kit"
    assert sorted(named - SDK_NAMES) == [], "the README lists names daemon.sdk does not export"
