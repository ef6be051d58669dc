"""value summaries: the pyramid's per-tier totals and monthly movement counts, stored by each
re-tiering run (tier_total, tier_movement_month), and each prospect's latest prospect score as
columns with its segment (prospect) and the count of each segment (prospect_segment);
backfilled from the rows already stored (the segments by the app's first read: they need the
prospect plan)

Revision ID: 0029
Revises: 0024
Create Date: 2026-12-07 00:40:00 UTC
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | Sequence[str] | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/value/tables.py and of the aggregates app/value/service.py stores: a
# migration must not change when the models do.
TIMESTAMP = sa.DateTime(timezone=True)
RELATIONSHIP_PRODUCTS = (
    "current_account",
    "savings",
    "term_deposit",
    "investment_fund",
    "brokerage",
    "insurance",
    "pension",
)
BATCH = 5_000

TIER_TOTALS = """
INSERT INTO tier_total (tenant, tier, customers, relationship_balance, computed_at)
SELECT recorded.tenant, recorded.to_tier, count(*), coalesce(sum(balance.total), 0.0), :now
FROM (
    SELECT m.tenant, m.customer_id, m.to_tier
    FROM tier_movement m
    JOIN (SELECT max(id) AS id FROM tier_movement GROUP BY tenant, customer_id) latest
      ON m.id = latest.id
) recorded
LEFT JOIN (
    SELECT tenant, customer_id, sum(coalesce(number, 0.0)) AS total
    FROM (
        SELECT tenant, customer_id, number, row_number() OVER (
            PARTITION BY tenant, customer_id, key ORDER BY month DESC, occurred_at DESC, id DESC
        ) AS newest
        FROM customer_month_latest
        WHERE kind = 'balance' AND key IN ({products})
    ) ranked
    WHERE newest = 1
    GROUP BY tenant, customer_id
) balance ON balance.tenant = recorded.tenant AND balance.customer_id = recorded.customer_id
GROUP BY recorded.tenant, recorded.to_tier
""".format(products=", ".join(f"'{p}'" for p in RELATIONSHIP_PRODUCTS))

MOVEMENT_MONTHS = """
INSERT INTO tier_movement_month (tenant, month, reason, customers)
SELECT tenant, month, reason, count(*) FROM tier_movement GROUP BY tenant, month, reason
"""

LATEST_PROSPECT_SCORES = """
SELECT s.tenant, s.customer_id, s.outputs, s.features, s.model_version, s.created_at
FROM score s
JOIN (
    SELECT max(id) AS id FROM score
    WHERE task = 'prospect' AND stage = 'prospect'
    GROUP BY tenant, customer_id
) latest ON s.id = latest.id
"""

INSERT_PROSPECT = """
INSERT INTO prospect (tenant, customer_id, value_if_converted, income, expected_value,
    conversion_probability, expected_known, conversion_rank, model_version, scored_at)
VALUES (:tenant, :customer_id, :value_if_converted, :income, :expected_value,
    :conversion_probability, :expected_known, :conversion_rank, :model_version, :scored_at)
"""


def _number(document: dict[str, Any], name: str) -> float | None:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _document(raw: Any) -> dict[str, Any]:
    """A JSON column as read: parsed already (PostgreSQL json) or text (SQLite)."""
    found = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return found if isinstance(found, dict) else {}


def _prospect(row: sa.Row[Any]) -> dict[str, Any]:
    outputs, features = _document(row.outputs), _document(row.features)
    expected = _number(outputs, "expected_value")
    conversion = _number(outputs, "conversion_probability")
    return {
        "tenant": "" if row.tenant is None else row.tenant,
        "customer_id": row.customer_id,
        "value_if_converted": _number(outputs, "value_if_converted"),
        "income": _number(features, "income"),
        "expected_value": expected,
        "conversion_probability": conversion,
        "expected_known": expected is not None,
        "conversion_rank": 0.0 if conversion is None else conversion,
        "model_version": row.model_version,
        # As stored: SQLite's text and PostgreSQL's timestamptz both go back unchanged.
        "scored_at": row.created_at,
    }


def _create_tables() -> None:
    op.create_table(
        "tier_total",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("relationship_balance", sa.Float(), nullable=False),
        sa.Column("computed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "tier", name=op.f("pk_tier_total")),
    )
    op.create_table(
        "tier_movement_month",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "month", "reason", name=op.f("pk_tier_movement_month")),
    )
    op.create_table(
        "prospect",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("value_if_converted", sa.Float(), nullable=True),
        sa.Column("income", sa.Float(), nullable=True),
        sa.Column("expected_value", sa.Float(), nullable=True),
        sa.Column("conversion_probability", sa.Float(), nullable=True),
        sa.Column("expected_known", sa.Boolean(), nullable=False),
        sa.Column("conversion_rank", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("scored_at", TIMESTAMP, nullable=False),
        sa.Column("segment", sa.String(length=65), nullable=True),
        sa.Column("segmented_by", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "customer_id", name=op.f("pk_prospect")),
    )
    op.create_table(
        "prospect_segment",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=65), nullable=False),
        sa.Column("prospects", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "segment", name=op.f("pk_prospect_segment")),
    )
    rank = [sa.text("expected_known DESC"), sa.text("expected_value DESC")]
    rank += [sa.text("conversion_rank DESC"), sa.text("customer_id")]
    op.create_index(
        "ix_prospect_tenant_segment_rank", "prospect", [sa.text("tenant"), sa.text("segment"), *rank]
    )
    op.create_index("ix_prospect_tenant_rank", "prospect", [sa.text("tenant"), *rank])
    op.create_index("ix_prospect_tenant_segmented_by", "prospect", ["tenant", "segmented_by"])


def upgrade() -> None:
    _create_tables()
    bind = op.get_bind()
    now = sa.bindparam("now", datetime.now(UTC), type_=TIMESTAMP)
    bind.execute(sa.text(TIER_TOTALS).bindparams(now))
    bind.execute(sa.text(MOVEMENT_MONTHS))
    # Segments are left to the app: they need the prospect plan (the first read segments).
    insert = sa.text(INSERT_PROSPECT)
    found = bind.execute(sa.text(LATEST_PROSPECT_SCORES))
    while rows := found.fetchmany(BATCH):
        bind.execute(insert, [_prospect(row) for row in rows])


def downgrade() -> None:
    op.drop_index("ix_prospect_tenant_segmented_by", table_name="prospect")
    op.drop_index("ix_prospect_tenant_rank", table_name="prospect")
    op.drop_index("ix_prospect_tenant_segment_rank", table_name="prospect")
    op.drop_table("prospect_segment")
    op.drop_table("prospect")
    op.drop_table("tier_movement_month")
    op.drop_table("tier_total")
