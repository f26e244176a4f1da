"""``contactsync demo --duration N`` as CI runs it: a subprocess, off a terminal, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon.cli_demo import SEED
from plugins.colleague.simulator import ColleagueSimulator
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.simulator import SalesforceSimulator

# Settings from the developer's shell would point the demo at a real hub or config.
_OUTSIDE = (
    "CONTACTSYNC_DATABASE_URL",
    "CONTACTSYNC_ETC",
    "CONTACTSYNC_STATE_DIR",
    "STATE_DIRECTORY",
    "CONTACTSYNC_DEMO_HUBSPOT_TOKEN",
    "CONTACTSYNC_DEMO_SALESFORCE_SECRET",
    "CONTACTSYNC_DEMO_ETHOS_KEY",
)
# Each two-way platform shows at least one change each way.
TWO_WAY = ("HubSpot", "Salesforce", "Colleague")


def test_demo_runs_by_itself_and_shows_both_directions_and_the_codes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    # No proxy: the demo talks to its simulator on loopback only.
    env.update(NO_PROXY="*", no_proxy="*", COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--duration", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    # Changes seen arriving, each way, among them the scripted edits.
    assert "HubSpot → hub  new contact Hedy Lamarr" in out
    assert "hub → HubSpot  Ada Lovelace's email: ada@analytical.engine.example" in out
    assert "HubSpot → hub" in out and "phone: +16175550123" in out
    # On failure, say what the demo did see: its events and the daemon's warnings.
    assert "hub → HubSpot  new contact Linus Torvalds" in out, out + done.stderr[-3000:]
    # The bad records, refused with their codes.
    for code in ("invalid-phone", "blank-required-data-in-record", "missing-remote-required-field"):
        assert code in out
    assert "test user Test User was never sent to HubSpot" in out
    for label in TWO_WAY:
        assert f"{label} → hub " in out and f"hub → {label} " in out, label
    # The simulators' secrets are handed over by environment only, never shown.
    secrets = (
        HubSpotSimulator(seed=SEED).private_app_token,
        SalesforceSimulator(seed=SEED).client_secret,
        ColleagueSimulator(seed=SEED).api_key,
    )
    for secret in secrets:
        assert secret not in out and secret not in done.stderr
    # The temporary folder is gone; nothing was written where it ran.
    assert list(tmp_path.iterdir()) == []
