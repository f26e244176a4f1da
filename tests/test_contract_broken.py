"""The contract suite fails, and says why, on deliberately broken connectors.

Each test writes a test module into ``pytester`` that subclasses ConnectorContract for a small
connector with one fault, runs it, and asserts that exactly the check for that fault fails,
with a message naming what the connector did wrong. The connector is self-contained (not
tests/memremote.py) so the inner run depends on nothing but the installed test kit.
"""

from __future__ import annotations

import uuid

import pytest

pytest_plugins = ["pytester"]

MODULE = """
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from daemon.foundation.log import get_logger
from daemon.sdk import (
    AuthFailed, Capabilities, Connector, ConnectorConfig, ConnectorContext, MalformedResponse,
    OverlapCursor, Page, PushResult, PushStatus, RateLimited, RemoteField, RemoteRecord,
    RequiredMappings,
    Unavailable,
)
from daemon.testing import ConnectorContract

BROKEN = "{broken}"
KEY = "{key}"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
log = get_logger("acme")


class Platform:
    def __init__(self):
        self.rows = {{}}  # id -> [tick, fields, created_for]
        self.tick = 0
        self.fault = None

    def write(self, rid, fields, created_for=None):
        self.tick += 1
        row = self.rows.setdefault(rid, [0, {{}}, created_for])
        row[0] = self.tick
        row[1].update(fields)


class AcmeConfig(ConnectorConfig):
    api_key: SecretStr
    page_size: int = 2


class AcmeConnector(Connector):
    type = "acme"
    Config = AcmeConfig
    capabilities = Capabilities(reads_before_write=True, looks_up=True)
    # The bug: a declaration spelt unlike describe() ("lastname" for "last").
    required_mappings = RequiredMappings(outgoing=("lastname" if BROKEN == "required" else "last",))

    def _request(self):
        key = self.config.api_key.get_secret_value()
        if BROKEN == "secret":
            # The bug: a key in a logged URL's query string.
            log.info("acme_request", url=f"https://acme.example/contacts?key={{key}}")
        if key != KEY:
            raise AuthFailed("401 unauthorized")
        for attempt in (1, 2):
            fault, self.platform.fault = self.platform.fault, None
            if fault == "rate_limit" and attempt == 1:
                self.clock.sleep(10)
                continue
            if fault == "server_error":
                raise Unavailable("HTTP 503")
            return fault

    def check(self):
        self._request()

    def describe(self):
        return [RemoteField("first"), RemoteField("last")]

    def pull(self, cursor):
        if self._request() == "malformed":
            raise MalformedResponse("not JSON")
        rows = sorted((r[0], rid, dict(r[1])) for rid, r in self.platform.rows.items())
        size = self.config.page_size
        if BROKEN in ("window", "overlap"):
            # Re-read a window of three ticks before the newest change: "window" skips what
            # it re-reads unchanged (the kit's cursor), "overlap" (the bug) yields it again.
            position = OverlapCursor.load(cursor, window=timedelta(seconds=3))
            since = position.since
            records = [
                RemoteRecord(rid, f, EPOCH + timedelta(seconds=tick))
                for tick, rid, f in rows
                if since is None or EPOCH + timedelta(seconds=tick) >= since
            ]
            if BROKEN == "window":
                records = list(position.fresh(records))
            else:
                for record in records:
                    position.advance(record.modified_at)
            for start in range(0, len(records), size):
                yield Page(records[start:start + size], position.dump())
            return
        after = int(cursor) if cursor else 0
        if BROKEN == "cursor":
            after = 0  # the bug: the cursor is ignored, every pull starts over
        rows = [r for r in rows if r[0] > after]
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            yield Page([RemoteRecord(rid, f) for _, rid, f in chunk], str(chunk[-1][0]))

    def push(self, batch):
        fault = self._request()
        results = []
        for item in batch:
            if fault == "reject":
                fault = None
                results.append(PushResult(item.contact_id, PushStatus.REJECTED, message="bad"))
                continue
            rid = item.remote_id or next(
                (rid for rid, r in self.platform.rows.items() if r[2] == item.contact_id),
                None,
            )
            if rid is None or BROKEN == "idempotent":  # the bug: always a new record
                rid = f"A{{len(self.platform.rows) + 1}}"
            self.platform.write(rid, item.fields, item.contact_id)
            results.append(PushResult(item.contact_id, PushStatus.OK, remote_id=rid))
        return results

    def read(self, remote_ids):
        rows = self.platform.rows
        if BROKEN == "stale":  # the bug: an answer from a cache that never saw the edit
            return [RemoteRecord(rid, {{}}) for rid in remote_ids if rid in rows]
        now = self.clock.now()
        return [RemoteRecord(rid, dict(rows[rid][1]), now) for rid in remote_ids if rid in rows]

    def lookup(self, batch):
        firsts = {{item.fields.get("first") for item in batch}}
        if BROKEN == "lookup":  # the bug: finds nothing, so a first sync creates duplicates
            firsts = set()
        return [
            RemoteRecord(rid, dict(r[1]))
            for rid, r in self.platform.rows.items()
            if r[1].get("first") in firsts
        ]


class TestAcmeContract(ConnectorContract):
    secrets = [KEY]
    mapped_fields = ["first", "last"]
    page_size = 2
    uses_clock = True

    def make_connector(self, *, bad_credentials=False):
        self.platform = Platform()
        key = "wrong-key" if bad_credentials else KEY
        connector = AcmeConnector(
            AcmeConfig(api_key=SecretStr(key), page_size=self.page_size),
            ConnectorContext("acme"),
        )
        connector.platform = self.platform
        connector.clock = self.clock
        return connector

    def seed_remote(self, count):
        start = len(self.platform.rows)
        ids = [f"S{{start + i}}" for i in range(count)]
        for i, rid in enumerate(ids):
            self.platform.write(rid, {{"first": f"Seed{{i}}", "last": "X"}})
        return ids

    def edit_remote(self, remote_id, fields):
        self.platform.write(remote_id, fields)

    def push_fields(self, i):
        return {{"first": f"Pushed{{i}}", "last": "Y"}}

    def inject(self, fault):
        self.platform.fault = fault
"""


