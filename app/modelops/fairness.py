"""Fairness of a binary model's selections by gender, age band and region.

fairlearn's ``MetricFrame`` gives each group's selection rate, true- and false-positive rate
and size; the intervals come from the same seeded bootstrap counts as the other card metrics
(``stats``): fairlearn's own bootstrap refits the frame per resample, minutes on a book's test
month. A factor is amber when the selection-rate ratio (lowest over highest group) is below
0.8 (the four-fifths rule) or a group's interval excludes parity (the overall selection rate).
Groups under ``MIN_GROUP_ROWS`` are reported as too small and left out of both tests.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from app.modelops import stats

MIN_GROUP_ROWS = 500
FOUR_FIFTHS = 0.8
AGE_BANDS = ((18, 25), (25, 35), (35, 50), (50, 65), (65, 200))


class FairnessStatus(StrEnum):
    """Green: no sign of disparate selection; amber: look before use."""

    GREEN = "green"
    AMBER = "amber"
    TOO_SMALL = "too_small"


def age_band(age: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Age bands of 18-24, 25-34, 35-49, 50-64 and 65+ ('unknown' when missing)."""
    years = np.asarray(age, dtype=np.float64)
    bands = np.full(len(years), "unknown", dtype=object)
    for low, high in AGE_BANDS:
        label = f"{low}+" if high == 200 else f"{low}-{high - 1}"
        bands[(years >= low) & (years < high)] = label
    return bands.astype(str)


def _rate(indicator: npt.NDArray[np.float64], member: npt.NDArray[np.bool_], counts: Any) -> Any:
    weights = counts * member
    return stats.weighted_mean(indicator, weights)


def factor_report(
    y_true: npt.ArrayLike,
    selected: npt.ArrayLike,
    groups: npt.ArrayLike,
    counts: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """One factor: each group's rates with intervals, the selection-rate ratio, the status."""
    y = np.asarray(y_true, dtype=np.int64)
    chosen = np.asarray(selected, dtype=np.int64)
    labels = np.asarray(groups).astype(str)
    frame = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
            "count": count,
        },
        y_true=y,
        y_pred=chosen,
        sensitive_features=labels,
    )
    overall = float(frame.overall["selection_rate"])
    rows = []
    large: list[float] = []
    amber_groups = []
    for group, values in frame.by_group.iterrows():
        member = labels == group
        size = int(values["count"])
        entry: dict[str, Any] = {"group": str(group), "rows": size}
        if size < MIN_GROUP_ROWS:
            rows.append({**entry, "status": FairnessStatus.TOO_SMALL.value})
            continue
        rate = stats.interval(
            _rate(chosen.astype(np.float64), member, counts), float(values["selection_rate"])
        )
        excludes = rate["ci_low"] is not None and not (rate["ci_low"] <= overall <= rate["ci_high"])
        large.append(float(values["selection_rate"]))
        if excludes:
            amber_groups.append(str(group))
        rows.append(
            {
                **entry,
                "selection_rate": rate,
                "true_positive_rate": _optional(values["true_positive_rate"]),
                "false_positive_rate": _optional(values["false_positive_rate"]),
                "interval_excludes_parity": excludes,
                "status": (FairnessStatus.AMBER if excludes else FairnessStatus.GREEN).value,
            }
        )
    ratio = min(large) / max(large) if len(large) >= 2 and max(large) > 0 else None
    amber = bool(amber_groups) or (ratio is not None and ratio < FOUR_FIFTHS)
    return {
        "overall_selection_rate": round(overall, 4),
        "selection_rate_ratio": None if ratio is None else round(ratio, 4),
        "status": (
            FairnessStatus.TOO_SMALL
            if len(large) < 2
            else FairnessStatus.AMBER
            if amber
            else FairnessStatus.GREEN
        ).value,
        "groups": rows,
    }


def _optional(value: Any) -> float | None:
    number = float(value)
    return round(number, 4) if np.isfinite(number) else None


def fairness_report(
    y_true: npt.ArrayLike,
    score: npt.ArrayLike,
    factors: dict[str, npt.ArrayLike],
    *,
    seed: int,
    selected_share: float = 0.2,
    resamples: int = stats.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Selection (the highest-scored ``selected_share`` of the rows) by each factor."""
    s = np.asarray(score, dtype=np.float64)
    cut = float(np.quantile(s, 1 - selected_share))
    selected = s >= cut
    counts = stats.resample_counts(len(s), resamples=resamples, seed=seed)
    by_factor = {
        name: factor_report(y_true, selected, groups, counts) for name, groups in factors.items()
    }
    statuses = {r["status"] for r in by_factor.values()}
    return {
        "selection": f"the highest-scored {selected_share:.0%} of the rows (score >= {cut:.4f})",
        "min_group_rows": MIN_GROUP_ROWS,
        "status": FairnessStatus.AMBER.value
        if FairnessStatus.AMBER.value in statuses
        else FairnessStatus.GREEN.value,
        "factors": by_factor,
    }
