"""Training: fit LightGBM on a time-based (or stratified) split; save it with its manifest.

The split is always train -> validation -> test. Early stopping and every decision threshold
are chosen on the validation split; the test split is only ever used to report metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from app.modelops.fairness import age_band
from app.modelops.psi import REFERENCE_KEY, training_reference
from app.scoring.explain import METHOD_PATH
from app.scoring.feature_schema import FeatureSchema
from app.scoring.manifest import MODEL_FILE, Calibration, Manifest, Objective, Task
from app.training import evaluate
from app.training.card import HeldOut, Provenance, build_card
from app.training.features import (
    COLD_START_KNOWN,
    HORIZON_MONTHS,
    TaskFrame,
    build_task_frame,
    prepare_book,
    schema_for,
)
from app.training.report import split_label
from app.training.synth import PRODUCTS, TIERS, book_generator, read_book

ProgressCallback = Callable[[int, int], None]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

VALUE_MODEL_FILE = "value_model.txt"
COLD_START_MASK_SHARE = 0.3  # share of new customers' training rows shown with demographics only

# Model size is chosen with the serving cost of explanations in view: shallow trees keep the
# per-row path short (reasons cost about one more prediction); deeper models did not earn a
# better test metric on the synthetic book (see docs/models.md).
BASE_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "max_depth": 6,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
}
MAX_ROUNDS = 400
EARLY_STOPPING_ROUNDS = 40
TASK_PARAMS: dict[Task, dict[str, Any]] = {
    # Thirteen classes mean thirteen trees a round: fewer, smaller trees keep the model light.
    Task.RECOMMENDATION: {"learning_rate": 0.1, "num_leaves": 15, "max_depth": 5},
    Task.TIER: {"learning_rate": 0.1, "num_leaves": 15, "max_depth": 5},
}
TASK_MAX_ROUNDS: dict[Task, int] = {Task.RECOMMENDATION: 150, Task.TIER: 150}


class TrainingDataError(ValueError):
    """The data cannot train the requested model; the message says which column and why."""


@dataclass(frozen=True)
class Split:
    """Boolean row masks of the three splits and how they were drawn."""

    train: BoolArray
    validation: BoolArray
    test: BoolArray
    description: dict[str, Any] = field(default_factory=dict)


def time_split(months: npt.ArrayLike) -> Split:
    """Train on early months, validate on a later one, test on a later one still.

    Labels look ``HORIZON_MONTHS`` ahead, so each split ends that far before the next begins:
    no training label is observed in a month the validation or test rows depend on.
    """
    month = np.asarray(months)
    test_month = int(month.max())
    validation_month = test_month - HORIZON_MONTHS
    last_train_month = validation_month - HORIZON_MONTHS
    if last_train_month < int(month.min()):
        raise TrainingDataError(
            "the book is too short for a time-based split; generate more months"
        )
    return Split(
        train=month <= last_train_month,
        validation=month == validation_month,
        test=month == test_month,
        description={
            "method": "time",
            "train_months": [int(month.min()), last_train_month],
            "validation_month": validation_month,
            "test_month": test_month,
            "label_horizon_months": HORIZON_MONTHS,
        },
    )


def fingerprint(*arrays: npt.ArrayLike, names: list[str]) -> str:
    """SHA-256 of the training matrix, labels and column names as used."""
    digest = hashlib.sha256("\x1f".join(names).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


def _progress_callback(
    progress: ProgressCallback | None, total: int
) -> Callable[[lgb.callback.CallbackEnv], None]:
    def callback(env: lgb.callback.CallbackEnv) -> None:
        if progress is not None:
            progress(env.iteration + 1, total)

    return callback


def fit_booster(
    *,
    objective: Objective,
    num_classes: int,
    schema: FeatureSchema,
    train: tuple[FloatArray, npt.ArrayLike],
    validation: tuple[FloatArray, npt.ArrayLike],
    params: dict[str, Any],
    max_rounds: int = MAX_ROUNDS,
    seed: int = 7,
    progress: ProgressCallback | None = None,
) -> lgb.Booster:
    """Fit with early stopping on the validation split."""
    full_params = {**BASE_PARAMS, **params, "objective": objective.value, "seed": seed}
    if objective is Objective.MULTICLASS:
        full_params["num_class"] = num_classes
    dataset_args: dict[str, Any] = {
        "feature_name": schema.names,
        "categorical_feature": schema.categorical_indices,
        "free_raw_data": False,
    }
    train_set = lgb.Dataset(train[0], label=np.asarray(train[1]), **dataset_args)
    validation_set = lgb.Dataset(
        validation[0], label=np.asarray(validation[1]), reference=train_set, **dataset_args
    )
    booster = lgb.train(
        full_params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[validation_set],
        valid_names=["validation"],
        callbacks=[
            lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False),
            _progress_callback(progress, max_rounds),
        ],
    )
    if progress is not None:  # early stopping ends the work before max_rounds: it is all done
        rounds = booster.current_iteration()
        progress(rounds, rounds)
    return booster


def predict(booster: lgb.Booster, matrix: FloatArray) -> FloatArray:
    """Probabilities (or values) at the best iteration."""
    return np.asarray(booster.predict(matrix, num_iteration=booster.best_iteration))


def save_model(
    directory: Path,
    booster: lgb.Booster,
    manifest: Manifest,
    value_booster: lgb.Booster | None = None,
) -> Path:
    """Write model.txt (trimmed to the best iteration), value model and manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(directory / MODEL_FILE, num_iteration=booster.best_iteration)
    if value_booster is not None:
        value_booster.save_model(
            directory / VALUE_MODEL_FILE, num_iteration=value_booster.best_iteration
        )
    manifest.save(directory)
    return directory


