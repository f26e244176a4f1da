"""``contactsync auth``: the OAuth authorization-code flow against the HubSpot and Salesforce
simulators over real HTTP, the test acting as the browser.

The whole flow runs twice as a staff member would run it (a process that prints the URL, a
browser that opens it and follows the redirect to the loopback callback), and then a pull
works with no refresh token in the instance file. The failures (a timeout, a refusal, a
forged redirect, a reused or misdirected code) end with exit 1 and nothing stored, and no
output or log line shows the code, a token or the client secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

import plugins.hubspot
import plugins.salesforce
from daemon.cli import App, auth, cli
from daemon.default_plugins import transforms
from daemon.engine.registry import get_plugin_manager
from daemon.hub import lease
from daemon.hub.database import make_engine
from daemon.hub.store import InstanceState, utcnow
from daemon.kit.oauth import AuthorizationCodes, pkce_pair
from plugins.hubspot.simulator import HubSpotSimulator
from plugins.salesforce.simulator import SalesforceSimulator
from tests.clikit import isolated

SECRET_ENV = "OAUTH_TEST_CLIENT_SECRET"
FIELDS = {
    "hubspot": (("first_name", "firstname"), ("last_name", "lastname"), ("phone", "phone")),
    "salesforce": (("first_name", "FirstName"), ("last_name", "LastName"), ("phone", "Phone")),
}
# What the simulators' tokens look like, so a leak of one we never saw is still caught.
TOKEN_MARKS = {"hubspot": ("ac-na1-", "re-na1-"), "salesforce": ("00DSIM", "5Aep861!")}
STATE_KEYS = {"hubspot": "hubspot_refresh_token", "salesforce": "salesforce_refresh_token"}
# The two plugins and the built-in transforms, without reading every installed distribution's
# metadata on each command (a second and a half apiece).
PLUGINS = (plugins.hubspot, plugins.salesforce, transforms)


def app() -> App:
    """The CLI's context object with only the plugins these tests use."""
    return App(pm=get_plugin_manager(entry_points=False, plugins=PLUGINS))


@dataclass
class Setup:
    """One platform's simulator, a config folder with its OAuth instance, and a hub file."""

    platform: str
    sim: Any
    etc: Path
    db_url: str
    instance_file: Path

    @property
    def env(self) -> dict[str, str]:
        return {SECRET_ENV: self.sim.client_secret}

    def stored(self) -> dict[str, Any]:
        """The instance's connector state in the hub."""
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                table = InstanceState.__table__
                value = conn.execute(
                    select(table.c.connector_state).where(table.c.instance == "crm")
                ).scalar()
        finally:
            engine.dispose()
        return dict(value or {})

    def cli(self, *args: str) -> Result:
        """The CLI in this process, on this hub and config folder, logging JSON at debug."""
        base = ["--etc", str(self.etc), "--database-url", self.db_url, "--log-level", "debug"]
        return CliRunner().invoke(cli, [*base, *args], env=self.env, obj=app())

    def secrets_seen(self, code: str | None = None) -> list[str]:
        """What must never be printed: the client secret, every refresh token the platform
        holds, the code, and anything shaped like the platform's tokens."""
        found = [self.sim.client_secret, *self.sim._refresh_tokens, *TOKEN_MARKS[self.platform]]
        stored = self.stored().get(STATE_KEYS[self.platform])
        return [*found, *([stored] if stored else []), *([code] if code else [])]


def _instance_text(platform: str, sim: Any) -> str:
    if platform == "hubspot":
        settings = f'base_url = "{sim.url}"\nclient_id = "{sim.client_id}"\n'
    else:
        settings = (
            f'login_url = "{sim.url}"\nauth = "refresh_token"\nclient_id = "{sim.client_id}"\n'
        )
    settings += f'client_secret = {{ env = "{SECRET_ENV}" }}\n'
    fields = "".join(
        f'[[fields]]\nhub = "{hub}"\nremote = "{remote}"\n' for hub, remote in FIELDS[platform]
    )
    head = f'type = "{platform}"\ndirection = "incoming"\n'
    return f"{head}[settings]\n{settings}{fields}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated(monkeypatch):
        yield


