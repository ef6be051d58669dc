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
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine

from app.alerts.service import ChurnAlerts, process_pending
from app.batch.service import ScoredChunk, is_parquet, parquet_files
from app.scoring.assess import Block, assess_task
from app.scoring.compiled import CompiledModel
from app.scoring.manifest import Task
from app.scoring.records import Source, alert_candidates, score_rows
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
        """Commit the chunk's rows in one transaction; None if an earlier run already did."""
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
        """The chunk's score rows, in the one stored shape (``app.scoring.records``)."""
        if chunk.assessment is None:
            return []
        ids = chunk.ids.to_pylist()
        return score_rows(
            chunk.assessment,
            stored_ids=ids if self.pseudonymizer is None else self.pseudonymizer.pseudonyms(ids),
            request_id=request_id,
            source=Source.BATCH,
            created_at=datetime.now(UTC),
        )

    def candidates(self, chunk: ScoredChunk, rows: list[ScoreRow]) -> list[AlertCandidateRow]:
        """The chunk's scores that cross the alert threshold for the customer's stage, queued
        for the alerts domain. When the run asked for no reasons those few are assessed again
        with them, by the same function: staff act on an alert's reasons."""
        assessment = chunk.assessment
        if assessment is None or self.alerts is None or not assessment.alert.any():
            return []
        if assessment.explanation is not None:
            return alert_candidates(assessment, rows)
        crossing = np.flatnonzero(assessment.alert)
        model = self.explainer()
        if model is None:  # compiled trees alone: the alert carries the default actions
            return alert_candidates(assessment, rows)
        block = assessment.block
        subset = Block(
            ids=[block.ids[i] for i in crossing.tolist()],
            matrix=block.matrix[crossing],
            stages=block.stages[crossing],
            risk_profiles=_pick(block.risk_profiles, crossing.tolist()),
            tiers=_pick(block.tiers, crossing.tolist()),
        )
        explained = assess_task(
            assessment.task,
            model,
            subset,
            rules=assessment.rules,
            options=replace(assessment.options, reasons=ALERT_REASONS),
        )
        return alert_candidates(explained, [rows[i] for i in crossing.tolist()])

    def explainer(self) -> ScoringModel | None:
        """The LightGBM model that words the reasons (None: compiled trees, no ``model_dir``)."""
        if self._explainer is None and self.model_dir is not None:
            from app.scoring.model import ScoringModel

            self._explainer = ScoringModel.load(self.model_dir, threads=self.model.threads)
        return self._explainer


def _pick(values: Sequence[str | None] | None, rows: list[int]) -> list[str | None] | None:
    """Some rows of a per-customer column (None stays None)."""
    return None if values is None else [values[i] for i in rows]
