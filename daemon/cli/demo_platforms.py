"""The platforms of ``contactsync demo``: one small class each, on one shape.

Each :class:`Platform` starts its simulator (or its local folder), writes its instance file,
hands its secret over by environment variable (never in a file), seeds a few records (some
bad on purpose), reads its side back as hub fields (so the display can tell which side moved),
lists the files it has written, and scripts a user's changes on its side.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from daemon.hub.contacts import save_contact

# Simulator seed: fixed, so the tests know each simulator's secrets without starting one.
SEED = 7
SCHEDULE = 'pull = "every 2s"\npush = "every 2s"\n'
HUB_FIELDS = ("first_name", "last_name", "email", "phone")


@dataclass
class Step:
    """One scripted change, made ``at`` seconds into the demo. ``apply`` returns the id of a
    hub contact it made or changed (a ``hub`` step), so the display knows where it came from."""

    at: float
    side: str  # the platform's label, or "hub": where the change is made
    what: str
    apply: Callable[[], Any]


def fields_toml(mapping: dict[str, str]) -> str:
    """``[[fields]]`` tables for hub field -> remote field."""
    return "".join(f'\n[[fields]]\nhub = "{h}"\nremote = "{r}"\n' for h, r in mapping.items())


class Platform:
    """One platform of the demo. Subclasses fill in the hooks; the defaults suit a platform
    with nothing to seed, no records to read back and no files."""

    label = ""  # as the display names it: "Salesforce"
    instance = ""  # the instance's (and so its link connection's) name
    env = ""  # the variable that carries its secret, if any
    mapping: dict[str, str] = {}  # hub field -> remote field
    files_out = False  # its pushes are files: show the files, not one line per contact
    confirms_later = False  # a push is pending until a pull sees it (Slate)

    def start(self, root: Path) -> None:
        """Start the simulator or make the folders; ``root`` is the demo's folder."""

    def stop(self) -> None:
        """Stop the simulator."""

    def secret(self) -> str | None:
        """The secret handed to the connector through :attr:`env`."""
        return None

    def instance_toml(self) -> str:
        """The instance file."""
        raise NotImplementedError

    def seed(self) -> None:
        """Records on the platform's side before the first sync."""

    def seed_hub(self, engine: Engine, hub_ids: dict[str, str]) -> None:
        """What this platform needs in the hub before the first sync (messages, say)."""

    def view(self) -> dict[str, dict[str, Any]]:
        """The platform's live records: remote id -> hub field -> value."""
        return {}

    def mentions(self, text: str) -> bool:
        """Whether ``text`` appears in a file this platform was sent."""
        return False

    def files(self) -> dict[str, str]:
        """Files the sync wrote or read here: a stable key -> ``"direction|what"``."""
        return {}

    def steps(self, engine: Engine, hub_ids: dict[str, str]) -> list[Step]:
        """The scripted user's changes on this platform."""
        return []

    def describe(self) -> str:
        """One line for the start of the demo: where the platform lives."""
        return self.label


class SimulatedPlatform(Platform):
    """A platform served by a simulator on loopback."""

    sim: Any = None

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()

    def describe(self) -> str:
        return f"{self.label} simulator at {self.sim.url}"


