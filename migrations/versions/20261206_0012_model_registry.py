"""the model registry: registered versions with their status, and an append-only trail

One row per version of a task's model (its manifest and hash, owner, validator, validation
date, restrictions on use) with a status; a partial unique index admits one champion per
task. Every status change is a ``model_transition`` row that triggers keep append-only.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 12:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/modelops/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
STATUSES = ("candidate", "challenger", "champion", "retired")
CHAMPION_ONLY = "status = 'champion'"
APPEND_ONLY = "model_transition is append-only"


def upgrade() -> None:
    op.create_table(
        "model_version",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("validator", sa.String(length=64), nullable=True),
        sa.Column("validated_at", TIMESTAMP, nullable=True),
        sa.Column("restrictions", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES)),
            name=op.f("ck_model_version_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("task", "version", name="uq_model_version_task_version"),
    )
    op.create_index(
        "uq_model_version_champion",
        "model_version",
        ["task"],
        unique=True,
        sqlite_where=sa.text(CHAMPION_ONLY),
        postgresql_where=sa.text(CHAMPION_ONLY),
    )
    op.create_table(
        "model_transition",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_transition")),
    )
    op.create_index("ix_model_transition_task_at", "model_transition", ["task", "at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION model_transition_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER model_transition_append_only BEFORE UPDATE OR DELETE "
            "ON model_transition FOR EACH ROW EXECUTE FUNCTION model_transition_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER model_transition_no_{event.lower()} BEFORE {event} "
                f"ON model_transition BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER model_transition_append_only ON model_transition")
        op.execute("DROP FUNCTION model_transition_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER model_transition_no_{event}")
    op.drop_index("ix_model_transition_task_at", table_name="model_transition")
    op.drop_table("model_transition")
    op.drop_index("uq_model_version_champion", table_name="model_version")
    op.drop_table("model_version")
