"""``contactsync init [DIR]``: a new config folder, so commands have a hub to work on.

It writes ``contactsync.toml`` with every setting at its default, commented out (the file is
its own config reference, generated from :class:`~daemon.config.settings.Settings`, so it can
never fall behind the code), and an ``instances/`` folder with a README holding a commented
example instance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from daemon.cli.app import App
from daemon.cli.output import console, fail
from daemon.config.settings import (
    DEFAULT_ETC_DIR,
    INSTANCES_DIR,
    SETTINGS_FILE,
    SYSTEM_ETC_DIR,
    SYSTEM_STATE_DIR,
    Settings,
)

# Settings whose default is "unset": the file shows an example value instead.
_EXAMPLES: dict[str, Any] = {
    "state_dir": str(SYSTEM_STATE_DIR),
    "database.url": "postgresql://contactsync@db.example.edu/contactsync",
}

_HEAD = f"""\
# contactsync settings. Every setting is listed at its default, commented out: uncomment a
# line to change it. Environment variables override some of them: CONTACTSYNC_DATABASE_URL
# (database.url), CONTACTSYNC_STATE_DIR and systemd's STATE_DIRECTORY (state_dir).
#
# This folder is the config folder: commands find it as ./etc, as {SYSTEM_ETC_DIR}, or when
# named by --etc DIR / CONTACTSYNC_ETC. Integrations go in {INSTANCES_DIR}/NAME.toml, one file
# each (see {INSTANCES_DIR}/README.md).
"""

INSTANCES_README = """\
# Instances

One file per integration: `NAME.toml` (lower-case letters, digits, `-` and `_`). The daemon
reloads this folder by itself when a file changes; `contactsync check NAME` proves a file
works, `contactsync status` shows them all. Secrets are references, never values.

An example, for HubSpot's simulator (`contactsync simulate hubspot --port 8801` in another
terminal, then `export HUBSPOT_TOKEN=pat-na1-00000000-0000-4000-8000-hubspotsim00`, the token
it prints), to copy into `hubspot.toml`:

```toml
type = "hubspot"
direction = "both"

[schedule]
pull = "every 1m"
push = "every 1m"

[settings]
base_url = "http://127.0.0.1:8801"
access_token = { env = "HUBSPOT_TOKEN" }

[[fields]]
hub = "first_name"
remote = "firstname"

[[fields]]
hub = "last_name"
remote = "lastname"

[[fields]]
hub = "phone"
remote = "phone"

[[fields]]
hub = "email"
remote = "email"
```

README.md ("Config reference") lists every key of an instance file.
"""


def settings_reference() -> str:
    """``contactsync.toml`` with every setting of :class:`Settings` at its default, commented
    out, each under its description."""
    lines = [_HEAD]
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, info in Settings.model_fields.items():
        if info.exclude:
            continue  # not read from the file
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
        else:
            lines.extend(_setting(name, name, info))
    for section, model in sections:
        lines.append(f"\n[{section}]")
        doc = (model.__doc__ or "").strip().split("\n")[0]
        if doc:
            lines.append(f"# {doc}")
        for name, info in model.model_fields.items():
            lines.extend(_setting(f"{section}.{name}", name, info))
    return "\n".join(lines) + "\n"


def _setting(dotted: str, name: str, info: Any) -> list[str]:
    out = [f"# {info.description}"] if info.description else []
    if info.default is None:
        out.append(f"# {name} = {_toml(_EXAMPLES[dotted])}    # example; unset by default")
    else:
        out.append(f"# {name} = {_toml(info.default)}")
    return out


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these values


@click.command("init")
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help=f"Overwrite an existing {SETTINGS_FILE}.")
@click.pass_obj
def init_command(app: App, folder: str | None, force: bool) -> None:
    """Make a config folder: DIR (default --etc, else ./etc) with a commented
    contactsync.toml (every setting at its default) and an instances/ folder.

    Refuses (exit 1) to overwrite an existing contactsync.toml unless --force.
    """
    target = Path(folder or app.etc or DEFAULT_ETC_DIR)
    settings_file = target / SETTINGS_FILE
    if settings_file.exists() and not force:
        fail(f"{settings_file} exists; --force overwrites it", exit_code=1)
    instances = target / INSTANCES_DIR
    try:
        instances.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(settings_reference(), encoding="utf-8")
        readme = instances / "README.md"
        if not readme.exists():
            readme.write_text(INSTANCES_README, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}", exit_code=1)
    state = Settings(etc_dir=target).resolved_state_dir
    console.print(f"Wrote {settings_file} and {instances}/", markup=False, highlight=False)
    console.print(
        f"The hub will be {state / 'contactsync.db'} unless [database] url names one.",
        markup=False,
        highlight=False,
    )
    hint = "" if target == DEFAULT_ETC_DIR else f" --etc {target}"
    console.print(
        f"Next: add an instance file ({instances}/README.md), then: contactsync{hint} status",
        markup=False,
        highlight=False,
    )
