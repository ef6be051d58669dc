"""Calibration of a binary model, chosen by out-of-time (or out-of-fold) log loss.

Three candidates: none, isotonic regression, and the inductive Venn-ABERS predictor (Vovk &
Petej, "Venn-Abers predictors", UAI 2014; Vovk, Petej & Fedorova, NeurIPS 2015). For a score
``s`` Venn-ABERS fits isotonic regression twice on the calibration scores plus ``(s, 0)`` and
plus ``(s, 1)``; the two fitted values at ``s`` are ``p0 <= p1`` and the single probability is
``p1 / (1 - p0 + p1)`` (the log-loss-minimising merge of the two). Both outputs depend on ``s``
only through its rank among the calibration scores, so the map is computed once at knots
(distinct calibration scores) and served as a monotone, piecewise-linear map in the manifest.

Calibration can make a good model worse; "none" stays a candidate and wins when it is best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression, isotonic_regression

from app.scoring.manifest import Calibration, CalibrationMethod, Calibrator

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NONE = "none"
EPSILON = 1e-4  # probabilities are kept in [EPSILON, 1 - EPSILON]: log loss stays finite
MAX_KNOTS = 256


def log_loss(labels: npt.ArrayLike, proba: npt.ArrayLike) -> float:
    """Mean binary log loss, probabilities clipped to [EPSILON, 1 - EPSILON]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), EPSILON, 1 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_isotonic(scores: FloatArray, labels: IntArray) -> Calibration:
    """Isotonic regression of the labels on the scores, as a knot map."""
    model = IsotonicRegression(y_min=EPSILON, y_max=1 - EPSILON, out_of_bounds="clip")
    model.fit(scores, labels.astype(np.float64))
    knots, values = _strict(np.asarray(model.X_thresholds_), np.asarray(model.y_thresholds_))
    return Calibration(method=CalibrationMethod.ISOTONIC, knots=knots, values=values)


def fit_venn_abers(scores: FloatArray, labels: IntArray, max_knots: int = MAX_KNOTS) -> Calibration:
    """The inductive Venn-ABERS predictor on a calibration set, as a knot map."""
    unique, inverse = np.unique(scores, return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    positives: FloatArray = np.bincount(inverse, weights=labels.astype(np.float64)).astype(
        np.float64
    )
    if len(unique) <= max_knots:
        at = np.arange(len(unique))
    else:
        at = np.unique(np.round(np.linspace(0, len(unique) - 1, max_knots)).astype(np.int64))
    merged = []
    for index in at:
        p0 = _fitted_with(weights, positives, int(index), 0.0)
        p1 = _fitted_with(weights, positives, int(index), 1.0)
        merged.append(p1 / (1.0 - p0 + p1))
    values = np.clip(np.asarray(merged), EPSILON, 1 - EPSILON)
    knots, values = _strict(np.asarray(unique[at], dtype=np.float64), values)
    return Calibration(method=CalibrationMethod.VENN_ABERS, knots=knots, values=values)


def _fitted_with(weights: FloatArray, positives: FloatArray, index: int, label: float) -> float:
    """Isotonic fit of the calibration set plus one point (score ``unique[index]``, ``label``),
    read at that score."""
    w = weights.copy()
    p = positives.copy()
    w[index] += 1.0
    p[index] += label
    fitted = isotonic_regression(p / w, sample_weight=w, increasing=True)
    return float(fitted[index])


def _strict(knots: FloatArray, values: FloatArray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots strictly increasing (a repeated knot keeps its last value), at least two."""
    keep = np.append(np.diff(knots) > 0, True)
    knots, values = knots[keep], values[keep]
    if len(knots) == 1:  # one distinct score: a flat map over a small interval
        knots = np.array([knots[0], np.nextafter(knots[0], np.inf)])
        values = np.repeat(values, 2)
    return tuple(float(k) for k in knots), tuple(float(v) for v in values)


FITTERS = {
    CalibrationMethod.ISOTONIC: fit_isotonic,
    CalibrationMethod.VENN_ABERS: fit_venn_abers,
}


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibration (None: serve the trees' probability) and the evidence."""

    calibration: Calibration | None
    method: str
    log_loss: dict[str, float] = field(default_factory=dict)
    evaluated_rows: int = 0
    scheme: str = ""

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the choice."""
        return {
            "method": self.method,
            "chosen_by": "lowest log loss on held-out folds of the training window",
            "scheme": self.scheme,
            "evaluated_rows": self.evaluated_rows,
            "log_loss": {k: round(v, 5) for k, v in self.log_loss.items()},
        }


def choose_calibration(
    scores: FloatArray, labels: IntArray, fold: IntArray, *, time_ordered: bool
) -> CalibrationChoice:
    """Pick none, isotonic or Venn-ABERS by held-out log loss, then fit it on every score.

    ``scores`` are out-of-fold predictions of the training window and ``fold`` their fold
    (0, 1, ...; in time order when ``time_ordered``). Each fold is calibrated by a map fitted
    on the other folds, or, in time order, on the earlier folds only (out of time).
    """
    folds = np.unique(fold)
    evaluated = folds[1:] if time_ordered else folds
    held: list[npt.NDArray[np.bool_]] = []
    predictions: dict[str, list[FloatArray]] = {NONE: [], **{m.value: [] for m in FITTERS}}
    for k in evaluated:
        target = fold == k
        source = fold < k if time_ordered else fold != k
        if len(np.unique(labels[source])) < 2:
            continue
        held.append(target)
        predictions[NONE].append(scores[target])
        for method, fitter in FITTERS.items():
            calibrator = Calibrator(fitter(scores[source], labels[source]))
            predictions[method.value].append(calibrator(scores[target]))
    if not held:
        return CalibrationChoice(calibration=None, method=NONE, scheme="too few folds")
    y = np.concatenate([labels[mask] for mask in held])
    losses = {name: log_loss(y, np.concatenate(parts)) for name, parts in predictions.items()}
    best = min(losses, key=lambda name: (losses[name], name != NONE))
    calibration = None if best == NONE else FITTERS[CalibrationMethod(best)](scores, labels)
    scheme = (
        "each later fold calibrated on the earlier folds (out of time)"
        if time_ordered
        else "each fold calibrated on the other folds (cross-fitting)"
    )
    return CalibrationChoice(
        calibration=calibration,
        method=best,
        log_loss=losses,
        evaluated_rows=len(y),
        scheme=scheme,
    )
