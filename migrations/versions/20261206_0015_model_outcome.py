"""model outcomes: what became of customers, for backtests of past assessments

One row per reported outcome (churn: the day a customer left; prospect: the day they became a
customer), with the day the report is complete through.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 13:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app/modelops/tables.py's ModelOutcome.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_outcome",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("observed_through", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("imported_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_outcome")),
        sa.UniqueConstraint(
            "tenant", "task", "customer_id", "occurred_at", name="uq_model_outcome_event"
        ),
    )
    op.create_index("ix_model_outcome_task_customer", "model_outcome", ["task", "customer_id"])


def downgrade() -> None:
    op.drop_index("ix_model_outcome_task_customer", table_name="model_outcome")
    op.drop_table("model_outcome")
