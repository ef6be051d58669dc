"""Tier movement: will a customer's tier go down, stay or go up next month?

The tier itself is the bank's policy (``app.value``); what a model can add is the movement the
policy will make next month, read against persistence ("the tier stays", right for most
customers). The features are the customer features of the tier model plus what the policy
reads: this month's tier, the value measure this month and the two before, their trailing mean
and its distance to the cut-offs either side.

Trained on a monthly book (``cvm train tier-movement --book BOOK --out DIR``): train months,
then a validation month, then a test month, the test month scored once at the end. Inside the
training window (train and validation months) the search, early stopping and refit of
``app.training.tuning`` run on rolling-origin folds over the months.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.modelops import stats
from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import Manifest, Objective, Task
from app.training import evaluate
from app.training.features import build_task_frame, prepare_book, schema_for
from app.training.synth import (
    BALANCES,
    LOAN_WEIGHT,
    TIER_CUTOFFS_EUR,
    TIERS,
    book_generator,
    read_book,
)
from app.training.train import (
    BASE_PARAMS,
    TASK_PARAMS,
    TrainingDataError,
    build_manifest,
    fingerprint,
    save_model,
    time_split,
)
from app.training.tuning import TuningOptions, tune

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MOVEMENTS: tuple[str, ...] = ("down", "stay", "up")
STAY = MOVEMENTS.index("stay")
TARGET = "tier_movement"
DEPOSITS_AND_WEALTH = BALANCES[:6]  # current, savings, term deposit, funds, insurance, pension
LOANS = BALANCES[6:9]  # mortgage, personal loan, business loan

POLICY_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="tier_now",
        kind=FeatureKind.INTEGER,
        minimum=0.0,
        maximum=float(len(TIERS) - 1),
        description="This month's tier, 0 (mass) to 4 (private).",
        reason="tier this month is {value}",
    ),
    *(
        FeatureSpec(
            name=name,
            kind=FeatureKind.NUMBER,
            description=text,
            required=False,
            reason=f"{text.lower().rstrip('.')} is {{value}}",
        )
        for name, text in (
            ("value_now", "The tier measure this month (EUR)."),
            ("value_1m_ago", "The tier measure a month ago (EUR)."),
            ("value_2m_ago", "The tier measure two months ago (EUR)."),
            ("value_trailing", "Mean tier measure over the last three months (EUR)."),
            ("log_gap_up", "Log of the next cut-off up over the trailing measure."),
            ("log_gap_down", "Log of the trailing measure over this tier's cut-off."),
        )
    ),
)


def movement_schema() -> FeatureSchema:
    """The tier model's customer features plus what the tier policy reads."""
    return FeatureSchema(features=(*schema_for(Task.TIER).features, *POLICY_FEATURES))


def policy_features(book: pd.DataFrame) -> pd.DataFrame:
    """Tier now, the tier measure now and the two months before, and the gaps to the cut-offs."""
    value = (
        book[list(DEPOSITS_AND_WEALTH)].sum(axis=1)
        + LOAN_WEIGHT * book[list(LOANS)].sum(axis=1)
        + 12 * book["profit"].fillna(0.0)
    )
    by_customer = value.groupby(book["customer_id"], sort=False)
    month_gap = book.groupby("customer_id", sort=False)["month"]
    lags = {}
    for months in (1, 2):
        shifted = by_customer.shift(months)
        lags[months] = shifted.where(month_gap.shift(months) == book["month"] - months)
    trailing = pd.concat([value, lags[1], lags[2]], axis=1).mean(axis=1)
    tier = book["value_tier"].map({t: i for i, t in enumerate(TIERS)})
    cutoffs = np.array([0.0, *TIER_CUTOFFS_EUR, np.inf])
    upper = cutoffs[np.clip(tier.fillna(0).astype(int) + 1, 0, len(cutoffs) - 1)]
    lower = cutoffs[tier.fillna(0).astype(int)]
    floor = np.maximum(trailing.to_numpy(), 1.0)
    with np.errstate(divide="ignore"):
        gap_up = np.where(np.isfinite(upper), np.log(upper / floor), np.nan)
        gap_down = np.where(lower > 0, np.log(floor / np.maximum(lower, 1.0)), np.nan)
    return pd.DataFrame(
        {
            "tier_now": tier,
            "value_now": value,
            "value_1m_ago": lags[1],
            "value_2m_ago": lags[2],
            "value_trailing": trailing,
            "log_gap_up": gap_up,
            "log_gap_down": gap_down,
        },
        index=book.index,
    )


