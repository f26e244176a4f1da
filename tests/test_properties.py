"""Properties of the incoming rules and of normalisation, checked with Hypothesis.

Each test builds one SQLite hub for itself and empties it before every example, so Hypothesis
never shares a function-scoped fixture between examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from hubkit import (
    CUSTOM_FIELDS,
    contact,
    contact_count,
    define_custom_fields,
    ingest,
    log_codes,
    snapshot,
    truncate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from daemon.hub import normalize
from daemon.hub.contacts import save_contact
from daemon.hub.database import make_engine

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------------

AREA_CODES = ("202", "415", "617")


@st.composite
def us_numbers(draw: Any) -> tuple[str, str]:
    """A valid US number as (digits without country code, one of its many spellings)."""
    area = draw(st.sampled_from(AREA_CODES))
    exchange = str(draw(st.integers(200, 999)))
    line = f"{draw(st.integers(0, 9999)):04d}"
    digits = area + exchange + line
    template = draw(
        st.sampled_from(
            [
                "{a}{e}{l}",
                "({a}) {e}-{l}",
                "{a}-{e}-{l}",
                "{a}.{e}.{l}",
                "+1 {a} {e} {l}",
                "1-{a}-{e}-{l}",
                "+1{a}{e}{l}",
                " {a} {e} {l} ",
            ]
        )
    )
    return digits, template.format(a=area, e=exchange, l=line)


# A small pool of numbers so that records collide with contacts' phones now and then.
PHONE_POOL = ("(202) 555-0143", "415 555 0199", "617-555-0112", "202.555.0181")
BLANKS = st.sampled_from([None, "", " ", "\t", "  \n"])
NAMES = st.text(st.characters(categories=["L"]), min_size=1, max_size=64)
IDS = st.text("ABCDEFGH0123456789-", min_size=1, max_size=12)
EMAILS = st.builds(
    "{}@{}.edu".format,
    st.text("abcdefgHIJK0123", min_size=1, max_size=10),
    st.sampled_from(["example", "College", "uni"]),
)
BOOLEANS = st.sampled_from(["true", "false", "Yes", "no", "1", "0", "T", "f"])


def valid_values(name: str) -> st.SearchStrategy[Any]:
    """Values each incoming field accepts."""
    if name in ("first_name", "last_name", "preferred_name"):
        return NAMES
    if name == "phone":
        return st.one_of(st.sampled_from(PHONE_POOL), us_numbers().map(lambda n: n[1]))
    if name == "email":
        return EMAILS
    if name in ("crm_id", "enrollment_id"):
        return IDS
    if name in ("active", "archived", "custom:First Gen"):
        return BOOLEANS
    if name == "custom:Class Year":
        return st.decimals(-5000, 5000, places=2, allow_nan=False).map(str)
    if name == "custom:Deposit Date":
        return st.dates().map(lambda d: d.isoformat() if d.year > 999 else "2020-02-29")
    return st.text(min_size=1, max_size=30).filter(lambda s: s.strip())


INVALID = {
    "first_name": "x" * 65,
    "last_name": "y" * 65,
    "preferred_name": "z" * 80,
    "phone": "555-01",
    "email": "not-an-email",
    "active": "maybe",
    "custom:Class Year": "many",
    "custom:Deposit Date": "31/31/2031",
    "custom:First Gen": "sometimes",
}

RECORD_FIELDS = (
    "first_name",
    "last_name",
    "preferred_name",
    "phone",
    "email",
    "enrollment_id",
    "active",
    *(f"custom:{name}" for name in CUSTOM_FIELDS),
)


def any_value(name: str) -> st.SearchStrategy[Any]:
    """Anything a platform may send for ``name``: valid, blank, UNSET or invalid."""
    options = [valid_values(name), BLANKS, st.just("UNSET")]
    if name in INVALID:
        options.append(st.just(INVALID[name]))
    return st.one_of(options)


@st.composite
def records(draw: Any, hub_ids: list[str]) -> dict[str, Any]:
    """A record that always carries a match key (so a second run finds what the first did)."""
    key = draw(
        st.sampled_from(
            ["id", "id", "crm_known", "crm_test_user", "crm_new", "crm_new", "id_unknown"]
        )
    )
    fields: dict[str, Any] = {
        "id": {"id": hub_ids[0]},
        "crm_known": {"crm_id": "S-1"},
        "crm_test_user": {"crm_id": "S-2"},
        "crm_new": {"crm_id": "S-3"},
        "id_unknown": {"id": "0" * 32},
    }[key]
    if key == "id" and draw(st.booleans()):
        fields["crm_id"] = draw(st.sampled_from(["S-1", "S-2", "S-7", "UNSET", ""]))
    choices = RECORD_FIELDS
    if key == "crm_new" and draw(st.booleans()):
        # Mostly a record that can create a contact; the other fields vary as usual.
        for name in ("first_name", "last_name", "phone"):
            fields[name] = draw(valid_values(name))
        choices = tuple(n for n in RECORD_FIELDS if n not in fields)
    for name in draw(st.lists(st.sampled_from(choices), unique=True)):
        fields[name] = draw(any_value(name))
    return fields


# --- the hub each test works on --------------------------------------------------------------


@contextmanager
def hub_engine(tmp_path_factory: Any) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'hub.db'}")
    try:
        yield engine
    finally:
        engine.dispose()


def reset(engine: Engine) -> None:
    truncate(engine)
    define_custom_fields(engine)


FULL = {
    "crm_id": "S-1",
    "enrollment_id": "E-1",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "preferred_name": "Addie",
    "phone": PHONE_POOL[0],
    "email": "ada@example.edu",
    "custom:Class Year": "2027",
    "custom:Application Status": "Admitted",
    "custom:Deposit Date": "2024-05-01",
    "custom:First Gen": "true",
}


def seed_hub(engine: Engine, *, archived: bool, moved_phone: bool) -> list[str]:
    """Ada (S-1, full), a test user (S-2); optionally Ada's phone was changed by staff."""
    ada = save_contact(engine, FULL, archived=archived)
    if moved_phone:
        save_contact(engine, {"phone": PHONE_POOL[2]}, contact_id=ada)  # previous: PHONE_POOL[0]
    tester = save_contact(
        engine,
        {"crm_id": "S-2", "first_name": "Tess", "last_name": "Ter", "phone": PHONE_POOL[1]},
        test_user=True,
    )
    return [ada, tester]


