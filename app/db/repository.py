"""Reads and writes of stored scores; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.db.tables import Score, score_table


class ScoreRow(TypedDict):
    """One row to insert into ``score`` (every column but the generated ``id``)."""

    request_id: str
    task: str
    customer_id: str
    model_name: str | None
    model_version: str | None
    outputs: dict[str, Any]
    reasons: list[Any]
    features: dict[str, Any]
    created_at: datetime


def insert_scores(target: Connection | Session, *, rows: Sequence[ScoreRow]) -> int:
    """Insert ``rows`` with one executemany INSERT (no ORM objects: hot path); returns the count."""
    if not rows:
        return 0
    connection = target.connection() if isinstance(target, Session) else target
    connection.execute(score_table.insert(), list(rows))
    return len(rows)


def list_scores(
    session: Session,
    *,
    customer_id: str,
    task: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Score], int]:
    """One page of a customer's scores, newest first, and the total across all pages."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    conditions = [Score.customer_id == customer_id]
    if task is not None:
        conditions.append(Score.task == task)
    total = session.scalar(select(func.count()).select_from(Score).where(*conditions)) or 0
    page = session.scalars(
        select(Score)
        .where(*conditions)
        # id breaks ties between rows written in the same instant.
        .order_by(Score.created_at.desc(), Score.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(page), total
