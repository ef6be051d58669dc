"""Stored results of a customer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.db.repository import list_scores
from app.deps import SessionDep
from app.ml.manifest import Task
from app.schemas.responses import ScoreHistory, StoredScore

router = APIRouter(prefix="/v1", tags=["history"])


@router.get("/customers/{customer_id}/scores", response_model=ScoreHistory)
def customer_scores(
    session: SessionDep,
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
    task: Annotated[Task | None, Query(description="Only this task's results.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ScoreHistory:
    """A customer's stored scores, newest first, one page at a time."""
    rows, total = list_scores(
        session,
        customer_id=customer_id,
        task=task.value if task else None,
        limit=limit,
        offset=offset,
    )
    return ScoreHistory(
        customer_id=customer_id,
        total=total,
        limit=limit,
        offset=offset,
        items=[StoredScore.model_validate(row, from_attributes=True) for row in rows],
    )