def movement_metrics(
    y: IntArray, proba: FloatArray, rates: FloatArray, counts: FloatArray
) -> dict[str, Any]:
    """Accuracy, macro-F1 and log loss of the model and of persistence, with intervals."""
    predicted = proba.argmax(axis=1)
    stay = np.full(len(y), STAY)
    rows = np.arange(len(y))
    model_loss = -np.log(np.clip(proba[rows, y], 1e-15, 1.0))
    persistence_loss = -np.log(np.clip(np.broadcast_to(rates, proba.shape)[rows, y], 1e-15, 1.0))
    correct = (predicted == y).astype(np.float64)
    stays_right = (stay == y).astype(np.float64)
    return {
        "rows": len(y),
        "classes": list(MOVEMENTS),
        "class_counts": np.bincount(y, minlength=len(MOVEMENTS)).tolist(),
        "accuracy": stats.with_interval(lambda w: stats.weighted_mean(correct, w), counts),
        "log_loss": stats.with_interval(lambda w: stats.weighted_mean(model_loss, w), counts),
        "macro_f1": evaluate.multiclass_metrics(y, proba, MOVEMENTS)["macro_f1"],
        "confusion_matrix": evaluate.multiclass_metrics(y, proba, MOVEMENTS)["confusion_matrix"],
        "persistence": {
            "description": "the tier stays (accuracy, macro-F1); for log loss the training "
            "window's movement rates",
            "accuracy": stats.with_interval(lambda w: stats.weighted_mean(stays_right, w), counts),
            "log_loss": stats.with_interval(
                lambda w: stats.weighted_mean(persistence_loss, w), counts
            ),
            "macro_f1": evaluate.multiclass_metrics(y, np.eye(len(MOVEMENTS))[stay], MOVEMENTS)[
                "macro_f1"
            ],
        },
        "accuracy_gain_over_persistence": stats.with_interval(
            lambda w: stats.weighted_mean(correct - stays_right, w), counts
        ),
        "log_loss_gain_over_persistence": stats.with_interval(
            lambda w: stats.weighted_mean(persistence_loss - model_loss, w), counts
        ),
    }


def train_tier_movement(
    *,
    book_path: Path,
    out_dir: Path,
    seed: int = 7,
    options: TuningOptions | None = None,
) -> Manifest:
    """Train the tier-movement model on a monthly book and write it with its manifest."""
    book = prepare_book(read_book(book_path).to_pandas())
    frame = build_task_frame(book, Task.TIER)
    policy = policy_features(book).loc[frame.features.index]
    features = pd.concat([frame.features, policy], axis=1)
    schema = movement_schema()
    current = policy["tier_now"].to_numpy(dtype=np.int64)
    target = (np.sign(frame.target.to_numpy(dtype=np.int64) - current) + 1).astype(np.int64)
    matrix = features[schema.names].to_numpy(dtype=np.float64)
    split = time_split(frame.month.to_numpy())
    window = split.train | split.validation
    if len(np.unique(target[window])) < len(MOVEMENTS):
        raise TrainingDataError("the training months hold no move down or no move up")
    options = options or TuningOptions()
    tuned = tune(
        objective=Objective.MULTICLASS,
        num_classes=len(MOVEMENTS),
        schema=schema,
        matrix=matrix[window],
        labels=target[window],
        base_params={**BASE_PARAMS, **TASK_PARAMS.get(Task.TIER, {})},
        time=frame.month.to_numpy()[window],
        seed=seed,
        options=options,
    )
    test_proba = np.asarray(tuned.booster.predict(matrix[split.test]), dtype=np.float64)
    rates = np.bincount(target[window], minlength=len(MOVEMENTS)) / window.sum()
    counts = stats.resample_counts(int(split.test.sum()), seed=seed)
    metrics = movement_metrics(target[split.test], test_proba, rates, counts)
    generator = book_generator(book_path)
    manifest = build_manifest(
        task=Task.TIER,
        version=out_dir.name,
        objective=Objective.MULTICLASS,
        classes=MOVEMENTS,
        schema=schema,
        booster=tuned.booster,
        params=tuned.params,
        full_params=True,
        data_fingerprint=fingerprint(matrix, target, names=schema.names),
        data_source=(
            f"SYNTHETIC customer book from cvm synth ({book_path.name})"
            if generator is not None
            else f"customer book supplied by the bank ({book_path.name})"
        ),
        training_rows=int(window.sum()),
        split=split,
        metrics={"test": metrics},
        thresholds={},
        target=TARGET,
        id_column="customer_id",
        extras={
            "model_kind": TARGET,
            "synthetic": generator is not None,
            "tuning": tuned.summary(),
            "not_served": "a tier-movement model answers down/stay/up, not a tier: the "
            "registry's tier slot serves the tier model; keep this one out of models/tier",
        },
    )
    save_model(out_dir, tuned.booster, manifest)
    return manifest
