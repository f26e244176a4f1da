"""Fuzzing platform answers (issue 16): the HubSpot, Salesforce and Colleague connectors read
list and search answers of random shapes, through their real simulators (sign-in and paging
work; :meth:`Simulator.replace_next` swaps one answer for the fuzzed one) and the kit's
hostile server.

Each answer starts from the platform's real shape and is mutated: values replaced by wrong
types, ``null``, huge integers or deep nesting; keys dropped; unknown keys added. Invariants:

- a pull yields records (each with a string id and a field map) or raises one of the kit's
  coded :class:`ConnectorError` s (``remote-malformed-response`` and kin), never anything else;
- every problem the connector reports carries a dictionary code;
- through the engine, a cycle never crashes: its report carries a code, and the next clean
  cycle applies the platform's good records (nothing lost, no cursor stuck).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fuzzkit import fuzz_settings
from hubkit import log_rows, truncate
from hypothesis import given
from hypothesis import strategies as st
from platformkit import hub_contacts
from sqlalchemy import Engine, update

from daemon.config.instances import Instance
from daemon.engine.cycle import SyncEngine
from daemon.engine.registry import Registry, get_plugin_manager
from daemon.foundation.clock import FakeClock
from daemon.foundation.dictionary import Code
from daemon.hub.database import make_engine
from daemon.hub.mirror import mirror_instances
from daemon.hub.store import InstanceState
from daemon.kit.connector import ConnectorContext, ConnectorError, RemoteRecord
from daemon.kit.simkit import HostileAnswer, HostileServer, Simulator
from plugins.colleague.connector import ColleagueConnector
from plugins.colleague.simulator import ColleagueSimulator
from plugins.hubspot.connector import HubSpotConnector
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.connector import SalesforceConnector
from plugins.salesforce.simulator import API_VERSION, SalesforceSimulator
from tests.connectorkit import build
from tests.instancekit import contact_fields, load_written

TRANSFORMS = Registry.from_plugin_manager(get_plugin_manager()).transforms

CODES = {str(code) for code in Code}
# A pull through a simulator costs several requests: fewer examples keep the file quick.
SIM_FUZZ = fuzz_settings(30)
STAMP = "2025-01-06T10:00:00Z"

HUBSPOT_RECORD = {
    "id": "101",
    "properties": {
        "email": "ada@example.edu",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "phone": "+12025550101",
        "hs_object_id": "101",
        "createdate": STAMP,
        "lastmodifieddate": STAMP,
    },
    "createdAt": STAMP,
    "updatedAt": STAMP,
    "archived": False,
}
HUBSPOT_PAGE = {"results": [HUBSPOT_RECORD, {**HUBSPOT_RECORD, "id": "102"}]}
HUBSPOT_SEARCH = {"total": 2, **HUBSPOT_PAGE}
SALESFORCE_RECORD = {
    "attributes": {"type": "Contact", "url": f"/services/data/{API_VERSION}/sobjects/Contact/1"},
    "Id": "003000000000001AAA",
    "FirstName": "Ada",
    "LastName": "Lovelace",
    "Email": "ada@example.edu",
    "Phone": "+12025550101",
    "IsDeleted": False,
    "LastModifiedDate": "2025-01-06T10:00:00.000+0000",
    "SystemModstamp": "2025-01-06T10:00:00.000+0000",
}
SALESFORCE_QUERY = {"totalSize": 1, "done": True, "records": [SALESFORCE_RECORD]}
COLLEAGUE_PERSON = {
    "id": "2b1f5a3e-0000-4000-8000-000000000001",
    "names": [
        {
            "type": {"category": "legal"},
            "preference": "preferred",
            "fullName": "Ada Lovelace",
            "firstName": "Ada",
            "lastName": "Lovelace",
        }
    ],
    "emails": [
        {"type": {"emailType": "personal"}, "preference": "primary", "address": "a@example.edu"}
    ],
    "phones": [
        {"type": {"phoneType": "mobile"}, "countryCallingCode": "1", "number": "2025550101"}
    ],
    "roles": [{"role": "student", "startOn": "2024-08-26T00:00:00Z"}],
}
COLLEAGUE_PAGE = [COLLEAGUE_PERSON]

# --- mutation ---------------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "null", STAMP, "not a date", "9" * 400, "\x00", "UNSET"])
)
junk = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with random parts replaced, dropped or added (a few per answer)."""
    action = draw(st.sampled_from(["keep"] * 5 + ["replace", "deep"]))
    if action == "replace":
        return draw(junk)
    if action == "deep":
        return _deep(draw(st.sampled_from([3, 50, 900])))
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if draw(st.integers(0, 9)) == 0:
                continue  # the key goes missing
            out[key] = draw(mutated(item, depth + 1))
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.text(max_size=6))] = draw(junk)  # an extra key
        return out
    if isinstance(value, list):
        items = [draw(mutated(item, depth + 1)) for item in value]
        if draw(st.integers(0, 5)) == 0:
            items.append(draw(junk))
        return items
    return value


