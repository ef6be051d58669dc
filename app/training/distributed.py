"""Training on a Dask cluster through LightGBM's own integration (``lightgbm.dask``).

The book is cut into shards of whole customers (a customer's months must stay together for the
trend and label columns), each shard's rows and labels are built on a worker by the same code
as single-machine training, and ``DaskLGBMClassifier`` trains on them where they lie. The model
is saved with the same manifest code as ``train.py``, so it is served like any other.

Differences from single-machine training, stated in the manifest: a fixed number of rounds
(``lightgbm.dask`` has no early stopping), and the data fingerprint is a digest of the shards'
digests. Only churn (binary) and tier (multiclass) train here; the recommendation and prospect
models carry extra steps (cold-start masking, a value model) that only ``train.py`` performs.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from app.scoring.manifest import Manifest, Objective, Task
from app.training import evaluate
from app.training.features import build_task_frame, prepare_book, schema_for
from app.training.synth import BOOK_FILE, TIERS
from app.training.train import (
    BASE_PARAMS,
    TASK_PARAMS,
    TrainingDataError,
    build_manifest,
    risk_thresholds,
    save_model,
    time_split,
)

DASK_ROUNDS = 200
SUPPORTED: dict[Task, tuple[Objective, tuple[str, ...]]] = {
    Task.CHURN: (Objective.BINARY, ("stays", "leaves")),
    Task.TIER: (Objective.MULTICLASS, TIERS),
}
# Set per worker by lightgbm.dask (threads) or meaningless across machines (determinism).
_LOCAL_ONLY_PARAMS = {"num_threads", "deterministic", "force_row_wise"}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Shard:
    """The customers of one book file whose id hashes to ``index`` modulo ``count``."""

    file: str
    index: int
    count: int


@dataclass(frozen=True)
class ShardRows:
    """One shard's task rows, kept on the worker that built them."""

    features: FloatArray
    target: IntArray
    month: IntArray


def book_shards(book_path: Path, shards: int) -> list[Shard]:
    """A book file is hash-split into ``shards``; a folder of files is one shard per file."""
    if book_path.is_dir() and not (book_path / BOOK_FILE).is_file():
        files = sorted(book_path.glob("*.parquet"))
        if not files:
            raise TrainingDataError(f"no Parquet files under {book_path}")
        # Pre-sharded book: each file must hold whole customer histories.
        return [Shard(str(f), 0, 1) for f in files]
    file = book_path / BOOK_FILE if book_path.is_dir() else book_path
    return [Shard(str(file), i, shards) for i in range(shards)]


def build_shard(shard: Shard, task: Task) -> ShardRows:
    """Worker side: a shard's customers, their derived features and labels."""
    book = pq.read_table(shard.file).to_pandas()
    if shard.count > 1:
        bucket = pd.util.hash_pandas_object(book["customer_id"], index=False).to_numpy()
        book = book[bucket % np.uint64(shard.count) == shard.index]
    frame = build_task_frame(prepare_book(book), task)
    return ShardRows(
        features=frame.features.to_numpy(dtype=np.float64),
        target=frame.target.to_numpy(dtype=np.int64),
        month=frame.month.to_numpy(dtype=np.int64),
    )


def _months(rows: ShardRows) -> tuple[int, int, int]:
    if len(rows.month) == 0:
        return 0, np.iinfo(np.int64).max, np.iinfo(np.int64).min
    return len(rows.month), int(rows.month.min()), int(rows.month.max())


def _select(rows: ShardRows, first: int, last: int) -> tuple[FloatArray, IntArray]:
    chosen = (rows.month >= first) & (rows.month <= last)
    return rows.features[chosen], rows.target[chosen]


def _features(part: tuple[FloatArray, IntArray]) -> FloatArray:
    return part[0]


def _target(part: tuple[FloatArray, IntArray]) -> IntArray:
    return part[1]


def _predict(part: tuple[FloatArray, IntArray], model_text: str) -> tuple[FloatArray, IntArray]:
    """Worker side: predictions and labels of one part (what metrics need, nothing more)."""
    booster = lgb.Booster(model_str=model_text)
    return np.asarray(booster.predict(part[0], num_threads=1)), part[1]


def _size(part: tuple[FloatArray, IntArray]) -> int:
    return len(part[1])


def _digest(rows: ShardRows) -> str:
    digest = hashlib.sha256()
    for array in (rows.features, rows.target, rows.month):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _predicted(client: Any, parts: list[Any], model_text: Any) -> tuple[FloatArray, IntArray]:
    """Predictions and labels of a split, predicted where the rows lie, gathered in order."""
    results = client.gather(client.map(_predict, parts, model_text=model_text, pure=False))
    return (
        np.concatenate([proba for proba, _ in results]),
        np.concatenate([target for _, target in results]),
    )


