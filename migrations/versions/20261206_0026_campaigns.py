"""campaigns: a campaign's target, caps, budget and control group; its members once launched

Revision ID: 0026
Revises: 0028
Create Date: 2026-12-06 22:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | Sequence[str] | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app/campaigns/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
STATUSES = "'draft', 'launched'"
CHANNELS = "'email', 'sms', 'phone', 'letter'"
PURPOSES = "'service', 'retention', 'marketing'"
ARMS = "'treatment', 'control'"


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("priority_task", sa.String(length=32), nullable=True),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=True),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("control_rate", sa.Float(), nullable=False),
        sa.Column("volume_cap", sa.Integer(), nullable=True),
        sa.Column("budget", sa.Float(), nullable=True),
        sa.Column("cost_per_contact", sa.Float(), nullable=False),
        sa.Column("baseline_rate", sa.Float(), nullable=False),
        sa.Column("minimum_lift", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("launched_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_campaign_status")),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name=op.f("ck_campaign_channel")),
        sa.CheckConstraint(f"purpose IN ({PURPOSES})", name=op.f("ck_campaign_purpose")),
        sa.CheckConstraint(
            "control_rate > 0 AND control_rate < 1", name=op.f("ck_campaign_control_rate")
        ),
        sa.CheckConstraint(
            "volume_cap IS NULL OR volume_cap >= 0", name=op.f("ck_campaign_volume_cap")
        ),
        sa.CheckConstraint("budget IS NULL OR budget >= 0", name=op.f("ck_campaign_budget")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
        sa.UniqueConstraint("tenant", "code", name="uq_campaign_tenant_code"),
    )
    op.create_table(
        "campaign_member",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("campaign_id", BIGINT_ID, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("arm", sa.String(length=16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("response", sa.String(length=16), nullable=True),
        sa.Column("responded_at", TIMESTAMP, nullable=True),
        sa.Column("converted", sa.Boolean(), nullable=True),
        sa.CheckConstraint(f"arm IN ({ARMS})", name=op.f("ck_campaign_member_arm")),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaign.id"], name=op.f("fk_campaign_member_campaign_id_campaign")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_member")),
        sa.UniqueConstraint("campaign_id", "customer_id", name="uq_campaign_member_customer"),
    )
    op.create_index(
        "ix_campaign_member_campaign_id_rank", "campaign_member", ["campaign_id", "rank"]
    )


def downgrade() -> None:
    op.drop_index("ix_campaign_member_campaign_id_rank", table_name="campaign_member")
    op.drop_table("campaign_member")
    op.drop_table("campaign")
