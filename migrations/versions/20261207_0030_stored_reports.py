"""reports computed once and stored: backtests, drift runs and campaign reports

``model_backtest`` holds each backtest as computed when outcomes are imported (or by ``cvm
backtest``), with the outcome rows it saw; ``model_drift_run`` each drift monitoring run;
``campaign_report`` a launched campaign's report and charts with the mark of the responses it
read. The console reads these instead of computing per view. A partial index on the trail's
campaign responses lets a report (and its mark) read them without the rest of the trail; an
index on outcomes by task, tenant and id makes a backtest's mark an index-only read.
Nothing is converted: the stored reports start empty and are computed on the next import,
command or (campaigns) view.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 00:30:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | Sequence[str] | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/modelops/tables.py, app/campaigns/tables.py and the index of
# app/customers/tables.py.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
CAMPAIGN_RESPONSES = "type = 'campaign_response'"


def upgrade() -> None:
    op.create_table(
        "model_backtest",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("resamples", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("outcome_rows", sa.Integer(), nullable=False),
        sa.Column("last_outcome_id", sa.BigInteger(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("computed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_backtest")),
        sa.UniqueConstraint(
            "scope", "task", "version", "resamples", "seed", name="uq_model_backtest_key"
        ),
    )
    op.create_table(
        "model_drift_run",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("computed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_drift_run")),
    )
    op.create_index(
        "ix_model_drift_run_key", "model_drift_run", ["scope", "task", "version", "id"]
    )
    op.create_table(
        "campaign_report",
        sa.Column("campaign_id", BIGINT_ID, nullable=False),
        sa.Column("responses_mark", sa.String(length=128), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("charts", sa.JSON(), nullable=False),
        sa.Column("computed_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_report_campaign_id_campaign"),
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_report")),
    )
    op.create_index(
        "ix_model_outcome_task_tenant_id", "model_outcome", ["task", "tenant", "id"]
    )
    op.create_index(
        "ix_customer_event_campaign_response",
        "customer_event",
        ["tenant", "occurred_at", "id"],
        sqlite_where=sa.text(CAMPAIGN_RESPONSES),
        postgresql_where=sa.text(CAMPAIGN_RESPONSES),
    )


def downgrade() -> None:
    op.drop_index("ix_customer_event_campaign_response", table_name="customer_event")
    op.drop_index("ix_model_outcome_task_tenant_id", table_name="model_outcome")
    op.drop_table("campaign_report")
    op.drop_index("ix_model_drift_run_key", table_name="model_drift_run")
    op.drop_table("model_drift_run")
    op.drop_table("model_backtest")
