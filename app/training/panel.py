"""Recommendation on a bank's own monthly product-ownership panel (the Santander layout).

One row per customer and month: an id, a month, one 0/1 column per product held, and any other
columns (age, income, region, ...). A product *added* is one held next month and not this month.
As in the Santander competition, each addition is a training row (features this month, the
added product as the class); the model ranks the products a customer does not hold yet, and is
measured by MAP@7 over customers who added something in the test month, for all customers and
for new ones (first seen in the panel within ``NEW_CUSTOMER_MONTHS`` of the month scored; never
the panel's first month, where everyone is first seen).

Months: the last transition (features in the month before the last, additions in the last) is
the test month, scored once at the end; the search, early stopping and refit run inside the
earlier months (``app.training.tuning``, rolling origin over months).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.modelops import stats
from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import Manifest, Objective, Task
from app.training import evaluate
from app.training.byod import _safe_name, encode_frame, infer_schema, read_table
from app.training.train import (
    BASE_PARAMS,
    TASK_PARAMS,
    Split,
    TrainingDataError,
    build_manifest,
    fingerprint,
    save_model,
)
from app.training.tuning import TuningOptions, tune

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

NEW_CUSTOMER_MONTHS = 3
MONTHS_SEEN = "months_in_panel"


@dataclass(frozen=True)
class PanelSpec:
    """The panel's columns: id, month, the product ownership flags, and any to leave out."""

    id_column: str
    month_column: str
    products: Sequence[str]
    drop: Sequence[str] = ()
    categorical: Sequence[str] = ()


@dataclass(frozen=True)
class Transitions:
    """Customer-months with a next month: features now, holdings now, additions next month."""

    features: pd.DataFrame
    month: npt.NDArray[np.int64]
    held: BoolArray
    added: BoolArray
    new: BoolArray


def month_index(values: pd.Series) -> npt.NDArray[np.int64]:
    """Months as consecutive integers: numbers as they are, dates as year * 12 + month."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.int64)
    dates = pd.to_datetime(values)
    return np.asarray(dates.dt.year * 12 + dates.dt.month, dtype=np.int64)


def transitions(frame: pd.DataFrame, spec: PanelSpec) -> Transitions:
    """Pair each customer-month with the same customer's next month (exactly one month on)."""
    month = month_index(frame[spec.month_column])
    owned = frame[list(spec.products)].fillna(0).to_numpy(dtype=np.float64) > 0.5
    order = np.lexsort((month, frame[spec.id_column].astype(str).to_numpy()))
    frame, month, owned = frame.iloc[order].reset_index(drop=True), month[order], owned[order]
    ids = frame[spec.id_column].astype(str).to_numpy()
    same_next = np.r_[(ids[1:] == ids[:-1]) & (month[1:] == month[:-1] + 1), False]
    first_seen = pd.Series(month).groupby(ids).transform("min").to_numpy()
    seen = month - first_seen + 1
    rows = np.flatnonzero(same_next)
    excluded = {spec.id_column, spec.month_column, *spec.products, *spec.drop}
    features = frame.loc[rows, [c for c in frame.columns if c not in excluded]].copy()
    for j, product in enumerate(spec.products):
        features[f"has_{_safe_name(str(product))}"] = owned[rows, j].astype(np.int64)
    features[MONTHS_SEEN] = seen[rows]
    new = (first_seen[rows] > month.min()) & (seen[rows] <= NEW_CUSTOMER_MONTHS)
    return Transitions(
        features=features.reset_index(drop=True),
        month=month[rows],
        held=owned[rows],
        added=owned[rows + 1] & ~owned[rows],
        new=new,
    )


def _ranking(
    scores: FloatArray, held: BoolArray, added: BoolArray, counts_seed: int
) -> dict[str, Any]:
    """MAP@7 with its bootstrap interval over the customers who added a product."""
    ap = evaluate.average_precisions(scores, held, added)
    metrics = evaluate.ranking_metrics(scores, held, added)
    counts = stats.resample_counts(len(ap), seed=counts_seed)
    metrics["map_at_7_interval"] = stats.with_interval(lambda w: stats.weighted_mean(ap, w), counts)
    return metrics


