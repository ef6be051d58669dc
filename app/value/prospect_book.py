"""Prospects as stored: each prospect's latest prospect score (scored at the prospect stage)
as columns, written in the transaction of the score, so the prospects page and
``GET /v1/prospects`` read an index instead of parsing every stored score's JSON documents.

The segment needs the prospect plan, which the score writer does not have: a new score marks
its row unsegmented and ``service.segment_prospects`` segments such rows set-wise under the
plan in force (the rows written since, or every row when the plan's bands change), moving the
stored count of each segment, so that no read counts the prospects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from app.value.prospects import number
from app.value.tables import UNTAGGED_KEY, prospect_segment_table, prospect_table

PROSPECT_TASK = "prospect"
# What the prospect model outputs and the feature the buying power comes from.
VALUE, EXPECTED, CONVERSION, INCOME = (
    "value_if_converted",
    "expected_value",
    "conversion_probability",
    "income",
)


@dataclass(frozen=True, slots=True)
class ProspectScore:
    """What a prospect score says of its prospect, as plain values."""

    tenant: str | None
    customer_id: str
    outputs: dict[str, Any]
    features: dict[str, Any]
    model_version: str | None
    scored_at: datetime


def is_prospect_score(task: str, stage: str | None) -> bool:
    """Whether a score of ``task`` at ``stage`` ranks a prospect."""
    return task == PROSPECT_TASK and stage == PROSPECT_TASK


def prospect_values(score: ProspectScore) -> dict[str, Any]:
    """The row of ``prospect`` a score makes (unsegmented)."""
    expected = number(score.outputs, EXPECTED)
    conversion = number(score.outputs, CONVERSION)
    return {
        "tenant": UNTAGGED_KEY if score.tenant is None else score.tenant,
        "customer_id": score.customer_id,
        "value_if_converted": number(score.outputs, VALUE),
        "income": number(score.features, INCOME),
        "expected_value": expected,
        "conversion_probability": conversion,
        "expected_known": expected is not None,
        "conversion_rank": 0.0 if conversion is None else conversion,
        "model_version": score.model_version,
        "scored_at": score.scored_at,
        "segmented_by": None,
    }


def record_prospect_scores(connection: Connection, *, scores: Sequence[ProspectScore]) -> int:
    """Make each score its prospect's row in the caller's transaction, unless the row holds a
    later score already; the last of several scores of one prospect wins. Returns the rows."""
    latest: dict[tuple[str | None, str], ProspectScore] = {}
    for score in scores:
        latest[(score.tenant, score.customer_id)] = score
    if not latest:
        return 0
    statement = _insert(connection, prospect_table)
    # The segment stays: it is where the row is counted until it is segmented again.
    kept = ("tenant", "customer_id", "segment")
    statement = statement.on_conflict_do_update(
        index_elements=["tenant", "customer_id"],
        set_={c.name: statement.excluded[c.name] for c in prospect_table.c if c.name not in kept},
        # Scores of one prospect arrive in time order; a late group commit of an older score
        # must not replace a newer one (equal times: the later write wins, as the later id).
        where=prospect_table.c.scored_at <= statement.excluded.scored_at,
    )
    connection.execute(statement, [prospect_values(score) for score in latest.values()])
    return len(latest)


def add_to_segments(connection: Connection, *, tenant: str, changes: dict[str, int]) -> None:
    """Add ``changes`` (prospects per segment, negative to take away) to a tenant's counts."""
    rows = [
        {"tenant": tenant, "segment": name, "prospects": change}
        for name, change in sorted(changes.items())
        if change
    ]
    if not rows:
        return
    table = prospect_segment_table
    statement = _insert(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant", "segment"],
        set_={"prospects": table.c.prospects + statement.excluded.prospects},
    )
    connection.execute(statement, rows)


def _insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can update on conflict, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
