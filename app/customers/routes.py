"""The behaviour trail over HTTP: events in, a customer's events out."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel

from app.customers import service
from app.customers.assessments import CustomerScoring
from app.customers.lifecycle import LifecycleRules
from app.customers.record import customer_view, index_weights
from app.customers.record_schemas import CustomerView
from app.customers.schemas import (
    ASSESSMENT_BY_ID_EXAMPLE,
    BULK_ASSESSMENT_EXAMPLE,
    EXAMPLE_BODY,
    MONTH_PATTERN,
    AssessmentByIdRequest,
    BulkAssessmentRequest,
    CustomerAssessment,
    CustomerAssessments,
    EventPage,
    EventsRequest,
    EventType,
    IntakeResult,
    MonthFeatures,
)
from app.customers.service import EventIntake, IntakeRules
from app.http.deps import (
    PseudonymizerDep,
    RequestIdDep,
    SessionDep,
    TenantDep,
    get_pseudonymizer,
    get_scoring_call,
    require,
)
from app.security.audit import note
from app.security.principal import Principal, Scope
from app.security.text import ID_PATTERN
from app.value.routes import TierPolicyDep

router = APIRouter(prefix="/v1", tags=["customers"])

EVENTS_PATH = "/v1/events"
# Registered as components by the app factory: the body is read raw, validated by
# pydantic-core straight from JSON, and documented by reference.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (EventsRequest,)
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
INTAKE_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Too many events in one call, or too large a body", **PROBLEM},
    422: {"description": "Invalid events; the body names every bad field; none stored", **PROBLEM},
    503: {"description": "Database unavailable; no event of the call was stored", **PROBLEM},
}


async def get_intake(request: Request) -> EventIntake:
    """The intake use case on this app's database, settings and pseudonymizer."""
    settings = request.app.state.settings
    return EventIntake(
        session_factory=request.app.state.session_factory,
        rules=IntakeRules.from_settings(settings),
        pseudonymizer=await get_pseudonymizer(request),
    )


EventsWriter = Annotated[Principal, Depends(require(Scope.EVENTS_WRITE))]
CustomersReader = Annotated[Principal, Depends(require(Scope.CUSTOMERS_READ))]
IntakeDep = Annotated[EventIntake, Depends(get_intake)]


@router.post(
    "/events",
    response_model=IntakeResult,
    responses=INTAKE_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/EventsRequest"},
                    "example": EXAMPLE_BODY,
                }
            },
        }
    },
)
async def record_events(
    request: Request, caller: EventsWriter, intake: IntakeDep, request_id: RequestIdDep
) -> IntakeResult:
    """Take in customer events (up to 10,000): new ones stored, repeats counted; all or none."""
    body = await request.body()
    # Validation and the insert are CPU and I/O: off the event loop.
    result = await anyio.to_thread.run_sync(
        partial(intake.take, body, tenant=caller.tenant, request_id=request_id)
    )
    note(request, events=result.received, new=result.new, duplicates=result.duplicates)
    return result


