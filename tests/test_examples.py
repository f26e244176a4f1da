"""The example instance files in examples/instances/ are valid for the installed plugins, so
the README's examples are true."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.config.instances import load_instance
from daemon.engine.registry import Registry, get_plugin_manager

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "instances").glob("*.toml"))
SECRETS = [
    "HUBSPOT_TOKEN",
    "SALESFORCE_CLIENT_SECRET",
    "ETHOS_API_KEY",
    "SLATE_QUERY_TOKEN",
    "SLATE_SFTP_KEY",
    "BANNER_SFTP_PASSWORD",
    "EXPORT_SFTP_KEY",
]


def test_there_is_an_example_for_every_built_in_platform() -> None:
    types = {path.read_text().split('type = "')[1].split('"')[0] for path in EXAMPLES}
    assert types == {
        "hubspot",
        "salesforce",
        "colleague",
        "slate",
        "sftp",
        "conversations_export",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_example_instance_file_loads(example: Path, tmp_path: Path, monkeypatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"example-{name.lower()}")
    connectors = Registry.from_plugin_manager(get_plugin_manager()).connectors
    copy = tmp_path / example.name
    shutil.copy(example, copy)
    instance = load_instance(copy, connectors)
    assert instance.config.type == instance.connector_class.type