def as_body(answer: Any) -> bytes:
    # Deeply nested answers are written without json's recursion: 900 levels pass json.dumps
    # but would fail it at a higher depth; the text is built the same either way.
    return json.dumps(answer, default=str).encode()


def check_pull(connector: Any, cursor: str | None, reports: list[tuple[Any, ...]]) -> None:
    """The invariant: records or a coded ConnectorError, and coded reports only."""
    try:
        for page in connector.pull(cursor):
            for record in page.records:
                assert isinstance(record, RemoteRecord)
                assert isinstance(record.remote_id, str) and record.remote_id
                assert isinstance(record.fields, dict)
    except ConnectorError as exc:
        assert str(exc.code) in CODES, exc
    for code, *_ in reports:
        assert str(code) in CODES, reports


# --- simulators -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def hubspot(clock: FakeClock) -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(contacts=3, seed=7, clock=clock) as sim:
        yield sim


@pytest.fixture(scope="module")
def salesforce(clock: FakeClock) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(contacts=3, seed=7, clock=clock) as sim:
        yield sim


@pytest.fixture(scope="module")
def colleague(clock: FakeClock) -> Iterator[ColleagueSimulator]:
    with ColleagueSimulator(contacts=3, seed=9, clock=clock) as sim:
        yield sim


def _context(reports: list[tuple[Any, ...]], name: str) -> ConnectorContext:
    return ConnectorContext(name, reporter=lambda *report: reports.append(report))


def hubspot_connector(sim: HubSpotSimulator, clock: FakeClock, reports: list) -> Any:
    settings = {"base_url": sim.url, "access_token": sim.private_app_token, "pull_concurrency": 1}
    return build(HubSpotConnector, settings, {}, _context(reports, "hs"), clock)


def salesforce_connector(sim: SalesforceSimulator, clock: FakeClock, reports: list) -> Any:
    settings = {
        "login_url": sim.url,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "bulk_pull_threshold": 0,
        "bulk_push_threshold": 0,
    }
    return build(SalesforceConnector, settings, {}, _context(reports, "sf"), clock)


def colleague_connector(sim: ColleagueSimulator, clock: FakeClock, reports: list) -> Any:
    settings = {"base_url": sim.url, "api_key": sim.api_key, "page_size": 3}
    return build(ColleagueConnector, settings, {}, _context(reports, "colleague"), clock)


REPORTS: list[tuple[Any, ...]] = []


@pytest.fixture(scope="module")
def connectors(
    hubspot: HubSpotSimulator,
    salesforce: SalesforceSimulator,
    colleague: ColleagueSimulator,
    clock: FakeClock,
) -> dict[str, Any]:
    """One connector per platform for the whole module, reporting into :data:`REPORTS`:
    building one loads the CA bundle into a new TLS context (about 0.12 s), which would be
    most of each example's time."""
    return {
        "hubspot": hubspot_connector(hubspot, clock, REPORTS),
        "salesforce": salesforce_connector(salesforce, clock, REPORTS),
        "colleague": colleague_connector(colleague, clock, REPORTS),
    }


def _replace(sim: Simulator, path: str, body: bytes, method: str = "GET") -> None:
    sim.reset()
    REPORTS.clear()
    sim.replace_next(path, body, method=method)


HUBSPOT_LIST = "/crm/v3/objects/contacts"


@SIM_FUZZ
@given(answer=mutated(HUBSPOT_PAGE))
def test_hubspot_list_answers_of_any_shape(
    hubspot: HubSpotSimulator, connectors: dict[str, Any], answer: Any
) -> None:
    _replace(hubspot, HUBSPOT_LIST, as_body(answer))
    check_pull(connectors["hubspot"], None, REPORTS)


@SIM_FUZZ
@given(answer=mutated(HUBSPOT_SEARCH))
def test_hubspot_search_answers_of_any_shape(
    hubspot: HubSpotSimulator, connectors: dict[str, Any], answer: Any
) -> None:
    _replace(hubspot, HUBSPOT_LIST + "/search", as_body(answer), method="POST")
    cursor = None
    for page in connectors["hubspot"].pull(None):  # the list: the search needs its cursor
        cursor = page.cursor or cursor
    check_pull(connectors["hubspot"], cursor, REPORTS)


@SIM_FUZZ
@given(answer=mutated(SALESFORCE_QUERY))
def test_salesforce_query_answers_of_any_shape(
    salesforce: SalesforceSimulator, connectors: dict[str, Any], answer: Any
) -> None:
    # The first query is the pull's; queryAll (deletes) and query both read records.
    _replace(salesforce, f"/services/data/{API_VERSION}/query", as_body(answer))
    salesforce.replace_next(f"/services/data/{API_VERSION}/queryAll", as_body(answer))
    check_pull(connectors["salesforce"], None, REPORTS)


