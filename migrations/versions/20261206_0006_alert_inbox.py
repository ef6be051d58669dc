"""the alert inbox: churn scores that call for an alert, queued with their scores

The score writer no longer runs alert code inside the scores' transaction. It stores, in the
same transaction as a churn score that crosses the alert threshold, a plain row in
``score_alert_candidate``; the alert processor deletes that row in the transaction that records
it on an alert. An index on ``alert(customer_id, resolved_at)`` serves the cooldown's lookup of
a customer's latest resolution.

Downgrading drops candidates not yet processed (run ``cvm alerts process`` first).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in app/scoring/tables.py: a migration must not change when models do.
JSON_DOCUMENT = sa.JSON()
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "score_alert_candidate",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=8), nullable=False),
        sa.Column("reasons", JSON_DOCUMENT, nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_alert_candidate")),
    )
    op.create_index(
        "ix_alert_customer_id_resolved_at", "alert", ["customer_id", "resolved_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_alert_customer_id_resolved_at", table_name="alert")
    op.drop_table("score_alert_candidate")