def risk_thresholds(validation_proba: FloatArray) -> dict[str, float]:
    """Risk bands from the validation split: top 5% high, next 15% medium."""
    return {
        "medium": round(float(np.quantile(validation_proba, 0.80)), 4),
        "high": round(float(np.quantile(validation_proba, 0.95)), 4),
    }


def priority_thresholds(validation_value: FloatArray) -> dict[str, float]:
    """Prospect priority bands on expected value: top 10% high, next 30% medium."""
    return {
        "medium": round(float(np.quantile(validation_value, 0.60)), 2),
        "high": round(float(np.quantile(validation_value, 0.90)), 2),
    }


def build_manifest(
    *,
    task: Task,
    version: str,
    objective: Objective,
    classes: tuple[str, ...],
    schema: FeatureSchema,
    booster: lgb.Booster,
    params: dict[str, Any],
    data_fingerprint: str,
    data_source: str,
    training_rows: int,
    split: Split,
    metrics: dict[str, Any],
    thresholds: dict[str, float],
    target: str,
    id_column: str,
    extras: dict[str, Any] | None = None,
    value_model_file: str | None = None,
    calibration: Calibration | None = None,
    full_params: bool = False,
) -> Manifest:
    """The manifest of a trained model (``full_params``: ``params`` already hold the base)."""
    return Manifest(
        task=task,
        version=version,
        objective=objective,
        classes=classes,
        feature_schema=schema,
        target=target,
        id_column=id_column,
        value_model_file=value_model_file,
        params=params if full_params else {**BASE_PARAMS, **params},
        num_trees=booster.num_trees(),
        lightgbm_version=lgb.__version__,
        data_fingerprint=data_fingerprint,
        data_source=data_source,
        training_rows=training_rows,
        split=split.description,
        metrics=metrics,
        thresholds=thresholds,
        explanation_method=METHOD_PATH,
        calibration=calibration,
        extras=extras or {},
        created_at=datetime.now(UTC),
    )


# --- the bundled tasks, trained on the synthetic book -------------------------------------


