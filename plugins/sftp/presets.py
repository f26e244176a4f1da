"""Column presets: which CSV column carries which hub field, for the layouts we know.

No vendor publishes one fixed contact layout for Banner or Recruit files (the institution
defines it in Argos, AppWorx, CozyRoc, KingswaySoft…), so these are documented *examples*
built from the field names in the research notes; an instance's ``columns`` setting or its own
``[[fields]]`` override any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Preset:
    """A layout: hub field -> column, the column holding the far side's record id (the
    link's remote id), the column outgoing files carry the hub id in, and whether outgoing
    cells that a spreadsheet would run as formulas are escaped (see the README: on for the
    generic drop people open, off for files only an importer reads)."""

    columns: dict[str, str]
    id_column: str
    hub_id_column: str
    escape_formulas: bool = True
    notes: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # The hub's own names, as `contactsync import` and Mainstay's CSV template spell them.
    "mainstay": Preset(
        columns={
            "crm_id": "crm_id",
            "enrollment_id": "enrollment_id",
            "first_name": "first_name",
            "last_name": "last_name",
            "preferred_name": "preferred_name",
            "phone": "phone",
            "email": "email",
        },
        id_column="crm_id",
        hub_id_column="mainstay_id",
    ),
    # Ellucian Banner, via an Argos/AppWorx extract. SPRIDEN_ID (the Banner ID, "unique for
    # merging"), GOREMAL_EMAIL_ADDRESS and GORADID_ADDITIONAL_ID (the external system's id:
    # ours) are the names of Banner's Slate feed; the name and phone columns are the Banner
    # table columns an extract selects (SPRIDEN, SPBPERS, SPRTELE).
    "banner": Preset(
        columns={
            "crm_id": "SPRIDEN_ID",
            "first_name": "SPRIDEN_FIRST_NAME",
            "last_name": "SPRIDEN_LAST_NAME",
            "preferred_name": "SPBPERS_PREF_FIRST_NAME",
            "phone": "SPRTELE_PHONE_NUMBER",
            "email": "GOREMAL_EMAIL_ADDRESS",
        },
        id_column="SPRIDEN_ID",
        hub_id_column="GORADID_ADDITIONAL_ID",
        # An Argos/AppWorx load reads cells as data: a quote would be stored in the name.
        escape_formulas=False,
        notes={
            "SPRTELE_PHONE_NUMBER": "Banner stores the area code apart "
            "(SPRTELE_PHONE_AREA); the extract concatenates them",
        },
    ),
    # Ellucian Recruit (Microsoft Dynamics CRM): the contact entity's attribute names, as a
    # CozyRoc/KingswaySoft export writes them. Recruit's SIS id attribute is
    # institution-configured, so crm_id is left for the instance to map.
    "recruit": Preset(
        columns={
            "first_name": "firstname",
            "last_name": "lastname",
            "phone": "mobilephone",
            "email": "emailaddress1",
        },
        id_column="contactid",
        hub_id_column="mainstay_id",
        # A CozyRoc/KingswaySoft import reads cells as data: a quote would be stored.
        escape_formulas=False,
    ),
}
