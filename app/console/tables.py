"""Stored shapes of the console: staff passwords and login sessions.

Keyed by (tenant, staff id) like the staff directory, without a foreign key into it: the
casework package owns the staff table, and the console reaches it through its service.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.scoring.tables import BigIntegerId, UTCDateTime

# Rows without a tenant count as one tenant (a NULL never equals another in a unique
# constraint, so a partial unique index covers those).
UNTAGGED = "tenant IS NULL"


class StaffCredential(Base):
    """A staff member's console password (argon2id), failed attempts and chosen language."""

    __tablename__ = "staff_credential"
    __table_args__ = (
        UniqueConstraint("tenant", "staff_id", name="uq_staff_credential_tenant_staff_id"),
        Index(
            "uq_staff_credential_staff_id_untagged",
            "staff_id",
            unique=True,
            sqlite_where=text(UNTAGGED),
            postgresql_where=text(UNTAGGED),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    staff_id: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    failed_attempts: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locale: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsoleSession(Base):
    """A logged-in browser: the cookie's digest (never the cookie), its CSRF token, expiry."""

    __tablename__ = "console_session"
    __table_args__ = (Index("ix_console_session_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    staff_id: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
