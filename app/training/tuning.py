"""Training inside the training window only: validation folds, a small seeded search, early
stopping that cannot collapse, a refit on every training row, and the calibration choice.

Nothing here ever receives a test row: the caller holds the test split out and scores it once,
at the end. Validation folds are drawn from the training window: rolling origin when the rows
have a time (train on everything before an origin, validate on the block after it; the origin
moves forward), stratified k-fold otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from app.scoring.feature_schema import FeatureSchema
from app.scoring.manifest import Calibration, Objective
from app.training.calibration import CalibrationChoice, choose_calibration

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Fold = tuple[IntArray, IntArray]

MIN_ROUNDS = 50  # early stopping never picks fewer trees (Berka once stopped at 3)
PATIENCE = 50
MAX_ROUNDS = 2000
FOLDS = 3
TRIALS = 6

# The candidates drawn by the search (the first trial is always the house configuration).
SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "learning_rate": (0.02, 0.03, 0.05),
    "num_leaves": (7, 15, 31),
    "max_depth": (-1, 4, 6),
    "min_data_in_leaf": (20, 50, 100, 200),
    "feature_fraction": (0.5, 0.7, 0.9),
    "lambda_l2": (0.0, 1.0, 10.0),
}


@dataclass(frozen=True)
class TuningOptions:
    """How much searching to do; the defaults are what ``cvm train --data`` runs."""

    trials: int = TRIALS
    folds: int = FOLDS
    min_rounds: int = MIN_ROUNDS
    patience: int = PATIENCE
    max_rounds: int = MAX_ROUNDS


@dataclass(frozen=True)
class Trial:
    """One configuration scored on the validation folds of the training window."""

    params: dict[str, Any]
    score: float
    rounds: list[int]


@dataclass
class Tuned:
    """What the search chose, the refit booster on every training row, and the evidence."""

    booster: lgb.Booster
    params: dict[str, Any]
    rounds: int
    trials: list[Trial]
    calibration: CalibrationChoice | None
    out_of_fold: FloatArray  # training-window predictions by fold models (binary: calibrated)
    out_of_fold_rows: IntArray
    scheme: str
    metric: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def served_calibration(self) -> Calibration | None:
        """The calibration the manifest carries (None: the trees' probability is served)."""
        return None if self.calibration is None else self.calibration.calibration

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the search (no test figure is involved)."""
        return {
            "validation": self.scheme,
            "metric": self.metric,
            "chosen_params": self.params,
            "rounds": self.rounds,
            "trials": [
                {"params": t.params, "score": round(t.score, 5), "rounds": t.rounds}
                for t in self.trials
            ],
            "calibration": None if self.calibration is None else self.calibration.summary(),
        }


def candidate_configs(seed: int, trials: int) -> list[dict[str, Any]]:
    """The house configuration first, then ``trials - 1`` distinct seeded draws."""
    rng = np.random.default_rng(seed)
    space = list(SEARCH_SPACE.items())
    configs: list[dict[str, Any]] = [{}]
    seen: set[tuple[Any, ...]] = set()
    attempts = 0
    while len(configs) < trials and attempts < 1000:
        attempts += 1
        draw = {name: values[int(rng.integers(len(values)))] for name, values in space}
        key = tuple(draw.values())
        if key not in seen:
            seen.add(key)
            configs.append(draw)
    return configs


def validation_folds(
    labels: IntArray, time: npt.ArrayLike | None, *, folds: int, seed: int
) -> tuple[list[Fold], str]:
    """Folds of the training window: rolling origin in time order, else stratified k-fold."""
    n = len(labels)
    if time is not None:
        order = np.argsort(np.asarray(time), kind="stable").astype(np.int64)
        step = 1.0 / (folds + 2)
        cuts = [round(n * step * k) for k in range(2, folds + 3)]
        result = [(order[: cuts[k]], order[cuts[k] : cuts[k + 1]]) for k in range(folds)]
        scheme = (
            f"rolling origin over the training window: {folds} folds, each trained on every "
            f"row before its origin and validated on the next {step:.0%} of rows in time order"
        )
        return result, scheme
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    result = [
        (train.astype(np.int64), valid.astype(np.int64))
        for train, valid in splitter.split(np.zeros(n), labels)
    ]
    return result, f"stratified {folds}-fold over the training window (seed {seed})"


class FloorEarlyStopping:
    """Early stopping on the validation loss that never chooses fewer than ``min_rounds``."""

    order = 30
    before_iteration = False

    def __init__(self, min_rounds: int, patience: int) -> None:
        self.min_rounds = min_rounds
        self.patience = patience
        self.losses: list[float] = []

    @property
    def best_rounds(self) -> int:
        """The best round count at or above the floor (the floor if fewer were run)."""
        floor = min(self.min_rounds, len(self.losses))
        if floor == 0:
            return 0
        tail = np.asarray(self.losses[floor - 1 :])
        return int(floor + int(np.argmin(tail)))

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        results = env.evaluation_result_list or []
        self.losses.append(float(results[0][2]))
        rounds = env.iteration + 1
        if rounds >= self.min_rounds and rounds - self.best_rounds >= self.patience:
            raise lgb.callback.EarlyStopException(self.best_rounds - 1, results)


def _dataset(
    schema: FeatureSchema, matrix: FloatArray, labels: npt.ArrayLike, reference: Any = None
) -> lgb.Dataset:
    return lgb.Dataset(
        matrix,
        label=np.asarray(labels),
        feature_name=schema.names,
        categorical_feature=schema.categorical_indices,
        free_raw_data=False,
        reference=reference,
    )


def _objective_params(objective: Objective, num_classes: int, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = {"objective": objective.value, "seed": seed}
    if objective is Objective.MULTICLASS:
        params["num_class"] = num_classes
    return params


def _score(objective: Objective, labels: IntArray, proba: FloatArray) -> float:
    """Higher is better: ROC AUC (binary), negative log loss (multiclass)."""
    if objective is Objective.BINARY:
        return float(roc_auc_score(labels, proba))
    return -float(sk_log_loss(labels, proba, labels=list(range(proba.shape[1]))))


def tune(
    *,
    objective: Objective,
    num_classes: int,
    schema: FeatureSchema,
    matrix: FloatArray,
    labels: IntArray,
    base_params: dict[str, Any],
    time: npt.ArrayLike | None = None,
    seed: int = 7,
    options: TuningOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tuned:
    """Search, stop early, calibrate and refit, all on the training window given here."""
    options = options or TuningOptions()
    folds, scheme = validation_folds(labels, time, folds=options.folds, seed=seed)
    for fit, valid in folds:
        if len(np.unique(labels[fit])) < 2 or len(np.unique(labels[valid])) < 2:
            raise ValueError("a validation fold of the training window holds a single class")
    fixed = _objective_params(objective, num_classes, seed)
    configs = candidate_configs(seed, options.trials)
    trials: list[Trial] = []
    predictions: list[FloatArray] = []
    total = len(configs) * len(folds) + 1
    for config in configs:
        params = {**base_params, **config, **fixed}
        fold_rounds: list[int] = []
        fold_proba: list[FloatArray] = []
        for fit, valid in folds:
            stopper = FloorEarlyStopping(options.min_rounds, options.patience)
            train_set = _dataset(schema, matrix[fit], labels[fit])
            booster = lgb.train(
                params,
                train_set,
                num_boost_round=options.max_rounds,
                valid_sets=[_dataset(schema, matrix[valid], labels[valid], train_set)],
                callbacks=[stopper],
            )
            fold_rounds.append(stopper.best_rounds)
            proba = booster.predict(matrix[valid], num_iteration=stopper.best_rounds)
            fold_proba.append(np.asarray(proba, dtype=np.float64))
            if progress is not None:
                progress(len(trials) * len(folds) + len(fold_rounds), total)
        scores = [
            _score(objective, labels[valid], proba)
            for (_, valid), proba in zip(folds, fold_proba, strict=True)
        ]
        trials.append(Trial(params=config, score=float(np.mean(scores)), rounds=fold_rounds))
        predictions.append(np.concatenate(fold_proba))
    best = max(range(len(trials)), key=lambda i: (trials[i].score, -i))
    chosen = trials[best]
    rounds = max(options.min_rounds, int(np.median(chosen.rounds)))
    params = {**base_params, **chosen.params, **fixed}
    booster = lgb.train(params, _dataset(schema, matrix, labels), num_boost_round=rounds)
    if progress is not None:
        progress(total, total)
    rows = np.concatenate([valid for _, valid in folds])
    out_of_fold = predictions[best]
    calibration = None
    if objective is Objective.BINARY:
        fold_index = np.concatenate([np.full(len(v), k) for k, (_, v) in enumerate(folds)])
        calibration = choose_calibration(
            out_of_fold, labels[rows], fold_index.astype(np.int64), time_ordered=time is not None
        )
    return Tuned(
        booster=booster,
        params={**base_params, **chosen.params},
        rounds=rounds,
        trials=trials,
        calibration=calibration,
        out_of_fold=out_of_fold,
        out_of_fold_rows=rows,
        scheme=scheme,
        metric="ROC AUC" if objective is Objective.BINARY else "multiclass log loss",
    )
