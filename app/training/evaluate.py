"""Held-out metrics written into model manifests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    roc_auc_score,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def calibration_table(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, bins: int = 10
) -> list[dict[str, Any]]:
    """Predicted against observed rate in equal-width probability bins (empty bins left out)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "count": int(mask.sum()),
                    "mean_predicted": round(float(p[mask].mean()), 4),
                    "observed_rate": round(float(y[mask].mean()), 4),
                }
            )
    return table


def binary_metrics(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> dict[str, Any]:
    """ROC AUC, PR AUC, Brier score and a calibration table."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("the test split holds a single class; metrics are undefined")
    return {
        "rows": len(y),
        "positive_rate": round(float(y.mean()), 4),
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "calibration": calibration_table(y, p),
    }


def multiclass_metrics(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (rows: actual, columns: predicted)."""
    y = np.asarray(y_true, dtype=np.int64)
    predicted = np.asarray(proba).argmax(axis=1)
    labels = list(range(len(classes)))
    return {
        "rows": len(y),
        "accuracy": round(float(accuracy_score(y, predicted)), 4),
        "macro_f1": round(float(f1_score(y, predicted, labels=labels, average="macro")), 4),
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
    }


def regression_metrics(y_true: npt.ArrayLike, predicted: npt.ArrayLike) -> dict[str, Any]:
    """Mean absolute error and the correlation between predicted and realised values."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    return {
        "rows": len(y),
        "mae": round(float(mean_absolute_error(y, p)), 2),
        "mean_actual": round(float(y.mean()), 2),
        "spearman": round(float(_spearman(y, p)), 4),
    }


def _spearman(a: FloatArray, b: FloatArray) -> float:
    ranks_a = np.argsort(np.argsort(a)).astype(np.float64)
    ranks_b = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def ranking_metrics(
    scores: FloatArray, held: npt.NDArray[np.bool_], added: npt.NDArray[np.bool_], k: int = 7
) -> dict[str, Any]:
    """MAP@k and hit rate@3 of recommending not-yet-held products, per customer-month.

    ``scores``, ``held`` and ``added`` are (customers, products); only rows where at least one
    product was added count, and already-held products are never recommended.
    """
    relevant = _relevant_in_order(scores, held, added)
    if not len(relevant):
        raise ValueError("no customer added a product in the evaluated month")
    return {
        "customers": len(relevant),
        f"map_at_{k}": round(float(_average_precision(relevant, k).mean()), 4),
        "hit_rate_at_3": round(float(relevant[:, :3].any(axis=1).mean()), 4),
    }


def average_precisions(
    scores: FloatArray, held: npt.NDArray[np.bool_], added: npt.NDArray[np.bool_], k: int = 7
) -> FloatArray:
    """AP@k of each customer-month that added a product (the terms MAP@k averages)."""
    return _average_precision(_relevant_in_order(scores, held, added), k)


def _relevant_in_order(
    scores: FloatArray, held: npt.NDArray[np.bool_], added: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    masked = np.where(held, -np.inf, scores)
    order = np.argsort(-masked, axis=1, kind="stable")
    relevant = np.take_along_axis(added & ~held, order, axis=1)
    return relevant[relevant.any(axis=1)]


def _average_precision(relevant: npt.NDArray[np.bool_], k: int) -> FloatArray:
    top_k = relevant[:, :k]
    precision_at = np.cumsum(top_k, axis=1) / np.arange(1, k + 1)
    denominators = np.minimum(relevant.sum(axis=1), k)
    return np.asarray((precision_at * top_k).sum(axis=1) / denominators, dtype=np.float64)
