"""Campaigns over HTTP: draft, check, launch once, report (JSON and SVG)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.campaigns import service
from app.campaigns.schemas import (
    CampaignOut,
    CampaignPage,
    CampaignReport,
    CampaignRequest,
    LaunchResult,
    PowerCheck,
)
from app.contact.routes import PolicyDep
from app.http.deps import RecordingSessionDep, SessionDep, require
from app.security.audit import note
from app.security.principal import Principal, Scope
from app.value.routes import TierPolicyDep

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such campaign for the caller's tenant", **PROBLEM}
}
CampaignsReader = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_READ))]
CampaignsWriter = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_WRITE))]
CampaignIdPath = Annotated[int, Path(ge=1, le=2**62)]


@router.post(
    "",
    response_model=CampaignOut,
    status_code=201,
    responses={409: {"description": "The code is taken", **PROBLEM}},
)
def create_campaign(
    request: Request,
    session: SessionDep,
    caller: CampaignsWriter,
    tier_policy: TierPolicyDep,
    body: CampaignRequest,
) -> CampaignOut:
    """Draft a campaign: target segment, action, channel, schedule, caps, budget, control."""
    created = service.create_campaign(
        session,
        tenant=caller.tenant,
        request=body,
        tier_names=tier_policy.names,
        created_by=caller.client_id,
        now=datetime.now(UTC),
    )
    note(request, campaign=created.id, code=created.code)
    return created


@router.get("", response_model=CampaignPage)
def list_campaigns(
    session: SessionDep,
    caller: CampaignsReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> CampaignPage:
    """The tenant's campaigns, newest first."""
    return service.list_campaigns(session, tenant=caller.tenant, limit=limit, offset=offset)


@router.get("/{campaign_id}", response_model=CampaignOut, responses=NOT_FOUND)
def get_campaign(
    request: Request, session: SessionDep, caller: CampaignsReader, campaign_id: CampaignIdPath
) -> CampaignOut:
    """One campaign."""
    note(request, campaign=campaign_id)
    return service.get_campaign(session, tenant=caller.tenant, campaign_id=campaign_id)


@router.get("/{campaign_id}/check", response_model=PowerCheck, responses=NOT_FOUND)
def check_campaign(
    request: Request,
    session: SessionDep,
    caller: CampaignsReader,
    policy: PolicyDep,
    campaign_id: CampaignIdPath,
) -> PowerCheck:
    """The pre-launch check: the audience launching now would write, and whether its arms can
    detect the minimum lift (a warning when the audience is too small)."""
    note(request, campaign=campaign_id)
    return service.check_campaign(
        session,
        tenant=caller.tenant,
        campaign_id=campaign_id,
        policy=policy,
        now=datetime.now(UTC),
    )


@router.post(
    "/{campaign_id}/launch",
    response_model=LaunchResult,
    responses={409: {"description": "Launched already: nothing written", **PROBLEM}, **NOT_FOUND},
)
def launch_campaign(
    request: Request,
    session: SessionDep,
    caller: CampaignsWriter,
    policy: PolicyDep,
    campaign_id: CampaignIdPath,
) -> LaunchResult:
    """Write the contact list once, under the contact policy, caps filled highest priority
    first; 409 on a second launch."""
    note(request, campaign=campaign_id)
    result = service.launch_campaign(
        session,
        tenant=caller.tenant,
        campaign_id=campaign_id,
        policy=policy,
        now=datetime.now(UTC),
    )
    note(request, treatment=result.check.treatment, control=result.check.control)
    return result


@router.get(
    "/{campaign_id}/report",
    response_model=CampaignReport,
    responses={409: {"description": "Not launched yet", **PROBLEM}, **NOT_FOUND},
)
def campaign_report(
    request: Request,
    session: RecordingSessionDep,
    caller: CampaignsReader,
    campaign_id: CampaignIdPath,
) -> CampaignReport:
    """Per arm customers, conversions and rate; lift with delta-method and bootstrap intervals;
    Qini and uplift by decile when model-targeted; cost per conversion."""
    note(request, campaign=campaign_id)
    return service.stored_report(
        session, tenant=caller.tenant, campaign_id=campaign_id, now=datetime.now(UTC)
    ).report


@router.get(
    "/{campaign_id}/report.svg",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "The report's chart"},
        409: {"description": "Not launched yet", **PROBLEM},
        **NOT_FOUND,
    },
)
def campaign_report_svg(
    request: Request,
    session: RecordingSessionDep,
    caller: CampaignsReader,
    campaign_id: CampaignIdPath,
) -> Response:
    """The report as a chart: rate per arm with intervals, uplift by decile."""
    note(request, campaign=campaign_id)
    stored = service.stored_report(
        session,
        tenant=caller.tenant,
        campaign_id=campaign_id,
        now=datetime.now(UTC),
        language=service.ENGLISH,
    )
    return Response(content=stored.chart or "", media_type="image/svg+xml")
