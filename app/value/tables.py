"""The value domain as stored: tier movements, append-only (the latest is the tier of record);
the pyramid's totals per tier and movements per month; prospects with their rank and segment."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import Boolean, CheckConstraint, Float, Index, Integer, String, Table
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


class TierTotal(Base):
    """One tier's customers of record and their relationship balance in a tenant, stored by
    each re-tiering run: the value pyramid reads these rows, never the book."""

    __tablename__ = "tier_total"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    customers: Mapped[int] = mapped_column(Integer)
    relationship_balance: Mapped[float] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TierMovementMonth(Base):
    """Tier movements of one month of the book and reason in a tenant, counted by each
    re-tiering run (the pyramid's movements over time)."""

    __tablename__ = "tier_movement_month"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    customers: Mapped[int] = mapped_column(Integer)


class Prospect(Base):
    """A prospect's latest prospect score (scored at the prospect stage) as columns, written
    with the score, and its segment under the prospect plan: a segment's page is an index
    range read in rank order."""

    __tablename__ = "prospect"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The stored form (pseudonym when a secret is configured), as in the score.
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    value_if_converted: Mapped[float | None] = mapped_column(Float)
    income: Mapped[float | None] = mapped_column(Float)
    expected_value: Mapped[float | None] = mapped_column(Float)
    conversion_probability: Mapped[float | None] = mapped_column(Float)
    expected_known: Mapped[bool] = mapped_column(Boolean)
    conversion_rank: Mapped[float] = mapped_column(Float)  # conversion_probability or 0
    model_version: Mapped[str | None] = mapped_column(String(32))
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # <value band>.<buying power band> under the plan whose bands ``segmented_by`` digests
    # (None until first segmented). A new score clears ``segmented_by`` only: the segment the
    # row was counted in stays until the value domain segments it again and moves the count.
    segment: Mapped[str | None] = mapped_column(String(65))
    segmented_by: Mapped[str | None] = mapped_column(String(16))


class ProspectSegment(Base):
    """How many of a tenant's prospects are in one segment, kept by each segmenting."""

    __tablename__ = "prospect_segment"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment: Mapped[str] = mapped_column(String(65), primary_key=True)
    prospects: Mapped[int] = mapped_column(Integer)


# The rank: expected value from the highest (unknown last), then the likelier to convert
# (unknown as 0), then the id; plain columns, so both databases index it and a page is a range
# read of the index, per segment or over every segment.
Index(
    "ix_prospect_tenant_segment_rank",
    Prospect.tenant,
    Prospect.segment,
    Prospect.expected_known.desc(),
    Prospect.expected_value.desc(),
    Prospect.conversion_rank.desc(),
    Prospect.customer_id,
)
Index(
    "ix_prospect_tenant_rank",
    Prospect.tenant,
    Prospect.expected_known.desc(),
    Prospect.expected_value.desc(),
    Prospect.conversion_rank.desc(),
    Prospect.customer_id,
)
Index("ix_prospect_tenant_segmented_by", Prospect.tenant, Prospect.segmented_by)

tier_total_table = cast(Table, TierTotal.__table__)
tier_movement_month_table = cast(Table, TierMovementMonth.__table__)
prospect_table = cast(Table, Prospect.__table__)
prospect_segment_table = cast(Table, ProspectSegment.__table__)
