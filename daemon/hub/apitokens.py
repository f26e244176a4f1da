"""HTTP API tokens: who may call the API, and with which role.

The hub keeps only the SHA-256 of a token, never the token: it is printed once by
``contactsync tokens create`` and cannot be read back, from the database or anywhere else. A
token is 32 random bytes, so a plain hash is enough (no salt or slow hash is needed against
guessing); the stored hash is compared in constant time all the same. A revoked token keeps
its row, so ``tokens list`` still shows who had access and until when.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Column, Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from daemon.hub.store import UTCDateTime, utcnow

TOKEN_PREFIX = "cst_"
"""Marks a contactsync token, so a secret scanner (or a reader) knows one when it sees it."""
LAST_USED_EVERY = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token: not a write per request."""
MAX_NAME = 64


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    READ = "read"  # view contacts, fields, the sync log
    STAFF = "staff"  # also edit contacts and act on the sync log
    ADMIN = "admin"  # also instances and tokens

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may call a route that needs ``needed``."""
        return self.rank >= needed.rank


class ApiToken(SQLModel, table=True):
    """One API token: its name, its role and the hash of its secret."""

    __tablename__ = "api_tokens"

    name: str = Field(primary_key=True, max_length=MAX_NAME)
    role: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


_TOKEN = ApiToken.__table__


class TokenError(Exception):
    """A token command the hub refuses (a name taken, an unknown name)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed or authenticated: never its secret."""

    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_token(token: str) -> str:
    """The stored form of ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(engine: Engine, name: str, role: Role) -> str:
    """Make a token called ``name``; return it (the only time it exists outside a client)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise TokenError(f"a token name has 1 to {MAX_NAME} printable characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            conn.execute(
                _TOKEN.insert().values(
                    name=name, role=str(role), token_hash=hash_token(token), created_at=utcnow()
                )
            )
    except IntegrityError:
        # The name is the key, so the database decides: two `tokens create` of one name at
        # once (a look first, then an insert, would let both look) end as one token and this
        # refusal. A revoked token keeps its name, so the list still says who had access.
        raise TokenError(
            f"a token named {name!r} exists (revoked ones too); pick another"
        ) from None
    return token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """Every token, by name."""
    with engine.connect() as conn:
        rows = conn.execute(select(_TOKEN).order_by(_TOKEN.c.name)).mappings().all()
    return [_info(r) for r in rows]


def revoke_token(engine: Engine, name: str) -> TokenInfo:
    """Revoke ``name`` at once (a second revoke keeps the first time); return it."""
    name = name.strip()  # as create_token stored it
    with engine.begin() as conn:
        row = conn.execute(select(_TOKEN).where(_TOKEN.c.name == name)).mappings().first()
        if row is None:
            raise TokenError(f"no token named {name!r}")
        if row["revoked_at"] is None:
            conn.execute(update(_TOKEN).where(_TOKEN.c.name == name).values(revoked_at=utcnow()))
        row = conn.execute(select(_TOKEN).where(_TOKEN.c.name == name)).mappings().one()
    return _info(row)


def authenticate(engine: Engine, token: str) -> TokenInfo | None:
    """The live token ``token`` is, or ``None`` (unknown or revoked)."""
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(select(_TOKEN).where(_TOKEN.c.token_hash == digest)).mappings().first()
    # The lookup is by hash (of a random secret), so its timing says nothing about the token;
    # the constant-time compare keeps it so should the lookup ever change.
    if row is None or not hmac.compare_digest(row["token_hash"], digest):
        return None
    if row["revoked_at"] is not None:
        return None
    now = utcnow()
    last = row["last_used_at"]
    if last is None or now - last >= LAST_USED_EVERY:
        with engine.begin() as conn:
            conn.execute(
                update(_TOKEN).where(_TOKEN.c.name == row["name"]).values(last_used_at=now)
            )
    return _info(row)


def live_token(engine: Engine, name: str) -> TokenInfo | None:
    """The token called ``name`` while it is live, or ``None`` (unknown or revoked): what a
    staff page's session is re-checked against on every request, so revoking a token ends
    its sessions at once."""
    with engine.connect() as conn:
        row = conn.execute(select(_TOKEN).where(_TOKEN.c.name == name)).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    return _info(row)


class SessionKey(SQLModel, table=True):
    """The hub's key that signs the staff pages' session cookies: one row, made on first
    use. It lives in the hub (never in config or logs), so every node serving the pages
    reads the same one and a session survives a restart."""

    __tablename__ = "web_session_key"

    id: int = Field(default=1, primary_key=True)
    key: str = Field(max_length=128)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


_SESSION_KEY = SessionKey.__table__


def session_key(engine: Engine) -> bytes:
    """The hub's session-signing key, made (32 random bytes) the first time it is asked for.
    Two nodes racing to make it both end up with the one that was stored first."""
    with engine.connect() as conn:
        found = conn.execute(select(_SESSION_KEY.c.key).where(_SESSION_KEY.c.id == 1)).scalar()
    if found is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    _SESSION_KEY.insert().values(
                        id=1, key=secrets.token_hex(32), created_at=utcnow()
                    )
                )
        except IntegrityError:
            pass  # another node stored its key first: use that one
        with engine.connect() as conn:
            found = conn.execute(
                select(_SESSION_KEY.c.key).where(_SESSION_KEY.c.id == 1)
            ).scalar_one()
    return bytes.fromhex(found)


def _info(row: object) -> TokenInfo:
    r = dict(row)  # type: ignore[call-overload]
    return TokenInfo(
        r["name"], Role(r["role"]), r["created_at"], r["last_used_at"], r["revoked_at"]
    )
