"""The example instance files in examples/instances/ are valid for the installed plugins, so
the README's examples are true."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.cli.plugins import plugins_command
from daemon.config.instances import load_instance
from daemon.engine.registry import Registry, get_plugin_manager

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "instances").glob("*.toml"))
EXAMPLES_BY_STEM = {p.stem: p for p in EXAMPLES}
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


# --- the --schema output validates the real instance files --------------------------------------


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Why ``instance`` does not match ``schema`` (``[]``: it does), with the jsonschema
    package where it is installed, else with :func:`_errors`, a small validator of the
    keywords pydantic's schemas use (an unknown keyword fails loudly rather than passing)."""
    try:
        import jsonschema
    except ImportError:
        return _errors(instance, schema, schema, "settings")
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"settings.{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}
# Keywords that say nothing about validity; any other unknown one stops the test.
_ANNOTATIONS = {"title", "description", "default", "examples", "format", "writeOnly", "readOnly"}


def _errors(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    for key, rule in schema.items():
        if key in _ANNOTATIONS or key == "$defs":
            continue
        if key == "$ref":
            target: Any = root
            for part in rule.removeprefix("#/").split("/"):
                target = target[part]
            errors += _errors(value, target, root, where)
        elif key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            if not any(_is_type(value, kind) for kind in kinds):
                errors.append(f"{where}: {value!r} is not of type {rule}")
        elif key in ("anyOf", "oneOf"):
            matching = [s for s in rule if not _errors(value, s, root, where)]
            if not matching or (key == "oneOf" and len(matching) > 1):
                errors.append(f"{where}: {value!r} matches {len(matching)} of the {key} schemas")
        elif key == "allOf":
            errors += [e for s in rule for e in _errors(value, s, root, where)]
        elif key == "enum":
            if value not in rule:
                errors.append(f"{where}: {value!r} is not one of {rule!r}")
        elif key == "const":
            if value != rule:
                errors.append(f"{where}: {value!r} is not {rule!r}")
        elif key in ("properties", "required", "additionalProperties"):
            if isinstance(value, dict):
                errors += _object_errors(key, rule, value, schema, root, where)
        elif key == "items":
            if isinstance(value, list):
                errors += [
                    e for i, v in enumerate(value) for e in _errors(v, rule, root, f"{where}.{i}")
                ]
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if _is_type(value, "number") and not _in_bound(key, value, rule):
                errors.append(f"{where}: {value!r} fails {key} {rule}")
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            if isinstance(value, str | list):
                size = len(value)
                if size < rule if key.startswith("min") else size > rule:
                    errors.append(f"{where}: length {size} fails {key} {rule}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{where}: {value!r} does not match {rule!r}")
        else:
            raise AssertionError(f"the small validator does not know {key!r}: install jsonschema")
    return errors


def _object_errors(
    key: str, rule: Any, value: dict[str, Any], schema: dict[str, Any], root: Any, where: str
) -> list[str]:
    if key == "properties":
        return [
            e
            for k, v in value.items()
            if k in rule
            for e in _errors(v, rule[k], root, f"{where}.{k}")
        ]
    if key == "required":
        return [f"{where}: {k!r} is required" for k in rule if k not in value]
    extra = [k for k in value if k not in schema.get("properties", {})]
    if rule is False:
        return [f"{where}: unknown key {k!r}" for k in extra]
    if isinstance(rule, dict):
        return [e for k in extra for e in _errors(value[k], rule, root, f"{where}.{k}")]
    return []


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool))


def _in_bound(key: str, value: float, bound: float) -> bool:
    return {
        "minimum": value >= bound,
        "maximum": value <= bound,
        "exclusiveMinimum": value > bound,
        "exclusiveMaximum": value < bound,
    }[key]


def _cli_schema(type_name: str) -> dict[str, Any]:
    """``contactsync plugins --schema TYPE --json``, as an operator's editor would get it."""
    result = CliRunner().invoke(plugins_command, ["--schema", type_name, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _settings(example: Path) -> tuple[str, dict[str, Any]]:
    """The file's type and its ``[settings]`` as JSON sees them: TOML's dates and times are
    ISO strings there (a ``"format": "date"`` string in the schema), as TOML editors map them."""
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    return data["type"], _as_json(data.get("settings", {}))


def _as_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    return value


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_example_instance_files_settings_match_the_cli_schema(example: Path) -> None:
    type_name, settings = _settings(example)
    assert schema_errors(settings, _cli_schema(type_name)) == []


def test_the_schema_refuses_a_secret_written_in_plain_text() -> None:
    # The HubSpot example gives its token by reference; the same file with the token in
    # plain text is refused on load, and so by the schema.
    type_name, settings = _settings(EXAMPLES_BY_STEM["hubspot"])
    assert "access_token" in settings
    schema = _cli_schema(type_name)
    plain = {**settings, "access_token": "pat-na1-0000"}
    assert any("access_token" in e for e in schema_errors(plain, schema))
    assert schema_errors({**settings, "access_token": {"vault": "x"}}, schema) != []
    assert schema_errors({**settings, "pull_concurrency": "3"}, schema) != []
    assert schema_errors({**settings, "no_such_setting": 1}, schema) != []


def test_a_schema_describing_secrets_as_strings_would_refuse_the_real_files() -> None:
    # pydantic's own schema (what --schema printed before) calls a secret a string: every
    # example with a secret would then fail, which is why the CLI describes the reference.
    connectors = Registry.from_plugin_manager(get_plugin_manager()).connectors
    failing = []
    for example in EXAMPLES:
        type_name, settings = _settings(example)
        raw = connectors[type_name].Config.model_json_schema()
        if schema_errors(settings, raw):
            failing.append(example.stem)
    assert sorted(failing) == sorted(
        p.stem for p in EXAMPLES if "= { env" in p.read_text(encoding="utf-8")
    )
