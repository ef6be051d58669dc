"""Stored results: a customer's scores, and what became of a request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from app.errors import NotFound
from app.http.deps import PseudonymizerDep, ScoresReader, SessionDep, TenantDep
from app.scoring.manifest import Task
from app.scoring.repository import get_request, list_scores
from app.scoring.schemas import RequestOutcome, ScoreHistory, StoredScore
from app.scoring.tables import RequestStatus
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


REQUEST_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "Nothing is committed under this request id (for your tenant)",
        "content": {"application/problem+json": {}},
    }
}


@router.get("/requests/{request_id}", response_model=RequestOutcome, responses=REQUEST_NOT_FOUND)
def request_outcome(
    request: Request,
    session: SessionDep,
    caller: ScoresReader,
    tenant: TenantDep,
    request_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
) -> RequestOutcome:
    """What became of a scoring request (its X-Request-ID): committed, and what it wrote."""
    note(request, asked_request_id=request_id)
    record = get_request(session, request_id=request_id, tenant=tenant)
    if record is None:
        raise NotFound(
            "nothing is committed under this request id: the request was refused or rolled "
            "back (nothing of it was saved), or it is not this tenant's; a request still "
            "waiting for the database may commit within the request timeout"
        )
    return RequestOutcome(
        request_id=record.request_id,
        status=RequestStatus(record.status).value,
        operation=record.operation,
        tasks=record.tasks,
        customers=record.customers,
        rows=record.rows,
        idempotency_key=record.key_digest is not None or record.response is not None,
        created_at=record.created_at,
        committed_at=record.committed_at,
    )
