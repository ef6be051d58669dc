"""The app factory: models and database are loaded here, never at import time."""

from __future__ import annotations

import asyncio
import copy
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.routing import BaseRoute

from app.actions import routes as actions
from app.actions.policy import load_action_policy
from app.actions.service import EvidenceCache, NextBestActionService
from app.alerts import routes as alerts
from app.alerts.worker import build_alert_processor
from app.campaigns import routes as campaigns
from app.casework import routes as casework
from app.casework.routing import RoutingPolicy
from app.casework.service import Casework
from app.config import Settings, get_settings
from app.console import routes as console
from app.contact import routes as contact
from app.contact.service import ContactPolicy
from app.customers import routes as customers
from app.customers.assessments import CustomerScoring, Rescorer
from app.customers.consumer import QueueDepthMonitor
from app.customers.lifecycle import LifecycleRules
from app.db.session import create_db_engine, create_session_factory
from app.errors import DatabaseUnavailable, InvalidInput, ServiceError
from app.http import health
from app.http.docs import PAGE_PATHS, SPEC_PATH, add_docs
from app.http.query import RejectUnknownQueryParameters
from app.modelops import routes as models
from app.modelops.serving import ChampionWatcher
from app.notifications.service import build_dispatcher
from app.observability import Metrics, RequestContextMiddleware, configure_logging
from app.rewards import routes as rewards
from app.rewards.policy import load_rewards_policy
from app.scoring import history_routes as history
from app.scoring import routes as scores
from app.scoring.assess import ProductScreen
from app.scoring.registry import ModelRegistry
from app.scoring.rules import rules_from_settings
from app.scoring.service import ScoringService, field_path
from app.scoring.shadow import ShadowScorer
from app.scoring.writer_process import build_score_writer
from app.security.middleware import SecurityMiddleware
from app.security.openapi import document_security
from app.security.pseudonyms import Pseudonymizer
from app.security.setup import build_guard
from app.value import routes as value
from app.value.policy import load_policy
from app.value.prospects import load_prospect_plan

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("cvm")


def problem_response(error: ServiceError, request: Request) -> JSONResponse:
    """Render a domain error as problem details (its code is the audit line's outcome)."""
    request.scope.setdefault("state", {})["error_code"] = error.code
    return JSONResponse(
        error.problem(instance=request.url.path), status_code=error.status, media_type=PROBLEM_JSON
    )


def watch_event_queues(settings: Settings, metrics: Metrics) -> QueueDepthMonitor:
    """The events queues' depth on /metrics (the consumers' lag), unless switched off."""
    monitor = QueueDepthMonitor(
        settings.amqp_url.get_secret_value(), settings.event_queues, settings.event_queue_monitor_s
    )
    if monitor.enabled:
        metrics.add_gauges(
            "cvm_event_queue_messages",
            "Events messages waiting in each queue `cvm consume` reads (the consumers' lag); "
            "absent while the broker cannot be reached.",
            monitor.read,
            label="queue",
        )
    return monitor


@cache
def _route_spec(title: str, version: str, summary: str | None, description: str) -> dict[str, Any]:
    """FastAPI's spec of the shared routes (about a second of CPU to generate): once per
    process and metadata, copied by each app that serves it."""
    return get_openapi(
        title=title,
        version=version,
        summary=summary,
        description=description,
        routes=list(api_routes()),
    )


