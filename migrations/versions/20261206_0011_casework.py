"""casework: the staff directory, complaints and their append-only audit trail

Staff are keyed by the bank's id, unique per tenant (a partial unique index covers rows
without a tenant); a credential (API client id or 'jwt:' subject) acts as one staff member
at most. A complaint carries its owner, state and clock; ``case_event`` is its audit trail,
append-only: a trigger refuses every UPDATE on both databases (rows leave only with their
complaint, by the retention purge).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types and predicates in app/casework/tables.py: a migration must not
# change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UNTAGGED = "tenant IS NULL"
SEVERITIES = "'low', 'medium', 'high'"
STATUSES = "'received', 'acknowledged', 'in_progress', 'responded', 'closed', 'rejected'"
OPEN_COMPLAINT = "status NOT IN ('closed', 'rejected')"
EVENT_KINDS = ", ".join(
    f"'{kind}'"
    for kind in (
        "created",
        "assigned",
        "transfer_requested",
        "transferred",
        "escalated",
        "acknowledged",
        "started",
        "paused",
        "resumed",
        "facts_added",
        "extended",
        "responded",
        "closed",
        "rejected",
        "warned_owner",
        "warned_supervisor",
    )
)
APPEND_ONLY = "case_event is append-only"


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

    _complaints()


def _complaints() -> None:
    op.create_table(
        "complaint",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("amount_at_stake", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("implicated", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("branch", sa.String(length=64), nullable=False),
        sa.Column("received_by", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("pending_owner_id", sa.String(length=64), nullable=True),
        sa.Column("pending_reason", sa.Text(), nullable=True),
        sa.Column("profile", sa.String(length=32), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("clock_started_at", TIMESTAMP, nullable=False),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("ceiling_at", TIMESTAMP, nullable=False),
        sa.Column("milestones", sa.JSON(), nullable=False),
        sa.Column("complex_case", sa.Boolean(), nullable=False),
        sa.Column("extensions", sa.Integer(), nullable=False),
        sa.Column("paused_at", TIMESTAMP, nullable=True),
        sa.Column("pause_reason", sa.String(length=32), nullable=True),
        sa.Column("paused_s", sa.Float(), nullable=False),
        sa.Column("warned_owner_at", TIMESTAMP, nullable=True),
        sa.Column("warned_supervisor_at", TIMESTAMP, nullable=True),
        sa.Column("overdue_at", TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("root_cause", sa.String(length=64), nullable=True),
        sa.Column("product_category", sa.String(length=64), nullable=True),
        sa.Column("redress_amount", sa.Float(), nullable=True),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_complaint_status")),
        sa.CheckConstraint(f"severity IN ({SEVERITIES})", name=op.f("ck_complaint_severity")),
        sa.CheckConstraint("amount_at_stake >= 0", name=op.f("ck_complaint_amount_at_stake")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaint")),
    )
    op.create_index("ix_complaint_tenant_owner_id", "complaint", ["tenant", "owner_id"])
    op.create_index("ix_complaint_tenant_customer_id", "complaint", ["tenant", "customer_id"])
    op.create_index(
        "ix_complaint_due_at_open",
        "complaint",
        ["due_at"],
        sqlite_where=sa.text(OPEN_COMPLAINT),
        postgresql_where=sa.text(OPEN_COMPLAINT),
    )
    op.create_index("ix_complaint_closed_at", "complaint", ["closed_at"])
    op.create_table(
        "case_event",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("complaint_id", BIGINT_ID, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=True),
        sa.Column("from_value", sa.String(length=64), nullable=True),
        sa.Column("to_value", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(f"kind IN ({EVENT_KINDS})", name=op.f("ck_case_event_kind")),
        sa.ForeignKeyConstraint(
            ["complaint_id"],
            ["complaint.id"],
            name=op.f("fk_case_event_complaint_id_complaint"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_event")),
    )
    op.create_index("ix_case_event_complaint_id_id", "case_event", ["complaint_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION case_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER case_event_append_only BEFORE UPDATE ON case_event "
            "FOR EACH ROW EXECUTE FUNCTION case_event_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER case_event_append_only BEFORE UPDATE ON case_event "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER case_event_append_only ON case_event")
        op.execute("DROP FUNCTION case_event_append_only()")
    else:
        op.execute("DROP TRIGGER case_event_append_only")
    op.drop_index("ix_case_event_complaint_id_id", table_name="case_event")
    op.drop_table("case_event")
    op.drop_index("ix_complaint_closed_at", table_name="complaint")
    op.drop_index("ix_complaint_due_at_open", table_name="complaint")
    op.drop_index("ix_complaint_tenant_customer_id", table_name="complaint")
    op.drop_index("ix_complaint_tenant_owner_id", table_name="complaint")
    op.drop_table("complaint")
    op.drop_index("ix_staff_absence_staff_pk_ends_on", table_name="staff_absence")
    op.drop_table("staff_absence")
    op.drop_index("ix_staff_tenant_branch", table_name="staff")
    op.drop_index("uq_staff_principal", table_name="staff")
    op.drop_index("uq_staff_staff_id_untagged", table_name="staff")
    op.drop_table("staff")