def train_bundled(
    task: Task,
    *,
    book_path: Path,
    out_dir: Path,
    seed: int = 7,
    max_rounds: int | None = None,
    progress: ProgressCallback | None = None,
    card_rows: int | None = None,
    indices: bool = False,
) -> Manifest:
    """Train one of the four bundled models on a synthetic (or same-shaped) customer book
    (``indices``: churn also reads the satisfaction and loyalty indices).

    ``card_rows`` caps the model card's samples (the logistic baseline's training rows and the
    rows compared with TreeSHAP) below their defaults, for quick test models.
    """
    book = prepare_book(read_book(book_path).to_pandas())
    generator = book_generator(book_path)
    frame = build_task_frame(book, task, indices=indices)
    split = time_split(frame.month.to_numpy())
    schema = schema_for(task, indices=indices)
    matrix = frame.features.to_numpy(dtype=np.float64)
    target = frame.target.to_numpy()
    if task is Task.RECOMMENDATION:
        matrix = _mask_cold_start(matrix, schema, split.train, seed)
    params = TASK_PARAMS.get(task, {})
    objective = Objective.BINARY if task in (Task.CHURN, Task.PROSPECT) else Objective.MULTICLASS
    classes = {
        Task.CHURN: ("stays", "leaves"),
        Task.PROSPECT: ("stays_prospect", "converts"),
        Task.TIER: TIERS,
        Task.RECOMMENDATION: PRODUCTS,
    }[task]
    booster = fit_booster(
        objective=objective,
        num_classes=len(classes),
        schema=schema,
        train=(matrix[split.train], target[split.train]),
        validation=(matrix[split.validation], target[split.validation]),
        params=params,
        max_rounds=max_rounds or TASK_MAX_ROUNDS.get(task, MAX_ROUNDS),
        seed=seed,
        progress=progress,
    )
    thresholds: dict[str, float] = {}
    extras: dict[str, Any] = {}
    value_booster = None
    persistence: npt.NDArray[np.int64] | None = None
    ranking: tuple[FloatArray, FloatArray] | None = None
    test_proba = predict(booster, matrix[split.test])
    if task is Task.CHURN:
        metrics = evaluate.binary_metrics(target[split.test], test_proba)
        thresholds = risk_thresholds(predict(booster, matrix[split.validation]))
    elif task is Task.TIER:
        metrics = evaluate.multiclass_metrics(target[split.test], test_proba, classes)
        current = book.loc[frame.features.index[split.test], "value_tier"]
        persistence = current.map({t: i for i, t in enumerate(TIERS)}).to_numpy(np.int64)
        extras["tier_rule"] = (
            "3-month mean of deposits + wealth + 0.2 x loans + 12 x monthly profit; "
            "cut-offs 25k / 100k / 500k / 2M EUR"
        )
    elif task is Task.RECOMMENDATION:
        popularity = np.bincount(target[split.train], minlength=len(PRODUCTS)).astype(float)
        metrics, ranking = _recommendation_metrics(frame, booster, schema, split.test, popularity)
    else:
        value_booster, metrics, thresholds = _prospect_value(
            frame, booster, schema, matrix, split, seed, max_rounds or MAX_ROUNDS
        )
    extras[REFERENCE_KEY] = training_reference(
        schema, matrix[split.train], _headline_score(task, predict(booster, matrix[split.train]))
    )
    manifest = build_manifest(
        task=task,
        version=out_dir.name,
        objective=objective,
        classes=classes,
        schema=schema,
        booster=booster,
        params=params,
        data_fingerprint=fingerprint(matrix, target, names=schema.names),
        data_source=f"synthetic customer book ({book_path.name})",
        training_rows=int(split.train.sum()),
        split=split,
        metrics={"test": metrics},
        thresholds=thresholds,
        target=task.value,
        id_column="customer_id",
        extras=extras,
        value_model_file=VALUE_MODEL_FILE if value_booster is not None else None,
    )
    save_model(out_dir, booster, manifest, value_booster)
    dates = book.groupby("month")["snapshot_date"].first()
    held = HeldOut(
        train_x=matrix[split.train],
        train_y=target[split.train].astype(np.int64),
        test_x=matrix[split.test],
        test_y=target[split.test].astype(np.int64),
        held_out=split_label(split.description),
        training_window=_window(dates, *split.description["train_months"]),
        evaluation_window=_window(dates, split.description["test_month"]),
        persistence=persistence,
        ranking=ranking,
        factors=_factors(frame.features[split.test], schema),
        **({} if card_rows is None else {"baseline_rows": card_rows, "reason_rows": card_rows}),
    )
    provenance = Provenance(
        synthetic=generator is not None,
        source=(
            f"synthetic customer book from cvm synth ({book_path.name})"
            if generator is not None
            else f"customer book supplied by the bank ({book_path.name})"
        ),
        generator=generator,
    )
    card = build_card(
        manifest=manifest,
        model_dir=out_dir,
        held=held,
        provenance=provenance,
        seed=seed,
        max_rounds=max_rounds,
        factors_in_data=["age band", "region"],  # the synthetic book draws no gender
    )
    manifest = manifest.model_copy(update={"card": card})
    manifest.save(out_dir)
    return manifest


def _factors(rows: pd.DataFrame, schema: FeatureSchema) -> dict[str, npt.NDArray[np.str_]]:
    """Age band and region of each row (the synthetic book draws no gender)."""
    regions = schema.features[schema.names.index("region")].categories or ()
    codes = rows["region"].to_numpy()
    region = np.array([regions[int(c)] if c == c else "unknown" for c in codes], dtype=str)
    return {"age band": age_band(rows["age"].to_numpy()), "region": region}


def _window(dates: pd.Series, first: int, last: int | None = None) -> dict[str, Any]:
    """Months of the book (and their snapshot dates) a split covers."""
    last = first if last is None else last
    return {
        "description": f"book months {first} to {last}" if last != first else f"book month {first}",
        "first_month": int(first),
        "last_month": int(last),
        "first_date": str(dates.loc[first]),
        "last_date": str(dates.loc[last]),
    }


