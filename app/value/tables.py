"""The value domain as stored: tier movements, append-only; the latest is the tier of record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import CheckConstraint, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.scoring.tables import BigIntegerId, UTCDateTime

# The tenant as the trail's aggregates key it: '' when untagged.
UNTAGGED_KEY = ""


class MovementReason(StrEnum):
    """Why a customer's tier of record changed."""

    INITIAL = "initial"  # first tiered
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    # The tier held is not in the policy applied (a tier renamed or removed).
    RETIRED_TIER = "retired_tier"


REASON_VALUES = ", ".join(f"'{r.value}'" for r in MovementReason)


class TierMovement(Base):
    """One change of a customer's tier of record, from applying a tier policy to the book."""

    __tablename__ = "tier_movement"
    __table_args__ = (
        CheckConstraint(f"reason IN ({REASON_VALUES})", name="reason"),
        Index("ix_tier_movement_tenant_customer_id", "tenant", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    # The stored form (pseudonym when a secret is configured), as in the trail.
    customer_id: Mapped[str] = mapped_column(String(128))
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(16))
    policy_version: Mapped[str] = mapped_column(String(32))
    # The customer's latest month on record when it was tiered (YYYY-MM).
    month: Mapped[str] = mapped_column(String(7))
    run_id: Mapped[str] = mapped_column(String(36))
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime())


tier_movement_table = cast(Table, TierMovement.__table__)
