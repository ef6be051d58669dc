"""Liveness, readiness and metrics: the endpoints that need no credentials (metrics: by default)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.db.session import database_is_reachable
from app.http.deps import RegistryDep, require
from app.scoring.schemas import Readiness
from app.security.principal import Scope

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "The score writer is down for good"}})
async def healthz(request: Request) -> JSONResponse:
    """The process is alive and can save scores: its score writer runs or is being replaced.

    A worker whose writer cannot be restarted answers every scoring call with 503; failing
    liveness lets the orchestrator restart it rather than leave it unready for ever.
    """
    if not request.app.state.scoring.writer.alive:
        return JSONResponse({"status": "score writer down"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request, registry: RegistryDep) -> JSONResponse:
    """Ready to score: the database answers, the score writer runs and commits (no write
    waits unanswered past ``score_writer_stall_s``, the last commit succeeded), and every
    task has a model."""
    database = await run_in_threadpool(database_is_reachable, request.app.state.engine)
    # Versions only: why a model is missing names folders on the host, logged at start-up.
    models: dict[str, Any] = {t.value: f"v{m.manifest.version}" for t, m in registry.loaded.items()}
    models.update({t.value: "missing" for t in registry.missing})
    score_writer = request.app.state.scoring.writer
    writer = score_writer.running
    committing = score_writer.committing
    ready = database and writer and committing and registry.complete
    body = Readiness(
        ready=ready, database=database, writer=writer, committing=committing, models=models
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


_admin = require(Scope.ADMIN)


async def metrics_access(request: Request) -> None:
    """Public by default (counters only, no customer data); else the admin scope."""
    if not request.app.state.settings.metrics_public:
        await _admin(request)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access)])
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
