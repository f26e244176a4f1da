"""The operator commands (sync, status, outbox, links, cursor, check, plugins) against the
in-memory platform, driven through click's test runner with an injected plugin manager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result
from sqlalchemy import Engine, select

import daemon.foundation.log
from daemon.cli import App, cli
from daemon.engine.checks import check_instance
from daemon.engine.registry import BLOCK_ENV, get_plugin_manager
from daemon.hookspecs import hookimpl
from daemon.hub import lease
from daemon.hub.database import make_engine
from daemon.hub.store import Contact, utcnow
from daemon.kit.connector import AuthFailed, Unavailable
from tests import clikit
from tests.clikit import isolated
from tests.enginekit import FIELDS, fresh_remote, snapshot, write_instance
from tests.hubkit import outbox_rows
from tests.memremote import MemoryConnector, MemoryRemote

SECRET = "sk-live-Zq8MEMKEY4417"
KEY_SETTINGS = 'api_key = { env = "MEM_KEY" }'


class MemoryPlugin:
    """A test plugin: the in-memory connector."""

    @hookimpl
    def register_connectors(self, register):
        register(MemoryConnector)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No outside settings, a known secret, and logging put back as it was."""
    monkeypatch.setenv("MEM_KEY", SECRET)
    with isolated(monkeypatch, BLOCK_ENV):
        yield


