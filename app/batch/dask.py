"""The batch scorer on a Dask cluster: partitions of a Parquet dataset scored by the workers.

The model travels once: its files are scattered to every worker (``broadcast=True``) and each
worker process builds the model from them once, cached by the files' digest. A partition is a
run of consecutive row groups; each is scored by the same code as ``cvm score`` and written as
one file of a partitioned Parquet dataset (``part-00000.parquet`` ...), its rejects under
``_rejects/`` (skipped by Parquet readers), and with ``database_url`` persisted one transaction
per chunk under the request id ``batch:<run-id>:<partition>.<chunk>``. Workers must see the
input and output paths (a shared file system or the same machine).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pyarrow.parquet as pq
from sqlalchemy import Engine

from app.alerts.service import ChurnAlerts
from app.batch.persist import DatabaseChunkSink, run_id_for
from app.batch.service import (
    CHUNK_ROWS,
    STAGE_COLUMN,
    BatchSummary,
    input_columns,
    is_parquet,
    iter_row_groups,
    parquet_files,
    rechunk,
    score_batches,
)
from app.config import get_settings
from app.db.session import create_db_engine
from app.scoring.arrow import check_columns
from app.scoring.manifest import Manifest
from app.scoring.model import ScoringModel
from app.security.pseudonyms import Pseudonymizer

LOCAL = "local"
PARTITION_ROWS = 262_144
REJECTS_DIR = "_rejects"


@contextmanager
def dask_client(address: str, *, workers: int | None = None, threads: int = 1) -> Iterator[Any]:
    """A client of the scheduler at ``address``, or of a LocalCluster on this machine."""
    from distributed import Client, LocalCluster

    if address != LOCAL:
        with Client(address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=threads, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@dataclass(frozen=True)
class ModelPayload:
    """A model's files as text: what is broadcast to the workers."""

    digest: str
    manifest_json: str
    model_text: str
    value_model_text: str | None

    @classmethod
    def read(cls, directory: Path) -> ModelPayload:
        """Read a model directory's files."""
        manifest = Manifest.load(directory)
        manifest_json = (directory / "manifest.json").read_text(encoding="utf-8")
        model_text = (directory / manifest.model_file).read_text(encoding="utf-8")
        value_text = (
            (directory / manifest.value_model_file).read_text(encoding="utf-8")
            if manifest.value_model_file
            else None
        )
        digest = hashlib.sha256()
        for part in (manifest_json, model_text, value_text or ""):
            digest.update(part.encode())
        return cls(digest.hexdigest(), manifest_json, model_text, value_text)

    def build(self, *, threads: int) -> ScoringModel:
        """The scoring model these files describe."""
        value_booster = (
            lgb.Booster(model_str=self.value_model_text) if self.value_model_text else None
        )
        return ScoringModel(
            Manifest.model_validate_json(self.manifest_json),
            lgb.Booster(model_str=self.model_text),
            value_booster,
            threads=threads,
        )


# Per worker process: models by digest and engines by URL, built on first use.
_models: dict[tuple[str, int], ScoringModel] = {}
_engines: dict[str, Engine] = {}
_cache_lock = threading.Lock()


def _worker_model(payload: ModelPayload, threads: int) -> ScoringModel:
    with _cache_lock:
        key = (payload.digest, threads)
        if key not in _models:
            _models[key] = payload.build(threads=threads)
        return _models[key]


def _worker_engine(url: str) -> Engine:
    with _cache_lock:
        if url not in _engines:
            _engines[url] = create_db_engine(url)
        return _engines[url]


def _worker_pseudonymizer(fingerprint: str | None) -> Pseudonymizer | None:
    """The worker's own pseudonymizer (from its settings: the secret never crosses the
    cluster), checked against the client's, so that no worker stores raw or foreign ids."""
    if fingerprint is None:
        return None
    pseudonymizer = Pseudonymizer.from_settings(get_settings())
    if pseudonymizer is None or pseudonymizer.fingerprint != fingerprint:
        raise ValueError(
            "this Dask worker's CVM_PSEUDONYM_SECRET is missing or differs from the client's: "
            "every worker needs the same secret to store pseudonymised ids"
        )
    return pseudonymizer


@dataclass(frozen=True)
class Partition:
    """Consecutive row groups of one Parquet file, scored as one task."""

    index: int
    file: str
    row_groups: tuple[int, ...]


