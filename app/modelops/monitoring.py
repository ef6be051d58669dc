"""Drift monitoring: PSI of each feature and of the score, stored inputs against the
reference frozen in the version's manifest at training (see ``app.modelops.psi``).

Each run computed by ``cvm monitor`` or the monitoring endpoint is stored (``model_drift_run``);
the console shows the latest run of the champion instead of computing one per view."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.modelops import service
from app.modelops.backtest import scope_key
from app.modelops.psi import REFERENCE_KEY, Reference, Stability, stability
from app.modelops.schemas import FeatureStability, MonitoringReport
from app.modelops.tables import ModelDriftRun
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope, stored_inputs


class NoReference(Conflict):
    """The version's manifest holds no frozen reference (trained before monitoring existed)."""

    code = "no_reference"
    title = "No frozen reference"


def _wire(name: str, reference: Reference, result: Stability) -> FeatureStability:
    return FeatureStability(
        name=name,
        psi=result.psi,
        band=result.band,
        threshold=result.threshold if math.isfinite(result.threshold) else None,
        flagged=result.flagged,
        bins=[
            {"bin": label, "reference": r, "current": c}
            for label, r, c in zip(
                reference.labels(), reference.shares, result.current_shares, strict=True
            )
        ],
    )


def feature_stability(
    references: dict[str, Any], features: list[dict[str, Any]]
) -> list[tuple[str, Reference, Stability]]:
    """Every referenced feature's stability on the stored feature documents."""
    results = []
    for name, data in references.items():
        reference = Reference.from_json(data)
        column = [row.get(name) for row in features]
        if reference.categories is None:
            values: Any = np.array(
                [np.nan if v is None or isinstance(v, str) else v for v in column],
                dtype=np.float64,
            )
        else:
            values = column
        results.append((name, reference, stability(reference, reference.counts(values))))
    return results


def monitor(
    session: Session,
    *,
    task: Task,
    version: str | None,
    since: datetime | None,
    limit: int,
    tenant: TenantScope | None,
) -> MonitoringReport:
    """PSI per feature and for the score of a version (default: the champion), on its newest
    ``limit`` stored rows since ``since``."""
    if version is None:
        version = service.champions(session).get(task)
        if version is None:
            raise NotFound(f"no {task.value} champion to monitor")
    row = service.champion_row(session, task=task, version=version)
    frozen = row.manifest.get("extras", {}).get(REFERENCE_KEY)
    if not frozen:
        raise NoReference(
            f"{task.value} version {version} has no frozen reference: retrain it with cvm train"
        )
    features, scores = stored_inputs(
        session, task=task.value, model_version=version, since=since, limit=limit, tenant=tenant
    )
    results = feature_stability(frozen["features"], features)
    score = None
    if frozen.get("score"):
        reference = Reference.from_json(frozen["score"])
        values = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
        score = _wire("score", reference, stability(reference, reference.counts(values)))
    return MonitoringReport(
        task=task.value,
        version=version,
        reference_rows=int(frozen["rows"]),
        current_rows=len(features),
        since=since,
        features=[_wire(name, ref, result) for name, ref, result in results],
        score=score,
    )


def record_run(
    session: Session, *, report: MonitoringReport, tenant: TenantScope | None, now: datetime
) -> None:
    """Store a computed run as the latest of its scope, task and version; one commit."""
    session.add(
        ModelDriftRun(
            scope=scope_key(tenant),
            task=report.task,
            version=report.version,
            report=report.model_dump(mode="json"),
            computed_at=now,
        )
    )
    session.commit()


@dataclass(frozen=True)
class StoredDrift:
    """The latest stored drift run and when it was computed."""

    report: MonitoringReport
    computed_at: datetime


def latest_run(
    session: Session, *, task: Task, version: str, tenant: TenantScope | None
) -> StoredDrift | None:
    """The latest stored run of a version in a scope; None when none was run."""
    row = session.scalars(
        select(ModelDriftRun)
        .where(
            ModelDriftRun.scope == scope_key(tenant),
            ModelDriftRun.task == task.value,
            ModelDriftRun.version == version,
        )
        .order_by(ModelDriftRun.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    return StoredDrift(
        report=MonitoringReport.model_validate(row.report), computed_at=row.computed_at
    )
