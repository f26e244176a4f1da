"""``contactsync simulate NAME``: serve a plugin's platform simulator on loopback.

It prints one JSON line on stdout, ``{"name", "url", "credentials"}``, and flushes it at once,
so a script or a test reads the line and points an instance file at the URL; then it serves
until SIGINT or SIGTERM. The same simulators serve the tests, the benchmarks and a
newcomer's demo.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from daemon.cli.output import fail
from daemon.engine.registry import PluginError, Registry, get_plugin_manager
from daemon.kit.simkit import knob_value, parse_duration


class _Duration(click.ParamType):
    """``150ms``, ``0.15`` or ``1s``, as seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(
    "simulate", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("name")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (0: a free one).")
@click.option("--contacts", type=click.IntRange(0), default=10, show_default=True)
@click.option(
    "--latency", type=_Duration(), default=0.0, help="Added to every request: 150ms, 0.15, 1s."
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of requests answered with a random 5xx.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds records and faults.")
@click.option("--list-knobs", is_flag=True, help="List the simulator's own knobs and exit.")
@click.pass_context
def simulate_command(
    ctx: click.Context,
    name: str,
    port: int,
    contacts: int,
    latency: float,
    error_rate: float,
    seed: int,
    list_knobs: bool,
) -> None:
    """Serve the platform simulator NAME on 127.0.0.1 until stopped (Ctrl-C).

    Prints one JSON line with the base URL and credentials first. A simulator's own knobs
    are flags too (--rate-limit-per-10s 190; --list-knobs shows them). Fault knobs can
    be changed while it runs: POST /_sim/faults, POST /_sim/reset, GET /_sim/state.
    """
    registry = _registry(ctx.obj)
    try:
        factory = registry.simulator(name)
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)
    knobs: dict[str, tuple[type, Any, str]] = getattr(factory, "knob_options", {})
    if list_knobs:
        for knob, (kind, default, text) in knobs.items():
            flag = "--" + knob.replace("_", "-")
            # A yes-or-no knob is a switch pair, as _knob_values reads it; the rest take a value.
            usage = (
                f"{flag} / --no-{flag[2:]}" if kind is bool else f"{flag} {kind.__name__.upper()}"
            )
            sys.stdout.write(f"{usage} (default {default}): {text}\n")
        return
    extra = _knob_values(ctx.args, knobs)
    simulator = factory(
        contacts=contacts, latency=latency, error_rate=error_rate, seed=seed, **extra
    )
    try:
        simulator.start(port)
    except OSError as exc:  # the port is taken
        fail(f"cannot serve on port {port}: {exc}", exit_code=1)
    stop = threading.Event()
    # Both signals end the wait; the handlers only set the event (safe in a signal handler).
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        sys.stdout.write(json.dumps(simulator.describe()) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _registry(app: Any) -> Registry:
    # Under ``contactsync`` the App holds the plugins every command uses (a test may have
    # injected them); run on its own, the command loads the installed ones.
    if hasattr(app, "registry"):
        return app.registry
    try:
        return Registry.from_plugin_manager(get_plugin_manager())
    except PluginError as exc:
        fail(str(exc), str(PluginError.code), exit_code=2)


def _knob_values(args: list[str], knobs: dict[str, tuple[type, Any, str]]) -> dict[str, Any]:
    """Parse ``--knob-name VALUE``, ``--knob-name=VALUE`` and boolean ``--[no-]knob-name``."""
    values: dict[str, Any] = {}
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        flag, eq, inline = token.partition("=")
        negated = flag.startswith("--no-")
        name = (flag[5:] if negated else flag[2:]).replace("-", "_")
        if not flag.startswith("--") or name not in knobs:
            known = ", ".join("--" + k.replace("_", "-") for k in knobs) or "none"
            fail(f"unknown option {token!r} (this simulator's knobs: {known})", exit_code=2)
        kind = knobs[name][0]
        if kind is bool and not eq:
            values[name] = not negated
            continue
        raw = inline if eq else (tokens.pop(0) if tokens else None)
        if raw is None:
            fail(f"{flag} needs a value", exit_code=2)
        try:
            values[name] = knob_value(kind, raw)
        except ValueError:
            fail(f"{flag}: {raw!r} is not a {kind.__name__}", exit_code=2)
    return values
