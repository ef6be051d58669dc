"""The loaded models and their cards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.errors import NotFound
from app.http.deps import RegistryDep, SettingsDep, require
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.registry import available_versions
from app.scoring.schemas import ModelCard, ModelSummary
from app.security.principal import Scope

router = APIRouter(
    prefix="/v1", tags=["models"], dependencies=[Depends(require(Scope.MODELS_READ))]
)

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
    }


@router.get("/models", response_model=list[ModelSummary])
async def list_models(registry: RegistryDep) -> list[dict[str, Any]]:
    """The active model of every task."""
    return [_summary(model) for model in registry.loaded.values()]


@router.get(
    "/models/{task}", response_model=ModelCard, responses={404: {"description": "No model"}}
)
async def model_card(task: Task, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """The model card: version, schema, held-out metrics, training data fingerprint."""
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
        "available_versions": available_versions(settings.models_dir, task),
    }
