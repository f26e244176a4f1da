"""The incoming rules of design §2 (platform → hub), one section per rule.

Records go through :class:`daemon.hub.ingest.Ingestor` (the driver every incoming path uses) and the
tests assert on what the hub holds afterwards and on the sync-log rows, with their codes. Most
tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import pytest
from hubkit import (
    ADA_E164,
    ADA_PHONE,
    ALAN_E164,
    ALAN_PHONE,
    CONTACT,
    GRACE_E164,
    GRACE_PHONE,
    KATE_E164,
    KATE_PHONE,
    RUN_KEY,
    contact,
    contact_count,
    define_custom_fields,
    ingest,
    log_codes,
    log_rows,
    seed,
    snapshot,
    table_count,
    truncate,
)
from sqlalchemy import update

from daemon.hub.contacts import save_contact
from daemon.hub.incoming import IncomingRecord

ADA = {"crm_id": "S-1", "first_name": "Ada", "last_name": "Lovelace", "phone": ADA_PHONE}
GRACE = {"crm_id": "S-2", "first_name": "Grace", "last_name": "Hopper", "phone": GRACE_PHONE}


@pytest.fixture
def hub(engine):
    """A hub with the test custom fields defined."""
    define_custom_fields(engine)
    return engine


def full_ada(hub) -> str:
    """Ada with every incoming field and every custom field filled in."""
    return seed(
        hub,
        {
            **ADA,
            "enrollment_id": "E-1",
            "preferred_name": "Addie",
            "email": "ada@example.edu",
            "custom:Class Year": "2027",
            "custom:Application Status": "Admitted",
            "custom:Deposit Date": "2024-05-01",
            "custom:First Gen": "yes",
        },
    )


# --- Rule 1: a blank or null value is skipped ------------------------------------------------


def test_blank_and_null_values_are_skipped_and_the_hub_keeps_its_values(hub):
    ada = full_ada(hub)
    before = contact(hub, ada)

    run = ingest(
        hub,
        [
            {
                "crm_id": "S-1",
                "first_name": "",
                "last_name": "   ",
                "preferred_name": None,
                "phone": "\t",
                "email": "",
                "enrollment_id": None,
                "custom:Class Year": "",
                "custom:Application Status": None,
                "custom:Deposit Date": "  ",
                "custom:First Gen": "",
                "active": "",
            }
        ],
    )

    assert run.outcomes == ["unchanged"]
    after = contact(hub, ada)
    assert after == before
    assert log_rows(hub) == []


def test_blank_values_beside_real_ones_leave_only_the_real_ones_applied(hub):
    ada = full_ada(hub)

    run = ingest(hub, [{"crm_id": "S-1", "first_name": "", "last_name": "King", "email": None}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert (after["first_name"], after["last_name"], after["email"]) == (
        "Ada",
        "King",
        "ada@example.edu",
    )


def test_blank_optional_fields_create_a_contact_without_them(hub):
    run = ingest(hub, [{**ADA, "email": "", "preferred_name": None, "custom:Class Year": " "}])

    assert run.outcomes == ["created"]
    created = contact(hub, "S-1")
    assert created["email"] is None
    assert created["preferred_name"] is None
    assert created["custom"] == {}


# --- Rule 2: UNSET clears where allowed ------------------------------------------------------

CLEARABLE = ("first_name", "last_name", "preferred_name", "phone", "enrollment_id", "crm_id")


def test_unset_clears_every_allowed_default_field(hub):
    ada = full_ada(hub)

    run = ingest(hub, [{"id": ada, **dict.fromkeys(CLEARABLE, "UNSET")}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    for name in CLEARABLE:
        assert after[name] is None, name
    # Not named in the record: kept.
    assert after["email"] == "ada@example.edu"
    assert len(after["custom"]) == 4
    assert log_rows(hub) == []


def test_unset_clears_every_custom_field_whatever_its_type(hub):
    ada = full_ada(hub)

    ingest(
        hub,
        [
            {
                "id": ada,
                "custom:Class Year": "UNSET",
                "custom:Application Status": "UNSET",
                "custom:Deposit Date": "UNSET",
                "custom:First Gen": "UNSET",
            }
        ],
    )

    after = contact(hub, ada)
    assert after["custom"] == {}
    assert after["first_name"] == "Ada"
    assert log_rows(hub) == []


def test_unset_clears_only_the_custom_field_it_names(hub):
    ada = full_ada(hub)

    ingest(hub, [{"crm_id": "S-1", "custom:Class Year": "UNSET"}])

    assert contact(hub, ada)["custom"] == {
        "Application Status": "Admitted",
        "Deposit Date": "2024-05-01",
        "First Gen": "true",
    }


@pytest.mark.parametrize("field", ["email", "active", "archived"])
def test_unset_on_a_field_that_cannot_be_cleared_is_logged_and_the_rest_applies(hub, field):
    ada = full_ada(hub)

    run = ingest(hub, [{"crm_id": "S-1", field: "UNSET", "first_name": "Augusta"}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert after["first_name"] == "Augusta"
    assert after["email"] == "ada@example.edu"
    assert after["archived"] is False
    rows = log_rows(hub)
    assert [(r["code"], r["details"]["field"], r["contact_id"]) for r in rows] == [
        ("unset-not-allowed", field, ada)
    ]


def test_unset_must_be_the_exact_word(hub):
    ada = full_ada(hub)

    ingest(hub, [{"crm_id": "S-1", "preferred_name": "unset"}])

    # Lower case is a value like any other, not a request to clear.
    assert contact(hub, ada)["preferred_name"] == "unset"


# --- Rule 3: matching order ------------------------------------------------------------------


def test_a_record_with_a_crm_id_updates_the_contact_that_has_it(hub):
    ada = seed(hub, ADA)

    run = ingest(hub, [{"crm_id": "S-1", "preferred_name": "Addie"}])

    assert run.outcomes == ["updated"]
    assert run.plans[0].contact_id == ada
    assert contact(hub, ada)["preferred_name"] == "Addie"
    assert contact_count(hub) == 1


def test_a_record_with_no_match_creates_a_contact(hub):
    seed(hub, ADA)

    run = ingest(hub, [GRACE])

    assert run.outcomes == ["created"]
    grace = contact(hub, "S-2")
    assert (grace["first_name"], grace["last_name"], grace["phone"]) == (
        "Grace",
        "Hopper",
        GRACE_E164,
    )
    assert grace["id"] == run.plans[0].contact_id
    assert contact_count(hub) == 2


def test_the_hub_id_is_matched_before_the_crm_id(hub):
    ada = seed(hub, {**ADA, "crm_id": "UNSET"})  # Ada has no CRM id yet
    seed(hub, GRACE)

    run = ingest(hub, [{"id": ada, "crm_id": "S-9", "preferred_name": "Addie"}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert (after["crm_id"], after["preferred_name"]) == ("S-9", "Addie")
    assert contact_count(hub) == 2


def test_a_hub_id_matching_no_contact_skips_the_record_and_never_creates(hub):
    run = ingest(hub, [{"id": "0" * 32, **ADA}])

    assert run.outcomes == ["skipped"]
    assert contact_count(hub) == 0
    assert log_codes(hub) == [("unknown-contact-id", "id")]


def test_an_unknown_hub_id_is_not_rescued_by_a_known_crm_id(hub):
    ada = seed(hub, ADA)
    before = snapshot(hub)

    run = ingest(hub, [{"id": "f" * 32, "crm_id": "S-1", "first_name": "Other"}])

    assert run.outcomes == ["skipped"]
    assert snapshot(hub) == before
    assert [r["code"] for r in log_rows(hub)] == ["unknown-contact-id"]
    assert contact(hub, ada)["first_name"] == "Ada"


def test_the_link_is_matched_before_the_hub_id(hub):
    ada = seed(hub, ADA)
    grace = seed(hub, GRACE)

    record = IncomingRecord({"id": grace, "preferred_name": "Linked"}, linked_contact_id=ada)
    run = ingest(hub, [record])

    assert run.plans[0].contact_id == ada
    assert contact(hub, ada)["preferred_name"] == "Linked"
    assert contact(hub, grace)["preferred_name"] is None


def test_a_linked_record_needs_no_other_key(hub):
    ada = seed(hub, ADA)

    run = ingest(hub, [IncomingRecord({"first_name": "Augusta"}, linked_contact_id=ada)])

    assert run.outcomes == ["updated"]
    assert contact(hub, ada)["first_name"] == "Augusta"


# --- Rule 4: creating needs first name, last name and phone ----------------------------------


@pytest.mark.parametrize("missing", ["first_name", "last_name", "phone"])
@pytest.mark.parametrize("how", ["absent", "blank", "UNSET"])
def test_a_new_contact_without_required_data_is_skipped(hub, missing, how):
    fields = {**GRACE, "email": "grace@example.edu"}
    if how == "absent":
        del fields[missing]
    else:
        fields[missing] = "" if how == "blank" else "UNSET"

    run = ingest(hub, [fields])

    assert run.outcomes == ["skipped"]
    assert contact_count(hub) == 0
    assert log_codes(hub) == [("blank-required-data-in-record", missing)]


def test_a_new_contact_with_an_invalid_phone_is_skipped_with_both_problems_logged(hub):
    run = ingest(hub, [{**GRACE, "phone": "555-01"}])

    assert run.outcomes == ["skipped"]
    assert contact_count(hub) == 0
    assert sorted(log_codes(hub)) == [
        ("blank-required-data-in-record", "phone"),
        ("invalid-phone", "phone"),
    ]


def test_required_data_is_not_needed_to_update(hub):
    ada = seed(hub, ADA)

    run = ingest(hub, [{"crm_id": "S-1", "email": "ADA@Example.edu"}])

    assert run.outcomes == ["updated"]
    assert contact(hub, ada)["email"] == "ada@example.edu"
    assert log_rows(hub) == []


# --- Rule 5: duplicates ----------------------------------------------------------------------


def test_a_new_record_with_a_phone_another_contact_holds_is_a_duplicate(hub):
    ada = seed(hub, ADA)
    before = snapshot(hub)

    # The same number, spelt differently: compared in E.164.
    run = ingest(hub, [{**GRACE, "phone": "+1 202-555-0143"}])

    assert run.outcomes == ["skipped"]
    assert snapshot(hub) == before
    rows = log_rows(hub)
    assert [(r["code"], r["details"]["field"]) for r in rows] == [("duplicate-contact", "phone")]
    assert contact(hub, ada)["phone"] == ADA_E164


def test_changing_a_phone_to_one_another_contact_holds_skips_the_whole_record(hub):
    seed(hub, ADA)
    grace = seed(hub, GRACE)
    before = snapshot(hub)

    run = ingest(hub, [{"crm_id": "S-2", "phone": ADA_PHONE, "first_name": "Amazing"}])

    assert run.outcomes == ["skipped"]
    assert snapshot(hub) == before
    assert contact(hub, grace)["first_name"] == "Grace"
    assert log_codes(hub) == [("duplicate-contact", "phone")]


def test_two_new_records_with_one_phone_in_a_run_create_only_the_first(hub):
    run = ingest(hub, [ADA, {**GRACE, "phone": ADA_E164}])

    assert run.outcomes == ["created", "skipped"]
    assert contact_count(hub) == 1
    assert contact(hub, ADA_E164)["crm_id"] == "S-1"
    assert log_codes(hub) == [("duplicate-contact", "phone")]


def test_a_phone_freed_earlier_in_the_batch_can_be_taken(hub):
    seed(hub, ADA)

    run = ingest(hub, [{"crm_id": "S-1", "phone": KATE_PHONE}, {**GRACE, "phone": ADA_PHONE}])

    assert run.outcomes == ["updated", "created"]
    assert contact(hub, "S-1")["phone"] == KATE_E164
    assert contact(hub, "S-2")["phone"] == ADA_E164


def test_a_crm_id_freed_earlier_in_the_batch_can_be_taken(hub):
    ada = seed(hub, ADA)

    run = ingest(hub, [{"id": ada, "crm_id": "S-9"}, {**GRACE, "crm_id": "S-1"}])

    assert run.outcomes == ["updated", "created"]
    assert contact(hub, ada)["crm_id"] == "S-9"
    assert contact(hub, "S-1")["first_name"] == "Grace"


def test_phones_can_move_along_a_chain_of_contacts_in_one_batch(hub):
    seed(hub, ADA)
    seed(hub, GRACE)
    seed(hub, {"crm_id": "S-3", "first_name": "Alan", "last_name": "Turing", "phone": ALAN_PHONE})

    # Each record takes the number the one before it gave up; the rows change different sets
    # of columns, so they are not written in one statement.
    run = ingest(
        hub,
        [
            {"crm_id": "S-1", "phone": KATE_PHONE},
            {"crm_id": "S-2", "phone": ADA_PHONE, "first_name": "Amazing"},
            {"crm_id": "S-3", "phone": GRACE_PHONE},
        ],
    )

    assert run.outcomes == ["updated", "updated", "updated"]
    phones = {crm: contact(hub, crm)["phone"] for crm in ("S-1", "S-2", "S-3")}
    assert phones == {"S-1": KATE_E164, "S-2": ADA_E164, "S-3": GRACE_E164}
    assert log_rows(hub) == []


def test_taking_a_crm_id_another_contact_holds_is_a_crm_id_duplicate(hub):
    ada = seed(hub, ADA)
    seed(hub, GRACE)
    before = snapshot(hub)

    run = ingest(hub, [{"id": ada, "crm_id": "S-2", "first_name": "Augusta"}])

    assert run.outcomes == ["skipped"]
    assert snapshot(hub) == before
    assert log_codes(hub) == [("duplicate-unique-id-crmId", "crm_id")]


def test_two_records_sharing_a_crm_id_in_one_run_apply_only_the_first(hub):
    run = ingest(hub, [ADA, {**GRACE, "crm_id": "S-1"}])

    assert run.outcomes == ["created", "skipped"]
    assert contact_count(hub) == 1
    assert contact(hub, "S-1")["first_name"] == "Ada"
    assert [r["code"] for r in log_rows(hub)] == ["duplicate-unique-id-crmId"]


# --- Rule 6: the previous phone --------------------------------------------------------------


def test_a_staff_phone_change_records_the_previous_phone(hub):
    ada = seed(hub, ADA)

    save_contact(hub, {"phone": ALAN_PHONE}, contact_id=ada)

    after = contact(hub, ada)
    assert (after["phone"], after["previous_phone"]) == (ALAN_E164, ADA_E164)


def test_an_incoming_previous_phone_is_kept_out_and_the_rest_applies(hub):
    ada = seed(hub, ADA)
    save_contact(hub, {"phone": ALAN_PHONE}, contact_id=ada)  # staff: Ada's new number

    run = ingest(hub, [{"crm_id": "S-1", "phone": "202 555 0143", "first_name": "Augusta"}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert after["phone"] == ALAN_E164
    assert after["first_name"] == "Augusta"
    rows = log_rows(hub)
    assert [(r["code"], r["details"]["field"], r["contact_id"]) for r in rows] == [
        ("contact-out-of-sync", "phone", ada)
    ]


def test_an_incoming_previous_phone_alone_changes_nothing(hub):
    ada = seed(hub, ADA)
    save_contact(hub, {"phone": ALAN_PHONE}, contact_id=ada)
    before = snapshot(hub)

    run = ingest(hub, [{"crm_id": "S-1", "phone": ADA_PHONE}])

    assert run.outcomes == ["unchanged"]
    assert snapshot(hub) == before
    assert log_codes(hub) == [("contact-out-of-sync", "phone")]


def test_incoming_sync_never_sets_the_previous_phone(hub):
    ada = seed(hub, ADA)

    ingest(hub, [{"crm_id": "S-1", "phone": ALAN_PHONE}])
    assert contact(hub, ada)["previous_phone"] is None

    # So the platform may change the number it owns back again.
    run = ingest(hub, [{"crm_id": "S-1", "phone": ADA_PHONE}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert (after["phone"], after["previous_phone"]) == (ADA_E164, None)
    assert log_rows(hub) == []


def test_a_new_phone_other_than_the_previous_one_is_applied(hub):
    ada = seed(hub, ADA)
    save_contact(hub, {"phone": ALAN_PHONE}, contact_id=ada)

    ingest(hub, [{"crm_id": "S-1", "phone": KATE_PHONE}])

    assert contact(hub, ada)["phone"] == KATE_E164
    assert log_rows(hub) == []


# --- Rule 7: test users ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["crm_id", "id"])
def test_a_record_matching_a_test_user_is_ignored(hub, key):
    tester = seed(hub, ADA, test_user=True)
    before = snapshot(hub)
    match = {"crm_id": "S-1"} if key == "crm_id" else {"id": tester}

    run = ingest(
        hub, [{**match, "first_name": "Changed", "phone": KATE_PHONE, "custom:Class Year": "1"}]
    )

    assert run.outcomes == ["ignored"]
    assert snapshot(hub) == before
    assert contact_count(hub) == 1


def test_an_archived_test_user_stays_archived(hub):
    tester = seed(hub, ADA, test_user=True, archived=True)

    ingest(hub, [{"crm_id": "S-1", "active": "true"}])

    assert contact(hub, tester)["archived"] is True


# --- Rule 8: archived contacts ---------------------------------------------------------------


def test_a_record_for_an_archived_contact_unarchives_it(hub):
    ada = seed(hub, ADA, archived=True)

    run = ingest(hub, [{"crm_id": "S-1"}])

    assert run.outcomes == ["updated"]
    assert contact(hub, ada)["archived"] is False


def test_a_record_with_only_unchanged_values_still_unarchives(hub):
    ada = seed(hub, ADA, archived=True)

    run = ingest(hub, [{**ADA, "active": ""}])

    assert run.outcomes == ["updated"]
    assert contact(hub, ada)["archived"] is False


@pytest.mark.parametrize("value", ["false", "FALSE", "no", "0", "f"])
def test_active_false_keeps_an_archived_contact_archived(hub, value):
    ada = seed(hub, ADA, archived=True)

    run = ingest(hub, [{"crm_id": "S-1", "active": value, "first_name": "Augusta"}])

    after = contact(hub, ada)
    assert after["archived"] is True
    assert after["first_name"] == "Augusta"
    assert run.outcomes == ["updated"]


@pytest.mark.parametrize("value", ["false", "No"])
def test_active_false_archives_an_active_contact(hub, value):
    ada = seed(hub, ADA)

    ingest(hub, [{"crm_id": "S-1", "active": value}])

    assert contact(hub, ada)["archived"] is True


@pytest.mark.parametrize("value", ["true", "Yes", "1"])
def test_active_true_unarchives(hub, value):
    ada = seed(hub, ADA, archived=True)

    ingest(hub, [{"crm_id": "S-1", "active": value}])

    assert contact(hub, ada)["archived"] is False


def test_active_false_on_a_new_contact_creates_it_archived(hub):
    run = ingest(hub, [{**ADA, "active": "false"}])

    assert run.outcomes == ["created"]
    assert contact(hub, "S-1")["archived"] is True


def test_an_unreadable_active_value_is_rejected_and_the_rest_applies(hub):
    ada = seed(hub, ADA)

    run = ingest(hub, [{"crm_id": "S-1", "active": "maybe", "first_name": "Augusta"}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert (after["archived"], after["first_name"]) == (False, "Augusta")
    assert log_codes(hub) == [("invalid-value", "active")]


# --- Rule 9: invalid values, field by field --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("phone", "12345", "invalid-phone"),
        ("phone", "not a phone", "invalid-phone"),
        ("email", "ada@", "invalid-email"),
        ("email", "ada at example.edu", "invalid-email"),
        ("first_name", "A" * 65, "value-too-long"),
        ("last_name", "L" * 65, "value-too-long"),
        ("preferred_name", "P" * 65, "value-too-long"),
        ("crm_id", "C" * 256, "value-too-long"),
        ("custom:Class Year", "twenty", "invalid-custom-field-value"),
        ("custom:Deposit Date", "2024-13-45", "invalid-custom-field-value"),
        ("custom:First Gen", "perhaps", "invalid-custom-field-value"),
        ("custom:Favourite Colour", "blue", "unknown-custom-field"),
    ],
)
def test_a_bad_value_is_rejected_with_its_code_and_the_good_fields_apply(hub, field, value, code):
    ada = full_ada(hub)
    before = contact(hub, ada)

    run = ingest(hub, [{"id": ada, field: value, "enrollment_id": "E-99"}])

    assert run.outcomes == ["updated"]
    after = contact(hub, ada)
    assert after["enrollment_id"] == "E-99"
    expected = {**before, "enrollment_id": "E-99"}
    for column in ("updated_at", "changed_at"):
        expected[column] = after[column]
    assert after == expected  # the rejected field kept its value
    rows = log_rows(hub)
    assert [(r["code"], r["details"]["field"], r["contact_id"]) for r in rows] == [
        (code, field, ada)
    ]


def test_names_of_exactly_64_characters_are_accepted(hub):
    name = "N" * 64

    ingest(hub, [{**ADA, "first_name": name, "last_name": name, "preferred_name": name}])

    created = contact(hub, "S-1")
    assert created["first_name"] == created["last_name"] == created["preferred_name"] == name
    assert log_rows(hub) == []


def test_every_rejected_field_of_a_new_contact_is_logged_and_the_contact_is_created(hub):
    run = ingest(
        hub,
        [
            {
                **ADA,
                "email": "nope",
                "preferred_name": "x" * 100,
                "custom:Class Year": "soon",
                "custom:Application Status": "Applied",
                "custom:Nope": "1",
                "enrollment_id": "E-7",
            }
        ],
    )

    assert run.outcomes == ["created"]
    created = contact(hub, "S-1")
    assert created["email"] is None
    assert created["preferred_name"] is None
    assert created["enrollment_id"] == "E-7"
    assert created["custom"] == {"Application Status": "Applied"}
    assert sorted(log_codes(hub)) == [
        ("invalid-custom-field-value", "custom:Class Year"),
        ("invalid-email", "email"),
        ("unknown-custom-field", "custom:Nope"),
        ("value-too-long", "preferred_name"),
    ]
    assert {r["contact_id"] for r in log_rows(hub)} == {created["id"]}


def test_values_are_stored_in_canonical_form(hub):
    ingest(
        hub,
        [
            {
                **ADA,
                "email": "  Ada.Lovelace@Example.EDU ",
                "first_name": "  Ada ",
                "custom:Class Year": "2027.0",
                "custom:Deposit Date": "05/01/2024",
                "custom:First Gen": "Y",
            }
        ],
    )

    created = contact(hub, "S-1")
    assert created["phone"] == ADA_E164
    assert created["email"] == "ada.lovelace@example.edu"
    assert created["first_name"] == "Ada"
    assert created["custom"] == {
        "Class Year": "2027",
        "Deposit Date": "2024-05-01",
        "First Gen": "true",
    }


def test_custom_fields_are_found_by_display_name_ignoring_case(hub):
    ingest(hub, [{**ADA, "custom:class year": "2030"}])

    assert contact(hub, "S-1")["custom"] == {"Class Year": "2030"}
    assert log_rows(hub) == []


# --- Rule 10: only what changed on the platform -----------------------------------------------


def test_a_value_equal_to_the_last_exchanged_is_not_applied_again(hub):
    ada = full_ada(hub)
    # Staff cleared the preferred name in the hub after it was last exchanged as "Addie".
    save_contact(hub, {"preferred_name": "UNSET"}, contact_id=ada)
    last = {"preferred_name": "Addie", "email": "ada@example.edu"}

    record = IncomingRecord(
        {"preferred_name": "Addie", "email": "augusta@example.edu"},
        linked_contact_id=ada,
        last_exchanged=last,
    )
    run = ingest(hub, [record])

    after = contact(hub, ada)
    assert after["preferred_name"] is None  # not refilled by an unrelated remote edit
    assert after["email"] == "augusta@example.edu"
    assert run.outcomes == ["updated"]


def test_last_exchanged_values_are_compared_in_canonical_form(hub):
    ada = seed(hub, {**ADA, "custom:Class Year": "2027"})
    save_contact(hub, {"phone": KATE_PHONE, "custom:Class Year": "2028"}, contact_id=ada)
    before = snapshot(hub)

    record = IncomingRecord(
        {"phone": "202-555-0143", "custom:Class Year": "2027.00"},
        linked_contact_id=ada,
        last_exchanged={"phone": ADA_E164, "custom:Class Year": "2027"},
    )
    run = ingest(hub, [record])

    assert run.outcomes == ["unchanged"]
    assert snapshot(hub) == before
    # Skipped as unchanged on the platform, not as an out-of-sync phone.
    assert log_rows(hub) == []


def test_a_value_that_changed_on_the_platform_is_applied(hub):
    ada = seed(hub, {**ADA, "custom:Class Year": "2027"})

    record = IncomingRecord(
        {"first_name": "Augusta", "custom:Class Year": "2029"},
        linked_contact_id=ada,
        last_exchanged={"first_name": "Ada", "custom:Class Year": "2027"},
    )
    ingest(hub, [record])

    after = contact(hub, ada)
    assert after["first_name"] == "Augusta"
    assert after["custom"] == {"Class Year": "2029"}


def test_a_remote_clear_already_exchanged_is_not_applied_again(hub):
    ada = seed(hub, {**ADA, "preferred_name": "Addie"})

    record = IncomingRecord(
        {"preferred_name": "UNSET"},
        linked_contact_id=ada,
        last_exchanged={"preferred_name": None},
    )
    ingest(hub, [record])

    assert contact(hub, ada)["preferred_name"] == "Addie"


def test_without_last_exchanged_values_every_field_applies(hub):
    ada = seed(hub, ADA)

    record = IncomingRecord(
        {"first_name": "Augusta", "preferred_name": "Gus"},
        linked_contact_id=ada,
        last_exchanged=None,
    )
    ingest(hub, [record])

    after = contact(hub, ada)
    assert (after["first_name"], after["preferred_name"]) == ("Augusta", "Gus")


def test_a_created_contact_gets_every_field_even_with_last_exchanged_values(hub):
    # The link's values describe a contact that is not in the hub; the first sync of the new
    # contact applies every mapped field (and rule 4 must still hold for it).
    record = IncomingRecord(
        {**GRACE, "email": "grace@example.edu"},
        last_exchanged={"first_name": "Grace", "email": "grace@example.edu"},
    )
    run = ingest(hub, [record])

    assert run.outcomes == ["created"]
    created = contact(hub, "S-2")
    assert created["first_name"] == "Grace"
    assert created["email"] == "grace@example.edu"


# --- Rule 11: the first record with a CRM id wins, across batch commits -----------------------


def test_the_first_record_with_a_crm_id_wins_across_batches(hub):
    records = [
        ADA,
        {**GRACE},
        {"crm_id": "S-3", "first_name": "Alan", "last_name": "Turing", "phone": ALAN_PHONE},
        {"crm_id": "S-1", "first_name": "Impostor"},  # batch 2, same run
        {"crm_id": "S-4", "first_name": "Kate", "last_name": "Johnson", "phone": KATE_PHONE},
    ]

    run = ingest(hub, records, batch_size=2)

    assert run.outcomes == ["created", "created", "created", "skipped", "created"]
    assert contact(hub, "S-1")["first_name"] == "Ada"
    assert [r["code"] for r in log_rows(hub)] == ["duplicate-unique-id-crmId"]
    assert contact_count(hub) == 4


def test_a_repeated_crm_id_of_an_existing_contact_applies_only_the_first_record(hub):
    ada = seed(hub, ADA)

    run = ingest(
        hub,
        [
            {"crm_id": "S-1", "preferred_name": "First"},
            GRACE,
            {"crm_id": "S-1", "preferred_name": "Second"},
        ],
        batch_size=1,
    )

    assert run.outcomes == ["updated", "created", "skipped"]
    assert contact(hub, ada)["preferred_name"] == "First"
    rows = log_rows(hub, run.run_id)
    assert [r["code"] for r in rows] == ["duplicate-unique-id-crmId"]


def test_a_skipped_record_still_counts_as_the_first_with_its_crm_id(hub):
    # The first record loses its creation (no phone), yet it was first with S-1.
    run = ingest(hub, [{**ADA, "phone": ""}, ADA], batch_size=1)

    assert run.outcomes == ["skipped", "skipped"]
    assert [c for c, _ in log_codes(hub)] == [
        "blank-required-data-in-record",
        "duplicate-unique-id-crmId",
    ]


def test_crm_ids_seen_by_a_run_are_forgotten_when_it_ends(hub):
    ingest(hub, [ADA, GRACE], batch_size=1)
    assert table_count(hub, RUN_KEY) == 0

    run = ingest(hub, [{"crm_id": "S-1", "preferred_name": "Again"}])

    assert run.outcomes == ["updated"]
    assert contact(hub, "S-1")["preferred_name"] == "Again"


def test_one_batch_and_many_batches_give_the_same_hub(engine):
    records = [
        ADA,
        {**GRACE, "phone": ADA_PHONE},  # duplicate phone
        GRACE,
        {"crm_id": "S-1", "first_name": "Again"},  # duplicate CRM id in the run
        {"crm_id": "S-2", "email": "grace@example.edu"},  # updates a contact created earlier
        {"crm_id": "S-3", "first_name": "No", "last_name": "Phone"},
    ]

    one = ingest(engine, records)
    hub_one, log_one = _comparable(engine), log_codes(engine)
    truncate(engine)
    many = ingest(engine, records, batch_size=2)

    assert one.outcomes == many.outcomes
    assert one.report.summary == many.report.summary
    assert _comparable(engine) == hub_one
    assert log_codes(engine) == log_one


def _comparable(engine) -> list[tuple]:
    snap = snapshot(engine)
    return sorted(
        (c["crm_id"], c["first_name"], c["last_name"], c["phone"], c["email"])
        for c in snap["contacts"].values()
    )


# --- Reports and the sync log ----------------------------------------------------------------


def test_sync_log_rows_carry_the_run_context(hub):
    run = ingest(hub, [{**ADA, "email": "bad"}])

    (row,) = log_rows(hub)
    assert row["code"] == "invalid-email"
    assert row["integration"] == "test"
    assert row["direction"] == "incoming"
    assert row["instance"] == "test-instance"
    assert row["run_id"] == run.run_id
    assert row["contact_id"] == contact(hub, "S-1")["id"]
    # No personal data in the message.
    assert "bad" not in row["message"]


def test_the_report_counts_outcomes_and_problems(hub):
    seed(hub, ADA)
    tester = seed(hub, GRACE, test_user=True)
    records = [
        {"crm_id": "S-1"},  # unchanged
        {"crm_id": "S-1", "first_name": "x"},  # duplicate CRM id in the run
        {"id": tester, "first_name": "Changed"},  # ignored
        {"crm_id": "S-3", "first_name": "Alan", "last_name": "Turing", "phone": ALAN_PHONE},
        {"crm_id": "S-4", "first_name": "Kate", "phone": KATE_PHONE},  # no last name
    ]

    run = ingest(hub, records)

    assert run.report.summary == {
        "created": 1,
        "updated": 0,
        "unchanged": 1,
        "skipped": 2,
        "ignored": 1,
        "errors": 2,
    }
    assert len(log_rows(hub)) == 2


def test_a_dry_run_writes_nothing_but_plans_like_a_real_run(hub):
    seed(hub, ADA)
    before = snapshot(hub)
    records = [
        {"crm_id": "S-1", "first_name": "Augusta"},
        GRACE,
        {**GRACE, "crm_id": "S-9"},  # sees the dry-run creation of S-2 (its phone)
        {
            "crm_id": "S-3",
            "first_name": "Alan",
            "last_name": "T",
            "phone": ALAN_PHONE,
            "email": "x",
        },
    ]

    dry = ingest(hub, records, dry_run=True, batch_size=1)

    assert snapshot(hub) == before
    assert log_rows(hub) == []
    assert table_count(hub, RUN_KEY) == 0
    real = ingest(hub, records, batch_size=1)
    assert dry.outcomes == real.outcomes == ["updated", "created", "skipped", "created"]
    assert dry.report.summary == real.report.summary


def test_changed_fields_are_stamped_with_a_change_time(hub):
    ada = seed(hub, ADA)
    with hub.begin() as conn:
        conn.execute(update(CONTACT).where(CONTACT.c.id == ada).values(changed_at={}))

    ingest(hub, [{"crm_id": "S-1", "first_name": "Augusta", "custom:Class Year": "2030"}])

    assert set(contact(hub, ada)["changed_at"]) == {"first_name", "custom:Class Year"}
