"""running aggregates of the behaviour trail per customer and month, rescoring queue

``customer_month`` holds each customer-month's counters (transactions, logins, website and
branch visits, complaints, campaign contacts, last activity); ``customer_month_latest`` the
latest value of each profile field, product state, balance and complaint status in the
month. The intake updates both in the transaction that stores the events, so features are
served without rescanning events. The tenant is '' when untagged (the key of an upsert).
``rescore_pending`` lists customers to re-assess after a material event, written in the
same transaction and drained by the API's background rescoring.

Events stored before this revision are not aggregated by it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in app/customers/tables.py.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
COUNTERS = (
    "transactions",
    "digital_logins",
    "website_visits",
    "branch_visits",
    "complaints",
    "campaign_contacts",
)


def upgrade() -> None:
    op.create_table(
        "customer_month",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS],
        sa.Column("last_activity_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_month")),
        sa.UniqueConstraint("tenant", "customer_id", "month", name="uq_customer_month_key"),
    )
    op.create_table(
        "customer_month_latest",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("number", sa.Float(precision=53), nullable=True),
        sa.Column("text", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_month_latest")),
        sa.UniqueConstraint(
            "tenant", "customer_id", "month", "kind", "key", name="uq_customer_month_latest_key"
        ),
    )


    op.create_table(
        "rescore_pending",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rescore_pending")),
    )


def downgrade() -> None:
    op.drop_table("rescore_pending")
    op.drop_table("customer_month_latest")
    op.drop_table("customer_month")
