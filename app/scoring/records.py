"""An assessment as stored rows: one shape whatever asked for it (API, batch, an event)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

import numpy as np

from app.scoring.assess import TaskAssessment
from app.scoring.repository import AlertCandidateRow, ScoreRow


class Source(StrEnum):
    """Who asked for a stored score."""

    API = "api"
    BATCH = "batch"
    EVENT = "event"


def score_rows(
    assessment: TaskAssessment,
    *,
    stored_ids: Sequence[str],
    request_id: str,
    source: Source,
    created_at: datetime,
    tenant: str | None = None,
) -> list[ScoreRow]:
    """One row per customer: outputs, structured reasons, the features the model saw. The
    headline probability is rounded as the API answers it (6 digits)."""
    task = assessment.task.value
    version = assessment.model_version
    features = assessment.model.schema.decode_rows(assessment.block.matrix)
    headline = assessment.headline()
    return [
        ScoreRow(
            request_id=request_id,
            task=task,
            customer_id=customer_id,
            model_name=task,
            model_version=version,
            outputs=outputs,
            reasons=reasons,
            features=row_features,
            created_at=created_at,
            tenant=tenant,
            source=source.value,
            stage=stage,
            probability=None if probability != probability else probability,
            band=band,
            alert=alert,
        )
        for customer_id, outputs, reasons, row_features, stage, probability, band, alert in zip(
            stored_ids,
            assessment.outputs(),
            assessment.stored_reasons(),
            features,
            headline.stages,
            headline.probability,
            headline.band,
            headline.alert,
            strict=True,
        )
    ]


def alert_candidates(
    assessment: TaskAssessment, rows: Sequence[ScoreRow]
) -> list[AlertCandidateRow]:
    """The rows whose assessment crossed the alert threshold for their stage, queued with the
    scores for the alerts domain (plain rows: the writer knows nothing of alerts). Their
    reasons are the assessment's; the caller assesses with reasons when it wants them."""
    candidates = []
    for i in np.flatnonzero(assessment.alert).tolist():
        row = rows[i]
        explained = assessment.explained(i, assessment.headline_class(i))
        candidates.append(
            AlertCandidateRow(
                request_id=row["request_id"],
                customer_id=row["customer_id"],
                tenant=row.get("tenant"),
                stage=row["stage"],
                probability=row["probability"] or 0.0,
                band=str(row["band"]),
                reasons=[] if explained is None else list(explained["reasons"]),
                model_version=row["model_version"],
                source=row["source"],
                created_at=row["created_at"],
            )
        )
    return candidates
