"""Bulk persistence of batch scores: one transaction per chunk, so a rerun resumes after a crash.

Every row of a chunk carries the request id ``batch:<run-id>:<chunk>``. The run id is derived
from the input (path, size and modification time of each file), the model (task, version,
creation time) and the chunk size, so a rerun of the same job on the same file finds the chunks
an earlier, crashed run committed and skips them; a changed file or model is a new run. Inside
each chunk's transaction the request id is locked (PostgreSQL) and looked up before anything is
written, so two runs racing over the same file still write each chunk once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from app.db.repository import ScoreRow, bulk_insert_scores, lock_request_id, request_id_exists
from app.ml.schema import FeatureKind, FeatureSchema
from app.ml.schema import FloatMatrix as FloatArray
from app.services.batch import ScoredChunk, is_parquet, parquet_files

if TYPE_CHECKING:
    from app.services.batch import BatchModel

REQUEST_PREFIX = "batch"


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
        self, engine: Engine, *, model: BatchModel, run_id: str, unit_prefix: str = ""
    ) -> None:
        self.engine = engine
        self.model = model
        self.run_id = run_id
        self.unit_prefix = unit_prefix

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
            for i, (customer_id, *values) in enumerate(
                zip(chunk.ids.to_pylist(), *outputs, strict=True)
            )
        ]