class HubSpot(SimulatedPlatform):
    """HubSpot: owns the hub's CRM id, as in the single-platform demo."""

    label, instance, env = "HubSpot", "hubspot", "CONTACTSYNC_DEMO_HUBSPOT_TOKEN"
    mapping = {
        "first_name": "firstname",
        "last_name": "lastname",
        "email": "email",
        "phone": "phone",
    }
    contacts = 3

    def start(self, root: Path) -> None:
        from plugins.hubspot.simulator import HubSpotSimulator

        self.sim = HubSpotSimulator(contacts=self.contacts, seed=SEED).start()

    def secret(self) -> str:
        return str(self.sim.credentials()["access_token"])

    def instance_toml(self) -> str:
        return (
            '# A two-way HubSpot instance on the local simulator.\ntype = "hubspot"\n'
            'direction = "both"\nowns_crm_id = true   # HubSpot\'s id becomes the CRM id\n\n'
            f"[schedule]\n{SCHEDULE}{fields_toml(self.mapping)}\n[settings]\n"
            f'base_url = "{self.sim.url}"\naccess_token = {{ env = "{self.env}" }}\n'
        )

    def seed(self) -> None:
        # Bad records a HubSpot account really holds: the hub refuses them, with a code.
        self.sim.add_contact(
            firstname="Phil", lastname="Badphone", email="phil@example.org", phone="12345"
        )  # invalid-phone
        self.sim.add_contact(
            firstname="Cher", lastname="", email="cher@example.org", phone="+12135550176"
        )  # blank-required-data-in-record: a new hub contact needs a last name

    def view(self) -> dict[str, dict[str, Any]]:
        with self.sim.lock:
            return {
                rid: {h: record["properties"].get(r) for h, r in self.mapping.items()}
                for rid, record in self.sim.records.items()
                if not record.get("archived")
            }

    def steps(self, engine: Engine, hub_ids: dict[str, str]) -> list[Step]:
        first = str(min(int(i) for i in self.sim.records))
        props = self.sim.records[first]["properties"]
        name = f"{props.get('firstname')} {props.get('lastname')}"

        def edit_ada(values: dict[str, str]) -> Callable[[], str]:
            return lambda: save_contact(engine, values, contact_id=hub_ids["ada"])

        return [
            Step(
                3.0,
                "HubSpot",
                f"a HubSpot user edits {name}'s phone",
                lambda: self.sim.edit_contact(first, phone="+16175550123"),
            ),
            Step(
                5.0,
                "hub",
                "staff edit Ada Lovelace's email in the hub",
                edit_ada({"email": "ada@analytical.engine.example"}),
            ),
            Step(
                7.0,
                "HubSpot",
                "a HubSpot user adds Hedy Lamarr",
                lambda: self.sim.add_contact(
                    firstname="Hedy",
                    lastname="Lamarr",
                    email="hedy.lamarr@example.org",
                    phone="+13105550147",
                ),
            ),
            Step(
                9.0,
                "hub",
                "staff add Linus Torvalds in the hub",
                lambda: save_contact(
                    engine,
                    {
                        "first_name": "Linus",
                        "last_name": "Torvalds",
                        "phone": "+15035550188",
                        "email": "linus@example.org",
                    },
                ),
            ),
            Step(
                11.0,
                "hub",
                "staff fix Ada Lovelace's phone in the hub",
                edit_ada({"phone": "+442079460958"}),
            ),
        ]


class Salesforce(SimulatedPlatform):
    """Salesforce Contacts, two-way, by client credentials."""

    label, instance, env = "Salesforce", "salesforce", "CONTACTSYNC_DEMO_SALESFORCE_SECRET"
    mapping = {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
    }

    def start(self, root: Path) -> None:
        from plugins.salesforce.simulator import SalesforceSimulator

        self.sim = SalesforceSimulator(contacts=0, seed=SEED).start()

    def secret(self) -> str:
        return str(self.sim.client_secret)

    def instance_toml(self) -> str:
        return (
            '# A two-way Salesforce instance on the local simulator.\ntype = "salesforce"\n'
            f'direction = "both"\n\n[schedule]\n{SCHEDULE}{fields_toml(self.mapping)}\n'
            f'[settings]\nlogin_url = "{self.sim.url}"\nclient_id = "{self.sim.client_id}"\n'
            f'client_secret = {{ env = "{self.env}" }}\n'
        )

    def seed(self) -> None:
        self.grace = self.sim.add_contact(
            FirstName="Grace", LastName="Hopper", Email="grace@example.org", Phone="+12025550111"
        )
        self.sim.add_contact(
            FirstName="Alan", LastName="Turing", Email="alan@example.org", Phone="+12025550112"
        )
        # invalid-phone: the hub refuses it, with a code
        self.sim.add_contact(
            FirstName="Sam", LastName="Shortphone", Email="sam@example.org", Phone="555"
        )

    def view(self) -> dict[str, dict[str, Any]]:
        with self.sim.lock:
            return {
                rid: {h: record.get(r) for h, r in self.mapping.items()}
                for rid, record in self.sim.records["Contact"].items()
                if not record.get("IsDeleted")
            }

    def steps(self, engine: Engine, hub_ids: dict[str, str]) -> list[Step]:
        return [
            Step(
                6.0,
                "Salesforce",
                "a Salesforce user edits Grace Hopper's phone",
                lambda: self.sim.edit_record(self.grace, Phone="+12025550177"),
            )
        ]


