"""The loaded models and their cards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime

from app.errors import NotFound
from app.http.deps import (
    Admin,
    RecordingSessionDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    require,
)
from app.modelops import backtest as backtests
from app.modelops import service
from app.modelops.cards import data_notice, trained_on_synthetic_data
from app.modelops.challenger import challenger_report
from app.modelops.monitoring import monitor, record_run
from app.modelops.schemas import (
    VERSION_PATTERN,
    ActivationOut,
    BacktestReport,
    ChallengerReport,
    FairnessReport,
    ModelRegistryOut,
    ModelTransitionOut,
    ModelVersionOut,
    MonitoringReport,
    RegisterRequest,
    ServedAsOf,
    ShadowOut,
    ShadowRequest,
    ShadowStopped,
    TransitionRequest,
)
from app.modelops.serving import ChampionWatcher
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.registry import available_versions
from app.scoring.schemas import ModelCard, ModelSummary
from app.security.audit import note
from app.security.principal import Scope

router = APIRouter(
    prefix="/v1", tags=["models"], dependencies=[Depends(require(Scope.MODELS_READ))]
)

# Changing what serves: the admin scope, every call on the audit trail.
admin_router = APIRouter(
    prefix="/v1/admin/models", tags=["models"], dependencies=[Depends(require(Scope.ADMIN))]
)

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The caller registered this version (separation of duties)", **PROBLEM},
    404: {"description": "No such version", **PROBLEM},
    409: {"description": "Not allowed from its status, lost a race, or does not load", **PROBLEM},
    422: {"description": "Invalid body, or approval without a backtest and model card", **PROBLEM},
}
VersionPath = Annotated[str, Path(min_length=1, max_length=32, pattern=VERSION_PATTERN)]

_HEADLINE_KEYS = ("roc_auc", "pr_auc", "accuracy", "macro_f1")


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    test = metrics.get("test", {})
    headline = {k: float(test[k]) for k in _HEADLINE_KEYS if k in test}
    for group in ("all_customers", "new_customers"):
        for key, value in test.get(group, {}).items():
            if key != "customers":
                headline[f"{group}.{key}"] = float(value)
    return headline


def _summary(model: ScoringModel) -> dict[str, Any]:
    m = model.manifest
    return {
        "task": m.task.value,
        "version": m.version,
        "objective": m.objective.value,
        "num_trees": m.num_trees,
        "created_at": m.created_at,
        "explanation_method": m.explanation_method,
        "headline_metrics": _headline(m.metrics),
        "trained_on_synthetic_data": trained_on_synthetic_data(m),
        "data_notice": data_notice(m),
    }


@router.get("/models", response_model=list[ModelSummary])
async def list_models(registry: RegistryDep) -> list[dict[str, Any]]:
    """The active model of every task."""
    return [_summary(model) for model in registry.loaded.values()]


@router.get(
    "/models/{task}", response_model=ModelCard, responses={404: {"description": "No model"}}
)
async def model_card(task: Task, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """The model card: version, schema, held-out metrics with intervals, baselines, data
    provenance (synthetic or the bank's), reason-code fidelity and how to reproduce it."""
    model = registry.get(task)
    if model is None:
        raise NotFound(f"no {task.value} model is loaded")
    m = model.manifest
    return {
        **_summary(model),
        "classes": list(m.classes),
        "feature_schema": m.feature_schema.model_dump(mode="json"),
        "metrics": m.metrics,
        "thresholds": m.thresholds,
        "params": m.params,
        "lightgbm_version": m.lightgbm_version,
        "data_fingerprint": m.data_fingerprint,
        "data_source": m.data_source,
        "training_rows": m.training_rows,
        "split": m.split,
        "card": m.card,
        "available_versions": available_versions(settings.models_dir, task),
    }


@router.get(
    "/models/{task}/fairness",
    response_model=FairnessReport,
    responses={404: {"description": "No model, or its card has no fairness section", **PROBLEM}},
)
async def fairness(task: Task, registry: RegistryDep) -> FairnessReport:
    """Selection rates of the served model by gender, age band and region (fairlearn
    MetricFrame, bootstrap intervals), as measured for its model card."""
    model = registry.get(task)
    if model is None:
        raise NotFound(f"no {task.value} model is loaded")
    card = model.manifest.card or {}
    report = card.get("quantitative_analyses", {}).get("fairness", {})
    if not report.get("applicable"):
        reason = report.get("reason") or "its model card has no fairness section: retrain it"
        raise NotFound(f"{task.value} version {model.manifest.version}: {reason}")
    return FairnessReport(
        task=task.value,
        version=model.manifest.version,
        measured_on=card["metrics"]["held_out"],
        synthetic_data=card["training_data"]["synthetic"],
        status=report["status"],
        factors_not_in_data=card["factors"]["not_in_data"],
        report=report,
    )


@router.get("/models/{task}/versions", response_model=ModelRegistryOut)
def model_versions(task: Task, session: SessionDep, registry: RegistryDep) -> ModelRegistryOut:
    """The registry of a task: its versions, their status, and every change made to them."""
    return ModelRegistryOut(
        task=task.value,
        served_here=registry.version(task),
        versions=[
            ModelVersionOut.model_validate(r) for r in service.list_versions(session, task=task)
        ],
        transitions=[
            ModelTransitionOut.model_validate(t)
            for t in service.list_transitions(session, task=task)
        ],
    )


@router.get("/models/{task}/served", response_model=ServedAsOf)
def served_as_of(
    task: Task,
    session: SessionDep,
    at: Annotated[
        AwareDatetime | None,
        Query(description="The instant (ISO 8601, zoned); default: now."),
    ] = None,
) -> ServedAsOf:
    """Which version of a task was the champion at a past instant (from the append-only trail)."""
    instant = at or datetime.now(UTC)
    return ServedAsOf(
        task=task.value, at=instant, version=service.as_of(session, task=task, at=instant)
    )


@router.get(
    "/models/{task}/monitoring",
    response_model=MonitoringReport,
    responses={
        404: {"description": "No such version, or no champion", **PROBLEM},
        409: {"description": "The version has no frozen training reference", **PROBLEM},
    },
)
def monitoring(
    task: Task,
    session: RecordingSessionDep,
    tenant: TenantDep,
    request: Request,
    version: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=32,
            pattern=VERSION_PATTERN,
            description="Default: the champion.",
        ),
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only rows stored from this instant on.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000, description="Newest rows compared.")] = 100_000,
) -> MonitoringReport:
    """PSI per feature and for the score (bands and a sample-size-aware flag) of the stored
    inputs of a version against the bins frozen from its training data (the run is stored:
    the console shows the latest)."""
    report = monitor(session, task=task, version=version, since=since, limit=limit, tenant=tenant)
    record_run(session, report=report, tenant=tenant, now=datetime.now(UTC))
    request.app.state.model_psi.update(
        {f"{task.value}/{f.name}": f.psi for f in [*report.features, *filter(None, [report.score])]}
    )
    return report


