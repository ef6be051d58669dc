"""Idempotency-Key: the first response to a POST is kept, and a retry gets it back.

Records live in the database so every replica sees them. A unique constraint on (client, key)
decides which of two concurrent first tries runs; the other gets 409 until the first finishes.
A record is keyed and encrypted with material derived from the key itself (and the deployment
secret when one is set): the database holds neither the key nor a readable response, since a
response echoes customer ids that pseudonymisation keeps out of the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.security.tables import idempotency_record_table

MAX_KEY_LENGTH = 255
_NONCE = 12


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """What a client's Idempotency-Key yields: the lookup digest and the record's cipher key."""

    digest: str
    cipher_key: bytes

    @classmethod
    def derive(cls, *, secret: bytes, client_id: str, key: str) -> KeyMaterial:
        """Derive both from the deployment secret, the client and the key."""
        cipher_key = hmac.digest(secret, f"{client_id}\x00{key}".encode(), "sha256")
        digest = hashlib.sha256(b"cvm-idempotency-lookup\x00" + cipher_key).hexdigest()
        return cls(digest=digest, cipher_key=cipher_key)

    def request_digest(self, method: str, path: str, body: bytes) -> str:
        """A keyed fingerprint of the request, to tell a retry from another request."""
        mac = hmac.new(self.cipher_key, f"{method} {path}\n".encode(), hashlib.sha256)
        mac.update(body)
        return mac.hexdigest()

    def seal(self, content_type: str, body: bytes) -> bytes:
        """Encrypt a response for storage."""
        nonce = os.urandom(_NONCE)
        plain = content_type.encode() + b"\n" + body
        return nonce + AESGCM(self.cipher_key).encrypt(nonce, plain, self.digest.encode())

    def open(self, sealed: bytes) -> tuple[str, bytes] | None:
        """Decrypt a stored response; None if it was not sealed with this key."""
        try:
            plain = AESGCM(self.cipher_key).decrypt(
                sealed[:_NONCE], sealed[_NONCE:], self.digest.encode()
            )
        except (InvalidTag, ValueError):
            return None
        content_type, _, body = plain.partition(b"\n")
        return content_type.decode(), body


@dataclass(frozen=True, slots=True)
class IdempotentRun:
    """A request running under an Idempotency-Key, as its handler sees it: what the writer
    stores with the request's rows so that a retry after a 5xx finds the first result."""

    material: KeyMaterial
    request_digest: str


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a key: run the request, replay, or refuse."""

    outcome: Literal["run", "replay", "mismatch", "in_progress"]
    record_id: int | None = None
    status: int | None = None
    response: bytes | None = None


class IdempotencyStore:
    """Claims, completes, releases and purges records (sync; called from a worker thread)."""

    def __init__(self, engine: Engine, *, ttl_s: float, lock_s: float) -> None:
        self.engine = engine
        self.ttl = timedelta(seconds=ttl_s)
        self.lock = timedelta(seconds=lock_s)

    def claim(self, *, client_id: str, key_digest: str, request_digest: str) -> Claim:
        """Take the key for this request, or say what to answer instead."""
        now = datetime.now(UTC)
        t = idempotency_record_table.c
        values = {
            "client_id": client_id,
            "key_digest": key_digest,
            "request_digest": request_digest,
            "state": "in_progress",
            "response_status": None,
            "response": None,
            "created_at": now,
            "locked_until": now + self.lock,
            "expires_at": now + self.ttl,
        }
        with self.engine.begin() as connection:
            insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
            inserted = connection.execute(
                insert(idempotency_record_table)
                .on_conflict_do_nothing(index_elements=["client_id", "key_digest"])
                .returning(t.id),
                [values],
            ).scalar()
            if inserted is not None:
                return Claim("run", record_id=int(inserted))
            # Taken: an expired record, or an abandoned run (its replica died), is taken over by
            # one conditional UPDATE, so two retries cannot both take it.
            taken_over = connection.execute(
                update(idempotency_record_table)
                .where(
                    t.client_id == client_id,
                    t.key_digest == key_digest,
                    (t.expires_at <= now) | ((t.state == "in_progress") & (t.locked_until <= now)),
                )
                .values({k: v for k, v in values.items() if k not in ("client_id", "key_digest")})
                .returning(t.id)
            ).scalar()
            if taken_over is not None:
                return Claim("run", record_id=int(taken_over))
            row = connection.execute(
                select(t.request_digest, t.state, t.response_status, t.response).where(
                    t.client_id == client_id, t.key_digest == key_digest
                )
            ).first()
        if row is None:  # deleted between the statements (a failed first try): try again
            return self.claim(
                client_id=client_id, key_digest=key_digest, request_digest=request_digest
            )
        if row.request_digest != request_digest:
            return Claim("mismatch")
        if row.state != "done":
            return Claim("in_progress")
        return Claim("replay", status=row.response_status, response=row.response)

    def complete(self, *, record_id: int, status: int, response: bytes) -> None:
        """Keep the response of a finished run."""
        t = idempotency_record_table.c
        with self.engine.begin() as connection:
            connection.execute(
                update(idempotency_record_table)
                .where(t.id == record_id, t.state == "in_progress")
                .values(state="done", response_status=status, response=response)
            )

    def release(self, *, record_ids: Sequence[int]) -> None:
        """Forget runs that failed (5xx, timeout, crash): a retry runs the request again."""
        t = idempotency_record_table.c
        with self.engine.begin() as connection:
            connection.execute(
                delete(idempotency_record_table).where(
                    t.id.in_(record_ids), t.state == "in_progress"
                )
            )

    def purge_expired(self) -> int:
        """Delete expired records; returns how many."""
        t = idempotency_record_table.c
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(idempotency_record_table).where(t.expires_at <= datetime.now(UTC))
            )
        return int(result.rowcount)
