"""Secrets by reference in instance settings, and proof that no secret leaks: not to the
logs, not to the sync log, not to any table, not to the console."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine, select, update
from sqlmodel import SQLModel

from daemon.config.instances import load_instance
from daemon.config.settings import ConfigError
from daemon.foundation.log import configure, redact_text
from daemon.hub.contacts import save_contact
from daemon.hub.store import Contact, Outbox, SyncLog, utcnow
from daemon.kit.connector import AuthFailed, Unavailable
from tests.enginekit import fresh_remote, sync_engine, write_instance
from tests.memremote import MemoryConnector

CONNECTORS = {"memory": MemoryConnector}


@pytest.fixture
def secret() -> str:
    """A fresh secret value, long enough for the redactor, unlike anything else."""
    return f"sk-live-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch) -> None:
    """No systemd credentials folder leaks in from the environment running the tests."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def instance_file(tmp_path: Path, settings: str, name: str = "mem") -> Path:
    """An instance file of the memory connector with the given ``[settings]`` lines."""
    folder = tmp_path / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'type = "memory"\n[settings]\n{settings}\n', encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    """The ConfigError that loading ``path`` raises."""
    with pytest.raises(ConfigError) as info:
        load_instance(path, CONNECTORS)
    assert info.value.path == str(path)
    return info.value


# --- references ---------------------------------------------------------------------------


def test_env_reference(tmp_path, monkeypatch, secret):
    monkeypatch.setenv("CS_TEST_KEY", secret)
    instance = load_instance(
        instance_file(tmp_path, 'api_key = { env = "CS_TEST_KEY" }'), CONNECTORS
    )
    assert instance.settings.api_key.get_secret_value() == secret
    # The value is registered with the redactor as soon as it is resolved.
    assert redact_text(f"Bearer {secret}") == "Bearer ***"
    assert secret not in repr(instance)


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_file_reference_strips_the_trailing_newline(tmp_path, secret, ending):
    key_file = tmp_path / "api.key"
    key_file.write_text(secret + ending, encoding="utf-8")
    instance = load_instance(
        instance_file(tmp_path, f'api_key = {{ file = "{key_file}" }}'), CONNECTORS
    )
    assert instance.settings.api_key.get_secret_value() == secret


