"""Lifecycle stages from the customer record, by configurable rules.

A customer's stage is decided by the first rule that holds, as of a moment:

1. prospect: no product was ever opened;
2. lost: products were held, none is open any more;
3. dormant: no activity (transaction, session, branch visit; opening a product counts too)
   for ``dormant_days`` days or more;
4. at-risk: the latest churn assessment crossed the alert threshold;
5. new: within ``new_months`` calendar months of the relationship's start (the profile's
   ``customer_since``, else the first product opened);
6. active: otherwise.

The scoring core knows four stages (app/scoring/assess.py Stage) that decide which models
apply; ``MODEL_STAGE`` below is the one mapping from these to those.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.config import Settings
from app.scoring.assess import BAND_LABELS, Stage


class LifecycleStage(StrEnum):
    """Where a customer is in the relationship, from its record."""

    PROSPECT = "prospect"
    NEW = "new"
    ACTIVE = "active"
    AT_RISK = "at_risk"
    DORMANT = "dormant"
    LOST = "lost"


# The one mapping to the scoring core's stages: at-risk and dormant customers are existing
# customers to the models (they are scored for churn, tier and recommendations).
MODEL_STAGE: dict[LifecycleStage, Stage] = {
    LifecycleStage.PROSPECT: Stage.PROSPECT,
    LifecycleStage.NEW: Stage.NEW,
    LifecycleStage.ACTIVE: Stage.EXISTING,
    LifecycleStage.AT_RISK: Stage.EXISTING,
    LifecycleStage.DORMANT: Stage.EXISTING,
    LifecycleStage.LOST: Stage.LOST,
}


def model_stage(stage: LifecycleStage) -> Stage:
    """The scoring core's stage of a lifecycle stage."""
    return MODEL_STAGE[stage]


class StageCause(StrEnum):
    """The rule that put a customer in its stage."""

    NO_PRODUCT = "no_product"
    ALL_PRODUCTS_CLOSED = "all_products_closed"
    NO_ACTIVITY = "no_activity"
    CHURN_RISK = "churn_risk"
    FIRST_MONTHS = "first_months"
    ESTABLISHED = "established"


class StageSource(StrEnum):
    """What re-evaluated the stage."""

    INTAKE = "intake"
    ASSESSMENT = "assessment"
    SWEEP = "sweep"


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    """The configurable boundaries, from the settings."""

    new_months: int = 3
    dormant_days: int = 90
    churn_band: str = "high"
    churn_probability: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecycleRules:
        """The boundaries a deployment configured; at risk from the churn alert threshold."""
        return cls(
            new_months=settings.lifecycle_new_months,
            dormant_days=settings.lifecycle_dormant_days,
            churn_band=settings.churn_alert_band,
            churn_probability=settings.churn_alert_probability,
        )

    def at_risk(self, probability: float | None, band: str | None) -> bool:
        """Whether a churn assessment crosses the alert threshold."""
        if self.churn_probability is not None:
            return probability is not None and probability >= self.churn_probability
        if band not in BAND_LABELS:
            return False
        return BAND_LABELS.index(band) >= BAND_LABELS.index(self.churn_band)


DEFAULT_LIFECYCLE = LifecycleRules()


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What the stage rules read of one customer's record."""

    customer_since: datetime | None = None
    first_opened_at: datetime | None = None
    last_opened_at: datetime | None = None
    open_products: int = 0
    closed_products: int = 0
    last_closed_at: datetime | None = None
    last_activity_at: datetime | None = None
    at_risk: bool = False
    risk_assessed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StageAt:
    """A stage, the rule behind it and since when it holds (as far as the record tells)."""

    stage: LifecycleStage
    cause: StageCause
    since: datetime
    # When time alone would change the stage (None: it cannot): what the sweep looks for.
    review_at: datetime | None = None


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months later (the month's last day if it is
    shorter)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def evaluate(facts: RecordFacts, rules: LifecycleRules, *, now: datetime) -> StageAt:
    """The customer's stage at ``now`` by the first rule that holds (module docstring)."""
    if facts.open_products == 0:
        if facts.closed_products == 0:
            return StageAt(LifecycleStage.PROSPECT, StageCause.NO_PRODUCT, now)
        return StageAt(
            LifecycleStage.LOST, StageCause.ALL_PRODUCTS_CLOSED, facts.last_closed_at or now
        )
    start = facts.customer_since or facts.first_opened_at or now
    active_at = max(
        (t for t in (facts.last_activity_at, facts.last_opened_at) if t is not None),
        default=start,
    )
    quiet_until = active_at + timedelta(days=rules.dormant_days)
    if now >= quiet_until:
        return StageAt(LifecycleStage.DORMANT, StageCause.NO_ACTIVITY, quiet_until)
    if facts.at_risk:
        return StageAt(
            LifecycleStage.AT_RISK,
            StageCause.CHURN_RISK,
            facts.risk_assessed_at or now,
            quiet_until,
        )
    established = add_months(start, rules.new_months)
    if now < established:
        return StageAt(
            LifecycleStage.NEW,
            StageCause.FIRST_MONTHS,
            facts.first_opened_at or start,
            min(established, quiet_until),
        )
    return StageAt(
        LifecycleStage.ACTIVE, StageCause.ESTABLISHED, max(established, active_at), quiet_until
    )