class Colleague(SimulatedPlatform):
    """Ellucian Colleague persons through Ethos, two-way."""

    label, instance, env = "Colleague", "colleague", "CONTACTSYNC_DEMO_ETHOS_KEY"
    mapping = {
        "first_name": "firstName",
        "last_name": "lastName",
        "email": "email",
        "phone": "phone",
    }

    def start(self, root: Path) -> None:
        from plugins.colleague.simulator import ColleagueSimulator

        self.sim = ColleagueSimulator(contacts=0, seed=SEED).start()

    def secret(self) -> str:
        return str(self.sim.api_key)

    def instance_toml(self) -> str:
        return (
            "# A two-way Colleague (Ethos) instance on the local simulator.\n"
            f'type = "colleague"\ndirection = "both"\n\n[schedule]\n{SCHEDULE}'
            f"{fields_toml(self.mapping)}\n"
            f'[settings]\nbase_url = "{self.sim.url}"\napi_key = {{ env = "{self.env}" }}\n'
            "roles = []\n"
        )

    def seed(self) -> None:
        self.katherine = self.sim.add_person(
            "Katherine", "Johnson", email="katherine@example.edu", phone="7575550121"
        )
        self.sim.add_person("Edsger", "Wybe", email="edsger@example.edu", phone="7575550122")
        # blank-required-data-in-record: a new hub contact needs a last name
        self.sim.add_person("Prince", "", email="prince@example.edu", phone="7575550123")

    def view(self) -> dict[str, dict[str, Any]]:
        with self.sim.lock:
            return {
                cid: _ethos_person(self.sim.persons[guid])
                for cid, guid in self.sim.by_colleague_id.items()
                if guid in self.sim.persons
            }

    def steps(self, engine: Engine, hub_ids: dict[str, str]) -> list[Step]:
        key = _colleague_key(self.katherine)
        return [
            Step(
                8.0,
                "Colleague",
                "a registrar edits Katherine Johnson's email in Colleague",
                lambda: self.sim.edit_person(key, email="kjohnson@example.edu"),
            )
        ]


def _colleague_key(person: dict[str, Any]) -> str:
    """A person's Colleague id, else its guid (both find it in the simulator)."""
    for credential in person.get("credentials") or []:
        if credential.get("type") == "colleaguePersonId":
            return str(credential.get("value"))
    return str(person["id"])


def _ethos_person(person: dict[str, Any]) -> dict[str, Any]:
    """An Ethos person as hub fields: its first name entry, primary email, mobile phone."""
    name = (person.get("names") or [{}])[0]
    emails = person.get("emails") or []
    email = next(
        (e for e in emails if e.get("preference") == "primary"), emails[0] if emails else {}
    )
    phones = person.get("phones") or []
    mobile = next((p for p in phones if p["type"].get("phoneType") == "mobile"), {})
    return {
        "first_name": name.get("firstName"),
        "last_name": name.get("lastName"),
        "email": email.get("address"),
        "phone": f"{mobile.get('countryCallingCode', '')}{mobile.get('number', '')}" or None,
    }