def test_credential_reference_reads_the_credentials_directory(tmp_path, monkeypatch, secret):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "memory-key").write_text(secret + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    instance = load_instance(
        instance_file(tmp_path, 'api_key = { credential = "memory-key" }'), CONNECTORS
    )
    assert instance.settings.api_key.get_secret_value() == secret


def test_a_non_secret_setting_may_be_a_reference_too(tmp_path, monkeypatch):
    monkeypatch.setenv("CS_TEST_REMOTE", "elsewhere")
    instance = load_instance(
        instance_file(tmp_path, 'remote = { env = "CS_TEST_REMOTE" }'), CONNECTORS
    )
    assert instance.settings.remote == "elsewhere"


def test_missing_env_var_names_the_key_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CS_TEST_MISSING", raising=False)
    error = load_error(instance_file(tmp_path, 'api_key = { env = "CS_TEST_MISSING" }'))
    assert error.key == "settings.api_key"
    assert error.reason == "environment variable CS_TEST_MISSING is not set"


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_unreadable_file_names_the_key_and_the_file(tmp_path, what):
    path = tmp_path / "nope.key"
    if what == "directory":
        path.mkdir()
    error = load_error(instance_file(tmp_path, f'api_key = {{ file = "{path}" }}'))
    assert error.key == "settings.api_key"
    assert error.reason.startswith(f"file {path} cannot be read: ")


def test_credential_without_credentials_directory(tmp_path, monkeypatch, secret):
    # The credential exists, but not where systemd would say: the error must not read it.
    monkeypatch.setenv("CS_TEST_DECOY", secret)
    error = load_error(instance_file(tmp_path, 'api_key = { credential = "memory-key" }'))
    assert error.key == "settings.api_key"
    assert "CREDENTIALS_DIRECTORY is not set" in error.reason
    assert "'memory-key'" in error.reason
    assert secret not in str(error)


def test_missing_credential_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    error = load_error(instance_file(tmp_path, 'api_key = { credential = "absent" }'))
    assert error.key == "settings.api_key"
    assert error.reason.startswith("credential 'absent' cannot be read: ")


def test_a_resolved_secret_never_appears_in_a_validation_error(tmp_path, monkeypatch, secret):
    # The reference resolves, but the value does not fit the setting: the error names the
    # key and the reason, and must not quote the value.
    monkeypatch.setenv("CS_TEST_KEY", secret)
    error = load_error(instance_file(tmp_path, 'page_size = { env = "CS_TEST_KEY" }'))
    assert error.key == "settings.page_size"
    assert secret not in str(error) and secret not in repr(error)


def test_a_secret_given_as_plain_text_is_refused(tmp_path, secret):
    error = load_error(instance_file(tmp_path, f'api_key = "{secret}"'))
    assert error.key == "settings.api_key"
    assert "a secret must be a reference" in error.reason
    assert secret not in str(error)


def test_an_unknown_reference_kind_is_not_taken_for_a_secret(tmp_path, secret):
    error = load_error(instance_file(tmp_path, f'api_key = {{ vault = "{secret}" }}'))
    assert error.key == "settings.api_key"
    assert secret not in str(error)


# --- no leak, end to end ------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[StringIO]:
    """Every structlog and standard-library log line of the test, as JSON, in a StringIO;
    the logging setup of the process is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    stream = StringIO()
    configure(level="debug", stream=stream, json=True)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)


def every_text_in_the_hub(engine: Engine) -> list[str]:
    """Every value of every row of every table, as text (JSON columns included)."""
    texts = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    texts.append(f"{table.name}.{column}={json.dumps(value, default=str)}")
    return texts


def test_no_secret_leaks_from_a_full_sync(
    engine, tmp_path, monkeypatch, capfd, caplog, log_stream, secret
):
    monkeypatch.setenv("CS_LEAK_KEY", secret)
    remote = fresh_remote("leaky")
    remote.add(FirstName="Ada", LastName="Lovelace", Phone="2025550143", StudentId="S1")
    save_contact(engine, {"first_name": "Grace", "last_name": "Hopper", "phone": "2025550181"})
    save_contact(engine, {"first_name": "Alan", "last_name": "Turing", "phone": "2025550199"})
    instance = write_instance(
        tmp_path,
        "leaky",
        remote="leaky",
        extra="max_attempts = 2",
        settings='api_key = { env = "CS_LEAK_KEY" }',
    )
    sync = sync_engine(engine, instance)
    reports = []

    # A platform that quotes the credential back in its per-record rejection.
    remote.reject = lambda item: (
        f"INVALID_SESSION_ID: key {secret} may not write"
        if item.fields.get("FirstName") == "Alan"
        else None
    )
    reports.append(sync.run(instance, "pull"))
    reports.append(sync.run(instance, "push"))
    assert [r.outcome for r in reports] == ["ok", "ok"]
    assert reports[1].counts["failed"] == 1 and reports[1].counts["created"] == 1

    # A plugin bug whose exception carries the key (with a traceback in the log).
    remote.fail_pull = RuntimeError(f"cannot connect with api_key={secret}")
    reports.append(sync.run(instance, "pull"))
    # The platform refusing the credentials, quoting them.
    remote.fail_pull = AuthFailed(f"401: token {secret} expired", retry_after=60)
    reports.append(sync.run(instance, "pull", respect_backoff=False))
    remote.fail_pull = None
    remote.fail_push = Unavailable(f"503 from https://api.example/?key={secret}")
    save_contact(engine, {"email": "ada@example.edu"}, contact_id=_contact_by_phone(engine))
    reports.append(sync.run(instance, "push", respect_backoff=False))
    remote.fail_push = None
    _due_now(engine)
    reports.append(sync.run(instance, "push", respect_backoff=False))  # parks the rejection
    assert [r.outcome for r in reports[2:]] == ["failed", "failed", "failed", "ok"]

    # The failures were recorded, with the secret masked: the checks below are not vacuous.
    with engine.connect() as conn:
        messages = conn.execute(select(SyncLog.__table__.c.message)).scalars().all()
    assert any("***" in m and "INVALID_SESSION_ID" in m for m in messages)
    assert any("***" in m and "401" in m for m in messages)
    logged = log_stream.getvalue()
    assert "cycle_crashed" in logged and "sync_error" in logged
    for line in logged.splitlines():
        json.loads(line)  # one JSON object per line

    captured = capfd.readouterr()
    places = {
        "log lines": logged,
        "stdout": captured.out,
        "stderr": captured.err,
        # What any other handler on the root logger would print (pytest's own included).
        "log records": caplog.text,
        "cycle reports": repr([r.as_dict() for r in reports]),
    }
    for text in every_text_in_the_hub(engine):
        places[text.split("=", 1)[0]] = places.get(text.split("=", 1)[0], "") + text
    leaks = [where for where, text in places.items() if secret in text]
    assert leaks == [], f"the secret leaked to {leaks}"


def _contact_by_phone(engine: Engine, phone: str = "+12025550143") -> str:
    """The hub id of the contact with ``phone``."""
    table = Contact.__table__
    with engine.connect() as conn:
        return conn.execute(select(table.c.id).where(table.c.phone == phone)).scalar_one()


def _due_now(engine: Engine) -> None:
    """Let every outbox back-off pass, as if the retry time had come."""
    with engine.begin() as conn:
        conn.execute(update(Outbox.__table__).values(next_attempt_at=utcnow() - timedelta(1)))
