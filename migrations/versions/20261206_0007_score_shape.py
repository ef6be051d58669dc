"""One stored shape for every score, whoever asked (api, batch, event)

Until now the API stored ``{"probability", "risk_band"}`` with structured reasons, and the batch
scorer ``{"probability", "band"}`` (or ``{"prediction", "probability"}``) with reasons as text.
This adds the columns every row now carries (source, stage, probability, band, alert) and
rewrites the batch rows' outputs and reasons into the API's shape. Nothing is dropped: a text
reason becomes a structured one with its text, direction and contribution (feature unknown).
``alert`` and ``stage`` stay null on rows stored before this revision: they were not recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00 UTC
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROWS_PER_PASS = 1_000
TEXT_REASON = re.compile(r"^(?P<text>.*) \((?P<direction>raises|lowers) (?P<size>[0-9.eE+-]+)\)$")

score = sa.table(
    "score",
    sa.column("id", sa.BigInteger),
    sa.column("request_id", sa.String),
    sa.column("task", sa.String),
    sa.column("outputs", sa.JSON),
    sa.column("reasons", sa.JSON),
    sa.column("source", sa.String),
    sa.column("probability", sa.Float),
    sa.column("band", sa.String),
)


def _structured(texts: list[Any]) -> list[dict[str, Any]]:
    """A batch row's worded reasons as one structured explanation (nothing dropped)."""
    reasons = []
    for text in texts:
        match = TEXT_REASON.match(str(text))
        if match is None:
            reasons.append({"feature": None, "value": None, "text": str(text)})
            continue
        size = float(match["size"])
        direction = match["direction"]
        reasons.append(
            {
                "feature": None,
                "value": None,
                "contribution": size if direction == "raises" else -size,
                "direction": direction,
                "text": match["text"],
            }
        )
    return [{"method": None, "reasons": reasons}] if reasons else []


def _batch_outputs(task: str, old: dict[str, Any]) -> dict[str, Any]:
    """A batch row's outputs in the API's shape for its task."""
    probability = old.get("probability")
    if task == "churn":
        return {"probability": probability, "risk_band": old.get("band")}
    if task == "prospect":
        return {
            "conversion_probability": probability,
            "value_if_converted": None,
            "expected_value": old.get("expected_value"),
            "priority": old.get("band"),
        }
    if task == "tier":
        return {"tier": old.get("prediction")}
    return {
        "cold_start": None,
        "products": [{"product": old.get("prediction"), "propensity": probability}],
    }


def _headline(task: str, outputs: dict[str, Any]) -> tuple[float | None, str | None]:
    """The probability and band columns of a row in the API's shape."""
    if task == "churn":
        return outputs.get("probability"), outputs.get("risk_band")
    if task == "prospect":
        return outputs.get("conversion_probability"), outputs.get("priority")
    if task == "tier":
        tier = outputs.get("tier")
        return (outputs.get("probabilities") or {}).get(tier), tier
    products = outputs.get("products") or []
    if not products:
        return None, None
    return products[0].get("propensity"), products[0].get("product")


def _convert(row: Any) -> dict[str, Any]:
    outputs = dict(row.outputs or {})
    reasons = row.reasons
    source = "batch" if str(row.request_id).startswith("batch:") else "api"
    probability: float | None
    if source == "batch":
        probability = outputs.get("probability")
        outputs = _batch_outputs(row.task, outputs)
        if reasons and all(isinstance(r, str) for r in reasons):
            reasons = _structured(reasons)
        _, band = _headline(row.task, outputs)
    else:
        probability, band = _headline(row.task, outputs)
    return {
        "row_id": row.id,
        "outputs": outputs,
        "reasons": reasons,
        "source": source,
        "probability": probability,
        "band": band,
    }


def _rewrite(convert: Any) -> None:
    """Rewrite every score row with ``convert``, a thousand rows per statement."""
    bind = op.get_bind()
    update = (
        score.update()
        .where(score.c.id == sa.bindparam("row_id"))
        .values(
            outputs=sa.bindparam("outputs"),
            reasons=sa.bindparam("reasons"),
            source=sa.bindparam("source"),
            probability=sa.bindparam("probability"),
            band=sa.bindparam("band"),
        )
    )
    last = -1
    while True:
        rows = bind.execute(
            sa.select(score.c.id, score.c.request_id, score.c.task, score.c.outputs)
            .add_columns(score.c.reasons, score.c.source, score.c.probability, score.c.band)
            .where(score.c.id > last)
            .order_by(score.c.id)
            .limit(ROWS_PER_PASS)
        ).all()
        if not rows:
            return
        bind.execute(update, [convert(row) for row in rows])
        last = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("score") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stage", sa.String(16), nullable=True))
        batch.add_column(sa.Column("probability", sa.Float(), nullable=True))
        batch.add_column(sa.Column("band", sa.String(64), nullable=True))
        batch.add_column(sa.Column("alert", sa.Boolean(), nullable=True))
    _rewrite(_convert)
    with op.batch_alter_table("score") as batch:
        batch.alter_column("source", existing_type=sa.String(16), nullable=False)


def _back(row: Any) -> dict[str, Any]:
    """A row in the shape before this revision (batch rows: their old outputs and text)."""
    outputs = dict(row.outputs or {})
    reasons = row.reasons
    if row.source == "batch":
        if row.task in ("churn", "prospect"):
            expected_value = outputs.get("expected_value")
            outputs = {"probability": row.probability, "band": row.band}
            if expected_value is not None:
                outputs["expected_value"] = expected_value
        else:
            outputs = {"prediction": row.band, "probability": row.probability}
        reasons = [
            f"{r['text']} ({r.get('direction', 'raises')} {abs(r.get('contribution', 0.0)):.3f})"
            for explanation in reasons or []
            if isinstance(explanation, dict)
            for r in explanation.get("reasons", [])
        ]
    return {
        "row_id": row.id,
        "outputs": outputs,
        "reasons": reasons,
        "source": row.source,
        "probability": row.probability,
        "band": row.band,
    }


def downgrade() -> None:
    _rewrite(_back)
    with op.batch_alter_table("score") as batch:
        batch.drop_column("alert")
        batch.drop_column("band")
        batch.drop_column("probability")
        batch.drop_column("stage")
        batch.drop_column("source")