@router.get(
    "/models/{task}/backtest",
    response_model=BacktestReport,
    responses={
        404: {"description": "No outcomes imported for the task", **PROBLEM},
        422: {"description": "A task without stored outcomes, or a bad parameter", **PROBLEM},
    },
)
def backtest(
    task: Task,
    session: SessionDep,
    tenant: TenantDep,
    version: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=32,
            pattern=VERSION_PATTERN,
            description="Only this version's scores (default: every version's).",
        ),
    ] = None,
    resamples: Annotated[
        int, Query(ge=20, le=1000, description="Bootstrap resamples per interval.")
    ] = 200,
) -> BacktestReport:
    """Stored scores against imported outcomes, per month of assessment: AUC, Brier,
    observed/expected and top-decile lift with seeded bootstrap 95% intervals."""
    return backtests.backtest(
        session, task=task, version=version, tenant=tenant, resamples=resamples
    )


@admin_router.post(
    "/{task}/versions", response_model=ModelVersionOut, status_code=201, responses=CHANGE_ERRORS
)
def register_version(
    task: Task,
    body: RegisterRequest,
    session: SessionDep,
    settings: SettingsDep,
    caller: Admin,
    request: Request,
) -> ModelVersionOut:
    """Register a version on disk as a candidate; the caller becomes its registrant."""
    row = service.register_version(
        session,
        models_dir=settings.models_dir,
        task=task,
        version=body.version,
        actor=caller.client_id,
        owner=body.owner,
        restrictions=body.restrictions,
        now=datetime.now(UTC),
    )
    note(request, task=task.value, version=body.version, action="register")
    return ModelVersionOut.model_validate(row)