def _headline_score(task: Task, proba: FloatArray) -> FloatArray | None:
    """The score stored with each row (``score.probability``) as training saw it: the
    positive class's probability, or the predicted tier's. None for recommendation, whose
    stored score (the first offer not yet held) depends on the customer's holdings."""
    if task is Task.RECOMMENDATION:
        return None
    return proba if proba.ndim == 1 else proba.max(axis=1)


def _mask_cold_start(
    matrix: FloatArray, schema: FeatureSchema, rows: BoolArray, seed: int
) -> FloatArray:
    """Show some new customers' rows with demographics only, so cold start is learnt."""
    tenure = matrix[:, schema.names.index("tenure_months")]
    rng = np.random.default_rng(seed)
    chosen = rows & (tenure < 3) & (rng.random(len(matrix)) < COLD_START_MASK_SHARE)
    unknown = np.array([i for i, name in enumerate(schema.names) if name not in COLD_START_KNOWN])
    masked = matrix.copy()
    masked[np.ix_(chosen, unknown)] = np.nan
    return masked


def _recommendation_metrics(
    frame: TaskFrame,
    booster: lgb.Booster,
    schema: FeatureSchema,
    test: BoolArray,
    popularity: FloatArray,
) -> tuple[dict[str, Any], tuple[FloatArray, FloatArray]]:
    """MAP@7 and hit rate@3 over customer-months of the test month, all and new customers.

    A popularity ranking (products by how often the training months added them) is reported
    alongside, so the model's figures can be read against the obvious baseline.
    """
    test_rows = frame.features[test].reset_index(drop=True)
    keys = frame.customer_id[test].reset_index(drop=True)
    products = frame.target[test].reset_index(drop=True).to_numpy()
    first = ~keys.duplicated().to_numpy()
    customer_index = pd.factorize(keys)[0]
    added = np.zeros((int(first.sum()), len(PRODUCTS)), dtype=bool)
    added[customer_index, products] = True
    features = test_rows[first].to_numpy(dtype=np.float64)
    held = features[:, [schema.names.index(f"has_{p}") for p in PRODUCTS]] > 0.5
    new = features[:, schema.names.index("tenure_months")] < 3
    scores = predict(booster, features)
    cold = features.copy()
    cold[:, [i for i, n in enumerate(schema.names) if n not in COLD_START_KNOWN]] = np.nan
    metrics = {
        "all_customers": evaluate.ranking_metrics(scores, held, added),
        "new_customers": evaluate.ranking_metrics(scores[new], held[new], added[new]),
        "new_customers_demographics_only": evaluate.ranking_metrics(
            predict(booster, cold[new]), np.zeros_like(held[new]), added[new] & ~held[new]
        ),
        "popularity_baseline_all_customers": evaluate.ranking_metrics(
            np.broadcast_to(popularity, scores.shape), held, added
        ),
        "popularity_baseline_new_customers": evaluate.ranking_metrics(
            np.broadcast_to(popularity, scores[new].shape), held[new], added[new]
        ),
    }
    ranking = (
        evaluate.average_precisions(scores, held, added),
        evaluate.average_precisions(np.broadcast_to(popularity, scores.shape), held, added),
    )
    return metrics, ranking


def _prospect_value(
    frame: TaskFrame,
    booster: lgb.Booster,
    schema: FeatureSchema,
    matrix: FloatArray,
    split: Split,
    seed: int,
    max_rounds: int,
) -> tuple[lgb.Booster, dict[str, Any], dict[str, float]]:
    """Conversion metrics, plus a regression of the annual value a convert brings."""
    assert frame.value_target is not None
    value = frame.value_target.to_numpy(dtype=np.float64)
    target = frame.target.to_numpy()
    known = ~np.isnan(value)
    value_booster = fit_booster(
        objective=Objective.REGRESSION,
        num_classes=1,
        schema=schema,
        train=(matrix[split.train & known], value[split.train & known]),
        validation=(matrix[split.validation & known], value[split.validation & known]),
        params={"min_data_in_leaf": 20},
        max_rounds=max_rounds,
        seed=seed,
    )
    test_proba = predict(booster, matrix[split.test])
    metrics = evaluate.binary_metrics(target[split.test], test_proba)
    metrics["value_of_converts"] = evaluate.regression_metrics(
        value[split.test & known], predict(value_booster, matrix[split.test & known])
    )
    validation_expected = predict(booster, matrix[split.validation]) * predict(
        value_booster, matrix[split.validation]
    )
    return value_booster, metrics, priority_thresholds(validation_expected)
