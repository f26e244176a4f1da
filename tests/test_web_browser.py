"""The staff pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against the running daemon: ``contactsync run`` with ``[http] enabled`` and a HubSpot instance
on the simulator, real HTTP on loopback both ways.

One daemon and one browser for the module. The tests sign in, filter the Sync Log to one
code, follow a row to its contact, edit a field and see it arrive in HubSpot, retry a parked
change and see the daemon push it, see a read-only token and a forged post refused, run
axe-core in each page (no serious or critical violation), check that nothing scrolls sideways
at a phone's width, and save the screenshots the README shows (``docs/screenshots/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from daemon.hub import outbox
from daemon.hub.apitokens import Role, create_token
from daemon.hub.database import make_engine
from daemon.hub.store import Contact, utcnow
from plugins.hubspot.simulator import HubSpotSimulator
from tests.daemonkit import DaemonProcess, daemon_settings, wait_until
from tests.hubkit import OUTBOX, SYNC_LOG
from tests.test_metrics import HUBSPOT
from tests.webkit import log_row

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CONTACTSYNC_TEST_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# The README's pictures: every run takes them (a page that cannot be shot fails the test); they
# are written over docs/screenshots/ when CONTACTSYNC_SCREENSHOTS=1 (`make screenshots`), else
# into a folder of the test session's, so a test run leaves the working tree as it found it.
SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
CONTACT = Contact.__table__

if not shutil.which(CHROMIUM):
    if os.environ.get("CONTACTSYNC_REQUIRE_SERVICES"):
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@dataclass
class Site:
    """The running daemon's pages, its hub and the simulator it syncs with."""

    url: str
    engine: Engine
    sim: HubSpotSimulator
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this run's screenshots go (see SCREENSHOTS)."""
    if os.environ.get("CONTACTSYNC_SCREENSHOTS") == "1":
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    etc = tmp / "etc"
    (etc / "instances").mkdir(parents=True)
    (etc / "contactsync.toml").write_text(
        daemon_settings(poll_interval_ms=100, wake_debounce_ms=20)
        + "[http]\nenabled = true\nport = 0\n"
    )
    with HubSpotSimulator(seed=7, contacts=12) as sim:
        (etc / "instances" / "recruit.toml").write_text(HUBSPOT.format(url=sim.url))
        url = f"sqlite:///{tmp / 'hub.db'}"
        engine = make_engine(url)
        tokens = {str(role): create_token(engine, f"web-{role}", role) for role in Role}
        daemon = DaemonProcess(
            etc, tmp, database_url=url, env={"TEST_HUBSPOT_TOKEN": sim.private_app_token}
        ).start()
        try:
            serving = daemon.wait_log("api_serving", timeout=30)[0]
            daemon.wait_log("daemon_started", timeout=30)
            wait_until(lambda: contacts(engine) >= 12, 30, what="the first pull")
            yield Site(serving["url"], engine, sim, tokens)
        finally:
            daemon.stop()
            engine.dispose()
        # No token, and no personal data of the edits, in the daemon's log.
        text = daemon.output()
        for secret in (*tokens.values(), "Augusta", "Grace-Web"):
            assert secret not in text, secret


