"""Rewards over HTTP: a customer's service plan, points and gift redemptions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response

from app.http.deps import PseudonymizerDep, SessionDep, require
from app.rewards import service
from app.rewards.policy import RewardsPolicy
from app.rewards.schemas import (
    EarnRequest,
    PointsPage,
    PointsRequest,
    PostingResult,
    RedemptionRequest,
    ServicePlanView,
)
from app.security.audit import note
from app.security.principal import Principal, Scope
from app.security.text import ID_PATTERN
from app.value.routes import TierPolicyDep

router = APIRouter(prefix="/v1", tags=["rewards"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No events of this customer for the caller", **PROBLEM}
}
CustomersReader = Annotated[Principal, Depends(require(Scope.CUSTOMERS_READ))]
RewardsWriter = Annotated[Principal, Depends(require(Scope.REWARDS_WRITE))]
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]

EARN_EXAMPLES: dict[str, Any] = {
    "earn": {
        "summary": "Points earned",
        "value": {"kind": "earn", "points": 100, "idempotency_key": "txn-2026-12-001"},
    },
    "reversal": {
        "summary": "An earn taken back, or a gift given back",
        "value": {"kind": "reversal", "reverses": 7},
    },
}


async def get_rewards_policy(request: Request) -> RewardsPolicy:
    """The rewards policy the app was created with."""
    policy: RewardsPolicy = request.app.state.rewards_policy
    return policy


RewardsPolicyDep = Annotated[RewardsPolicy, Depends(get_rewards_policy)]


@router.get(
    "/customers/{customer_id}/service-plan", response_model=ServicePlanView, responses=NOT_FOUND
)
def customer_service_plan(
    session: SessionDep,
    caller: CustomersReader,
    pseudonymizer: PseudonymizerDep,
    tier_policy: TierPolicyDep,
    rewards: RewardsPolicyDep,
    customer_id: CustomerIdPath,
) -> ServicePlanView:
    """The customer's tier's services, promotions, points multiplier and the gifts it may
    redeem today."""
    tier = service.customer_tier(
        session,
        tier_policy=tier_policy,
        customer_id=customer_id,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    return service.service_plan(
        session,
        rewards=rewards,
        tier=tier,
        tenant=caller.tenant,
        customer_id=customer_id,
        today=datetime.now(UTC).date(),
    )


@router.post(
    "/customers/{customer_id}/points",
    response_model=PostingResult,
    status_code=201,
    responses={
        200: {"description": "The key (or the reversal) had been used: nothing changed"},
        409: {
            "description": "A reversal of an earn whose points are no longer held or of an "
            "expiry, or an idempotency key already used for another request",
            **PROBLEM,
        },
        **NOT_FOUND,
    },
)
def post_points(
    request: Request,
    response: Response,
    session: SessionDep,
    caller: RewardsWriter,
    pseudonymizer: PseudonymizerDep,
    tier_policy: TierPolicyDep,
    rewards: RewardsPolicyDep,
    customer_id: CustomerIdPath,
    body: Annotated[PointsRequest, Body(openapi_examples=EARN_EXAMPLES)],
) -> PostingResult:
    """Post earned points (times the tier's multiplier, pending for the lock period) or
    reverse an earn; a repeated idempotency key changes nothing."""
    stored = service.stored_id(customer_id, tenant=caller.tenant, pseudonymizer=pseudonymizer)
    tier = service.customer_tier(
        session,
        tier_policy=tier_policy,
        customer_id=customer_id,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    now = datetime.now(UTC)
    if isinstance(body, EarnRequest):
        result = service.earn(
            session,
            rewards=rewards,
            tier=tier,
            tenant=caller.tenant,
            customer_id=stored,
            points=body.points,
            idempotency_key=body.idempotency_key,
            description=body.description,
            now=now,
        )
    else:
        result = service.reverse(
            session,
            tenant=caller.tenant,
            customer_id=stored,
            entry_id=body.reverses,
            description=body.description,
            now=now,
        )
    if result.replayed:
        response.status_code = 200
    note(
        request,
        customer=stored,
        entry=result.entry.id,
        points=result.entry.points,
        kind=result.entry.kind,
        replayed=result.replayed,
    )
    return result


@router.get("/customers/{customer_id}/points", response_model=PointsPage, responses=NOT_FOUND)
def get_points(
    session: SessionDep,
    caller: CustomersReader,
    pseudonymizer: PseudonymizerDep,
    customer_id: CustomerIdPath,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PointsPage:
    """The customer's available and pending points and a page of its entries, newest first."""
    return service.points(
        session,
        tenant=caller.tenant,
        customer_id=service.stored_id(
            customer_id, tenant=caller.tenant, pseudonymizer=pseudonymizer
        ),
        shown_id=customer_id,
        limit=limit,
        offset=offset,
        now=datetime.now(UTC),
    )


@router.post(
    "/customers/{customer_id}/redemptions",
    response_model=PostingResult,
    status_code=201,
    responses={
        200: {"description": "The key had been used: nothing changed"},
        403: {"description": "The gift is not offered to the customer's tier", **PROBLEM},
        409: {
            "description": "Beyond the balance, the stock, the limit or the window, or an "
            "idempotency key already used for another request",
            **PROBLEM,
        },
        **NOT_FOUND,
    },
)
def post_redemption(
    request: Request,
    response: Response,
    session: SessionDep,
    caller: RewardsWriter,
    pseudonymizer: PseudonymizerDep,
    tier_policy: TierPolicyDep,
    rewards: RewardsPolicyDep,
    customer_id: CustomerIdPath,
    body: RedemptionRequest,
) -> PostingResult:
    """Redeem a gift: its points and one unit of stock in one transaction."""
    stored = service.stored_id(customer_id, tenant=caller.tenant, pseudonymizer=pseudonymizer)
    note(request, customer=stored, gift=body.gift_id)
    tier = service.customer_tier(
        session,
        tier_policy=tier_policy,
        customer_id=customer_id,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    result = service.redeem(
        session,
        rewards=rewards,
        tier=tier,
        tenant=caller.tenant,
        customer_id=stored,
        gift_id=body.gift_id,
        idempotency_key=body.idempotency_key,
        now=datetime.now(UTC),
    )
    if result.replayed:
        response.status_code = 200
    note(request, entry=result.entry.id, points=result.entry.points, replayed=result.replayed)
    return result
