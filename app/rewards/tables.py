"""The rewards domain as stored: an append-only points ledger, one lock row per account, and
each tenant's gift stock.

A balance is the sum of a customer's entries; no entry is ever updated or deleted.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import conv

from app.db.base import Base
from app.scoring.tables import BigIntegerId, UTCDateTime

# The tenant as stored: '' when untagged.
UNTAGGED_KEY = ""


class EntryKind(StrEnum):
    """What a ledger entry records."""

    EARN = "earn"  # points > 0: a lot, pending until available_at
    # refers_to an earn: points < 0, the earn taken back; refers_to a redemption: points >= 0,
    # the gift given back and its points returned to the lots still open.
    REVERSAL = "reversal"
    REDEMPTION = "redemption"  # points < 0: a gift bought
    EXPIRY = "expiry"  # points < 0: what was left of a lot (refers_to) when it expired


KIND_VALUES = ", ".join(f"'{k.value}'" for k in EntryKind)
# Earns credit, reversals go either way (see EntryKind), redemptions and expiries debit
# (an expiry of a spent lot posts 0).
SIGN_RULE = "CASE kind WHEN 'earn' THEN points > 0 WHEN 'reversal' THEN 1 = 1 ELSE points <= 0 END"


class PointsAccount(Base):
    """One row per customer with points: what a posting locks so postings run one at a time."""

    __tablename__ = "points_account"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PointsEntry(Base):
    """One posting to a customer's points; the balance is the sum of the points."""

    __tablename__ = "points_entry"
    __table_args__ = (
        CheckConstraint(f"kind IN ({KIND_VALUES})", name="kind"),
        CheckConstraint(SIGN_RULE, name="sign"),
        # A repeated key changes nothing; expiries and reversals key themselves by the lot.
        UniqueConstraint(
            "tenant",
            "customer_id",
            "idempotency_key",
            name=conv("uq_points_entry_idempotency_key"),
        ),
        Index("ix_points_entry_tenant_customer_id", "tenant", "customer_id", "id"),
        Index("ix_points_entry_tenant_expires_on", "tenant", "expires_on"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    # The stored form (pseudonym when a secret is configured).
    customer_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger())
    idempotency_key: Mapped[str] = mapped_column(String(128))
    refers_to: Mapped[int | None] = mapped_column(
        BigIntegerId, ForeignKey("points_entry.id"), default=None
    )
    gift_id: Mapped[str | None] = mapped_column(String(64), default=None)
    tier: Mapped[str | None] = mapped_column(String(32), default=None)
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    # What the client asked for under its key (service.request_digest), to tell a retry from
    # another posting reusing the key; null for keys the service derives (reversals, expiries).
    request_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Earns only: when the lot stops being pending, and its last day of use (None: never).
    available_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_on: Mapped[date | None] = mapped_column(Date(), default=None)


class GiftStock(Base):
    """A tenant's remaining stock of a gift, seeded from the catalogue on first use."""

    __tablename__ = "gift_stock"
    __table_args__ = (CheckConstraint("remaining >= 0", name="remaining"),)

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    gift_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    remaining: Mapped[int] = mapped_column(Integer())


points_entry_table = cast(Table, PointsEntry.__table__)
