"""one active alert per customer id and tenant, not per customer id

With tenant isolation, two banks may use the same customer id. The unique index allowed one
active alert per id across all tenants, so a second bank's at-risk customer silently got no
alert while the first bank's was open. Now: one active alert per id among the rows of each
tenant, and one among the rows without a tenant (two partial unique indexes: a NULL never
equals another in an index), plus a plain index for lookups by customer id.

Downgrading fails if two tenants hold active alerts on one customer id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 05:30:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the predicates in app/db/alert_tables.py.
ACTIVE_ALERT = "status != 'resolved'"
ACTIVE_UNTAGGED_ALERT = f"{ACTIVE_ALERT} AND tenant IS NULL"
ACTIVE_TAGGED_ALERT = f"{ACTIVE_ALERT} AND tenant IS NOT NULL"


def _partial_index(name: str, columns: list[str], where: str, *, unique: bool) -> None:
    op.create_index(
        name,
        "alert",
        columns,
        unique=unique,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    _partial_index("ix_alert_customer_id_active", ["customer_id"], ACTIVE_ALERT, unique=False)
    _partial_index(
        "uq_alert_customer_id_active_untagged",
        ["customer_id"],
        ACTIVE_UNTAGGED_ALERT,
        unique=True,
    )
    _partial_index(
        "uq_alert_tenant_customer_id_active",
        ["tenant", "customer_id"],
        ACTIVE_TAGGED_ALERT,
        unique=True,
    )
    op.drop_index("uq_alert_customer_id_active", table_name="alert")


def downgrade() -> None:
    _partial_index("uq_alert_customer_id_active", ["customer_id"], ACTIVE_ALERT, unique=True)
    op.drop_index("uq_alert_tenant_customer_id_active", table_name="alert")
    op.drop_index("uq_alert_customer_id_active_untagged", table_name="alert")
    op.drop_index("ix_alert_customer_id_active", table_name="alert")
