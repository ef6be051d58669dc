"""The champion/challenger report: the shadow pairs stored by scoring, compared, and once
outcomes are imported, both models' AUC and Brier on the same rows with paired bootstrap
intervals (the labels as backtests make them: an outcome within the horizon)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.modelops import stats
from app.modelops.backtest import BACKTEST_TASKS, HORIZON, outcome_times
from app.modelops.schemas import ChallengerOutcomes, ChallengerReport
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope
from app.scoring.shadow import ShadowPair, shadow_pairs


def _rank_correlation(
    champion: np.ndarray[Any, Any], challenger: np.ndarray[Any, Any]
) -> float | None:
    if len(champion) < 2 or np.ptp(champion) == 0 or np.ptp(challenger) == 0:
        return None
    return round(float(spearmanr(champion, challenger).statistic), 6)


def _labelled(
    pairs: Sequence[ShadowPair], outcomes: dict[str, list[Any]], until: Any
) -> tuple[list[int], list[float], list[float]]:
    """Labels and both probabilities: the latest pair of each customer in each month whose
    horizon has passed by ``until``."""
    latest: dict[tuple[str, str], ShadowPair] = {}
    for pair in sorted(pairs, key=lambda p: p.created_at):
        if pair.created_at <= until:
            latest[(f"{pair.created_at:%Y-%m}", pair.customer_id)] = pair
    labels, champion, challenger = [], [], []
    for key in sorted(latest):
        pair = latest[key]
        times = outcomes.get(pair.customer_id, [])
        first_after = bisect.bisect_right(times, pair.created_at)
        labels.append(
            int(first_after < len(times) and times[first_after] <= pair.created_at + HORIZON)
        )
        champion.append(pair.champion_probability)
        challenger.append(pair.challenger_probability)
    return labels, champion, challenger


def _outcomes(
    session: Session,
    task: Task,
    pairs: Sequence[ShadowPair],
    tenant: TenantScope | None,
    resamples: int,
    seed: int,
) -> ChallengerOutcomes | None:
    if task not in BACKTEST_TASKS:
        return None
    outcomes, observed_through = outcome_times(session, task, tenant)
    if observed_through is None:
        return None
    labels, champion, challenger = _labelled(pairs, outcomes, observed_through - HORIZON)
    if not labels:
        return None
    y = np.asarray(labels, dtype=np.float64)
    p0, p1 = np.asarray(champion), np.asarray(challenger)
    counts = stats.resample_counts(len(y), resamples=resamples, seed=seed)

    def auc(p: np.ndarray[Any, Any]) -> stats.Metric:
        return lambda w: stats.weighted_auc(y, p, w)

    def brier(p: np.ndarray[Any, Any]) -> stats.Metric:
        return lambda w: stats.weighted_mean((p - y) ** 2, w)

    return ChallengerOutcomes(
        observed_through=observed_through,
        horizon_days=HORIZON.days,
        rows=len(y),
        positives=int(y.sum()),
        resamples=resamples,
        seed=seed,
        champion={
            "roc_auc": stats.with_interval(auc(p0), counts),
            "brier": stats.with_interval(brier(p0), counts),
        },
        challenger={
            "roc_auc": stats.with_interval(auc(p1), counts),
            "brier": stats.with_interval(brier(p1), counts),
        },
        difference={
            "roc_auc": stats.with_interval(lambda w: auc(p1)(w) - auc(p0)(w), counts),
            "brier": stats.with_interval(lambda w: brier(p1)(w) - brier(p0)(w), counts),
        },
    )


def challenger_report(
    session: Session,
    *,
    task: Task,
    tenant: TenantScope | None,
    version: str | None = None,
    limit: int = 100_000,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
) -> ChallengerReport:
    """Champion against challenger on the pairs scored in shadow (the newest challenger's
    when no version is named): 404 when there are none."""
    pairs = shadow_pairs(session, task=task, tenant=tenant, version=version, limit=limit)
    if not pairs:
        raise NotFound(
            f"no {task.value} shadow scores stored yet"
            + (f" for version {version}" if version else "")
        )
    challenger_version = version or pairs[0].challenger_version
    pairs = [p for p in pairs if p.challenger_version == challenger_version]
    champion = np.array([p.champion_probability for p in pairs], dtype=np.float64)
    challenger = np.array([p.challenger_probability for p in pairs], dtype=np.float64)
    difference = challenger - champion
    return ChallengerReport(
        task=task.value,
        challenger_version=challenger_version,
        champion_versions=sorted({p.champion_version for p in pairs}),
        pairs=len(pairs),
        mean_difference=round(float(difference.mean()), 6),
        mean_absolute_difference=round(float(np.abs(difference).mean()), 6),
        band_agreement=round(
            sum(p.champion_band == p.challenger_band for p in pairs) / len(pairs), 6
        ),
        rank_correlation=_rank_correlation(champion, challenger),
        outcomes=_outcomes(session, task, pairs, tenant, resamples, seed),
    )
