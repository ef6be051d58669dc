"""Stored shapes of API clients (hashed keys only) and idempotency records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.scoring.tables import BigIntegerId, UTCDateTime


class ApiClient(Base):
    """One API key: its SHA-256 digest (never the key), scopes, tenant and limits."""

    __tablename__ = "api_client"

    # Public id (``cl_...``): named in logs, audit lines and rate-limit buckets.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, so an operator can tell keys apart in `cvm clients list`.
    key_prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    tenant: Mapped[str | None] = mapped_column(String(64))
    rate_limit_per_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IdempotencyRecord(Base):
    """The first response to a POST with an ``Idempotency-Key``, encrypted, until it expires."""

    __tablename__ = "idempotency_record"
    __table_args__ = (
        # One record per client and key: two concurrent first tries cannot both claim it.
        UniqueConstraint("client_id", "key_digest"),
        Index("ix_idempotency_record_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64))
    # Digests only: a key may be built from customer ids, which must not reach the database.
    key_digest: Mapped[str] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


api_client_table = cast(Table, ApiClient.__table__)
idempotency_record_table = cast(Table, IdempotencyRecord.__table__)


class AuditRecord(Base):
    """One audit line kept in the database (when ``audit_store`` is on): who, what, when, the
    outcome, and what the handler added (ids already pseudonymised, never bodies or paths)."""

    __tablename__ = "audit_record"
    __table_args__ = (
        Index("ix_audit_record_tenant_id", "tenant", "id"),
        Index("ix_audit_record_tenant_client_id", "tenant", "client", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    tenant: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64))
    auth: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200))
    status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


audit_record_table = cast(Table, AuditRecord.__table__)
