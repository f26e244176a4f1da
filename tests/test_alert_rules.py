"""The example alert rules (etc/prometheus/contactsync-alerts.yml) parse, and read only
metrics and labels the daemon exposes.

``promtool check rules`` judges the file when promtool is on PATH; otherwise a schema check
of the rule-file format (groups, rules, alert/expr/for/labels/annotations) stands in, and the
PromQL is checked for balanced brackets. Either way every ``contactsync_*`` name and every
label an expression groups by is checked against a real exposition.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from daemon.config.instances import load_instances
from daemon.engine.metrics import Metrics
from daemon.hub.runs import finish, start
from daemon.hub.store import utcnow
from tests.daemonkit import instance_toml
from tests.memremote import MemoryConnector

RULES = Path(__file__).resolve().parent.parent / "etc" / "prometheus" / "contactsync-alerts.yml"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
NEEDED = {
    "contactsync_seconds_since_last_success",
    "contactsync_outbox_oldest_age_seconds",
    "contactsync_outbox_rows",
    "contactsync_platform_quota_used",
}
"""The issue's four: no pull for N intervals, outbox age, parked rows growing, quota > 80%."""


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert isinstance(document, dict) and set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"]
        found += group["rules"]
    return found


def exposed(sqlite_engine, tmp_path: Path, monkeypatch) -> dict[str, set[str]]:
    """Each metric family the daemon exposes, with its label names: one configured instance
    with a successful pull, and one of each counter counted, so that every family has a
    sample."""
    monkeypatch.setenv("MEM_KEY", "k")
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "instances" / "crm.toml").write_text(instance_toml(tmp_path / "r.json"))
    loaded = load_instances(etc, {"memory": MemoryConnector}, secrets=False)
    start(sqlite_engine, "run-1", "crm", "pull", utcnow())
    finish(sqlite_engine, "run-1", "ok", {}, utcnow())
    metrics = Metrics(sqlite_engine, lambda: loaded)
    metrics.cycle_finished("crm", "pull", {"created": 1}, 1.0, "ok")
    for name in ("requests", "rate_limited", "retries", "quota_used", "quota_limit"):
        labels = ["p", "crm", "200"] if name == "requests" else ["p", "crm"]
        getattr(metrics, name).labels(*labels).inc()
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            families.setdefault(sample.name, set()).update(sample.labels)
    return families


def test_rules_file_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run(
            [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    for rule in rules():
        assert set(rule) <= RULE_KEYS and "alert" in rule, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert DURATION.match(str(rule.get("for", "0s"))), rule["for"]
        for key in ("labels", "annotations"):
            assert all(isinstance(v, str) for v in rule.get(key, {}).values())
        expr = rule["expr"]
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), (rule["alert"], opening)


def test_rules_read_only_what_the_daemon_exposes(sqlite_engine, tmp_path, monkeypatch) -> None:
    families = exposed(sqlite_engine, tmp_path, monkeypatch)
    used: set[str] = set()
    for rule in rules():
        names = set(re.findall(r"\bcontactsync_[a-z_]+\b", rule["expr"]))
        assert names, rule["alert"]
        for name in names:
            assert name in families, f"{rule['alert']}: {name} is not exposed"
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            for label in (part.strip() for part in grouping.split(",")):
                assert any(label in families[n] for n in names), (rule["alert"], label)
        for selector in re.findall(r"\{([^}]*)\}", rule["expr"]):
            for label in re.findall(r"(\w+)\s*=", selector):
                assert any(label in families[n] for n in names), (rule["alert"], label)
        used |= names
    assert used >= NEEDED


@pytest.mark.parametrize(
    "broken", ["groups: [", "groups:\n  - name: x\n    rules:\n      - expr: up\n"]
)
def test_the_check_catches_a_broken_file(tmp_path: Path, monkeypatch, broken: str) -> None:
    bad = tmp_path / "alerts.yml"
    bad.write_text(broken)
    monkeypatch.setattr(f"{__name__}.RULES", bad)
    with pytest.raises((AssertionError, yaml.YAMLError)):
        test_rules_file_parses(tmp_path)
