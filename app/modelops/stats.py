"""Seeded bootstrap intervals of the metrics model cards, backtests and fairness report.

Each resample is drawn once as a (resamples, rows) matrix of counts (how many times each row
was drawn); every metric is then a weighted statistic of the same draws, so the model's and
its baselines' intervals come from identical resamples (paired), and a metric costs a matrix
product instead of a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
DEFAULT_RESAMPLES = 200
DEFAULT_SEED = 20240917
LEVEL = 0.95


def resample_counts(rows: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int) -> FloatArray:
    """(resamples, rows): how often each row is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, rows), dtype=np.float64)
    for b in range(resamples):
        counts[b] = np.bincount(rng.integers(0, rows, rows), minlength=rows)
    return counts


def interval(values: FloatArray, point: float, *, digits: int = 4) -> dict[str, Any]:
    """The point estimate with the percentile interval of its bootstrap values."""
    finite = values[np.isfinite(values)]
    tail = (1 - LEVEL) / 2
    low, high = (
        (float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail)))
        if len(finite)
        else (float("nan"), float("nan"))
    )
    return {
        "value": _round(point, digits),
        "ci_low": _round(low, digits),
        "ci_high": _round(high, digits),
    }


def _round(value: float, digits: int) -> float | None:
    return round(value, digits) if np.isfinite(value) else None


def weighted_auc(y: npt.ArrayLike, score: npt.ArrayLike, weights: FloatArray) -> FloatArray:
    """ROC AUC (ties counted half) of each row of ``weights``: (resamples, rows) -> (resamples,).

    A weight row of ones gives the ordinary AUC.
    """
    label = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    sorted_score = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    w = np.atleast_2d(weights)[:, order]
    positives = np.add.reduceat(w * label[order], starts, axis=1)
    negatives = np.add.reduceat(w * (1 - label[order]), starts, axis=1)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    concordant = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / np.where(pairs > 0, pairs, 1), np.nan)


def weighted_mean(values: npt.ArrayLike, weights: FloatArray) -> FloatArray:
    """Mean of ``values`` under each row of weights."""
    v = np.asarray(values, dtype=np.float64)
    w = np.atleast_2d(weights)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((w @ v) / np.where(total > 0, total, np.nan), dtype=np.float64)


def observed_over_expected(
    y: npt.ArrayLike, proba: npt.ArrayLike, weights: FloatArray
) -> FloatArray:
    """Observed positives over the sum of predicted probabilities (1: calibrated in the large)."""
    w = np.atleast_2d(weights)
    expected = w @ np.asarray(proba, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(
            (w @ np.asarray(y, dtype=np.float64)) / np.where(expected > 0, expected, np.nan),
            dtype=np.float64,
        )


def top_decile_lift(y: npt.ArrayLike, score: npt.ArrayLike, weights: FloatArray) -> FloatArray:
    """Positive rate among the highest-scored tenth of the (weighted) rows over the overall rate."""
    label = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    w = np.atleast_2d(weights)[:, order]
    total = w.sum(axis=1, keepdims=True)
    top = np.cumsum(w, axis=1) - w < 0.1 * total  # rows starting inside the top tenth
    top_weight = (w * top).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        top_rate = (w * top) @ label[order] / top_weight
        overall = w @ label[order] / total[:, 0]
        return np.asarray(top_rate / overall, dtype=np.float64)


Metric = Callable[[FloatArray], FloatArray]


def with_interval(metric: Metric, counts: FloatArray, *, digits: int = 4) -> dict[str, Any]:
    """A metric on all rows (weights of one) with its interval over the bootstrap counts."""
    point = float(metric(np.ones((1, counts.shape[1])))[0])
    return interval(metric(counts), point, digits=digits)


def binary_summary(y: npt.ArrayLike, proba: npt.ArrayLike, counts: FloatArray) -> dict[str, Any]:
    """AUC, Brier, observed/expected and top-decile lift, each with its interval."""
    label = np.asarray(y, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    squared = (p - label) ** 2
    return {
        "roc_auc": with_interval(lambda w: weighted_auc(label, p, w), counts),
        "brier": with_interval(lambda w: weighted_mean(squared, w), counts),
        "observed_over_expected": with_interval(
            lambda w: observed_over_expected(label, p, w), counts
        ),
        "top_decile_lift": with_interval(lambda w: top_decile_lift(label, p, w), counts),
    }