@cache
def api_routes() -> tuple[BaseRoute, ...]:
    """Every domain's routes, built once per process and shared by each app it makes.

    Building a route (FastAPI reads the endpoint's signature and builds a validator for each
    parameter) costs milliseconds, about all of an app's start-up; a route holds nothing of
    its app (endpoints reach the app's state through the request), so it can be shared. The
    one thing lost is ``app.dependency_overrides``, which nothing here uses.
    """
    every = APIRouter()
    for router in (
        health.router,
        scores.router,
        history.router,
        models.router,
        alerts.router,
        customers.router,
        casework.staff_router,
        casework.complaints_router,
        casework.routed_alerts_router,
        casework.reports_router,
        contact.router,
        models.admin_router,
        value.router,
        rewards.router,
        actions.router,
        campaigns.router,
    ):
        every.include_router(router)
    return tuple(every.routes)


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the service: load models, prepare the database writer, wire routes and errors."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # Before anything starts: an invalid policy stops the service, naming the key.
    tier_policy = load_policy(settings.tier_policy_file)
    prospect_plan = load_prospect_plan(settings.prospect_plan_file)
    rewards_policy = load_rewards_policy(settings.rewards_policy_file)
    rewards_policy.check_tiers(tier_policy.names)
    action_policy = load_action_policy(settings.next_best_action_file)
    action_policy.check_tiers(tier_policy.names)
    rules = rules_from_settings(settings)
    # A registry of this app's own: activations swap its models, never a caller's.
    registry = (
        registry or ModelRegistry.load(settings.models_dir, pinned=settings.model_versions)
    ).copy()
    engine = create_db_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    writer = build_score_writer(settings, engine)
    # Turns the alert candidates the writer stores with churn scores into alerts.
    alert_processor = build_alert_processor(settings, engine)
    metrics = Metrics()
    shadow = ShadowScorer(
        engine=engine, on_drop=lambda task: metrics.shadow_dropped.labels(task).inc()
    )
    scoring = ScoringService(
        shadow=shadow,
        registry=registry,
        writer=writer,
        engine=engine,
        rules=rules,
        max_batch_size=settings.max_batch_size,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        pseudonymizer=(pseudonymizer := Pseudonymizer.from_settings(settings)),
    )
    session_factory = create_session_factory(engine)
    watcher = ChampionWatcher(
        session_factory=session_factory,
        models_dir=settings.models_dir,
        swap=scoring.swap,
        served=registry.version,
        pinned=settings.model_versions,
        interval_s=settings.model_poll_s,
        shadow=scoring.set_challenger,
    )
    guard = build_guard(
        settings,
        engine,
        docs_paths=PAGE_PATHS,
        spec_path=SPEC_PATH,
        body_limits={customers.EVENTS_PATH: settings.events_max_body_bytes},
        session_prefix=console.PREFIX,
    )
    # The in-process dispatcher is optional: `cvm dispatch` can deliver the outbox instead.
    dispatcher = build_dispatcher(settings, engine) if settings.dispatch_in_process else None
    rescorer = Rescorer(
        session_factory=session_factory,
        scoring=scoring,
        poll_s=settings.rescore_poll_s,
        batch_size=settings.rescore_batch_size,
        enabled=settings.rescore_in_process,
        lifecycle=LifecycleRules.from_settings(settings),
    )
    metrics.add_gauges(
        "cvm_group_commit",
        "Score writer: groups, rows and writes committed or failed; whether it is alive and "
        "how often its process was replaced.",
        lambda: {
            **{k: float(v) for k, v in vars(writer.stats).items()},
            "alive": float(writer.alive),
            "restarts": float(writer.restarts),
        },
    )

    queue_monitor = watch_event_queues(settings, metrics)
    # The latest PSI of each task's features and score, set by each monitoring computation.
    model_psi: dict[str, float] = {}
    metrics.add_gauges(
        "cvm_model_psi",
        "Population stability index of each model feature (task/feature) and score "
        "(task/score) at the last GET /v1/models/{task}/monitoring.",
        lambda: dict(model_psi),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded so far (models, schemas, routes) lives as long as the process:
        # frozen out of the collector, it is no longer rescanned by every full collection,
        # which would otherwise stall all requests in flight for milliseconds.
        if settings.freeze_heap_at_start:
            gc.collect()
            gc.freeze()
        shadow.start()
        guard.start()
        await asyncio.to_thread(watcher.start)
        await writer.open()
        if alert_processor is not None:
            alert_processor.start()
        if dispatcher is not None:
            dispatcher.start()
        queue_monitor.start()
        rescorer.start()
        log.info(
            "started",
            models={t.value: m.manifest.version for t, m in registry.loaded.items()},
            missing={t.value: why for t, why in registry.missing.items()},
        )
        try:
            yield
        finally:
            await queue_monitor.stop()
            await asyncio.to_thread(watcher.stop)
            await asyncio.to_thread(shadow.stop)
            await rescorer.stop()  # before the writer: its last scores are committed
            await writer.close(timeout=30)
            if alert_processor is not None:  # after the writer: its last candidates too
                await asyncio.to_thread(alert_processor.stop, 30)
            if dispatcher is not None:
                dispatcher.stop(timeout=30)
            await guard.close()  # the audit store's last lines before the engine goes
            engine.dispose()
            if settings.freeze_heap_at_start:
                gc.unfreeze()  # an app built again in this process starts clean

    app = FastAPI(
        title="CVM",
        summary="Customer value scoring for retail banks",
        description=(
            "Tier, next-product, churn and prospect scores from LightGBM models, every score "
            "explained with reason codes and saved before the answer is sent."
        ),
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=SPEC_PATH,
        # FastAPI's own pages load Swagger UI and ReDoc from CDNs; add_docs serves the former.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.rescorer = rescorer
    app.state.model_watcher = watcher
    app.state.scoring = scoring
    app.state.shadow = shadow
    app.state.pseudonymizer = pseudonymizer
    app.state.guard = guard
    app.state.dispatcher = dispatcher
    app.state.alert_processor = alert_processor
    app.state.metrics = metrics
    app.state.model_psi = model_psi
    app.state.casework = Casework.from_settings(settings)
    app.state.routing = RoutingPolicy.from_settings(settings)
    app.state.contact_policy = ContactPolicy.from_settings(settings)
    app.state.tier_policy = tier_policy
    app.state.prospect_plan = prospect_plan
    app.state.rewards_policy = rewards_policy
    app.state.next_best_actions = NextBestActionService(
        session_factory=session_factory,
        scoring=CustomerScoring(
            session_factory=session_factory,
            scoring=scoring,
            pseudonymizer=pseudonymizer,
            lifecycle=LifecycleRules.from_settings(settings),
        ),
        policy=action_policy,
        tier_policy=tier_policy,
        contact_policy=app.state.contact_policy,
        screen=ProductScreen(rules.eligibility),
        evidence=EvidenceCache(ttl_s=action_policy.evidence_ttl_s),
    )
    app.router.routes.extend(api_routes())
    add_docs(app)
    app.mount(
        console.PREFIX,
        console.build_console(
            settings,
            session_factory=session_factory,
            pseudonymizer=pseudonymizer,
            tier_policy=tier_policy,
            prospect_plan=prospect_plan,
            contact_policy=app.state.contact_policy,
            next_best_actions=app.state.next_best_actions,
        ),
        name="console",
    )
    # Added innermost first: request ids and access logs wrap CORS, which answers preflights
    # before the security middleware asks for a credential; only an authenticated request
    # learns which query parameters a route takes.
    app.add_middleware(RejectUnknownQueryParameters, routes=app.router.routes)
    app.add_middleware(SecurityMiddleware, guard=guard)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=[
                "X-Request-ID",
                "X-Client-Request-ID",
                "Retry-After",
                "Idempotent-Replayed",
            ],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    if not settings.auth_enabled:
        log.warning("authentication_disabled", detail="every caller has every scope")

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        if error.status >= 500:
            log.warning("service_error", code=error.code, detail=error.detail)
        return problem_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(_as_invalid_input(error), request)

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, error: OperationalError) -> JSONResponse:
        # The database is down, locked past the busy timeout or out of space: a use case
        # commits once, so its transaction was rolled back and nothing of it was saved.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.warning("database_error", error_type=type(error.orig).__name__, route=route)
        return problem_response(
            DatabaseUnavailable("the database is unavailable or busy; retry later"),
            request,
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # The route template, not the path: a path may hold a raw customer id.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("unhandled_error", error_type=type(error).__name__, route=route)
        return problem_response(ServiceError("an unexpected error occurred"), request)

    app.openapi = lambda: _openapi(app, scoring)  # type: ignore[method-assign]
    return app


def _as_invalid_input(error: RequestValidationError) -> InvalidInput:
    """FastAPI's own validation errors (path and query parameters) in our problem shape."""
    details = [
        {
            "field": field_path(e.get("loc", ())),
            "message": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in error.errors()
    ]
    return InvalidInput(
        "invalid field(s): " + ", ".join(d["field"] for d in details[:5]),
        extra={"errors": details},
    )


def _openapi(app: FastAPI, scoring: ScoringService) -> dict[str, Any]:
    """The generated spec, plus the request schemas built from the loaded models."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = copy.deepcopy(_route_spec(app.title, app.version, app.summary, app.description))
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    for model in (
        *scoring.request_models.values(),
        scoring.assessment_model,
        *customers.REQUEST_MODELS,
    ):
        schema = model.model_json_schema(ref_template=template)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    document_security(spec)
    app.openapi_schema = spec
    return spec