@router.get("/customers/{customer_id}/events", response_model=EventPage)
def customer_events(
    request: Request,
    session: SessionDep,
    caller: CustomersReader,
    tenant: TenantDep,
    pseudonymizer: PseudonymizerDep,
    customer_id: Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)],
    type: Annotated[EventType | None, Query(description="Only events of this type.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> EventPage:
    """A customer's events, latest occurrence first, one page at a time."""
    page = service.customer_events(
        session,
        customer_id=customer_id,
        event_type=type,
        limit=limit,
        offset=offset,
        tenant=tenant,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    stored = pseudonymizer.pseudonym(customer_id, caller.tenant) if pseudonymizer else customer_id
    note(request, customer=stored)
    return page


CustomerIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
MonthQuery = Annotated[
    str | None,
    Query(
        pattern=MONTH_PATTERN,
        description="Month (YYYY-MM, UTC); the customer's latest month on record if left out.",
        examples=["2026-11"],
    ),
]


@router.get(
    "/customers/{customer_id}/features",
    response_model=MonthFeatures,
    responses={404: {"description": "No events of this customer for the caller", **PROBLEM}},
)
def customer_features(
    request: Request,
    session: SessionDep,
    caller: CustomersReader,
    pseudonymizer: PseudonymizerDep,
    customer_id: CustomerIdPath,
    month: MonthQuery = None,
) -> MonthFeatures:
    """A customer's model features in a month, from the running aggregates of its trail."""
    features = service.month_features(
        session,
        customer_id=customer_id,
        month=month,
        caller_tenant=caller.tenant,
        pseudonymizer=pseudonymizer,
    )
    stored = pseudonymizer.pseudonym(customer_id, caller.tenant) if pseudonymizer else customer_id
    note(request, customer=stored, month=features.month)
    return features


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerView,
    responses={404: {"description": "No record of this customer for the caller", **PROBLEM}},
)
def customer_record(
    request: Request,
    session: SessionDep,
    caller: CustomersReader,
    tenant: TenantDep,
    pseudonymizer: PseudonymizerDep,
    customer_id: CustomerIdPath,
    tier_policy: TierPolicyDep,
    events: Annotated[int, Query(ge=0, le=100, description="How many latest events.")] = 10,
) -> CustomerView:
    """A customer's 360: profile, stage and history, holdings, tier (the model's and the
    policy's, with the gaps), points, latest assessments, recommendations, open alerts and
    complaints, latest events."""
    view = customer_view(
        session,
        customer_id=customer_id,
        caller_tenant=caller.tenant,
        tenant=tenant,
        pseudonymizer=pseudonymizer,
        events=events,
        index_weights=index_weights(request.app.state.settings),
        tier_policy=tier_policy,
        now=datetime.now(UTC),
    )
    stored = pseudonymizer.pseudonym(customer_id, caller.tenant) if pseudonymizer else customer_id
    note(request, customer=stored, view="360")
    return view


SCORING_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No events of this customer for the caller", **PROBLEM},
    413: {"description": "Too many customers in one call", **PROBLEM},
    422: {"description": "Invalid input, or a trail a model cannot score", **PROBLEM},
    503: {"description": "Database or model unavailable; nothing was saved", **PROBLEM},
}


async def get_customer_scoring(request: Request) -> CustomerScoring:
    """Score-by-id on this app's database, scoring service and pseudonymizer."""
    return CustomerScoring(
        session_factory=request.app.state.session_factory,
        scoring=request.app.state.scoring,
        pseudonymizer=await get_pseudonymizer(request),
        lifecycle=LifecycleRules.from_settings(request.app.state.settings),
    )


CustomerScoringDep = Annotated[CustomerScoring, Depends(get_customer_scoring)]


@router.post(
    "/customers/{customer_id}/assessment",
    response_model=CustomerAssessment,
    responses=SCORING_ERRORS,
)
async def assess_customer(
    request: Request,
    caller: CustomersReader,
    scoring: CustomerScoringDep,
    customer_id: CustomerIdPath,
    body: Annotated[
        AssessmentByIdRequest | None,
        Body(openapi_examples={"churn": {"value": ASSESSMENT_BY_ID_EXAMPLE}}),
    ] = None,
) -> dict[str, Any]:
    """Assess one customer from its trail (no features sent); saved before answering."""
    call = await get_scoring_call(request)  # scores:write as well
    options = body or AssessmentByIdRequest()
    answer = await scoring.assess(
        [customer_id],
        month=options.month,
        tasks=options.tasks,
        request_id=call.request_id,
        tenant=caller.tenant,
        bulk=False,
        idempotency=call.idempotency,
    )
    note(request, task="assessment", customers=1, inputs="trail")
    return answer


@router.post(
    "/customers/assessments",
    response_model=CustomerAssessments,
    responses={k: v for k, v in SCORING_ERRORS.items() if k != 404},
)
async def assess_customers(
    request: Request,
    caller: CustomersReader,
    scoring: CustomerScoringDep,
    body: Annotated[
        BulkAssessmentRequest, Body(openapi_examples={"two": {"value": BULK_ASSESSMENT_EXAMPLE}})
    ],
) -> dict[str, Any]:
    """Assess many customers from their trails; an unknown id is named by its index."""
    call = await get_scoring_call(request)
    response = await scoring.assess(
        body.customer_ids,
        month=body.month,
        tasks=body.tasks,
        request_id=call.request_id,
        tenant=caller.tenant,
        bulk=True,
        idempotency=call.idempotency,
    )
    note(request, task="assessment", customers=len(body.customer_ids), inputs="trail")
    return response