def run_contract(pytester: pytest.Pytester, broken: str) -> pytest.RunResult:
    """Run the contract suite on the Acme connector broken as ``broken`` says."""
    # A fresh key per run: log redaction is process-wide, and a key some other test had
    # registered as a secret would be masked and hide the leak.
    key = f"acme-key-{uuid.uuid4().hex}"
    pytester.makepyfile(test_acme_contract=MODULE.format(broken=broken, key=key))
    # In-process, daemon is already imported, so pytest warns it cannot rewrite its asserts;
    # the suite reports through pytest.fail, so that changes nothing.
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"
    )


def failed_tests(result: pytest.RunResult) -> list[str]:
    """``Class::test`` of every failed test in the inner run's short summary."""
    return sorted(
        line.split(" ")[1].split("::", 1)[1]
        for line in result.outlines
        if line.startswith("FAILED ")
    )


def test_a_correct_acme_connector_passes(pytester: pytest.Pytester) -> None:
    # The baseline: without a fault the same connector passes, so each failure below is the
    # fault's doing and nothing else.
    result = run_contract(pytester, "none")
    # Skipped: the checks of capabilities Acme does not claim (confirms_later, webhooks).
    result.assert_outcomes(passed=16, skipped=2)


def test_a_required_mapping_describe_does_not_list_fails_its_check(
    pytester: pytest.Pytester,
) -> None:
    result = run_contract(pytester, "required")
    assert failed_tests(result) == [
        "TestAcmeContract::test_required_mappings_name_writable_catalogue_fields"
    ]
    result.stdout.fnmatch_lines(
        # fnmatch reads [ ] as a character class: the list is matched by a wildcard.
        ["*AcmeConnector.required_mappings names ?'lastname'?, which describe() does not list*"]
    )


@pytest.mark.parametrize(
    "broken",
    [
        "cursor",  # every pull starts over: after an edit, every unchanged record comes again
        "overlap",  # a window re-read before the newest change, yielded again unchanged
    ],
)
def test_yielding_unchanged_records_again_fails_the_incremental_checks(
    pytester: pytest.Pytester, broken: str
) -> None:
    result = run_contract(pytester, broken)
    assert failed_tests(result) == [
        "TestAcmeContract::test_incremental_pull_yields_an_edited_record",
        "TestAcmeContract::test_incremental_pull_yields_nothing_new",
    ]
    result.stdout.fnmatch_lines(
        ["*AcmeConnector.pull(final cursor) yielded * records already seen, unchanged*"]
    )


def test_re_reading_a_window_and_skipping_what_did_not_change_passes(
    pytester: pytest.Pytester,
) -> None:
    # The overlap the Page docstring allows: every pull re-reads three ticks before the
    # newest change, and the cursor drops what it re-reads unchanged.
    result = run_contract(pytester, "window")
    # Skipped: the checks of capabilities Acme does not claim (confirms_later, webhooks).
    result.assert_outcomes(passed=16, skipped=2)


def test_a_push_that_is_not_idempotent_fails_the_idempotency_check(
    pytester: pytest.Pytester,
) -> None:
    result = run_contract(pytester, "idempotent")
    assert failed_tests(result) == ["TestAcmeContract::test_push_twice_is_idempotent"]
    result.stdout.fnmatch_lines(
        [
            "*AcmeConnector.push() is not idempotent: pushing the same items twice gave new "
            "remote ids*"
        ]
    )


def test_a_connector_logging_its_key_fails_the_secrets_check(pytester: pytest.Pytester) -> None:
    result = run_contract(pytester, "secret")
    assert failed_tests(result) == ["TestAcmeContract::test_no_secret_in_logs"]
    result.stdout.fnmatch_lines(
        ["*AcmeConnector leaked secret #1 of `secrets` into the logs*key=<SECRET>*"]
    )
    assert "acme-key-" not in result.stdout.str()  # the report itself never shows the secret


def test_a_read_that_misses_a_platform_edit_fails_the_read_check(
    pytester: pytest.Pytester,
) -> None:
    result = run_contract(pytester, "stale")
    assert failed_tests(result) == [
        "TestAcmeContract::test_read_shows_an_edit_made_on_the_platform"
    ]
    result.stdout.fnmatch_lines(["*AcmeConnector.read() gave record S0 without its edit*"])


def test_a_lookup_that_finds_nothing_fails_the_lookup_check(pytester: pytest.Pytester) -> None:
    result = run_contract(pytester, "lookup")
    assert failed_tests(result) == [
        "TestAcmeContract::test_lookup_finds_the_records_the_platform_holds"
    ]
    result.stdout.fnmatch_lines(["*AcmeConnector.lookup() did not find record *"])