@admin_router.post(
    "/{task}/versions/{version}/approve", response_model=ModelVersionOut, responses=CHANGE_ERRORS
)
def approve_version(
    task: Task,
    version: VersionPath,
    body: TransitionRequest,
    session: SessionDep,
    caller: Admin,
    request: Request,
) -> ModelVersionOut:
    """Approve a candidate as its validator (not its registrant; needs its backtest and card)."""
    row = service.approve_version(
        session,
        task=task,
        version=version,
        actor=caller.client_id,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    note(request, task=task.value, version=version, action="approve")
    return ModelVersionOut.model_validate(row)


def _activated(request: Request, activation: service.Activation) -> ActivationOut:
    """Serve the new champion here at once; the other processes' watchers follow within
    their poll interval."""
    watcher: ChampionWatcher = request.app.state.model_watcher
    watcher.adopt(Task(activation.row.task), activation.model)
    return ActivationOut(
        task=activation.row.task,
        champion=ModelVersionOut.model_validate(activation.row),
        replaced=activation.replaced,
    )


@admin_router.post(
    "/{task}/versions/{version}/activate", response_model=ActivationOut, responses=CHANGE_ERRORS
)
def activate_version(
    task: Task,
    version: VersionPath,
    body: TransitionRequest,
    session: SessionDep,
    settings: SettingsDep,
    caller: Admin,
    request: Request,
) -> ActivationOut:
    """Make an approved version the champion, everywhere, without a restart."""
    activation = service.activate_version(
        session,
        models_dir=settings.models_dir,
        task=task,
        version=version,
        actor=caller.client_id,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    note(request, task=task.value, version=version, action="activate")
    return _activated(request, activation)


@admin_router.post("/{task}/rollback", response_model=ActivationOut, responses=CHANGE_ERRORS)
def rollback(
    task: Task,
    body: TransitionRequest,
    session: SessionDep,
    settings: SettingsDep,
    caller: Admin,
    request: Request,
) -> ActivationOut:
    """Bring back the previous champion, once it is checked to load."""
    activation = service.rollback(
        session,
        models_dir=settings.models_dir,
        task=task,
        actor=caller.client_id,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    note(request, task=task.value, version=activation.row.version, action="rollback")
    return _activated(request, activation)


SHADOW_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not an admin", **PROBLEM},
    404: {"description": "No such version, or no shadow to stop", **PROBLEM},
    409: {
        "description": "The champion itself, not an approved challenger, or does not load",
        **PROBLEM,
    },
    422: {"description": "Invalid body: the share is not between 0 and 1", **PROBLEM},
}


@router.post(
    "/models/{task}/versions/{version}/shadow",
    response_model=ShadowOut,
    responses=SHADOW_ERRORS,
    dependencies=[Depends(require(Scope.ADMIN))],
)
def start_shadow(
    task: Task,
    version: VersionPath,
    body: ShadowRequest,
    session: SessionDep,
    settings: SettingsDep,
    caller: Admin,
    request: Request,
) -> ShadowOut:
    """Let an approved challenger score a share of the task's requests in shadow, everywhere,
    without a restart; the champion's answers are unchanged."""
    shadow = service.set_shadow(
        session,
        models_dir=settings.models_dir,
        task=task,
        version=version,
        share=body.share,
        actor=caller.client_id,
        now=datetime.now(UTC),
    )
    out = ShadowOut.model_validate(shadow)
    note(request, task=task.value, version=version, share=body.share, action="shadow")
    watcher: ChampionWatcher = request.app.state.model_watcher
    watcher.sync_shadows()  # here at once; the other processes on their next poll
    return out


@router.delete(
    "/models/{task}/shadow",
    response_model=ShadowStopped,
    responses=SHADOW_ERRORS,
    dependencies=[Depends(require(Scope.ADMIN))],
)
def stop_shadow(task: Task, session: SessionDep, caller: Admin, request: Request) -> ShadowStopped:
    """Stop a task's challenger scoring in shadow (the scores it stored stay)."""
    version = service.stop_shadow(session, task=task)
    note(request, task=task.value, version=version, action="unshadow", actor=caller.client_id)
    watcher: ChampionWatcher = request.app.state.model_watcher
    watcher.sync_shadows()
    return ShadowStopped(task=task.value, stopped=version)


@router.get(
    "/models/{task}/challenger/report",
    response_model=ChallengerReport,
    responses={404: {"description": "No shadow scores stored for the task", **PROBLEM}},
)
def challenger(
    task: Task,
    session: SessionDep,
    tenant: TenantDep,
    version: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=32,
            pattern=VERSION_PATTERN,
            description="The challenger (default: the newest one scored in shadow).",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=1_000_000, description="Newest pairs compared.")
    ] = 100_000,
    resamples: Annotated[
        int, Query(ge=20, le=1000, description="Bootstrap resamples per interval.")
    ] = 200,
) -> ChallengerReport:
    """Champion against challenger on the requests scored in shadow: mean difference, band
    agreement, rank correlation, and once outcomes are imported AUC and Brier of both on the
    same rows with paired bootstrap 95% intervals."""
    return challenger_report(
        session, task=task, tenant=tenant, version=version, limit=limit, resamples=resamples
    )
