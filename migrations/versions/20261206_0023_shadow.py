"""champion/challenger: a challenger in shadow per task, and its scores kept apart

Revision ID: 0023
Revises: 0019
Create Date: 2026-12-06 20:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/modelops/tables.py's ModelShadow and app/scoring/tables.py's ShadowScore.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_shadow",
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("share >= 0 AND share <= 1", name=op.f("ck_model_shadow_share")),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_model_shadow")),
    )
    op.create_table(
        "shadow_score",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("champion_version", sa.String(length=32), nullable=False),
        sa.Column("challenger_version", sa.String(length=32), nullable=False),
        sa.Column("champion_probability", sa.Float(), nullable=False),
        sa.Column("challenger_probability", sa.Float(), nullable=False),
        sa.Column("champion_band", sa.String(length=64), nullable=True),
        sa.Column("challenger_band", sa.String(length=64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_score")),
    )
    op.create_index(op.f("ix_shadow_score_request_id"), "shadow_score", ["request_id"])
    op.create_index("ix_shadow_score_task_created_at", "shadow_score", ["task", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_score_task_created_at", table_name="shadow_score")
    op.drop_index(op.f("ix_shadow_score_request_id"), table_name="shadow_score")
    op.drop_table("shadow_score")
    op.drop_table("model_shadow")
