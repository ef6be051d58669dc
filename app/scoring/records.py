"""An assessment as stored rows: one shape whatever asked for it (API, batch, an event)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from app.scoring.assess import TaskAssessment
from app.scoring.repository import ScoreRow


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
    block = assessment.block
    features = assessment.model.schema.decode_rows(block.matrix)
    probabilities = assessment.probability.tolist()
    bands = assessment.band.tolist()
    alerts = assessment.alert.tolist()
    return [
        ScoreRow(
            request_id=request_id,
            task=task,
            customer_id=customer_id,
            model_name=task,
            model_version=version,
            outputs=assessment.outputs(i),
            reasons=assessment.stored_reasons(i),
            features=features[i],
            created_at=created_at,
            tenant=tenant,
            source=source.value,
            stage=block.stage(i).value,
            probability=None if math.isnan(probabilities[i]) else round(probabilities[i], 6),
            band=bands[i],
            alert=alerts[i],
        )
        for i, customer_id in enumerate(stored_ids)
    ]
