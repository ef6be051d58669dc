"""The contact policy over HTTP: ask it, record contacts through it, flag do-not-contact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from app.contact import service
from app.contact.schemas import (
    ContactDecision,
    ContactOut,
    ContactQuestion,
    ContactRequest,
    DoNotContactOut,
    DoNotContactRequest,
)
from app.contact.service import ContactPolicy
from app.http.deps import CaseworkReader, CaseworkWriter, SessionDep

router = APIRouter(prefix="/v1/contact", tags=["contact"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
CustomerIdPath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


async def get_contact_policy(request: Request) -> ContactPolicy:
    """The contact policy the app was created with."""
    policy: ContactPolicy = request.app.state.contact_policy
    return policy


PolicyDep = Annotated[ContactPolicy, Depends(get_contact_policy)]


@router.post("/check", response_model=ContactDecision)
def check_contact(
    session: SessionDep, caller: CaseworkReader, policy: PolicyDep, body: ContactQuestion
) -> ContactDecision:
    """May the bank contact the customer: allowed, or the rule that blocks it."""
    return service.may_contact(
        session,
        policy=policy,
        tenant=caller.tenant,
        customer_id=body.customer_id,
        channel=body.channel,
        purpose=body.purpose,
        at=body.at or datetime.now(UTC),
    )


@router.post(
    "/records",
    response_model=ContactOut,
    status_code=201,
    responses={409: {"description": "Blocked: the body names the rule", **PROBLEM}},
)
def record_contact(
    session: SessionDep, caller: CaseworkWriter, policy: PolicyDep, body: ContactRequest
) -> ContactOut:
    """Record a contact made; 409 naming the rule when the policy blocks it."""
    return service.record_contact(
        session,
        policy=policy,
        tenant=caller.tenant,
        request=body,
        recorded_by=caller.client_id,
        at=datetime.now(UTC),
    )


@router.put(
    "/do-not-contact/{customer_id}",
    response_model=DoNotContactOut,
    responses={409: {"description": "Flagged concurrently", **PROBLEM}},
)
def set_do_not_contact(
    session: SessionDep,
    caller: CaseworkWriter,
    customer_id: CustomerIdPath,
    body: DoNotContactRequest,
) -> DoNotContactOut:
    """Flag the customer do-not-contact: every contact is blocked until it is lifted."""
    return service.set_do_not_contact(
        session,
        tenant=caller.tenant,
        customer_id=customer_id,
        reason=body.reason,
        recorded_by=caller.client_id,
        at=datetime.now(UTC),
    )


@router.delete(
    "/do-not-contact/{customer_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"description": "The customer is not flagged", **PROBLEM}},
)
def clear_do_not_contact(
    session: SessionDep, caller: CaseworkWriter, customer_id: CustomerIdPath
) -> Response:
    """Lift the do-not-contact flag."""
    service.clear_do_not_contact(session, tenant=caller.tenant, customer_id=customer_id)
    return Response(status_code=204)
