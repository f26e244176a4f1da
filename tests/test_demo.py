"""``contactsync demo --duration N`` as CI runs it: a subprocess, off a terminal, no network."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from daemon.cli.demo import SEED
from plugins.colleague.simulator import ColleagueSimulator
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.simulator import SalesforceSimulator
from plugins.slate.simulator import SlateSimulator

# Settings from the developer's shell would point the demo at a real hub or config.
_OUTSIDE = (
    "CONTACTSYNC_DATABASE_URL",
    "CONTACTSYNC_ETC",
    "CONTACTSYNC_STATE_DIR",
    "STATE_DIRECTORY",
    "CONTACTSYNC_DEMO_HUBSPOT_TOKEN",
    "CONTACTSYNC_DEMO_SALESFORCE_SECRET",
    "CONTACTSYNC_DEMO_ETHOS_KEY",
    "CONTACTSYNC_DEMO_SLATE_TOKEN",
)
# Each two-way platform shows at least one change each way.
TWO_WAY = ("HubSpot", "Salesforce", "Colleague", "Slate")
DURATION = 20


def summary_rows(out: str) -> dict[str, list[str]]:
    """The summary table's rows by platform label: the cells, stripped."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] in (*TWO_WAY, "Banner", "Export") and " / " in " ".join(cells):
            rows[cells[0]] = cells
    return rows


def feed_changes(out: str) -> dict[str, int]:
    """The feed's counted lines (``HubSpot → hub  pull: 2 created, 1 updated``) added up
    per direction, read from the printed feed itself."""
    totals: dict[str, int] = {}
    for match in re.finditer(r"^\s*[\d.]+s  (.+?)\s+(?:pull|push): (.+)$", out, re.MULTILINE):
        direction = match.group(1)
        numbers = [int(n) for n in re.findall(r"(\d+) (?:created|updated)", match.group(2))]
        totals[direction] = totals.get(direction, 0) + sum(numbers)
    return totals


def test_demo_runs_by_itself_and_shows_both_directions_and_the_codes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    # No proxy: the demo talks to its simulator on loopback only.
    env.update(NO_PROXY="*", no_proxy="*", COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--duration", str(DURATION)],
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
    # Slate confirms an upload later: a pull sees it.
    assert "hub → Slate    new contact " in out
    assert "Slate → hub    confirmed " in out
    # Banner through the sftp plugin: the extract read (its bad row refused), a file written.
    assert "Banner → hub   new contact Barbara Liskov" in out
    assert "Banner → hub   read banner_students.csv (3 rows)" in out
    assert "hub → Banner   wrote outgoing/mainstay_contact" in out
    assert "#B00000103" in out  # the bad row, in the sync log
    # The conversations export: Ada's two messages, not the test user's.
    assert "hub → Export   wrote conversations/mainstay_conversations" in out
    assert "(2 messages)" in out
    assert "nor any other platform (nor exported)" in out
    # The simulators' secrets are handed over by environment only, never shown.
    secrets = (
        HubSpotSimulator(seed=SEED).private_app_token,
        SalesforceSimulator(seed=SEED).client_secret,
        ColleagueSimulator(seed=SEED).api_key,
        SlateSimulator(seed=SEED).user_token,
    )
    for secret in secrets:
        assert secret not in out and secret not in done.stderr
    # The feed counts every change the summary counts: for each platform, the records the
    # runs created or updated each way, as the feed showed them and as the summary adds them.
    feed = feed_changes(out)
    rows = summary_rows(out)
    assert set(TWO_WAY) <= set(rows)
    for label in (*TWO_WAY, "Banner"):
        _, pulled, pushed, _, seen, *_ = rows[label]
        into_hub = sum(int(n) for n in pulled.split(" / ")[1:3]) if pulled else 0
        onto_platform = sum(int(n) for n in pushed.split(" / ")[0:2]) if pushed else 0
        assert seen == f"{into_hub} in, {onto_platform} out", label
        assert feed.get(f"{label} → hub", 0) == into_hub, label
        assert feed.get(f"hub → {label}", 0) == onto_platform, label
    # The script's edits are spread over the run: the last comes in its final third.
    edits = [float(m) for m in re.findall(r"^\s*([\d.]+)s  you, in ", out, re.MULTILINE)]
    assert max(edits) >= DURATION * 0.6, edits
    # The temporary folder is gone; nothing was written where it ran.
    assert list(tmp_path.iterdir()) == []
