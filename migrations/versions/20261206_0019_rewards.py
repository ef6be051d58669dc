"""rewards: the append-only points ledger, its account lock rows and each tenant's gift stock

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-06 20:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app/rewards/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
KINDS = ("earn", "reversal", "redemption", "expiry")


def upgrade() -> None:
    op.create_table(
        "points_account",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "customer_id", name=op.f("pk_points_account")),
    )
    op.create_table(
        "points_entry",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("refers_to", BIGINT_ID, nullable=True),
        sa.Column("gift_id", sa.String(length=64), nullable=True),
        sa.Column("tier", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("available_at", TIMESTAMP, nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.CheckConstraint(
            "kind IN ({})".format(", ".join(f"'{k}'" for k in KINDS)),
            name=op.f("ck_points_entry_kind"),
        ),
        sa.CheckConstraint("(kind = 'earn') = (points > 0)", name=op.f("ck_points_entry_sign")),
        sa.ForeignKeyConstraint(
            ["refers_to"],
            ["points_entry.id"],
            name=op.f("fk_points_entry_refers_to_points_entry"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_entry")),
        sa.UniqueConstraint(
            "tenant", "customer_id", "idempotency_key", name=op.f("uq_points_entry_idempotency_key")
        ),
    )
    op.create_index(
        "ix_points_entry_tenant_customer_id", "points_entry", ["tenant", "customer_id", "id"]
    )
    op.create_index("ix_points_entry_tenant_expires_on", "points_entry", ["tenant", "expires_on"])
    op.create_table(
        "gift_stock",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("gift_id", sa.String(length=64), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_gift_stock_remaining")),
        sa.PrimaryKeyConstraint("tenant", "gift_id", name=op.f("pk_gift_stock")),
    )


def downgrade() -> None:
    op.drop_table("gift_stock")
    op.drop_index("ix_points_entry_tenant_expires_on", table_name="points_entry")
    op.drop_index("ix_points_entry_tenant_customer_id", table_name="points_entry")
    op.drop_table("points_entry")
    op.drop_table("points_account")
