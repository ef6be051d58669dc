"""Stored shapes of campaigns: the campaign as configured, and its members once launched."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.campaigns.states import Arm, CampaignStatus
from app.contact.states import ContactChannel, ContactPurpose, sql_values
from app.db.base import Base
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime


class Campaign(Base):
    """A campaign: its target, action, channel, schedule, caps, budget and control group."""

    __tablename__ = "campaign"
    __table_args__ = (
        # The code ties the trail's campaign_response events to the campaign; '' is untagged.
        UniqueConstraint("tenant", "code", name="uq_campaign_tenant_code"),
        CheckConstraint(f"status IN ({sql_values(CampaignStatus)})", name="status"),
        CheckConstraint(f"channel IN ({sql_values(ContactChannel)})", name="channel"),
        CheckConstraint(f"purpose IN ({sql_values(ContactPurpose)})", name="purpose"),
        CheckConstraint("control_rate > 0 AND control_rate < 1", name="control_rate"),
        CheckConstraint("volume_cap IS NULL OR volume_cap >= 0", name="volume_cap"),
        CheckConstraint("budget IS NULL OR budget >= 0", name="budget"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    # The tenant as the trail's aggregates key it: '' when untagged.
    tenant: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(16))
    # The segment (app/campaigns/schemas.py Segment) as sent.
    target: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # The task whose latest score ranks the audience (a model-targeted campaign); None: none.
    priority_task: Mapped[str | None] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The control group's hash period (YYYY-MM).
    period: Mapped[str] = mapped_column(String(16))
    control_rate: Mapped[float] = mapped_column(Float)
    volume_cap: Mapped[int | None] = mapped_column(Integer)
    budget: Mapped[float | None] = mapped_column(Float)
    cost_per_contact: Mapped[float] = mapped_column(Float)
    baseline_rate: Mapped[float] = mapped_column(Float)
    minimum_lift: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CampaignMember(Base):
    """A customer on a launched campaign's list: its arm, its rank and score at launch, and
    (once collected from the trail) its response, the outcome retraining reads."""

    __tablename__ = "campaign_member"
    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", name="uq_campaign_member_customer"),
        Index("ix_campaign_member_campaign_id_rank", "campaign_id", "rank"),
        CheckConstraint(f"arm IN ({sql_values(Arm)})", name="arm"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigIntegerId, ForeignKey("campaign.id"))
    # The stored form (pseudonym when a secret is configured), as in the trail.
    customer_id: Mapped[str] = mapped_column(String(128))
    arm: Mapped[str] = mapped_column(String(16))
    # 1 = contacted (or held out) first.
    rank: Mapped[int] = mapped_column(Integer)
    # The priority task's score at launch; None when the campaign is not model-targeted.
    score: Mapped[float | None] = mapped_column(Float)
    response: Mapped[str | None] = mapped_column(String(16))
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    converted: Mapped[bool | None] = mapped_column()


campaign_table = cast(Table, Campaign.__table__)
campaign_member_table = cast(Table, CampaignMember.__table__)


class CampaignReportRow(Base):
    """A launched campaign's report as last computed, with the mark of the trail's responses
    it read and its chart in each language drawn so far: the page reads this copy until a
    response arrives (the mark changes) and then computes and stores a new one."""

    __tablename__ = "campaign_report"

    campaign_id: Mapped[int] = mapped_column(
        BigIntegerId, ForeignKey("campaign.id"), primary_key=True
    )
    # The responses read (count:largest id), the response window's end and the bootstrap.
    responses_mark: Mapped[str] = mapped_column(String(128))
    report: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # Language code -> the report's chart (inline SVG) drawn in that language.
    charts: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