def plan_partitions(input_path: Path, *, rows: int = PARTITION_ROWS) -> list[Partition]:
    """Split a Parquet file or dataset into runs of row groups of about ``rows`` rows."""
    partitions: list[Partition] = []
    for file in parquet_files(input_path):
        metadata = pq.ParquetFile(file).metadata
        groups: list[int] = []
        held = 0
        for group in range(metadata.num_row_groups):
            groups.append(group)
            held += metadata.row_group(group).num_rows
            if held >= rows:
                partitions.append(Partition(len(partitions), str(file), tuple(groups)))
                groups, held = [], 0
        if groups:
            partitions.append(Partition(len(partitions), str(file), tuple(groups)))
    return partitions


def part_path(output_dir: Path, index: int) -> Path:
    """The output file of partition ``index``."""
    return output_dir / f"part-{index:05d}.parquet"


def score_partition(
    payload: ModelPayload,
    partition: Partition,
    *,
    output_dir: str,
    id_column: str,
    columns: list[str],
    reasons: int,
    chunk_rows: int,
    threads: int,
    database_url: str | None,
    run_id: str | None,
    pseudonym_fingerprint: str | None = None,
    alerts: ChurnAlerts | None = None,
) -> BatchSummary:
    """Worker side: score one partition into its own Parquet file (and database chunks)."""
    model = _worker_model(payload, threads)
    batches = rechunk(
        iter_row_groups(
            partition.file, chunk_rows, row_groups=partition.row_groups, columns=columns
        ),
        chunk_rows,
    )
    sink = None
    if database_url is not None and run_id is not None:
        sink = DatabaseChunkSink(
            _worker_engine(database_url),
            model=model,
            run_id=run_id,
            unit_prefix=f"{partition.index}.",
            pseudonymizer=_worker_pseudonymizer(pseudonym_fingerprint),
            alerts=alerts,
        )
    out = Path(output_dir)
    return score_batches(
        model,
        batches,
        output_path=part_path(out, partition.index),
        rejects_path=out / REJECTS_DIR / f"part-{partition.index:05d}.rejects.csv",
        id_column=id_column,
        reasons=reasons,
        sink=sink,
    )


def score_on_dask(
    client: Any,
    *,
    model_dir: Path,
    input_path: Path,
    output_dir: Path,
    id_column: str | None = None,
    reasons: int = 3,
    chunk_rows: int = CHUNK_ROWS,
    threads: int = 1,
    database_url: str | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    alerts: ChurnAlerts | None = None,
    partition_rows: int = PARTITION_ROWS,
    on_partition: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score a Parquet file or dataset on the cluster; results form a partitioned dataset.

    With ``database_url`` the rows are saved, their ids pseudonymised when ``pseudonymizer`` is
    given (each worker then needs the same secret in its own settings: checked), and churn
    scores open ``alerts`` when given.
    """
    from distributed import as_completed

    if not is_parquet(input_path):
        raise ValueError("scoring on Dask reads Parquet (a file or a folder of files), not CSV")
    model = ScoringModel.load(model_dir)
    id_column = id_column or model.manifest.id_column
    available = input_columns(input_path)
    check_columns(model.schema, available)
    if id_column not in available:
        raise ValueError(f"input lacks the id column {id_column!r}")
    wanted = [id_column, *(f.column for f in model.schema.features if f.column in available)]
    if STAGE_COLUMN in available:
        wanted.append(STAGE_COLUMN)
    columns = list(dict.fromkeys(wanted))
    output_dir.mkdir(parents=True, exist_ok=True)
    partitions = plan_partitions(input_path, rows=partition_rows)
    run_id = (
        run_id_for(input_path=input_path, model=model, chunk_rows=chunk_rows)
        if database_url is not None
        else None
    )
    payload = client.scatter(ModelPayload.read(model_dir), broadcast=True)
    futures = client.map(
        score_partition,
        [payload] * len(partitions),
        partitions,
        output_dir=str(output_dir),
        id_column=id_column,
        columns=columns,
        reasons=reasons,
        chunk_rows=chunk_rows,
        threads=threads,
        database_url=database_url,
        run_id=run_id,
        pseudonym_fingerprint=None if pseudonymizer is None else pseudonymizer.fingerprint,
        alerts=alerts,
        pure=False,
    )
    summary = BatchSummary(run_id=run_id)
    for future in as_completed(futures):
        part: BatchSummary = future.result()
        summary.add(part)
        if on_partition is not None:
            on_partition(part.rows_read)
    expected = {part_path(output_dir, p.index).name for p in partitions}
    for stale in output_dir.glob("part-*.parquet"):
        if stale.name not in expected:  # left by an earlier run with more partitions
            stale.unlink()
    return summary
