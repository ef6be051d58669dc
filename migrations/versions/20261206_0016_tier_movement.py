"""tier movements: every change of a customer's tier of record under the bank's tier policy

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 14:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app/value/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
REASONS = ("initial", "upgrade", "downgrade", "retired_tier")


def upgrade() -> None:
    op.create_table(
        "tier_movement",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("from_tier", sa.String(length=32), nullable=True),
        sa.Column("to_tier", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("policy_version", sa.String(length=32), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("moved_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "reason IN ({})".format(", ".join(f"'{r}'" for r in REASONS)),
            name=op.f("ck_tier_movement_reason"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_movement")),
    )
    op.create_index(
        "ix_tier_movement_tenant_customer_id",
        "tier_movement",
        ["tenant", "customer_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_tier_movement_tenant_customer_id", table_name="tier_movement")
    op.drop_table("tier_movement")