# --- properties ------------------------------------------------------------------------------


def test_applying_a_record_twice_changes_nothing_the_second_time(tmp_path_factory):
    with hub_engine(tmp_path_factory) as engine:

        @PROPERTY_SETTINGS
        @given(data=st.data(), archived=st.booleans(), moved_phone=st.booleans())
        def check(data: Any, archived: bool, moved_phone: bool) -> None:
            reset(engine)
            hub_ids = seed_hub(engine, archived=archived, moved_phone=moved_phone)
            record = data.draw(records(hub_ids), label="record")

            first = ingest(engine, [record])
            after_first = snapshot(engine)
            second = ingest(engine, [record])

            (outcome,) = first.outcomes
            expected = "unchanged" if outcome in ("created", "updated", "unchanged") else outcome
            assert second.outcomes == [expected]
            assert snapshot(engine) == after_first

        check()


def test_a_blank_value_never_clears_or_changes_a_field(tmp_path_factory):
    with hub_engine(tmp_path_factory) as engine:

        @PROPERTY_SETTINGS
        @given(data=st.data())
        def check(data: Any) -> None:
            reset(engine)
            ada = save_contact(engine, FULL)
            before = contact(engine, ada)
            blank = data.draw(st.lists(st.sampled_from(RECORD_FIELDS), unique=True), label="blank")
            record: dict[str, Any] = {"id": ada}
            for name in blank:
                record[name] = data.draw(BLANKS, label=name)
            others = [n for n in RECORD_FIELDS if n not in blank and n != "active"]
            if others:
                chosen = data.draw(st.lists(st.sampled_from(others), unique=True), label="set")
                for name in chosen:
                    record[name] = data.draw(valid_values(name), label=name)

            run = ingest(engine, [record])

            assert run.outcomes[0] in ("updated", "unchanged")
            after = contact(engine, ada)
            for name in blank:
                assert _value(after, name) == _value(before, name), name
            assert after["archived"] is False

        check()


# Design §2, rule 2: every custom field, first/last/preferred name, phone, enrollment id, CRM id.
ALLOWED = {
    "first_name",
    "last_name",
    "preferred_name",
    "phone",
    "enrollment_id",
    "crm_id",
    *(f"custom:{name}" for name in CUSTOM_FIELDS),
}
UNSET_CANDIDATES = sorted(
    {"crm_id", "enrollment_id", *RECORD_FIELDS, "archived"} - {"id"},
)


def test_unset_clears_exactly_the_fields_that_allow_it(tmp_path_factory):
    with hub_engine(tmp_path_factory) as engine:

        @PROPERTY_SETTINGS
        @given(cleared=st.lists(st.sampled_from(UNSET_CANDIDATES), unique=True, min_size=1))
        def check(cleared: list[str]) -> None:
            reset(engine)
            ada = save_contact(engine, FULL)
            before = contact(engine, ada)

            run = ingest(engine, [{"id": ada, **dict.fromkeys(cleared, "UNSET")}])

            after = contact(engine, ada)
            for name in UNSET_CANDIDATES:
                if name in cleared and name in ALLOWED:
                    assert _value(after, name) is None, name
                else:
                    assert _value(after, name) == _value(before, name), name
            refused = sorted(n for n in cleared if n not in ALLOWED)
            assert sorted(f for c, f in log_codes(engine, run.run_id)) == refused
            assert {c for c, _ in log_codes(engine, run.run_id)} <= {"unset-not-allowed"}
            assert contact_count(engine) == 1

        check()


def _value(row: dict[str, Any], name: str) -> Any:
    if name.startswith("custom:"):
        return row["custom"].get(name.removeprefix("custom:"))
    if name == "active":
        return not row["archived"]
    return row[name]


E164_US = re.compile(r"^\+1(202|415|617)[2-9]\d{6}$")


@PROPERTY_SETTINGS
@given(number=us_numbers())
def test_phone_normalisation_is_idempotent_and_gives_e164(number: tuple[str, str]) -> None:
    digits, spelling = number

    once = normalize.phone(spelling)

    assert once == "+1" + digits
    assert E164_US.match(once)
    assert normalize.phone(once) == once
    # An E.164 number carries its country: the default region no longer matters.
    assert normalize.phone(once, "GB") == once


@PROPERTY_SETTINGS
@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_number_normalisation_is_idempotent_and_keeps_the_value(value: Decimal) -> None:
    once = normalize.number(str(value))

    assert normalize.number(once) == once
    assert Decimal(once) == value
    # Shortest decimal text: no exponent, no trailing zeros after the point.
    assert "E" not in once.upper()
    if "." in once:
        assert not once.endswith(("0", "."))