class Slate(SimulatedPlatform):
    """Slate: pulls through the query web service, pushes as upload files into a local folder
    the simulator imports on its next query. A push stays pending until a pull sees it."""

    label, instance, env = "Slate", "slate", "CONTACTSYNC_DEMO_SLATE_TOKEN"
    confirms_later = True
    mapping = {h: h for h in HUB_FIELDS}

    def start(self, root: Path) -> None:
        from plugins.slate.simulator import SlateSimulator

        self.sim = SlateSimulator(contacts=0, seed=SEED, sftp_root=root / "slate").start()

    def secret(self) -> str:
        return str(self.sim.user_token)

    def instance_toml(self) -> str:
        return (
            "# A two-way Slate instance: the query web service, and uploads into the folder\n"
            "# the simulator imports from (as Slate imports from its SFTP incoming/).\n"
            f'type = "slate"\ndirection = "both"\n\n[schedule]\n{SCHEDULE}'
            '\n[[fields]]\nhub = "id"\nremote = "mainstay_id"\ndirection = "incoming"\n'
            f"{fields_toml(self.mapping)}\n"
            f'[settings]\nbase_url = "{self.sim.url}"\nquery_id = "{self.sim.query_id}"\n'
            f'token = {{ env = "{self.env}" }}\ntimezone = "{self.sim.timezone_name}"\n\n'
            f'[settings.transport]\nkind = "local"\npath = "{self.sim.sftp_root.as_posix()}"\n'
        )

    def seed(self) -> None:
        self.mary = self.sim.add_person(
            first_name="Mary", last_name="Jackson", email="mary@example.edu", phone="7575550131"
        )
        self.sim.add_person(
            first_name="Dorothy",
            last_name="Vaughan",
            email="dorothy@example.edu",
            phone="7575550132",
        )
        # invalid-email: the hub refuses it, with a code
        self.sim.add_person(
            first_name="Bob", last_name="Bademail", email="bob-at-example", phone="7575550133"
        )

    def view(self) -> dict[str, dict[str, Any]]:
        with self.sim.lock:
            return {
                guid: {h: person.get(h) for h in self.mapping}
                for guid, person in self.sim.people.items()
            }

    def files(self) -> dict[str, str]:
        found = {}
        for folder in (self.sim.incoming, self.sim.processed):
            for path in folder.glob("*.csv"):
                rows = _csv_rows(path)
                if rows is not None:
                    found[path.name] = f"hub → Slate|uploaded {path.name} ({_rows(rows)})"
        return found

    def steps(self, engine: Engine, hub_ids: dict[str, str]) -> list[Step]:
        return [
            Step(
                10.0,
                "Slate",
                "an admissions officer edits Mary Jackson's phone in Slate",
                lambda: self.sim.edit_person(self.mary, phone="7575550199"),
            )
        ]


