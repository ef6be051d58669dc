"""Stored results of a customer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from app.http.deps import PseudonymizerDep, ScoresReader, SessionDep, TenantDep
from app.scoring.manifest import Task
from app.scoring.repository import list_scores
from app.scoring.schemas import ScoreHistory, StoredScore
from app.security.audit import note
from app.security.text import ID_PATTERN

router = APIRouter(prefix="/v1", tags=["history"])


@router.get("/customers/{customer_id}/scores", response_model=ScoreHistory)
def customer_scores(
    request: Request,
    session: SessionDep,
    caller: ScoresReader,
    tenant: TenantDep,
    pseudonymizer: PseudonymizerDep,
    customer_id: Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)],
    task: Annotated[Task | None, Query(description="Only this task's results.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ScoreHistory:
    """A customer's stored scores, newest first, one page at a time."""
    # With pseudonymisation, rows hold the id's HMAC under the caller's tenant's key (or an
    # earlier form: a rotated secret, or the one without a tenant key).
    stored_ids = (
        pseudonymizer.lookup_forms(customer_id, tenant=caller.tenant)
        if pseudonymizer
        else [customer_id]
    )
    note(request, customer=stored_ids[0])
    rows, total = list_scores(
        session,
        customer_id=stored_ids,
        task=task.value if task else None,
        limit=limit,
        offset=offset,
        tenant=tenant,
    )
    return ScoreHistory(
        customer_id=customer_id,
        total=total,
        limit=limit,
        offset=offset,
        items=[StoredScore.model_validate(row, from_attributes=True) for row in rows],
    )
