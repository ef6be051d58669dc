"""churn alerts, their history, the notification outbox and e-mail digest entries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in app/db/tables.py: a migration must not change when models do.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
ACTIVE_ALERT = "status != 'resolved'"


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("risk_band", sa.String(length=8), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("peak_probability", sa.Float(), nullable=False),
        sa.Column("above_threshold", sa.Boolean(), nullable=False),
        sa.Column("reasons", JSON_DOCUMENT, nullable=False),
        sa.Column("actions", JSON_DOCUMENT, nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("score_count", sa.Integer(), nullable=False),
        sa.Column("opened_request_id", sa.String(length=64), nullable=False),
        sa.Column("last_request_id", sa.String(length=64), nullable=False),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.Column("last_scored_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", TIMESTAMP, nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved')", name=op.f("ck_alert_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
    )
    op.create_index(
        "uq_alert_customer_id_active",
        "alert",
        ["customer_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE_ALERT),
        postgresql_where=sa.text(ACTIVE_ALERT),
    )
    op.create_index("ix_alert_status_opened_at", "alert", ["status", "opened_at"], unique=False)
    op.create_index("ix_alert_owner", "alert", ["owner"], unique=False)

    op.create_table(
        "alert_event",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("alert_id", BIGINT_ID, nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("risk_band", sa.String(length=8), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
            name=op.f("fk_alert_event_alert_id_alert"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_event")),
    )
    op.create_index(
        "ix_alert_event_alert_id_id", "alert_event", ["alert_id", "id"], unique=False
    )

    op.create_table(
        "outbox_message",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("alert_id", BIGINT_ID, nullable=True),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("claimed_until", TIMESTAMP, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
            name=op.f("fk_outbox_message_alert_id_alert"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
    )
    op.create_index(
        "ix_outbox_message_status_next_attempt_at",
        "outbox_message",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        "ix_outbox_message_alert_id", "outbox_message", ["alert_id"], unique=False
    )

    op.create_table(
        "outbox_attempt",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("dispatcher", sa.String(length=64), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["outbox_message.id"],
            name=op.f("fk_outbox_attempt_message_id_outbox_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_attempt")),
    )
    op.create_index(
        "ix_outbox_attempt_message_id", "outbox_attempt", ["message_id"], unique=False
    )

    op.create_table(
        "digest_entry",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("alert_id", BIGINT_ID, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
            name=op.f("fk_digest_entry_alert_id_alert"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_entry")),
    )
    op.create_index(
        "ix_digest_entry_message_id_recipient",
        "digest_entry",
        ["message_id", "recipient"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_digest_entry_message_id_recipient", table_name="digest_entry")
    op.drop_table("digest_entry")
    op.drop_index("ix_outbox_attempt_message_id", table_name="outbox_attempt")
    op.drop_table("outbox_attempt")
    op.drop_index("ix_outbox_message_alert_id", table_name="outbox_message")
    op.drop_index("ix_outbox_message_status_next_attempt_at", table_name="outbox_message")
    op.drop_table("outbox_message")
    op.drop_index("ix_alert_event_alert_id_id", table_name="alert_event")
    op.drop_table("alert_event")
    op.drop_index("ix_alert_owner", table_name="alert")
    op.drop_index("ix_alert_status_opened_at", table_name="alert")
    op.drop_index("uq_alert_customer_id_active", table_name="alert")
    op.drop_table("alert")
