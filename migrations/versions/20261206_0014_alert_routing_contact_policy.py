"""alert routing and the contact policy: staff backups, alert assignments and their
append-only trail; do-not-contact flags and the contacts made

``staff.backups`` lists, in order, who takes a person's customers' alerts while they are away.
``alert_assignment`` says who an alert is routed to and whether they accepted it: one per alert,
and at most one open per customer and reason of a tenant (two partial unique indexes, one for
rows without a tenant). ``assignment_event`` is its trail, append-only: a trigger refuses every
UPDATE on both databases. ``do_not_contact`` flags a customer per tenant (one flag each);
``contact_record`` keeps the contacts made (channel, purpose, outcome) for the caps and the
suppression after negative outcomes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 16:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/casework/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
OPEN_ASSIGNMENT = "status IN ('assigned', 'accepted')"
ASSIGNMENT_STATUSES = "'assigned', 'accepted', 'closed'"
REASONS = "'churn'"
ROUTES = (
    "'relationship_manager', 'backup', 'branch_queue', 'central_queue', 'supervisor', "
    "'reassigned'"
)
EVENT_KINDS = "'routed', 'accepted', 'reassigned', 'escalated', 'timed_out', 'closed'"
APPEND_ONLY = "assignment_event is append-only"
CHANNELS = "'email', 'sms', 'phone', 'letter'"
PURPOSES = "'service', 'retention', 'marketing'"
OUTCOMES = "'positive', 'neutral', 'negative'"


def upgrade() -> None:
    op.add_column(
        "staff", sa.Column("backups", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
    )
    _assignments()
    _contact()


def _contact() -> None:
    op.create_table(
        "do_not_contact",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_do_not_contact")),
        sa.UniqueConstraint(
            "tenant", "customer_id", name="uq_do_not_contact_tenant_customer_id"
        ),
    )
    op.create_index(
        "uq_do_not_contact_customer_id_untagged",
        "do_not_contact",
        ["customer_id"],
        unique=True,
        sqlite_where=sa.text("tenant IS NULL"),
        postgresql_where=sa.text("tenant IS NULL"),
    )
    op.create_table(
        "contact_record",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name=op.f("ck_contact_record_channel")),
        sa.CheckConstraint(f"purpose IN ({PURPOSES})", name=op.f("ck_contact_record_purpose")),
        sa.CheckConstraint(
            f"outcome IS NULL OR outcome IN ({OUTCOMES})", name=op.f("ck_contact_record_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_record")),
    )
    op.create_index(
        "ix_contact_record_tenant_customer_id_at",
        "contact_record",
        ["tenant", "customer_id", "at"],
    )


def _assignments() -> None:
    op.create_table(
        "alert_assignment",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("alert_id", BIGINT_ID, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("branch", sa.String(length=64), nullable=False),
        sa.Column("assignee_id", sa.String(length=64), nullable=True),
        sa.Column("routed_via", sa.String(length=24), nullable=False),
        sa.Column("assigned_at", TIMESTAMP, nullable=False),
        sa.Column("accept_by", TIMESTAMP, nullable=False),
        sa.Column("accepted_at", TIMESTAMP, nullable=True),
        sa.Column("accepted_by", sa.String(length=64), nullable=True),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            f"status IN ({ASSIGNMENT_STATUSES})", name=op.f("ck_alert_assignment_status")
        ),
        sa.CheckConstraint(f"reason IN ({REASONS})", name=op.f("ck_alert_assignment_reason")),
        sa.CheckConstraint(
            f"routed_via IN ({ROUTES})", name=op.f("ck_alert_assignment_routed_via")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_assignment")),
        sa.UniqueConstraint("alert_id", name="uq_alert_assignment_alert_id"),
    )
    op.create_index(
        "uq_alert_assignment_customer_reason_open_untagged",
        "alert_assignment",
        ["customer_id", "reason"],
        unique=True,
        sqlite_where=sa.text(f"{OPEN_ASSIGNMENT} AND tenant IS NULL"),
        postgresql_where=sa.text(f"{OPEN_ASSIGNMENT} AND tenant IS NULL"),
    )
    op.create_index(
        "uq_alert_assignment_tenant_customer_reason_open",
        "alert_assignment",
        ["tenant", "customer_id", "reason"],
        unique=True,
        sqlite_where=sa.text(f"{OPEN_ASSIGNMENT} AND tenant IS NOT NULL"),
        postgresql_where=sa.text(f"{OPEN_ASSIGNMENT} AND tenant IS NOT NULL"),
    )
    op.create_index(
        "ix_alert_assignment_tenant_assignee_status",
        "alert_assignment",
        ["tenant", "assignee_id", "status"],
    )
    op.create_index(
        "ix_alert_assignment_status_accept_by", "alert_assignment", ["status", "accept_by"]
    )
    op.create_table(
        "assignment_event",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("assignment_id", BIGINT_ID, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=True),
        sa.Column("from_value", sa.String(length=64), nullable=True),
        sa.Column("to_value", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(f"kind IN ({EVENT_KINDS})", name=op.f("ck_assignment_event_kind")),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["alert_assignment.id"],
            name=op.f("fk_assignment_event_assignment_id_alert_assignment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_event")),
    )
    op.create_index(
        "ix_assignment_event_assignment_id_id", "assignment_event", ["assignment_id", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION assignment_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER assignment_event_append_only BEFORE UPDATE ON assignment_event "
            "FOR EACH ROW EXECUTE FUNCTION assignment_event_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER assignment_event_append_only BEFORE UPDATE ON assignment_event "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        )


def downgrade() -> None:
    op.drop_index("ix_contact_record_tenant_customer_id_at", table_name="contact_record")
    op.drop_table("contact_record")
    op.drop_index("uq_do_not_contact_customer_id_untagged", table_name="do_not_contact")
    op.drop_table("do_not_contact")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER assignment_event_append_only ON assignment_event")
        op.execute("DROP FUNCTION assignment_event_append_only()")
    else:
        op.execute("DROP TRIGGER assignment_event_append_only")
    op.drop_index("ix_assignment_event_assignment_id_id", table_name="assignment_event")
    op.drop_table("assignment_event")
    op.drop_index("ix_alert_assignment_status_accept_by", table_name="alert_assignment")
    op.drop_index("ix_alert_assignment_tenant_assignee_status", table_name="alert_assignment")
    op.drop_index(
        "uq_alert_assignment_tenant_customer_reason_open", table_name="alert_assignment"
    )
    op.drop_index(
        "uq_alert_assignment_customer_reason_open_untagged", table_name="alert_assignment"
    )
    op.drop_table("alert_assignment")
    op.drop_column("staff", "backups")
