"""casework: the staff directory and its absences

Staff are keyed by the bank's id, unique per tenant (a partial unique index covers rows
without a tenant); a credential (API client id or 'jwt:' subject) acts as one staff member
at most.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-06 08:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types and predicates in app/casework/tables.py: a migration must not
# change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UNTAGGED = "tenant IS NULL"
SEVERITIES = "'low', 'medium', 'high'"


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("branch", sa.String(length=64), nullable=False),
        sa.Column("supervisor_id", sa.String(length=64), nullable=True),
        sa.Column("max_severity", sa.String(length=16), nullable=False),
        sa.Column("max_amount", sa.Float(), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(f"max_severity IN ({SEVERITIES})", name=op.f("ck_staff_max_severity")),
        sa.CheckConstraint("max_amount >= 0", name=op.f("ck_staff_max_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("tenant", "staff_id", name="uq_staff_tenant_staff_id"),
    )
    op.create_index(
        "uq_staff_staff_id_untagged",
        "staff",
        ["staff_id"],
        unique=True,
        sqlite_where=sa.text(UNTAGGED),
        postgresql_where=sa.text(UNTAGGED),
    )
    op.create_index("uq_staff_principal", "staff", ["principal"], unique=True)
    op.create_index("ix_staff_tenant_branch", "staff", ["tenant", "branch"])
    op.create_table(
        "staff_absence",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("staff_pk", BIGINT_ID, nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_staff_absence_period")),
        sa.ForeignKeyConstraint(
            ["staff_pk"],
            ["staff.id"],
            name=op.f("fk_staff_absence_staff_pk_staff"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_absence")),
    )
    op.create_index("ix_staff_absence_staff_pk_ends_on", "staff_absence", ["staff_pk", "ends_on"])


def downgrade() -> None:
    op.drop_index("ix_staff_absence_staff_pk_ends_on", table_name="staff_absence")
    op.drop_table("staff_absence")
    op.drop_index("ix_staff_tenant_branch", table_name="staff")
    op.drop_index("uq_staff_principal", table_name="staff")
    op.drop_index("uq_staff_staff_id_untagged", table_name="staff")
    op.drop_table("staff")
