"""lifecycle stages of the customer record: the current stage and its transitions

``customer_stage`` holds each customer's current lifecycle stage (prospect, new, active,
at_risk, dormant, lost) with the verdict of its latest churn assessment and when time alone
would change it (``review_at``: what the sweep looks for);
``customer_stage_transition`` every change (from, to, when it took effect, the rule behind
it, what noticed it). The intake keeps both in the transaction that stores the events; score
by id when a churn assessment crosses the threshold; ``cvm customers sweep`` as time passes.
The tenant is '' when untagged, as in the aggregates.

Customers whose events were stored before this revision get a stage with their next
profile, product or activity event.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 12:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in app/customers/tables.py.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer_stage",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("since", TIMESTAMP, nullable=False),
        sa.Column("at_risk", sa.Boolean(), nullable=False),
        sa.Column("risk_assessed_at", TIMESTAMP, nullable=True),
        sa.Column("review_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_stage")),
        sa.UniqueConstraint("tenant", "customer_id", name="uq_customer_stage_key"),
    )
    op.create_index("ix_customer_stage_review_at", "customer_stage", ["review_at"])
    op.create_table(
        "customer_stage_transition",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("from_stage", sa.String(length=16), nullable=True),
        sa.Column("to_stage", sa.String(length=16), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_stage_transition")),
    )
    op.create_index(
        "ix_customer_stage_transition_key",
        "customer_stage_transition",
        ["tenant", "customer_id", "at"],
    )


def downgrade() -> None:
    op.drop_index("ix_customer_stage_transition_key", table_name="customer_stage_transition")
    op.drop_table("customer_stage_transition")
    op.drop_index("ix_customer_stage_review_at", table_name="customer_stage")
    op.drop_table("customer_stage")