def contacts(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(CONTACT.c.id)).all())


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def signed_in_page(chromium: Any, site: Site, role: str, width: str = "desktop") -> Any:
    """A fresh browser context signed in through the form with ``role``'s token."""
    w, h = WIDTHS[width]
    context = chromium.new_context(viewport={"width": w, "height": h}, base_url=site.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/sync-log")  # not signed in: the sign-in form, then back here
    assert "/sign-in" in page.url
    page.get_by_label("API token").fill(site.tokens[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/sync-log")
    return page


def axe_problems(page: Any) -> list[str]:
    """The serious and critical axe-core violations of the page (WCAG 2.0/2.1 A and AA)."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a',"
        " 'wcag21aa', 'best-practice']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
    )
    return [f"{v['id']} ({v['nodes']})" for v in found if v["impact"] in ("serious", "critical")]


def no_sideways_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def some_contact(site: Site, offset: int = 0) -> str:
    with site.engine.connect() as conn:
        ids = conn.execute(select(CONTACT.c.id).order_by(CONTACT.c.id)).scalars().all()
    return str(ids[offset])


@pytest.fixture(scope="module")
def logged(site: Site) -> str:
    """Sync-log rows as a day of pulls leaves them, on one contact, under the instance name."""
    cid = some_contact(site)
    now = utcnow()
    rows = [
        log_row(now - timedelta(minutes=i), integration="hubspot", instance="recruit",
                contact_id=cid, code="invalid-email", message="email is not an address")
        for i in range(30)
    ] + [
        log_row(now - timedelta(minutes=i), integration="hubspot", instance="recruit",
                contact_id=cid, code="blank-required-data-in-record",
                message="a new contact needs first name, last name and phone")
        for i in range(12)
    ] + [
        log_row(now, integration="csv", instance=None, code="duplicate-contact",
                message="another contact has this phone", direction="incoming")
    ]  # fmt: skip
    with site.engine.begin() as conn:
        conn.execute(SYNC_LOG.insert(), rows)
    return cid


def test_staff_filter_to_one_code_follow_the_contact_and_edit_it_into_hubspot(
    chromium: Any, site: Site, logged: str, shots: Path
) -> None:
    page = signed_in_page(chromium, site, "staff")
    counts = page.locator(".counts")
    assert "30" in counts.inner_text() and "blank-required-data-in-record" in counts.inner_text()
    # Filter to one code (the select submits the form; so would the Filter button).
    page.get_by_label("Code", exact=True).select_option("blank-required-data-in-record")
    page.wait_for_url("**/sync-log?*code=blank-required-data-in-record*")
    codes = page.locator("td[data-label=Code] a.code").all_inner_texts()
    assert codes == ["blank-required-data-in-record"] * 12
    assert page.locator("td[data-label=Integration]").first.inner_text().startswith("recruit")
    assert axe_problems(page) == []
    page.screenshot(path=str(shots / "sync-log-desktop.png"), full_page=True)

    # The code links to its dictionary entry.
    page.locator("td[data-label=Code] a.code").first.click()
    page.wait_for_url("**/errors#blank-required-data-in-record")
    assert page.locator("#blank-required-data-in-record").is_visible()
    assert axe_problems(page) == []
    page.go_back()

    # Follow the row to its contact, edit a field, and see HubSpot receive it.
    page.locator("td[data-label=Contact] a").first.click()
    page.wait_for_url(f"**/contacts/{logged}")
    assert axe_problems(page) == []
    page.get_by_label("First name", exact=True).fill("Augusta")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Edit: updated").wait_for()

    def in_hubspot(name: str) -> bool:
        return any(c["properties"].get("firstname") == name for c in site.sim.state()["contacts"])

    wait_until(lambda: in_hubspot("Augusta"), 30, what="the page's edit in HubSpot")
    page.reload()
    assert page.get_by_label("First name", exact=True).input_value() == "Augusta"
    page.screenshot(path=str(shots / "contact-desktop.png"), full_page=True)
    page.context.close()


def test_staff_retry_a_parked_change_and_the_daemon_pushes_it(chromium: Any, site: Site) -> None:
    cid = some_contact(site, 1)
    now = utcnow()
    with site.engine.begin() as conn:
        # A hub-side change whose push gave up (parked), as after a platform outage.
        conn.execute(update(CONTACT).where(CONTACT.c.id == cid).values(first_name="Grace-Web"))
        conn.execute(
            OUTBOX.insert().values(
                connection="recruit", contact_id=cid, fields=["first_name"], origin="api",
                version=1, attempts=8, state=outbox.PARKED,
                next_attempt_at=now + timedelta(days=30), last_error="remote-unavailable",
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
    page = signed_in_page(chromium, site, "staff")
    page.goto(f"/contacts/{cid}")
    assert "parked" in page.locator(".changes").inner_text()
    page.get_by_role("button", name="Retry now").click()
    page.get_by_text("The change is queued again").wait_for()
    wait_until(
        lambda: any(
            c["properties"].get("firstname") == "Grace-Web" for c in site.sim.state()["contacts"]
        ),
        30,
        what="the retried change in HubSpot",
    )
    page.context.close()


def test_read_only_token_and_forged_posts_are_refused(chromium: Any, site: Site) -> None:
    cid = some_contact(site, 2)
    page = signed_in_page(chromium, site, "read")
    page.goto(f"/contacts/{cid}")
    assert page.get_by_role("button", name="Save").count() == 0  # nothing to change with
    token = page.locator("input[name=csrf]").first.input_value()
    before = site.sim.state()["contacts"]
    # The read token posts the edit anyway (its own session's form token): refused.
    edit = page.request.post(f"/contacts/{cid}", form={"csrf": token, "first_name": "Eve"})
    assert edit.status == 403 and "api-forbidden" in edit.text()
    page.context.close()

    staff = signed_in_page(chromium, site, "staff")
    staff.goto(f"/contacts/{cid}")
    # A form sent without the session's form token (another page's, say): refused.
    forged = staff.request.post(f"/contacts/{cid}", form={"first_name": "Eve"})
    assert forged.status == 403 and "web-csrf-refused" in forged.text()
    staff.goto(f"/contacts/{cid}")
    assert staff.get_by_label("First name", exact=True).input_value() != "Eve"
    assert site.sim.state()["contacts"] == before
    staff.context.close()


def test_every_page_passes_axe_fits_a_phone_and_is_photographed(
    chromium: Any, site: Site, logged: str, shots: Path
) -> None:
    for width in WIDTHS:
        page = signed_in_page(chromium, site, "staff", width)
        for name, path in (
            ("sync-log", "/sync-log"),
            ("contact", f"/contacts/{logged}"),
            ("instances", "/instances"),
            ("errors", "/errors"),
        ):
            page.goto(path)
            assert axe_problems(page) == [], (name, width)
            assert no_sideways_scroll(page), (name, width)
            if name != "errors" and not (width == "desktop" and name in ("sync-log", "contact")):
                page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
        # The skip link is the first stop of the keyboard, and it moves focus to the content.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.context.close()
    # The sign-in form too, signed out.
    context = chromium.new_context(base_url=site.url)
    page = context.new_page()
    page.goto("/sign-in")
    assert axe_problems(page) == []
    context.close()
