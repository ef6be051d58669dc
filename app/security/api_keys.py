"""API keys: made once, stored as SHA-256 digests, looked up through a short in-memory cache.

A key is 256 random bits, so a plain SHA-256 digest cannot be reversed or brute-forced; bcrypt
or argon2 slow down guesses of low-entropy *passwords* and would add tens of milliseconds to
every scoring call for no gain here. The digest is the lookup key (a unique index), so an
unknown key costs one index probe, and is then cached as unknown too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from app.security.principal import MAX_TENANT_LENGTH, Principal, parse_scopes
from app.security.tables import ApiClient, api_client_table
from app.security.text import is_storable_id

KEY_PREFIX = "cvm_"
_DISPLAYED = 8  # characters of the key after the prefix that `cvm clients list` shows


def new_api_key() -> str:
    """A fresh key: ``cvm_`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def key_digest(key: str) -> str:
    """What is stored and looked up: the key's SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is one of our keys rather than a JWT."""
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client as `cvm clients list` shows it (no secret)."""

    id: str
    name: str
    key_prefix: str
    scopes: list[str]
    tenant: str | None
    rate_limit_per_s: float | None
    created_at: datetime
    revoked_at: datetime | None


def create_client(
    engine: Engine,
    *,
    name: str,
    scopes: Sequence[str],
    tenant: str | None = None,
    rate_limit_per_s: float | None = None,
) -> tuple[ClientInfo, str]:
    """Register a client; returns it and its key (never stored: it cannot be shown again)."""
    unknown = sorted(set(scopes) - set(parse_scopes(list(scopes))))
    if unknown or not scopes:
        raise ValueError(f"unknown or missing scopes: {', '.join(unknown) or '(none)'}")
    if tenant is not None and not is_storable_id(tenant, max_length=MAX_TENANT_LENGTH):
        raise ValueError(
            f"a tenant has 1 to {MAX_TENANT_LENGTH} characters, none of them control ones"
        )
    key = new_api_key()
    info = ClientInfo(
        id="cl_" + secrets.token_hex(8),
        name=name,
        key_prefix=key[: len(KEY_PREFIX) + _DISPLAYED],
        scopes=sorted(set(scopes)),
        tenant=tenant,
        rate_limit_per_s=rate_limit_per_s,
        created_at=datetime.now(UTC),
        revoked_at=None,
    )
    with engine.begin() as connection:
        connection.execute(
            api_client_table.insert(), [{**asdict(info), "key_digest": key_digest(key)}]
        )
    return info, key


def revoke_client(engine: Engine, *, client_id: str) -> bool:
    """Revoke a client's key (kept for the record); False when no active client has that id."""
    t = api_client_table.c
    with engine.begin() as connection:
        result = connection.execute(
            update(api_client_table)
            .where(t.id == client_id, t.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return bool(result.rowcount == 1)


def list_clients(engine: Engine, *, include_revoked: bool = False) -> list[ClientInfo]:
    """Every client, oldest first."""
    query = select(ApiClient).order_by(ApiClient.created_at, ApiClient.id)
    if not include_revoked:
        query = query.where(ApiClient.revoked_at.is_(None))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        ClientInfo(
            id=r.id,
            name=r.name,
            key_prefix=r.key_prefix,
            scopes=list(r.scopes),
            tenant=r.tenant,
            rate_limit_per_s=r.rate_limit_per_s,
            created_at=r.created_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


def find_active_client(engine: Engine, *, digest: str) -> Principal | None:
    """The active client whose key has this digest, or None."""
    t = api_client_table.c
    query = select(t.id, t.name, t.scopes, t.tenant, t.rate_limit_per_s).where(
        t.key_digest == digest, t.revoked_at.is_(None)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return Principal(
        client_id=row.id,
        name=row.name,
        scopes=parse_scopes(list(row.scopes)),
        tenant=row.tenant,
        rate_limit_per_s=row.rate_limit_per_s,
    )


class KeyCache:
    """Digest -> principal (or None for unknown keys) for ``ttl_s``; bounded, oldest out first.

    Each replica caches on its own, so a revoked key stops working everywhere within ``ttl_s``.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, digest: str) -> tuple[bool, Principal | None]:
        """(found, principal): found is False when the digest is unknown here or expired."""
        entry = self._entries.get(digest)
        if entry is None or entry[0] < self._clock():
            return False, None
        return True, entry[1]

    def put(self, digest: str, principal: Principal | None) -> None:
        """Remember a lookup's result."""
        entries = self._entries
        entries.pop(digest, None)
        if len(entries) >= self.max_entries:
            # Dicts keep insertion order: the first entry is the oldest.
            del entries[next(iter(entries))]
        entries[digest] = (self._clock() + self.ttl_s, principal)

    def clear(self) -> None:
        """Forget everything (tests, or after a bulk revoke)."""
        self._entries.clear()
