"""needs warnings: an alert's reason (churn, or the need rule that opened it) and suggested
product; one active alert per customer and reason

``alert.reason`` is 'churn' for every existing row. The two partial unique indexes that kept
one active alert per customer (of a tenant) now keep one per customer and reason, so a churn
alert and a need alert of the same customer can be open together. A need alert has no score:
``risk_band``, ``probability`` and ``peak_probability`` become nullable. Alert assignments
accept the new reasons. Down refuses nothing: need alerts are deleted first (their
assignments with them), so the one-per-customer indexes can come back.

Revision ID: 0024
Revises: 0027
Create Date: 2026-12-06 22:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | Sequence[str] | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/alerts/tables.py and app/alerts/states.py.
ACTIVE = "status != 'resolved'"
UNTAGGED = f"{ACTIVE} AND tenant IS NULL"
TAGGED = f"{ACTIVE} AND tenant IS NOT NULL"
REASONS = "'churn', 'idle_inflow', 'deposit_maturing', 'first_salary'"
OLD_REASONS = "'churn'"
NULLABLE = (("risk_band", sa.String(8)), ("probability", sa.Float()), ("peak_probability", sa.Float()))


def _one_per_customer(reason: bool) -> None:
    """The active-alert unique indexes, per customer and reason or per customer."""
    first = ["reason", "customer_id"] if reason else ["customer_id"]
    prefix = "uq_alert_reason_customer_id" if reason else "uq_alert_customer_id"
    op.create_index(
        f"{prefix}_active_untagged",
        "alert",
        first,
        unique=True,
        sqlite_where=sa.text(UNTAGGED),
        postgresql_where=sa.text(UNTAGGED),
    )
    op.create_index(
        "uq_alert_tenant_reason_customer_id_active" if reason else "uq_alert_tenant_customer_id_active",
        "alert",
        ["tenant", *first],
        unique=True,
        sqlite_where=sa.text(TAGGED),
        postgresql_where=sa.text(TAGGED),
    )


def upgrade() -> None:
    op.drop_index("uq_alert_customer_id_active_untagged", table_name="alert")
    op.drop_index("uq_alert_tenant_customer_id_active", table_name="alert")
    with op.batch_alter_table("alert") as batch:
        batch.add_column(
            sa.Column("reason", sa.String(24), server_default=sa.text("'churn'"), nullable=False)
        )
        batch.add_column(sa.Column("product", sa.String(64), nullable=True))
        for name, kind in NULLABLE:
            batch.alter_column(name, existing_type=kind, nullable=True)
        batch.create_check_constraint(op.f("ck_alert_reason"), f"reason IN ({REASONS})")
    _one_per_customer(reason=True)
    with op.batch_alter_table("alert_assignment") as batch:
        batch.drop_constraint(op.f("ck_alert_assignment_reason"), type_="check")
        batch.create_check_constraint(op.f("ck_alert_assignment_reason"), f"reason IN ({REASONS})")


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text(f"DELETE FROM alert_assignment WHERE reason NOT IN ({OLD_REASONS})"))
    bind.execute(sa.text(f"DELETE FROM alert WHERE reason NOT IN ({OLD_REASONS})"))
    with op.batch_alter_table("alert_assignment") as batch:
        batch.drop_constraint(op.f("ck_alert_assignment_reason"), type_="check")
        batch.create_check_constraint(
            op.f("ck_alert_assignment_reason"), f"reason IN ({OLD_REASONS})"
        )
    op.drop_index("uq_alert_reason_customer_id_active_untagged", table_name="alert")
    op.drop_index("uq_alert_tenant_reason_customer_id_active", table_name="alert")
    with op.batch_alter_table("alert") as batch:
        batch.drop_constraint(op.f("ck_alert_reason"), type_="check")
        for name, kind in NULLABLE:
            batch.alter_column(name, existing_type=kind, nullable=False)
        batch.drop_column("product")
        batch.drop_column("reason")
    _one_per_customer(reason=False)
