"""The bank's alert threshold for a churn score: pure, no I/O (the assessment core calls it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

BAND_ORDER = {"low": 0, "medium": 1, "high": 2}
# Stages where the bank can no longer act on a churn score: a prospect has nothing to lose
# and a lost customer has already left.
NOT_ACTIONABLE_STAGES = frozenset({"prospect", "lost"})
NEW_CUSTOMER_MONTHS = 3


@dataclass(frozen=True)
class AlertThresholds:
    """From which score a churn alert is called for: a band up, or a probability up (which
    then replaces the band), never at the stages listed in ``excluded_stages``."""

    min_band: str = "high"
    min_probability: float | None = None
    excluded_stages: frozenset[str] = NOT_ACTIONABLE_STAGES


def alert_threshold_crossed(
    probability: float, band: str, stage: str | None, thresholds: AlertThresholds
) -> bool:
    """Whether this churn score calls for an alert at the customer's stage (None: unknown)."""
    if stage is not None and stage in thresholds.excluded_stages:
        return False
    if thresholds.min_probability is not None:
        return probability >= thresholds.min_probability
    return BAND_ORDER.get(band, 0) >= BAND_ORDER[thresholds.min_band]


def lifecycle_stage(
    tenure_months: float | None, *, new_customer_months: int = NEW_CUSTOMER_MONTHS
) -> str | None:
    """A customer's stage from tenure alone: None when tenure is unknown (it takes the book's
    lifecycle to tell a prospect or a lost customer from one whose tenure was not sent)."""
    if tenure_months is None or math.isnan(tenure_months):
        return None
    return "new" if tenure_months < new_customer_months else "existing"
