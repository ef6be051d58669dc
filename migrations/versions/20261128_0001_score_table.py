"""score table: every score the service returned, with its reasons and inputs

Revision ID: 0001
Revises:
Create Date: 2026-11-28 23:40:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in app/db/tables.py: a migration must not change when models do.
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "score",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("outputs", JSON_DOCUMENT, nullable=False),
        sa.Column("reasons", JSON_DOCUMENT, nullable=False),
        sa.Column("features", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score")),
    )
    op.create_index(op.f("ix_score_request_id"), "score", ["request_id"], unique=False)
    op.create_index(
        "ix_score_customer_id_task_created_at",
        "score",
        ["customer_id", "task", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_score_customer_id_task_created_at", table_name="score")
    op.drop_index(op.f("ix_score_request_id"), table_name="score")
    op.drop_table("score")
