"""Scoring endpoints: thin wrappers that hand the raw body to the scoring service.

The body is read raw and validated by pydantic-core straight from JSON (no intermediate
dict), and the answer is serialised with orjson: both matter at thousands of calls a second.
Request schemas are built from the loaded models, so they are linked into /docs by name.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from app.deps import RequestIdDep, ScoresWriter, ScoringDep
from app.ml.manifest import Task
from app.schemas.responses import (
    AssessmentResponse,
    ChurnScoreResponse,
    ProspectScoreResponse,
    RecommendationResponse,
    TierScoreResponse,
)
from app.security.audit import note

router = APIRouter(prefix="/v1", tags=["scores"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"description": "Too many customers in one call", **PROBLEM},
    422: {"description": "Invalid input; the body names every offending field", **PROBLEM},
    503: {"description": "Database or model unavailable; nothing was saved", **PROBLEM},
}


def body_schema(name: str) -> dict[str, Any]:
    """OpenAPI request body pointing at a schema registered by the app factory."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


def json_response(content: dict[str, Any]) -> Response:
    """orjson-encoded JSON."""
    return Response(orjson.dumps(content), media_type="application/json")


async def _score(
    task: Task, request: Request, scoring: ScoringDep, request_id: str, caller: ScoresWriter
) -> Response:
    result = await scoring.score(task, await request.body(), request_id, tenant=caller.tenant)
    scoring_metrics = request.app.state.metrics.scores
    scoring_metrics.labels(task.value).inc(len(result["results"]))
    note(request, task=task.value, customers=len(result["results"]))
    return json_response(result)


@router.post(
    "/churn/scores",
    response_model=ChurnScoreResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("ChurnScoreRequest"),
)
async def churn_scores(
    request: Request, scoring: ScoringDep, request_id: RequestIdDep, caller: ScoresWriter
) -> Response:
    """Churn risk over the next 3 months, risk band and reasons; saved before answering."""
    return await _score(Task.CHURN, request, scoring, request_id, caller)


@router.post(
    "/tier/scores",
    response_model=TierScoreResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("TierScoreRequest"),
)
async def tier_scores(
    request: Request, scoring: ScoringDep, request_id: RequestIdDep, caller: ScoresWriter
) -> Response:
    """Value-pyramid tier, service plan, next-tier gap and reasons; saved before answering."""
    return await _score(Task.TIER, request, scoring, request_id, caller)


@router.post(
    "/recommendations",
    response_model=RecommendationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("RecommendationScoreRequest"),
)
async def recommendations(
    request: Request, scoring: ScoringDep, request_id: RequestIdDep, caller: ScoresWriter
) -> Response:
    """Top products not yet held, after eligibility rules; works from demographics alone."""
    return await _score(Task.RECOMMENDATION, request, scoring, request_id, caller)


@router.post(
    "/prospect/scores",
    response_model=ProspectScoreResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("ProspectScoreRequest"),
)
async def prospect_scores(
    request: Request, scoring: ScoringDep, request_id: RequestIdDep, caller: ScoresWriter
) -> Response:
    """Conversion probability, value if converted, expected value and priority."""
    return await _score(Task.PROSPECT, request, scoring, request_id, caller)


@router.post(
    "/assessments",
    response_model=AssessmentResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("AssessmentRequest"),
)
async def assessments(
    request: Request, scoring: ScoringDep, request_id: RequestIdDep, caller: ScoresWriter
) -> Response:
    """One customer: lifecycle group and every score that applies to it, saved together."""
    result = await scoring.assess(await request.body(), request_id, tenant=caller.tenant)
    note(request, task="assessment", customers=1)
    return json_response(result)