@SIM_FUZZ
@given(answer=mutated(COLLEAGUE_PAGE))
def test_colleague_person_pages_of_any_shape(
    colleague: ColleagueSimulator, connectors: dict[str, Any], answer: Any
) -> None:
    _replace(colleague, "/api/persons", as_body(answer))
    check_pull(connectors["colleague"], None, REPORTS)


def test_the_replaced_answers_reach_the_connectors(
    hubspot: HubSpotSimulator, salesforce: SalesforceSimulator, clock: FakeClock
) -> None:
    """The fuzz tests above test nothing if the replacement never lands: a wrongly typed
    answer on each path is a coded refusal, and an untouched one still yields records."""
    _replace(hubspot, HUBSPOT_LIST, b'{"results": "not a list"}')
    with pytest.raises(ConnectorError) as caught:
        list(hubspot_connector(hubspot, clock, []).pull(None))
    assert caught.value.code == Code.REMOTE_MALFORMED
    salesforce.reset()
    salesforce.replace_next(f"/services/data/{API_VERSION}/query", b'{"records": 7}')
    with pytest.raises(ConnectorError) as caught:
        list(salesforce_connector(salesforce, clock, []).pull(None))
    assert caught.value.code == Code.REMOTE_MALFORMED
    hubspot.reset()
    connector = hubspot_connector(hubspot, clock, [])
    pages = list(connector.pull(None))
    assert len([r for p in pages for r in p.records]) == 3
    hubspot.replace_next(HUBSPOT_LIST + "/search", b'{"results": 5}', method="POST")
    with pytest.raises(ConnectorError) as caught:
        list(connector.pull(pages[-1].cursor))
    assert caught.value.code == Code.REMOTE_MALFORMED


# --- the hostile server -----------------------------------------------------------------------


@fuzz_settings(10)
@given(answer=mutated(HUBSPOT_PAGE), status=st.sampled_from([200, 200, 200, 201, 204, 299]))
def test_hubspot_against_the_hostile_server(answer: Any, status: int) -> None:
    """Every request, the sign-in check included, gets the same wrongly typed answer."""
    with HostileServer(HostileAnswer("body", body=as_body(answer), status=status)) as server:
        reports: list[tuple[Any, ...]] = []
        settings = {"base_url": server.url, "access_token": "pat-na1-x", "pull_concurrency": 1}
        connector = build(HubSpotConnector, settings, {}, _context(reports, "hs"), FakeClock())
        check_pull(connector, None, reports)


# --- through the engine -----------------------------------------------------------------------

HUBSPOT_INSTANCE = (
    'type = "hubspot"\nowns_crm_id = true\n[settings]\nbase_url = "{url}"\n'
    'access_token = {{ env = "FUZZ_HUBSPOT_TOKEN" }}\npull_concurrency = 1\n'
) + contact_fields("firstname", "lastname", "email", "phone")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('hub') / 'hub.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def hubspot_instance(
    hubspot: HubSpotSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Instance]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUZZ_HUBSPOT_TOKEN", hubspot.private_app_token)
        folder = tmp_path_factory.mktemp("instances")
        text = HUBSPOT_INSTANCE.format(url=hubspot.url)
        yield load_written(folder, "hs", text, {"hubspot": HubSpotConnector})


def _clear_back_off(engine: Engine) -> None:
    # A failed cycle backs the instance off for a minute of wall time: the test's next cycle
    # is "later" by fiat, as the scheduler's would be.
    with engine.begin() as conn:
        conn.execute(update(InstanceState.__table__).values(backoff_until=None))


@fuzz_settings(8)
@given(answer=mutated(HUBSPOT_PAGE))
def test_a_cycle_over_any_answer_is_coded_and_the_next_one_applies_everything(
    hub: Engine, hubspot: HubSpotSimulator, hubspot_instance: Instance, answer: Any
) -> None:
    truncate(hub)
    _replace(hubspot, HUBSPOT_LIST, as_body(answer))
    mirror_instances(hub, {"hs": hubspot_instance})
    engine = SyncEngine(hub, TRANSFORMS)
    report = engine.run(hubspot_instance, "pull")
    assert report.outcome in ("ok", "failed"), report
    assert report.code != str(Code.INTERNAL_ERROR), report
    assert all(r["code"] in CODES for r in log_rows(hub))
    _clear_back_off(hub)
    # The fuzzed answer is spent: the next cycle reads the platform as it is and applies all
    # of it, whatever the broken one left in the cursor.
    assert engine.run(hubspot_instance, "pull").outcome == "ok"
    with hubspot.lock:
        emails = {r["properties"]["email"] for r in hubspot.records.values()}
    assert emails <= {c["email"] for c in hub_contacts(hub).values()}