class Banner(Platform):
    """The ``sftp`` plugin on a local folder: a Banner extract dropped in ``incoming/`` is
    read, and each push writes a file into ``outgoing/``."""

    label, instance = "Banner", "banner"
    files_out = True
    extract = (
        "SPRIDEN_ID,SPRIDEN_FIRST_NAME,SPRIDEN_LAST_NAME,SPRTELE_PHONE_NUMBER,GOREMAL_EMAIL_ADDRESS\n"
        "B00000101,Barbara,Liskov,6175550141,barbara@example.edu\n"
        "B00000102,Dennis,Ritchie,9085550142,dennis@example.edu\n"
        "B00000103,Bad,Phonerow,12,bad.phonerow@example.edu\n"  # invalid-phone
    )

    def start(self, root: Path) -> None:
        self.root = root / "banner"
        for folder in ("incoming", "outgoing"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"Banner (sftp plugin, local folder) at {self.root}"

    def instance_toml(self) -> str:
        return (
            "# The sftp plugin on a local folder, with the Banner column names.\n"
            f'type = "sftp"\ndirection = "both"\n\n[schedule]\n{SCHEDULE}\n'
            '[settings]\npreset = "banner"\nincoming_folder = "incoming"\n'
            'file_mask = "banner_*.csv"\noutgoing_folder = "outgoing"\n'
            # HubSpot owns the hub's CRM id here, so SPRIDEN_ID stays the link's id only.
            'id_column = "SPRIDEN_ID"\ncolumns = { crm_id = "" }\n\n'
            f'[settings.transport]\nkind = "local"\npath = "{self.root.as_posix()}"\n'
            "stable_seconds = 0\n"
        )

    def seed(self) -> None:
        (self.root / "incoming" / "banner_students.csv").write_text(self.extract)

    def files(self) -> dict[str, str]:
        found = {}
        for path in (self.root / "incoming" / "processed").glob("*.csv"):
            rows = _csv_rows(path)
            if rows is not None:
                found[f"in/{path.name}"] = f"Banner → hub|read {path.name} ({_rows(rows)})"
        for path in (self.root / "outgoing").glob("*.csv"):
            rows = _csv_rows(path)
            if rows is not None:
                found[f"out/{path.name}"] = (
                    f"hub → Banner|wrote outgoing/{path.name} ({_rows(rows)})"
                )
        return found

    def mentions(self, text: str) -> bool:
        return any(text in p.read_text() for p in (self.root / "outgoing").glob("*.csv"))


TEST_USER_BODY = "a test user's message: never exported"


class Export(Platform):
    """The conversations export on a local folder, for messages added to the hub."""

    label, instance = "Export", "export"
    files_out = True

    def start(self, root: Path) -> None:
        self.root = root / "export"
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"conversations export (local folder) at {self.root}"

    def instance_toml(self) -> str:
        return (
            "# The conversations export, into a local folder.\n"
            'type = "conversations_export"\n\n[schedule]\nexport = "every 2s"\n\n'
            '[settings]\nfolder = "conversations"\nfile_prefix = "mainstay_conversations"\n\n'
            f'[settings.transport]\nkind = "local"\npath = "{self.root.as_posix()}"\n'
        )

    def seed_hub(self, engine: Engine, hub_ids: dict[str, str]) -> None:
        from daemon.hub.messages import add_message

        add_message(
            engine,
            contact_id=hub_ids["ada"],
            channel="twilio",
            direction="outgoing",
            message_type="campaign",
            campaign_name="Welcome",
            body="Welcome, Ada! Reply with any question.",
        )
        add_message(
            engine,
            contact_id=hub_ids["ada"],
            channel="twilio",
            direction="incoming",
            body="When is the FAFSA deadline?",
        )
        add_message(
            engine,
            contact_id=hub_ids["test"],
            channel="web",
            direction="incoming",
            body=TEST_USER_BODY,
        )

    def files(self) -> dict[str, str]:
        found = {}
        for path in (self.root / "conversations").glob("*.csv"):
            rows = _csv_rows(path)
            if rows is not None:
                found[path.name] = (
                    f"hub → Export|wrote conversations/{path.name} ({_rows(rows, 'message')})"
                )
        return found

    def mentions(self, text: str) -> bool:
        return any(
            TEST_USER_BODY in p.read_text() for p in (self.root / "conversations").glob("*.csv")
        )


def _csv_rows(path: Path) -> list[list[str]] | None:
    """A small CSV file's data rows; ``None`` if it moved away while being read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return list(csv.reader(io.StringIO(text)))[1:]


def _rows(rows: list[list[str]], noun: str = "row") -> str:
    return f"{len(rows)} {noun}{'' if len(rows) == 1 else 's'}"


def all_platforms() -> list[Platform]:
    """Every platform of the demo, in the order the summary lists them."""
    return [HubSpot(), Salesforce(), Colleague(), Slate(), Banner(), Export()]