def _distributed(client: Any, parts: list[Any], n_features: int) -> tuple[Any, Any, int]:
    """Dask arrays over per-shard (features, target) futures; row counts gathered first."""
    import dask.array as da

    sizes: list[int] = client.gather(client.map(_size, parts, pure=False))
    keep = [(part, size) for part, size in zip(parts, sizes, strict=True) if size]
    if not keep:
        return None, None, 0
    features = da.concatenate(
        [
            da.from_delayed(client.submit(_features, part), (size, n_features), np.float64)
            for part, size in keep
        ]
    )
    target = da.concatenate(
        [da.from_delayed(client.submit(_target, part), (size,), np.int64) for part, size in keep]
    )
    return features, target, sum(sizes)


def train_on_dask(
    task: Task,
    *,
    client: Any,
    book_path: Path,
    out_dir: Path,
    seed: int = 7,
    rounds: int = DASK_ROUNDS,
    shards: int | None = None,
) -> Manifest:
    """Train a churn or tier model on the cluster; writes model.txt and manifest.json."""
    from lightgbm.dask import DaskLGBMClassifier

    if task not in SUPPORTED:
        supported = ", ".join(t.value for t in SUPPORTED)
        raise TrainingDataError(f"training on Dask supports {supported}, not {task.value}")
    objective, classes = SUPPORTED[task]
    schema = schema_for(task)
    workers = len(client.scheduler_info()["workers"])
    plan = book_shards(book_path, shards or max(2, 2 * workers))
    shard_rows = client.map(build_shard, plan, task=task, pure=False)
    stats = client.gather(client.map(_months, shard_rows, pure=False))
    if sum(n for n, _, _ in stats) == 0:
        raise TrainingDataError(f"the book has no rows for the {task.value} model")
    split = time_split(np.array([min(s[1] for s in stats), max(s[2] for s in stats)]))
    train_first, train_last = split.description["train_months"]
    validation_month = split.description["validation_month"]
    test_month = split.description["test_month"]

    def subset(first: int, last: int) -> list[Any]:
        return list(client.map(_select, shard_rows, first=first, last=last, pure=False))

    train_parts = subset(train_first, train_last)
    x_train, y_train, training_rows = _distributed(client, train_parts, len(schema.names))
    if x_train is None:
        raise TrainingDataError("the training months are empty; generate more customers")
    params = {**BASE_PARAMS, **TASK_PARAMS.get(task, {})}
    estimator = DaskLGBMClassifier(
        client=client,
        n_estimators=rounds,
        random_state=seed,
        **{k: v for k, v in params.items() if k not in _LOCAL_ONLY_PARAMS},
    )
    with warnings.catch_warnings():
        # The sklearn wrapper always passes n_jobs; lightgbm.dask sets threads per worker.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        estimator.fit(
            x_train,
            y_train,
            feature_name=schema.names,
            categorical_feature=schema.categorical_indices,
        )
    booster = estimator.booster_
    if booster.num_model_per_iteration() != (1 if objective is Objective.BINARY else len(classes)):
        raise TrainingDataError("some classes never occur in the training months")
    model_text = client.scatter(booster.model_to_string(), broadcast=True)
    test_proba, test_target = _predicted(client, subset(test_month, test_month), model_text)
    if len(test_target) == 0:
        raise TrainingDataError("the test month is empty; generate more months")
    thresholds: dict[str, float] = {}
    if objective is Objective.BINARY:
        metrics = evaluate.binary_metrics(test_target, test_proba)
        validation = subset(validation_month, validation_month)
        thresholds = risk_thresholds(_predicted(client, validation, model_text)[0])
    else:
        metrics = evaluate.multiclass_metrics(test_target, test_proba, classes)
    digests = client.gather(client.map(_digest, shard_rows, pure=False))
    fingerprint = hashlib.sha256("\x1f".join([*schema.names, *digests]).encode()).hexdigest()
    manifest = build_manifest(
        task=task,
        version=out_dir.name,
        objective=objective,
        classes=classes,
        schema=schema,
        booster=booster,
        params=TASK_PARAMS.get(task, {}),
        data_fingerprint=fingerprint,
        data_source=f"synthetic customer book ({book_path.name}), trained on Dask",
        training_rows=training_rows,
        split=split,
        metrics={"test": metrics},
        thresholds=thresholds,
        target=task.value,
        id_column="customer_id",
        extras={
            "trained_on": "lightgbm.dask",
            "workers": workers,
            "shards": len(plan),
            "rounds": rounds,
            "early_stopping": "none (not available in lightgbm.dask)",
        },
    )
    save_model(out_dir, booster, manifest)
    return manifest
