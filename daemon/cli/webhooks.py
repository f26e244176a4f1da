"""``contactsync webhooks INSTANCE``: what to register on the platform so that its changes
wake the daemon at once (webhooks), or whether the instance holds a stream open itself.

It reads the instance file and ``[http]`` of ``contactsync.toml`` only (no secret, no network):
the URL is ``http://BIND:PORT/webhooks/INSTANCE`` unless ``--public-url`` (the address the
platform reaches, behind a proxy) or the instance's own ``webhook_url`` setting says otherwise.
"""

from __future__ import annotations

import click

from daemon.cli.app import App, json_option, pass_app
from daemon.cli.output import console, fail, print_json


@click.command("webhooks")
@click.argument("instance")
@click.option(
    "--public-url",
    metavar="URL",
    help="The daemon's address as the platform reaches it (https://sync.example.edu).",
)
@json_option
@pass_app
def webhooks_command(app: App, instance: str, public_url: str | None, as_json: bool) -> None:
    """Print the URL to register for INSTANCE's webhooks and what to subscribe to."""
    loaded = app.instances(secrets=False)
    found = loaded.instances.get(instance)
    if found is None:
        known = ", ".join(sorted(loaded.instances)) or "none"
        fail(f"no instance {instance!r} (instances: {known})", "config-invalid")
    capabilities = found.connector_class.capabilities
    kind = found.config.type
    if capabilities.streams:
        answer = {"instance": instance, "type": kind, "mode": "stream", "url": None}
        answer["subscriptions"] = found.connector_class.webhook_subscriptions_for(found.settings)
        _show(answer, as_json, "holds its change stream open itself: nothing to register")
        return
    if not capabilities.webhooks:
        fail(
            f"{instance} ({kind}) takes no webhooks; its scheduled pull finds its changes",
            "webhook-refused",
        )
    http = app.settings.http
    own = getattr(found.settings, "webhook_url", None)
    base = (public_url or f"http://{http.bind}:{http.port}").rstrip("/")
    url = own or f"{base}/webhooks/{instance}"
    answer = {
        "instance": instance,
        "type": kind,
        "mode": "webhook",
        "url": url,
        "subscriptions": found.connector_class.webhook_subscriptions_for(found.settings),
        "http_enabled": http.enabled,
    }
    _show(answer, as_json, "")


def _show(answer: dict, as_json: bool, note: str) -> None:
    if as_json:
        print_json(answer)
        return
    name, kind = answer["instance"], answer["type"]
    if answer["mode"] == "stream":
        console.print(f"{name} ({kind}) {note}.", markup=False, soft_wrap=True)
    else:
        console.print(f"Register this target URL in the {kind} app:", markup=False)
        console.print(answer["url"], markup=False, soft_wrap=True)
    if answer["subscriptions"]:
        console.print("Subscribe to:", markup=False)
        for item in answer["subscriptions"]:
            console.print(f"  {item}", markup=False, soft_wrap=True)
    if answer.get("http_enabled") is False:
        console.print(
            "Note: [http] enabled = false in contactsync.toml: the daemon serves no webhooks "
            "until it is true (and the URL above reaches it).",
            markup=False,
            soft_wrap=True,
        )