class Cli(clikit.Cli):
    """Runs commands against one hub file and one config folder, with the memory connector."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.pm = get_plugin_manager(plugins=[MemoryPlugin()])
        self.outputs: list[str] = []  # everything printed, for the secret check

    def obj(self) -> App:
        return App(pm=self.pm)

    def seen(self, result: Result) -> None:
        self.outputs.append(result.stdout + result.stderr)

    def add(self, first: str, phone: str, *extra: str) -> str:
        args = ("--first-name", first, "--last-name", "Hub", "--phone", phone, *extra)
        return self.json("contacts", "add", *args)["id"]

    def instance(self, name: str = "mem", **kwargs: Any) -> None:
        kwargs.setdefault("settings", KEY_SETTINGS)
        write_instance(self.etc, name, **kwargs)

    def broken(self, name: str = "broken") -> Path:
        path = self.etc / "instances" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('type = "memory"\nbogus = 1\n')
        return path


@pytest.fixture
def run(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def hub(run) -> Iterator[Engine]:
    """The hub the CLI writes, for checking its rows directly."""
    engine = make_engine(run.db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def remote() -> MemoryRemote:
    return fresh_remote()


def contacts(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Contact.__table__)).mappings()
        return {r["first_name"]: dict(r) for r in rows}


def ada(remote: MemoryRemote, **extra: str) -> str:
    return remote.add(
        FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1", **extra
    )


# --- sync -------------------------------------------------------------------------------------


def test_sync_pull_push_and_both_move_data_both_ways(run, hub, remote):
    rid = ada(remote)
    run.instance()
    grace = run.add("Grace", "2025550181")

    pulled = run.json("sync", "mem", "--direction", "pull")
    (report,) = pulled["reports"]
    assert report["direction"] == "pull" and report["outcome"] == "ok"
    assert report["counts"]["created"] == 1
    assert contacts(hub)["Ada"]["last_name"] == "Lovelace"

    (report,) = run.json("sync", "mem", "--direction", "push")["reports"]
    assert report["outcome"] == "ok" and report["counts"]["created"] == 1
    (created,) = [r for r in remote.live() if r.created_for == grace]
    assert created.fields["FirstName"] == "Grace"

    remote.edit(rid, LastName="King")
    run("contacts", "edit", grace, "--email", "grace@example.edu")
    both = run.json("sync", "mem")
    assert [r["direction"] for r in both["reports"]] == ["pull", "push"]
    assert contacts(hub)["Ada"]["last_name"] == "King"
    assert created.fields["Email"] == "grace@example.edu"

    out = run("sync", "mem").stdout
    assert "pull" in out and "push" in out and "ok" in out


def test_dry_run_changes_nothing_and_prints_each_sides_plan(run, hub, remote):
    ada(remote)
    run.instance()
    run.add("Grace", "2025550181")
    run("status")  # mirrors the instance, so the snapshot below is of a settled hub
    rows_before = {rid: dict(r.fields) for rid, r in remote.rows.items()}
    before = snapshot(hub)

    out = run("sync", "mem", "--dry-run").stdout
    data = run.json("sync", "mem", "--dry-run")

    after = snapshot(hub)
    for volatile in ("instance", "instance_state", "sync_lease"):  # mirror time, lease row
        before.pop(volatile, None), after.pop(volatile, None)
    assert after == before
    assert {rid: dict(r.fields) for rid, r in remote.rows.items()} == rows_before
    assert remote.push_calls == 0
    assert "Pull plan" in out and "Push plan" in out and "Dry run" in out
    assert "Ada" in out and "first_name" in out

    assert data["dry_run"] is True
    (pull,) = data["plans"]["pull"]
    assert pull["outcome"] == "created" and pull["remote_id"] == "R000001"
    fields = {f["field"]: f for f in pull["fields"]}
    assert fields["first_name"] == {"field": "first_name", "action": "set", "value": "Ada"}
    assert fields["phone"]["value"] == "+12025550143"
    (push,) = data["plans"]["push"]
    assert push["action"] == "create" and push["fields"]["FirstName"] == "Grace"


def test_the_dry_run_of_a_first_sync_counts_what_the_sync_then_reports(run, hub, remote):
    """Existing people on both sides: the preview says "link", not "skipped" or "create",
    with the counts the real first sync then reports, both ways."""
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", Email="ada@x.edu")
    remote.add(FirstName="Alan", LastName="Turing", Phone="4155550199")
    remote.add(FirstName="Nophone", LastName="X")
    run.instance()
    run.add("Ada", "2025550143", "--email", "ada@x.edu")  # the same person: phone and email
    run.add("Grace", "2025550181")  # only in the hub
    before = snapshot(hub)

    out = run("sync", "mem", "--dry-run").stdout
    preview = run.json("sync", "mem", "--dry-run")["preview"]

    after = snapshot(hub)
    for volatile in ("instance", "instance_state", "sync_lease"):
        before.pop(volatile, None), after.pop(volatile, None)
    assert after == before and remote.push_calls == 0
    assert "Preview of mem" in out and "link to contacts the hub already holds" in out
    assert "blank-required-data-in-record 1" in out
    assert preview["link"] == 1 and preview["create_in_hub"] == 1
    assert preview["create_on_platform"] == 1 and preview["conflicts"] == 1  # last name
    assert preview["skipped"] == {"blank-required-data-in-record": 1}

    pulled, pushed = run.json("sync", "mem")["reports"]
    assert pulled["counts"]["linked"] == preview["link"]
    assert pulled["counts"]["created"] == preview["create_in_hub"]
    assert pushed["counts"]["created"] == preview["create_on_platform"]
    codes = [r["code"] for r in run.json("log", "--run", pulled["run_id"])]
    assert sorted(codes) == ["blank-required-data-in-record", "sync-conflict"]


def test_sync_refuses_unknown_and_invalid_instances_and_forbidden_directions(run, remote):
    run.instance("inbound", extra='direction = "incoming"')
    path = run.broken()

    assert "no instance 'nope'" in run("sync", "nope", expect=2).stderr
    err = run("sync", "broken", expect=2).stderr
    assert str(path) in err and "bogus" in err and "unknown key" in err
    assert "does not push" in run("sync", "inbound", "--direction", "push", expect=2).stderr
    (report,) = run.json("sync", "inbound")["reports"]  # both: only what it allows
    assert report["direction"] == "pull"
    run.instance("off", extra="enabled = false")
    assert "disabled" in run("sync", "off", expect=1).stderr
    run("sync", "off", "--dry-run")


def test_a_plugin_clash_stops_sync_but_never_a_hub_write(run, hub, remote):
    class Impostor(MemoryConnector):
        """A second connector claiming the type name "memory"."""

    class ImpostorPlugin:
        @hookimpl
        def register_connectors(self, register):
            register(Impostor)

    run.instance()
    run.add("Grace", "2025550181")  # mirrors "mem" while the plugins are fine
    run.pm = get_plugin_manager(plugins=[MemoryPlugin(), ImpostorPlugin()])

    err = run("sync", "mem", expect=2).stderr
    assert "config-invalid" in err and "registered twice" in err
    result = run(
        "contacts", "add", "--first-name", "Alan", "--last-name", "T", "--phone", "2025550199"
    )
    assert "instances_not_loaded" in result.stderr
    assert len(outbox_rows(hub)) == 2  # the mirror is kept: the new contact is queued too


def test_a_plugin_whose_register_commands_fails_only_warns(run):
    class Broken:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("oops")

    run.pm = get_plugin_manager(plugins=[MemoryPlugin(), Broken()])
    result = run("--help")
    assert "register_commands failed: RuntimeError: oops" in result.stderr
    assert "sync" in result.stdout


def test_a_failed_cycle_exits_1_with_its_code(run, remote):
    run.instance()
    remote.fail_pull = Unavailable("503 from the platform")

    result = run("sync", "mem", expect=1)

    assert "remote-unavailable" in result.stderr and "503" in result.stderr
    assert "failed" in result.stdout
    assert remote.push_calls == 0  # no push after a failed pull


def test_sync_while_another_run_holds_the_lease_is_busy(run, hub, remote):
    run.instance()
    run("status")
    assert lease.acquire(hub, "mem", "other-host:4242:abcd", utcnow())

    result = run("sync", "mem", expect=1)
    assert "busy" in result.stderr and "other-host:4242:abcd" in result.stderr
    (row,) = run.json("status")["instances"]
    assert row["lease"]["owner"] == "other-host:4242:abcd"

    lease.release(hub, "mem", "other-host:4242:abcd")
    run("sync", "mem")


# --- hub writes fan out to configured connections --------------------------------------------


def test_hub_writes_fan_out_to_configured_instances_despite_an_invalid_file(run, hub, remote):
    run.instance()
    run.instance("other", remote="other", extra='direction = "outgoing"')
    first = run.add("Grace", "2025550181")
    assert {r["connection"] for r in outbox_rows(hub)} == {"mem", "other"}

    # "other" breaks: writes go on, and still queue for it (it keeps its last good config).
    (run.etc / "instances" / "other.toml").write_text('type = "memory"\nbogus = 1\n')
    second = run.add("Alan", "2025550199")
    run("contacts", "edit", first, "--email", "g@example.edu")
    queued = {(r["connection"], r["contact_id"]) for r in outbox_rows(hub)}
    assert {("mem", second), ("other", second), ("mem", first)} <= queued


# --- status -----------------------------------------------------------------------------------


def test_status_shows_runs_counts_and_a_broken_file(run, remote):
    ada(remote)
    run.instance()
    run.add("Grace", "2025550181")
    run("sync", "mem")
    path = run.broken()

    rows = {r["name"]: r for r in run.json("status")["instances"]}

    mem = rows["mem"]
    assert (mem["type"], mem["connection"], mem["direction"]) == ("memory", "mem", "both")
    assert mem["enabled"] is True and mem["config_error"] is None
    assert mem["last_runs"]["pull"]["outcome"] == "ok"
    assert mem["last_runs"]["pull"]["counts"]["created"] == 1
    assert mem["last_runs"]["push"]["finished_at"]
    assert mem["links"] == {"active": 2, "pending": 0, "deleted": 0}
    assert mem["outbox"] == {"pending": 0, "parked": 0}
    assert mem["cursor_updated_at"] and mem["lease"] is None and mem["backoff_until"] is None
    assert rows["broken"]["config_error"] == {
        "file": str(path),
        "key": "bogus",
        "reason": "unknown key",
    }

    out = run("status").stdout
    assert "mem" in out and "active 2" in out
    assert "broken" in out and "bogus" in out


# --- outbox -----------------------------------------------------------------------------------


def test_outbox_list_retry_and_drop_a_parked_row(run, hub, remote):
    run.instance(extra='direction = "outgoing"\nmax_attempts = 1')
    remote.reject = lambda item: "FIELD_CUSTOM_VALIDATION_EXCEPTION: nope"
    grace = run.add("Grace", "2025550181")
    run("sync", "mem")

    (row,) = run.json("outbox", "list", "--state", "parked")
    assert row["contact_id"] == grace and row["attempts"] == 1
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in row["last_error"]
    assert run.json("outbox", "list", "--state", "pending") == []
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in run("outbox", "list").stdout

    assert "re-armed 1" in run("outbox", "retry", str(row["id"])).stdout
    (rearmed,) = outbox_rows(hub)
    assert (rearmed["state"], rearmed["attempts"]) == ("pending", 0)
    assert rearmed["next_attempt_at"] <= utcnow()
    remote.reject = lambda item: None
    run("sync", "mem")
    assert outbox_rows(hub) == []
    assert [r.created_for for r in remote.live()] == [grace]

    remote.reject = lambda item: "nope"
    run.add("Alan", "2025550199")
    run("sync", "mem")
    assert [r["state"] for r in outbox_rows(hub)] == ["parked"]
    assert "re-armed 0" in run("outbox", "retry", "--all-parked", "--connection", "x").stdout
    assert "dropped 1" in run("outbox", "drop", "--all-parked", "--connection", "mem").stdout
    assert outbox_rows(hub) == []


def test_outbox_commands_need_a_selection_and_report_unknown_ids(run):
    run("outbox", "retry", expect=2)
    run("outbox", "drop", "1", "--all-parked", expect=2)
    assert "no such outbox row: 99" in run("outbox", "drop", "99", expect=1).stderr


# --- links ------------------------------------------------------------------------------------


def test_links_show_and_reset_then_a_full_pull_relinks(run, hub, remote):
    rid = ada(remote)
    run.instance()
    run("sync", "mem", "--direction", "pull")
    contact_id = contacts(hub)["Ada"]["id"]

    (link,) = run.json("links", "show", contact_id)
    assert (link["remote_id"], link["state"], link["connection"]) == (rid, "active", "mem")
    assert link["values"]["first_name"] == "Ada"
    assert run.json("links", "show", rid, "--connection", "mem") == [link]
    assert rid in run("links", "show", contact_id).stdout

    reset = run("links", "reset", "--connection", "mem", "--contact", contact_id)
    assert "deleted 1" in reset.stdout and "--full" in reset.stdout
    run("links", "show", contact_id, expect=1)
    run("sync", "mem", "--direction", "pull", "--full")
    (relinked,) = run.json("links", "show", contact_id)
    assert relinked["remote_id"] == rid
    assert len(contacts(hub)) == 1  # matched again, not duplicated


def test_links_reset_clears_a_tombstone_and_guards_all(run, hub, remote):
    rid = ada(remote)
    run.instance()
    run("sync", "mem", "--direction", "pull")
    remote.delete(rid)
    run("sync", "mem", "--direction", "pull")
    assert run.json("links", "show", rid)[0]["state"] == "deleted"

    run("links", "reset", "--connection", "mem", "--remote-id", rid)
    run("links", "show", rid, expect=1)
    run("links", "reset", "--connection", "mem", "--remote-id", rid, expect=1)  # no match

    run("links", "reset", "--connection", "mem", expect=2)  # no selection
    run("links", "reset", "--connection", "mem", "--all", expect=2)  # no --yes
    run("links", "reset", "--connection", "mem", "--all", "--yes")


# --- cursor -----------------------------------------------------------------------------------


def test_cursor_reset_makes_the_next_pull_full(run, remote):
    ada(remote)
    remote.add(FirstName="Alan", LastName="Turing", Phone="2025550199", StudentId="S2")
    run.instance()
    assert run.json("sync", "mem", "--direction", "pull")["reports"][0]["counts"]["read"] == 2
    again = run.json("sync", "mem", "--direction", "pull")["reports"][0]["counts"]
    assert again.get("read", 0) == 0

    assert "next pull is a full pull" in run("cursor", "reset", "mem").stdout
    full = run.json("sync", "mem", "--direction", "pull")["reports"][0]["counts"]
    assert full["read"] == 2 and full.get("created", 0) == 0
    run("cursor", "reset", "mem")
    assert "had no contacts cursor" in run("cursor", "reset", "mem", "--stream", "contacts").stdout
    run("cursor", "reset", "nope", expect=2)


# --- check ------------------------------------------------------------------------------------


def test_check_ok_calls_check_and_describe(run, remote):
    run.instance()

    (result,) = run.json("check")

    assert result["instance"] == "mem" and result["ok"] is True
    assert result["remote_fields"] == 8 and result["problems"] == []
    assert "ok" in run("check", "mem").stdout


def test_check_reports_a_failing_connector_and_always_closes_it(run, remote, monkeypatch):
    closed: list[str] = []
    monkeypatch.setattr(MemoryConnector, "close", lambda self: closed.append(self.context.instance))
    run.instance()
    run.instance("bad", settings=f"{KEY_SETTINGS}\nfail_check = true")

    results = {r["instance"]: r for r in run.json("check", expect=1)}

    assert results["mem"]["ok"] is True
    (problem,) = results["bad"]["problems"]
    assert problem["code"] == "remote-auth-failed" and "401" in problem["message"]
    assert sorted(closed) == ["bad", "mem"]
    out = run("check", "bad", expect=1).stdout
    assert "remote-auth-failed" in out


def test_check_reports_mapping_problems_and_config_errors(run, remote):
    extra = '[[fields]]\nhub = "enrollment_id"\nremote = "CreatedBy"\n'
    run.instance(fields=FIELDS + extra)
    path = run.broken()

    (problem,) = run.json("check", "mem", expect=1)[0]["problems"]
    assert problem["code"] == "config-invalid" and "read-only" in problem["message"]
    results = {r["instance"]: r for r in run.json("check", expect=2)}
    assert results["broken"]["config_error"]["file"] == str(path)
    run("check", "nope", expect=2)


def test_check_waits_for_a_busy_connection_then_says_so(hub, tmp_path, remote):
    instance = write_instance(tmp_path, "mem", settings=KEY_SETTINGS)
    assert lease.acquire(hub, "mem", "other-host:1:ab", utcnow())

    result = check_instance(hub, instance, {}, wait=0)

    (problem,) = result.problems
    assert problem["code"] is None and "busy" in problem["message"]


# --- plugins and plugin commands --------------------------------------------------------------


def test_plugins_json_lists_the_builtin_transforms_and_the_test_plugin(run):
    data = run.json("plugins")

    names = {p["name"]: p for p in data["plugins"]}
    assert names["transforms"]["distribution"] == "contactsync"
    assert "year" in names["transforms"]["transforms"]
    assert names["MemoryPlugin"]["connectors"] == ["memory"]
    assert names["MemoryPlugin"]["hooks"] == ["register_connectors"]


def test_a_plugin_command_appears_in_help_and_runs(run):
    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello-plugin")
            def hello() -> None:
                """Say hello from a plugin."""
                click.echo("hi from a plugin")

    run.pm = get_plugin_manager(plugins=[MemoryPlugin(), Commands()])
    try:
        assert "hello-plugin" in run("--help").stdout
        assert run("hello-plugin").stdout == "hi from a plugin\n"
        assert "sync" in run("--help").stdout and "plugins" in run("--help").stdout
    finally:
        cli.commands.pop("hello-plugin", None)  # the group is module-global


# --- secrets ----------------------------------------------------------------------------------


def test_no_secret_given_by_reference_is_ever_printed(run, hub, remote, monkeypatch):
    # Each command starts with an empty redactor, as a fresh process does: it must register
    # the secret itself (by resolving the reference) before anything is printed.
    invoke = run.runner.invoke

    def fresh_process(*args: Any, **kwargs: Any) -> Result:
        monkeypatch.setattr(daemon.foundation.log, "_secrets", set())
        return invoke(*args, **kwargs)

    monkeypatch.setattr(run.runner, "invoke", fresh_process)
    rid = ada(remote)
    run.instance(extra="max_attempts = 1")
    run.instance("bad", remote="bad", settings=f"{KEY_SETTINGS}\nfail_check = true")
    run.add("Grace", "2025550181")
    # A careless platform quotes the key in its errors.
    remote.reject = lambda item: f"rejected for key {SECRET}"

    run("sync", "mem")
    run("sync", "mem", "--dry-run")
    run.json("sync", "mem", "--dry-run")
    run("status")
    run.json("status")
    run("outbox", "list")
    (row,) = run.json("outbox", "list", "--connection", "mem")
    run("outbox", "retry", str(row["id"]))
    run("links", "show", rid)
    run.json("links", "show", rid)
    run("check", expect=1)
    run.json("check", expect=1)
    run.json("plugins")
    run("cursor", "reset", "mem")
    fresh_remote("bad").fail_pull = AuthFailed(f"401 key {SECRET} is revoked")
    run("sync", "bad", expect=1)
    run.json("status")

    printed = "\n".join(run.outputs)
    assert "***" in printed  # the redactor did meet the secret
    assert SECRET not in printed
