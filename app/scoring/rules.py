"""The bank's rules as the settings give them: one loader for the API and the batch scorer."""

from __future__ import annotations

from app.config import Settings
from app.rewards.policy import load_rewards_policy
from app.scoring.assess import AlertThresholds, Rules, Stage
from app.scoring.policies import EligibilityRules


def rules_from_settings(settings: Settings) -> Rules:
    """Eligibility and service plans from their files (the plans are the rewards policy's:
    one file for what a tier is offered), alert thresholds from the settings."""
    return Rules(
        eligibility=EligibilityRules.load(settings.eligibility_file),
        service_plans={
            tier: plan.model_dump()
            for tier, plan in load_rewards_policy(settings.rewards_policy_file).plans.items()
        },
        alerts=_alert_thresholds(settings),
        new_customer_months=settings.lifecycle_new_months,
    )


def _alert_thresholds(settings: Settings) -> AlertThresholds | None:
    """From which churn score, at which stages, an alert is called for (None: alerts off)."""
    if not settings.churn_alerts_enabled:
        return None
    excluded = {Stage(stage) for stage in settings.churn_alert_excluded_stages}
    return AlertThresholds(
        min_band=settings.churn_alert_band,
        min_probability=settings.churn_alert_probability,
        stages=frozenset(Stage) - excluded,
    )
