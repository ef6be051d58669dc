"""Scoring endpoints: thin wrappers that hand the raw body to the scoring service.

The body is read raw and validated by pydantic-core straight from JSON (no intermediate
dict), and the answer is serialised with orjson: both matter at thousands of calls a second.
Request schemas are built from the loaded models, so they are linked into /docs by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.http.deps import get_scoring_call
from app.scoring.manifest import Task
from app.scoring.request_schemas import score_request_name
from app.scoring.schemas import (
    AssessmentResponse,
    ChurnScoreResponse,
    ProspectScoreResponse,
    RecommendationResponse,
    TierScoreResponse,
)
from app.security.audit import note


class RawBodyRoute(APIRoute):
    """A documented route whose endpoint takes the request and answers a response itself.

    FastAPI's request handler would solve the endpoint's parameters on every call only to
    pass the request through: ~40 µs a call in-process (bench/inprocess.py), more than
    parsing a single customer. FastAPI's documented extension point for this is the route
    class; OpenAPI, matching and exception handlers are those of any APIRoute.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


router = APIRouter(prefix="/v1", tags=["scores"], route_class=RawBodyRoute)

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


def _scoring_endpoint(task: Task) -> Callable[..., Awaitable[Response]]:
    """The endpoint of one task: hand the body to the service, count, audit, answer."""

    async def endpoint(request: Request) -> Response:
        # Called, not injected: FastAPI's dependency machinery costs ~35 µs a call, a tenth
        # of a single-customer score; the check is the same (403 without scores:write).
        call = await get_scoring_call(request)
        body = await request.body()
        result = await call.service.score(
            task, body, call.request_id, tenant=call.tenant, idempotency=call.idempotency
        )
        request.app.state.metrics.scores.labels(task.value).inc(len(result["results"]))
        note(request, task=task.value, customers=len(result["results"]))
        return json_response(result)

    return endpoint


# path, response model, route name, summary: one row per task, one endpoint each.
SCORING_ROUTES: dict[Task, tuple[str, type[BaseModel], str, str]] = {
    Task.CHURN: (
        "/churn/scores",
        ChurnScoreResponse,
        "churn_scores",
        "Churn risk over the next 3 months, risk band and reasons; saved before answering.",
    ),
    Task.TIER: (
        "/tier/scores",
        TierScoreResponse,
        "tier_scores",
        "Value-pyramid tier, service plan, next-tier gap and reasons; saved before answering.",
    ),
    Task.RECOMMENDATION: (
        "/recommendations",
        RecommendationResponse,
        "recommendations",
        "Top products not yet held, after eligibility rules; works from demographics alone.",
    ),
    Task.PROSPECT: (
        "/prospect/scores",
        ProspectScoreResponse,
        "prospect_scores",
        "Conversion probability, value if converted, expected value and priority.",
    ),
}

for _task, (_path, _response, _name, _summary) in SCORING_ROUTES.items():
    router.add_api_route(
        _path,
        _scoring_endpoint(_task),
        methods=["POST"],
        name=_name,
        description=_summary,
        response_model=_response,
        responses=ERROR_RESPONSES,
        openapi_extra=body_schema(score_request_name(_task)),
    )


@router.post(
    "/assessments",
    response_model=AssessmentResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema("AssessmentRequest"),
)
async def assessments(request: Request) -> Response:
    """One customer: lifecycle group and every score that applies to it, saved together."""
    call = await get_scoring_call(request)
    result = await call.service.assess(
        await request.body(), call.request_id, tenant=call.tenant, idempotency=call.idempotency
    )
    note(request, task="assessment", customers=1)
    return json_response(result)
