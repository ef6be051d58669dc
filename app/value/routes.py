"""The value policy over HTTP: a customer's tier of record under the bank's tier policy, and
prospects by segment with their marketing plans."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from app.http.deps import PseudonymizerDep, RecordingSessionDep, SessionDep, require
from app.security.audit import note
from app.security.principal import Principal, Scope
from app.security.text import ID_PATTERN
from app.value import service
from app.value.policy import TierPolicy
from app.value.prospects import SEGMENT_PATTERN, ProspectPlan
from app.value.schemas import CustomerTier, ProspectPage

router = APIRouter(prefix="/v1", tags=["value"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
CustomersReader = Annotated[Principal, Depends(require(Scope.CUSTOMERS_READ))]
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]


async def get_tier_policy(request: Request) -> TierPolicy:
    """The tier policy the app was created with."""
    policy: TierPolicy = request.app.state.tier_policy
    return policy


TierPolicyDep = Annotated[TierPolicy, Depends(get_tier_policy)]


@router.get(
    "/customers/{customer_id}/tier",
    response_model=CustomerTier,
    responses={404: {"description": "No events of this customer for the caller", **PROBLEM}},
)
def customer_tier(
    request: Request,
    session: SessionDep,
    caller: CustomersReader,
    pseudonymizer: PseudonymizerDep,
    policy: TierPolicyDep,
    customer_id: CustomerIdPath,
) -> CustomerTier:
    """A customer's tier under the bank's tier policy, the gap to the next tier, and the gap
    to keep its tier when a downgrade is projected."""
    tier = service.customer_tier(
        session,
        policy=policy,
        customer_id=customer_id,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    stored = pseudonymizer.pseudonym(customer_id, caller.tenant) if pseudonymizer else customer_id
    note(request, customer=stored, tier=tier.tier, policy=policy.version)
    return tier


async def get_prospect_plan(request: Request) -> ProspectPlan:
    """The prospect plan the app was created with."""
    plan: ProspectPlan = request.app.state.prospect_plan
    return plan


ProspectPlanDep = Annotated[ProspectPlan, Depends(get_prospect_plan)]


@router.get(
    "/prospects",
    response_model=ProspectPage,
    responses={422: {"description": "A segment the prospect plan does not have", **PROBLEM}},
)
def list_prospects(
    request: Request,
    session: RecordingSessionDep,
    caller: CustomersReader,
    plan: ProspectPlanDep,
    segment: Annotated[
        str | None,
        Query(
            pattern=SEGMENT_PATTERN,
            max_length=65,
            description="Only this segment (<value band>.<buying power band>, e.g. "
            "premium.wealthy); none: every segment.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ProspectPage:
    """The caller's prospects in their segments (value band x buying power), best expected
    value first, with each segment's marketing plan."""
    page = service.prospects(
        session,
        plan=plan,
        tenant=caller.tenant,
        segment=segment,
        limit=limit,
        offset=offset,
    )
    note(request, segment=segment, prospects=len(page.items), plan=plan.version)
    return page