def train_recommendation_panel(
    *,
    data_path: Path,
    spec: PanelSpec,
    out_dir: Path,
    seed: int = 7,
    tuning: TuningOptions | None = None,
    test_months: int = 1,
) -> Manifest:
    """Train the recommendation model on a bank's own product-ownership panel; the last
    ``test_months`` transitions are held out and scored once, at the end."""
    frame = read_table(data_path)
    named = [spec.id_column, spec.month_column, *spec.products, *spec.drop, *spec.categorical]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"column(s) not in {data_path.name}: {missing}")
    if len(spec.products) < 3:
        raise TrainingDataError("name at least three product columns with --product")
    pairs = transitions(frame, spec)
    months = np.unique(pairs.month)
    if len(months) < 3 + test_months:
        raise TrainingDataError(f"the panel needs at least {4 + test_months} consecutive months")
    first_test_month, validation_month = int(months[-test_months]), int(months[-test_months - 1])
    schema = _schema(infer_schema(pairs.features, spec.categorical, data_path.name))
    matrix = encode_frame(pairs.features, schema)
    # One training row per product added (Santander style), within the training window.
    window = pairs.month <= validation_month
    row, product = np.nonzero(pairs.added & window[:, None])
    if len(np.unique(product)) < len(spec.products):
        absent = sorted(set(range(len(spec.products))) - set(product.tolist()))
        names = [spec.products[i] for i in absent]
        raise TrainingDataError(f"no customer added {names} in the training months")
    tuned = tune(
        objective=Objective.MULTICLASS,
        num_classes=len(spec.products),
        schema=schema,
        matrix=matrix[row],
        labels=product.astype(np.int64),
        base_params={**BASE_PARAMS, **TASK_PARAMS.get(Task.RECOMMENDATION, {})},
        time=pairs.month[row],
        seed=seed,
        options=tuning,
    )
    test = pairs.month >= first_test_month
    scores = np.asarray(tuned.booster.predict(matrix[test]), dtype=np.float64)
    popularity = np.bincount(product, minlength=len(spec.products)).astype(np.float64)
    held, added, new = pairs.held[test], pairs.added[test], pairs.new[test]
    popular = np.broadcast_to(popularity, scores.shape)
    metrics: dict[str, Any] = {
        "all_customers": _ranking(scores, held, added, seed),
        "popularity_baseline_all_customers": _ranking(popular, held, added, seed),
    }
    if (added[new] & ~held[new]).any():
        metrics["new_customers"] = _ranking(scores[new], held[new], added[new], seed)
        metrics["popularity_baseline_new_customers"] = _ranking(
            popular[new], held[new], added[new], seed
        )
    split = Split(
        train=pairs.month < validation_month,
        validation=pairs.month == validation_month,
        test=test,
        description={
            "method": "time",
            "time_column": spec.month_column,
            "training_window": "every transition before the test month",
            "test_months": [first_test_month, int(months[-1])],
            "new_customer": f"first seen after the panel's first month, at most "
            f"{NEW_CUSTOMER_MONTHS} months before the month scored",
            "tuning": tuned.summary(),
        },
    )
    manifest = build_manifest(
        task=Task.RECOMMENDATION,
        version=out_dir.name,
        objective=Objective.MULTICLASS,
        classes=tuple(str(p) for p in spec.products),
        schema=schema,
        booster=tuned.booster,
        params=tuned.params,
        full_params=True,
        data_fingerprint=fingerprint(matrix, pairs.added, names=schema.names),
        data_source=data_path.name,
        training_rows=len(row),
        split=split,
        metrics={"test": metrics},
        thresholds={},
        target="product_added",
        id_column=spec.id_column,
        extras={"model_kind": "recommendation_panel", "products": list(spec.products)},
    )
    save_model(out_dir, tuned.booster, manifest)
    return manifest


def _schema(inferred: FeatureSchema) -> FeatureSchema:
    """Ownership flags as booleans (never required to be absent), the rest as inferred."""
    features = []
    for feature in inferred.features:
        if feature.name.startswith("has_") and feature.kind is not FeatureKind.CATEGORY:
            feature = FeatureSpec(
                name=feature.name,
                kind=FeatureKind.INTEGER,
                minimum=0.0,
                maximum=1.0,
                description=f"Holds {feature.name[4:]} this month (0/1).",
                reason=f"holds {feature.name[4:]}: {{value}}",
            )
        features.append(feature)
    return FeatureSchema(features=tuple(features))
