"""Bulk persistence of batch scores: one transaction per chunk, so a rerun resumes after a crash.

Every row of a chunk carries the request id ``batch:<run-id>:<chunk>``. The run id is derived
from the input (path, size and modification time of each file), the model (task, version,
creation time) and the chunk size, so a rerun of the same job on the same file finds the chunks
an earlier, crashed run committed and skips them; a changed file or model is a new run. Inside
each chunk's transaction the request id is locked (PostgreSQL) and looked up before anything is
written, so two runs racing over the same file still write each chunk once. Customer ids are
stored as the API stores them (pseudonymised when a secret is configured), and the churn
scores that cross the alert threshold for the customer's stage are queued as alert candidates
in the chunk's transaction, as the API's are; the alert processor runs after each chunk's
commit. A nightly run of the whole book is how most at-risk customers reach the staff.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from app.alerts.service import ChurnAlerts, process_pending
from app.batch.service import ScoredChunk, is_parquet, parquet_files
from app.scoring.compiled import CompiledModel
from app.scoring.feature_schema import FeatureKind, FeatureSchema
from app.scoring.feature_schema import FloatMatrix as FloatArray
from app.scoring.manifest import Task
from app.scoring.policy import alert_threshold_crossed, lifecycle_stage
from app.scoring.repository import (
    AlertCandidateRow,
    ScoreRow,
    bulk_insert_scores,
    insert_alert_candidates,
    lock_request_id,
    request_id_exists,
)
from app.security.pseudonyms import Pseudonymizer

if TYPE_CHECKING:
    from app.batch.service import BatchModel
    from app.scoring.model import ScoringModel

REQUEST_PREFIX = "batch"
# Reasons kept on an alert a batch score opens (the API's default for a score).
ALERT_REASONS = 5


def run_id_for(*, input_path: Path, model: BatchModel, chunk_rows: int) -> str:
    """A run's identity: the same input, model and chunking always give the same id."""
    digest = hashlib.sha256()
    files = parquet_files(input_path) if is_parquet(input_path) else [input_path]
    for file in files:
        stat = file.stat()
        digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    manifest = model.manifest
    identity = f"{manifest.task.value}|{manifest.version}|{manifest.created_at.isoformat()}"
    digest.update(f"{identity}|{chunk_rows}".encode())
    return digest.hexdigest()[:16]


def chunk_request_id(run_id: str, chunk: int | str) -> str:
    """The request id every row of one chunk is stored under."""
    return f"{REQUEST_PREFIX}:{run_id}:{chunk}"


def feature_records(schema: FeatureSchema, matrix: FloatArray) -> list[dict[str, Any]]:
    """Each row's inputs as the API stores them: categories by name, missing values as null."""
    columns: list[list[Any]] = []
    for j, spec in enumerate(schema.features):
        values = matrix[:, j]
        missing = np.isnan(values)
        if spec.kind is FeatureKind.CATEGORY:
            assert spec.categories is not None
            labels = np.asarray([*spec.categories, None], dtype=object)
            codes = np.where(missing, len(spec.categories), values).astype(np.intp)
            columns.append(labels[codes].tolist())
            continue
        if spec.kind is FeatureKind.BOOLEAN:
            converted = (np.nan_to_num(values) != 0).astype(object)
        elif spec.kind is FeatureKind.INTEGER:
            converted = np.nan_to_num(values).astype(np.int64).astype(object)
        else:
            converted = values.astype(object)
        converted[missing] = None
        columns.append(converted.tolist())
    names = schema.names
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