@pytest.fixture(params=["hubspot", "salesforce"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    platform = request.param
    sim_class = HubSpotSimulator if platform == "hubspot" else SalesforceSimulator
    with sim_class(contacts=4, seed=31) as sim:
        etc = tmp_path / "etc"
        (etc / "instances").mkdir(parents=True)
        path = etc / "instances" / "crm.toml"
        path.write_text(_instance_text(platform, sim))
        yield Setup(platform, sim, etc, f"sqlite:///{tmp_path / 'hub.db'}", path)


def browse(url: str, *, state: str | None = None) -> httpx.Response:
    """A browser: open the sign-in URL (with another ``state`` if given) and follow the
    platform's redirect to the loopback callback."""
    if state is not None:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        url = str(httpx.URL(parts._replace(query="").geturl(), params={**query, "state": state}))
    return httpx.get(url, follow_redirects=True, timeout=10)


def code_of(response: httpx.Response) -> str | None:
    """The code the platform put in its redirect (the first hop's Location)."""
    for hop in response.history:
        query = parse_qs(urlsplit(hop.headers["location"]).query)
        if "code" in query:
            return query["code"][0]
    return None


def fake_browser(
    monkeypatch: pytest.MonkeyPatch, act: Callable[[str], httpx.Response | None]
) -> list[httpx.Response]:
    """``webbrowser.open`` replaced by ``act(url)``; the responses it got."""
    seen: list[httpx.Response] = []

    def open_url(url: str, *args: Any, **kwargs: Any) -> bool:
        response = act(url)
        if response is not None:
            seen.append(response)
        return True

    monkeypatch.setattr("webbrowser.open", open_url)
    return seen


def assert_never_shown(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}…) was printed"


# --- the whole flow ---------------------------------------------------------------------------


def test_auth_signs_in_over_http_stores_the_token_and_a_pull_then_works(setup: Setup) -> None:
    """A real process prints the URL; the test opens it as a browser would; the refresh token
    lands in the hub, not the file; then a pull works with no refresh_token in the file."""
    before = setup.instance_file.read_text()
    assert "refresh_token =" not in before
    command = [sys.executable, "-m", "daemon", "--etc", str(setup.etc)]
    command += ["--database-url", setup.db_url, "--log-level", "debug"]
    command += ["auth", "crm", "--no-browser", "--timeout", "60"]
    env = {**os.environ, **setup.env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        printed = []
        for line in process.stdout or ():
            printed.append(line)
            if line.startswith("http"):
                break
        url = printed[-1].strip()
        assert url.startswith(setup.sim.url), printed
        landed = browse(url)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stdout = "".join(printed) + stdout
    assert process.returncode == 0, (stdout, stderr)
    assert landed.status_code == 200 and "Signed in" in landed.text
    assert landed.history and landed.history[0].status_code == 302
    code = code_of(landed)
    assert code

    stored = setup.stored()[STATE_KEYS[setup.platform]]
    assert stored in setup.sim._refresh_tokens  # the platform knows it: a real grant
    assert setup.instance_file.read_text() == before  # never in the instance file
    log_lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "auth_stored" for line in log_lines)
    assert_never_shown(stdout + stderr, setup.secrets_seen(code))

    pulled = setup.cli("sync", "crm", "--direction", "pull", "--json")
    assert pulled.exit_code == 0, (pulled.stdout, pulled.stderr)
    (report,) = json.loads(pulled.stdout)["reports"]
    assert report["outcome"] == "ok", report
    assert report["counts"]["created"] == 4
    assert_never_shown(pulled.stdout + pulled.stderr, setup.secrets_seen(code))


def test_the_stored_token_wins_over_a_stale_one_in_the_file(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh_token left in the file that the platform no longer honours does not matter
    once auth stored a fresh one: the token cache reads the state first."""
    text = setup.instance_file.read_text()
    stale = text.replace("[settings]\n", '[settings]\nrefresh_token = { env = "STALE_RT" }\n')
    setup.instance_file.write_text(stale)
    monkeypatch.setenv("STALE_RT", "revoked-refresh-token-0000")
    fake_browser(monkeypatch, browse)
    signed = setup.cli("auth", "crm")
    assert signed.exit_code == 0, (signed.stdout, signed.stderr)
    pulled = setup.cli("sync", "crm", "--direction", "pull", "--json")
    assert pulled.exit_code == 0, (pulled.stdout, pulled.stderr)
    assert json.loads(pulled.stdout)["reports"][0]["counts"]["created"] == 4


def test_auth_keeps_the_rest_of_the_state_and_waits_for_no_one_when_told(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is added to the instance's state (a connector's other keys stay), and it
    is written only while holding the connection's lease: while a sync holds it past the
    wait, the sign-in stores nothing and says so."""
    engine = make_engine(setup.db_url)
    try:
        setup.cli("status")  # creates the hub
        with engine.begin() as conn:
            conn.execute(
                InstanceState.__table__.insert(),
                [{"instance": "crm", "connector_state": {"kept": "value"}}],
            )
        assert lease.acquire(engine, "crm", "elsewhere:1:sync", utcnow())
        monkeypatch.setattr(auth, "LEASE_WAIT_SECONDS", 0.0)
        fake_browser(monkeypatch, browse)
        busy = setup.cli("auth", "crm")
        assert busy.exit_code == 1, (busy.stdout, busy.stderr)
        assert "nothing was stored" in busy.stderr
        assert setup.stored() == {"kept": "value"}
        lease.release(engine, "crm", "elsewhere:1:sync")
        signed = setup.cli("auth", "crm")
        assert signed.exit_code == 0, (signed.stdout, signed.stderr)
        assert setup.stored()["kept"] == "value"
        assert setup.stored()[STATE_KEYS[setup.platform]] in setup.sim._refresh_tokens
    finally:
        engine.dispose()


def test_a_sync_with_no_refresh_token_anywhere_is_config_invalid(setup: Setup) -> None:
    pulled = setup.cli("sync", "crm", "--direction", "pull", "--json")
    assert pulled.exit_code == 1, (pulled.stdout, pulled.stderr)
    (report,) = json.loads(pulled.stdout)["reports"]
    assert report["code"] == "config-invalid", report
    assert "contactsync auth crm" in report["error"]
    assert setup.sim.counters["token_grants"] == 0  # nothing was asked of the platform


# --- failures: exit 1, a message, nothing stored ----------------------------------------------


def test_a_timeout_exits_1_and_stores_nothing(setup: Setup) -> None:
    result = setup.cli("auth", "crm", "--no-browser", "--timeout", "0.05")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "no sign-in arrived within 0.05 s" in result.stderr
    assert STATE_KEYS[setup.platform] not in setup.stored()


def test_access_denied_exits_1_and_stores_nothing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup.sim.set_knob("authorize_answer", "deny")
    seen = fake_browser(monkeypatch, browse)
    result = setup.cli("auth", "crm")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "refused the sign-in" in result.stderr and "remote-auth-failed" in result.stderr
    assert "error=access_denied" in seen[0].history[0].headers["location"]
    assert STATE_KEYS[setup.platform] not in setup.stored()
    assert setup.sim.counters["token_grants"] == 0


def test_a_redirect_with_another_state_exits_1_and_the_code_is_never_exchanged(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_browser(monkeypatch, lambda url: browse(url, state="forged-state-value"))
    result = setup.cli("auth", "crm")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "state does not match" in result.stderr
    assert STATE_KEYS[setup.platform] not in setup.stored()
    assert setup.sim.counters["token_grants"] == 0
    assert_never_shown(result.stdout + result.stderr, setup.secrets_seen(code_of(seen[0])))


def test_the_consent_page_allows_and_the_flow_completes(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the consent knob the sign-in page is a page; the browser clicks Allow."""
    setup.sim.set_knob("authorize_answer", "consent")

    def click_allow(url: str) -> httpx.Response:
        page = browse(url)
        assert page.status_code == 200 and "deny" in page.text
        href = page.text.split('href="')[1].split('"')[0].replace("&amp;", "&")
        return httpx.get(setup.sim.url + href, follow_redirects=True, timeout=10)

    fake_browser(monkeypatch, click_allow)
    result = setup.cli("auth", "crm")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert setup.stored()[STATE_KEYS[setup.platform]] in setup.sim._refresh_tokens


def test_an_instance_that_cannot_sign_in_this_way_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HubSpotSimulator(contacts=0, seed=3) as sim:
        etc = tmp_path / "etc"
        (etc / "instances").mkdir(parents=True)
        (etc / "instances" / "pat.toml").write_text(
            f'type = "hubspot"\n[settings]\nbase_url = "{sim.url}"\n'
            'access_token = { env = "PAT" }\n[[fields]]\nhub = "phone"\nremote = "phone"\n'
        )
        monkeypatch.setenv("PAT", sim.private_app_token)
        base = ["--etc", str(etc), "--database-url", f"sqlite:///{tmp_path / 'hub.db'}"]
        result = CliRunner().invoke(cli, [*base, "auth", "pat", "--no-browser"], obj=app())
        assert result.exit_code == 2, result.output
        assert "needs client_id and client_secret" in result.stderr
        unknown = CliRunner().invoke(cli, [*base, "auth", "nope", "--no-browser"], obj=app())
        assert unknown.exit_code == 2 and "no instance 'nope'" in unknown.stderr


# --- the simulators' token endpoints: codes are single-use and bound ------------------------


def _authorize(setup: Setup, redirect_uri: str, challenge: str | None = None) -> str:
    params = {"client_id": setup.sim.client_id, "redirect_uri": redirect_uri, "state": "s"}
    path = "/oauth/authorize"
    if setup.platform == "salesforce":
        path = "/services/oauth2/authorize"
        params["response_type"] = "code"
        if challenge:
            params.update(code_challenge=challenge, code_challenge_method="S256")
    answer = httpx.get(setup.sim.url + path, params=params)
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def _exchange(setup: Setup, code: str, redirect_uri: str, **extra: str) -> httpx.Response:
    path = "/oauth/2026-03/token" if setup.platform == "hubspot" else "/services/oauth2/token"
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": setup.sim.client_id,
        "client_secret": setup.sim.client_secret,
        **extra,
    }
    return httpx.post(setup.sim.url + path, data=form)


def test_a_code_is_good_once_and_only_for_its_redirect_uri(setup: Setup) -> None:
    back = "http://127.0.0.1:8765/callback"
    verifier, challenge = pkce_pair()
    pkce = {"code_verifier": verifier} if setup.platform == "salesforce" else {}
    code = _authorize(setup, back, challenge)
    first = _exchange(setup, code, back, **pkce)
    assert first.status_code == 200 and first.json()["refresh_token"]
    again = _exchange(setup, code, back, **pkce)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    other = _authorize(setup, back, challenge)
    moved = _exchange(setup, other, "http://127.0.0.1:9999/callback", **pkce)
    assert moved.status_code == 400
    expected = "invalid_grant" if setup.platform == "hubspot" else "redirect_uri_mismatch"
    assert moved.json()["error"] == expected
    if setup.platform == "hubspot":  # HubSpot's shape: a status and a message too
        assert moved.json()["status"] == "BAD_REDIRECT_URI"
        assert again.json()["status"] == "BAD_AUTH_CODE"


def test_salesforce_checks_the_pkce_verifier(tmp_path: Path) -> None:
    with SalesforceSimulator(contacts=0, seed=5) as sim:
        setup = Setup("salesforce", sim, tmp_path, "", tmp_path / "x.toml")
        back = "http://127.0.0.1:8765/callback"
        _, challenge = pkce_pair()
        code = _authorize(setup, back, challenge)
        wrong = _exchange(setup, code, back, code_verifier=pkce_pair()[0])
        assert wrong.status_code == 400
        assert wrong.json() == {
            "error": "invalid_grant",
            "error_description": "invalid code verifier",
        }


def test_the_authorize_page_refuses_an_unregistered_redirect(setup: Setup) -> None:
    setup.sim.set_knob("redirect_uri", "http://127.0.0.1:8765/callback")
    path = "/oauth/authorize" if setup.platform == "hubspot" else "/services/oauth2/authorize"
    params = {
        "client_id": setup.sim.client_id,
        "redirect_uri": "http://127.0.0.1:9/callback",
        "response_type": "code",
        "state": "s",
    }
    answer = httpx.get(setup.sim.url + path, params=params)
    assert answer.status_code == 400 and "location" not in answer.headers


def test_codes_expire_on_the_simulator_clock(cs_clock: Any) -> None:
    codes = AuthorizationCodes(cs_clock, ttl_seconds=600)
    code = codes.issue("app", "http://127.0.0.1:1/callback")
    late = codes.issue("app", "http://127.0.0.1:1/callback")
    assert codes.redeem(code, "app", "http://127.0.0.1:1/callback") is None
    cs_clock.advance(600)
    assert codes.redeem(late, "app", "http://127.0.0.1:1/callback") == "expired"
    assert codes.redeem("never-issued", "app", "x") == "unknown"
    other = codes.issue("app", "u")
    assert codes.redeem(other, "another-app", "u") == "client"
    assert codes.redeem(other, "app", "u") == "used"
