"""The bank's rules as the settings give them: one loader for the API and the batch scorer."""

from __future__ import annotations

from app.config import Settings
from app.scoring.assess import AlertThresholds, Rules
from app.scoring.policies import EligibilityRules, load_service_plans


def rules_from_settings(settings: Settings) -> Rules:
    """Eligibility and service plans from their files, alert thresholds from the settings."""
    return Rules(
        eligibility=EligibilityRules.load(settings.eligibility_file),
        service_plans={
            tier: plan.model_dump()
            for tier, plan in load_service_plans(settings.service_plans_file).items()
        },
        alerts=AlertThresholds(
            min_band=settings.churn_alert_band, min_probability=settings.churn_alert_probability
        ),
    )