class DatabaseChunkSink:
    """Writes each scored chunk to the ``score`` table in its own transaction, once."""

    def __init__(
        self,
        engine: Engine,
        *,
        model: BatchModel,
        run_id: str,
        unit_prefix: str = "",
        pseudonymizer: Pseudonymizer | None = None,
        alerts: ChurnAlerts | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.run_id = run_id
        self.unit_prefix = unit_prefix
        self.pseudonymizer = pseudonymizer
        self.alerts = alerts if model.manifest.task is Task.CHURN else None
        # Compiled trees cannot word reasons: the model in ``model_dir`` does, loaded with
        # LightGBM only when a score first crosses the alert threshold.
        self.model_dir = model_dir
        self._explainer = None if isinstance(model, CompiledModel) else model

    def request_id(self, index: int) -> str:
        """The request id of chunk ``index`` of this run (or of this Dask partition)."""
        return chunk_request_id(self.run_id, f"{self.unit_prefix}{index}")

    def write(self, chunk: ScoredChunk) -> int | None:
        """Commit the chunk's rows (and alert candidates) in one transaction, then turn the
        candidates into alerts; None if an earlier run already committed the chunk."""
        request_id = self.request_id(chunk.index)
        with self.engine.begin() as connection:
            lock_request_id(connection, request_id=request_id)
            if request_id_exists(connection, request_id=request_id):
                return None
            rows = self.rows(chunk, request_id)
            bulk_insert_scores(connection, rows=rows)
            queued = insert_alert_candidates(connection, rows=self.candidates(chunk, rows))
        if queued and self.alerts is not None:
            process_pending(self.engine, alerts=self.alerts)
        return len(rows)

    def rows(self, chunk: ScoredChunk, request_id: str) -> list[ScoreRow]:
        """The chunk's score rows: outputs, reasons and features per customer."""
        manifest = self.model.manifest
        output_names = [name for name in chunk.columns if name != "reasons"]
        outputs = [chunk.columns[name].to_pylist() for name in output_names]
        reasons: list[Any] = (
            chunk.columns["reasons"].to_pylist()
            if "reasons" in chunk.columns
            else [[]] * len(chunk.ids)
        )
        features = feature_records(self.model.schema, chunk.matrix)
        ids = chunk.ids.to_pylist()
        stored_ids = ids if self.pseudonymizer is None else self.pseudonymizer.pseudonyms(ids)
        now = datetime.now(UTC)
        return [
            ScoreRow(
                request_id=request_id,
                task=manifest.task.value,
                customer_id=customer_id,
                model_name=manifest.task.value,
                model_version=manifest.version,
                outputs=dict(zip(output_names, values, strict=True)),
                reasons=reasons[i],
                features=features[i],
                created_at=now,
            )
            for i, (customer_id, *values) in enumerate(zip(stored_ids, *outputs, strict=True))
        ]

    def candidates(self, chunk: ScoredChunk, rows: list[ScoreRow]) -> list[AlertCandidateRow]:
        """The chunk's churn scores that cross the alert threshold for the customer's stage.
        Only those are explained (a few in a hundred): staff act on an alert's reasons."""
        if self.alerts is None:
            return []
        thresholds = self.alerts.thresholds
        probabilities = chunk.columns["probability"].to_pylist()
        bands = (
            chunk.columns["band"].to_pylist()
            if "band" in chunk.columns
            else ["low"] * len(probabilities)
        )
        stages = self.stages(chunk)
        crossing = np.flatnonzero(
            [
                alert_threshold_crossed(p, b, s, thresholds)
                for p, b, s in zip(probabilities, bands, stages, strict=True)
            ]
        )
        explained = self.reasons(chunk.matrix[crossing])
        version = self.model.manifest.version
        return [
            AlertCandidateRow(
                request_id=rows[i]["request_id"],
                customer_id=rows[i]["customer_id"],
                tenant=None,
                stage=stages[i],
                probability=probabilities[i],
                band=bands[i],
                reasons=reasons,
                model_version=version,
                source="batch",
                created_at=rows[i]["created_at"],
            )
            for i, reasons in zip(crossing.tolist(), explained, strict=True)
        ]

    def stages(self, chunk: ScoredChunk) -> list[str | None]:
        """Each row's lifecycle stage: the input's, else from tenure (None: unknown)."""
        if chunk.stages is not None:
            return [None if s is None else str(s) for s in chunk.stages.to_pylist()]
        names = self.model.schema.names
        if "tenure_months" not in names:
            return [None] * len(chunk.ids)
        tenure = chunk.matrix[:, names.index("tenure_months")].tolist()
        return [lifecycle_stage(months) for months in tenure]

    def reasons(self, matrix: FloatArray) -> list[list[dict[str, Any]]]:
        """Each row's top reasons as the API words them (none without an explainer: the alert
        then carries the default actions)."""
        model = self.explainer() if len(matrix) else None
        if model is None:
            return [[] for _ in range(len(matrix))]
        explanation = model.explain(matrix)
        return [
            [r.wire() for r in model.explain_row(matrix, explanation, i, top=ALERT_REASONS).reasons]
            for i in range(len(matrix))
        ]

    def explainer(self) -> ScoringModel | None:
        """The LightGBM model that words the reasons (None: compiled trees, no ``model_dir``)."""
        if self._explainer is None and self.model_dir is not None:
            from app.scoring.model import ScoringModel

            self._explainer = ScoringModel.load(self.model_dir, threads=self.model.threads)
        return self._explainer
