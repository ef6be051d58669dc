"""The customer 360 on the wire: GET /v1/customers/{id}.

Apart from app/customers/schemas.py because it shows other domains' shapes (alerts,
complaints), and casework's own schemas build on the trail's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.alerts.schemas import AlertSummary
from app.casework.schemas import ComplaintBrief
from app.customers.lifecycle import LifecycleStage, StageCause, StageSource
from app.customers.schemas import StoredEvent
from app.rewards.schemas import PointsBalance
from app.value.schemas import CustomerTier

Value = float | str | None


class StageChange(BaseModel):
    """One change of the customer's lifecycle stage."""

    from_stage: LifecycleStage | None = Field(default=None, description="Null: the first.")
    to_stage: LifecycleStage
    at: datetime = Field(description="When the new stage took effect, as far as the record tells.")
    cause: StageCause
    source: StageSource = Field(description="What noticed it: intake, assessment or sweep.")
    recorded_at: datetime


class StageView(BaseModel):
    """The current lifecycle stage and how the customer got there."""

    current: LifecycleStage
    since: datetime
    at_risk: bool = Field(description="Whether the latest churn assessment crossed the threshold.")
    history: list[StageChange] = Field(description="Oldest first.")


class Holding(BaseModel):
    """A product the customer holds, with its latest balance."""

    product: str
    opened_at: datetime = Field(description="When the product's latest state (opened) occurred.")
    balance: float | None = Field(description="Latest balance snapshot; null when none.")
    balance_at: datetime | None


class TierView(BaseModel):
    """The latest stored tier assessment (the tier model's; the policy's is tier_of_record)."""

    tier: str | None
    next_tier_gap: dict[str, Any] | None = Field(
        description="What it takes to reach the next tier (null at the top or when not computed)."
    )
    model_version: str | None
    assessed_at: datetime


class LatestAssessment(BaseModel):
    """A task's latest stored assessment with its reasons."""

    task: str
    model_version: str | None
    stage: str | None = Field(description="The scoring core's stage the models applied.")
    probability: float | None
    band: str | None
    outputs: dict[str, Any]
    reasons: list[Any]
    source: str
    assessed_at: datetime


class IndicesView(BaseModel):
    """The satisfaction and loyalty indices of the customer's latest month, with their inputs
    (formulas: app/customers/features.py, README "Satisfaction and loyalty indices")."""

    month: str = Field(description="The month (YYYY-MM) the indices describe.")
    satisfaction: float = Field(ge=0, le=100, description="0 (worst) to 100.")
    loyalty: float = Field(ge=0, le=100, description="0 (weakest) to 100.")
    weights: dict[str, dict[str, float]] = Field(
        description="The configured weights applied (setting index_weights)."
    )
    inputs: dict[str, float | int | None] = Field(description="The features the indices read.")


class CustomerView(BaseModel):
    """One customer's record: profile, lifecycle, holdings, latest assessments, open alerts
    and complaints, and the latest events."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C-000042",
                    "month": "2026-11",
                    "profile": {
                        "age": 41.0,
                        "occupation": "employee",
                        "region": "north",
                        "customer_since": "2019-03-01",
                        "segment": "mass",
                    },
                    "stage": {
                        "current": "at_risk",
                        "since": "2026-11-20T10:15:00Z",
                        "at_risk": True,
                        "history": [
                            {
                                "from_stage": None,
                                "to_stage": "active",
                                "at": "2026-06-01T00:00:00Z",
                                "cause": "established",
                                "source": "intake",
                                "recorded_at": "2026-06-01T00:00:03Z",
                            },
                            {
                                "from_stage": "active",
                                "to_stage": "at_risk",
                                "at": "2026-11-20T10:15:00Z",
                                "cause": "churn_risk",
                                "source": "assessment",
                                "recorded_at": "2026-11-20T10:15:00Z",
                            },
                        ],
                    },
                    "holdings": [
                        {
                            "product": "current_account",
                            "opened_at": "2019-03-01T02:24:00Z",
                            "balance": 2450.0,
                            "balance_at": "2026-11-29T21:36:00Z",
                        }
                    ],
                    "tier": {
                        "tier": "mass",
                        "next_tier_gap": {
                            "target_tier": "emerging_affluent",
                            "changes": [
                                {
                                    "feature": "term_deposit_balance",
                                    "current": "0 EUR",
                                    "proposed": "25,000 EUR",
                                    "text": "add 25,000 EUR to term deposits",
                                }
                            ],
                            "probability_of_target": 0.590663,
                        },
                        "model_version": "1",
                        "assessed_at": "2026-11-20T10:15:00Z",
                    },
                    "assessments": [
                        {
                            "task": "churn",
                            "model_version": "1",
                            "stage": "existing",
                            "probability": 0.81,
                            "band": "high",
                            "outputs": {"probability": 0.81, "risk_band": "high"},
                            "reasons": [],
                            "source": "api",
                            "assessed_at": "2026-11-20T10:15:00Z",
                        }
                    ],
                    "recommendations": [{"product": "savings", "propensity": 0.42}],
                    "open_alerts": [],
                    "open_complaints": [],
                    "events": [],
                    "indices": {
                        "month": "2026-11",
                        "satisfaction": 61.0,
                        "loyalty": 48.5,
                        "weights": {
                            "satisfaction": {
                                "complaints": 0.3,
                                "severity": 0.2,
                                "unresolved": 0.3,
                                "contacts": 0.2,
                            },
                            "loyalty": {
                                "tenure": 0.3,
                                "depth": 0.3,
                                "wallet_trend": 0.2,
                                "activity": 0.2,
                            },
                        },
                        "inputs": {
                            "complaints_3m": 1,
                            "open_complaint_severity": 2.0,
                            "days_unresolved": 29,
                            "branch_visits": 0,
                            "tenure_months": 92,
                            "products_held": 2,
                            "deposits_change_3m_pct": -35.0,
                            "wealth_change_3m_pct": 0.0,
                            "days_since_last_activity": 12,
                        },
                    },
                }
            ]
        }
    )

    customer_id: str
    month: str | None = Field(description="Latest month (YYYY-MM) with aggregates on record.")
    profile: dict[str, Value] = Field(description="Latest value of each profile field.")
    stage: StageView | None = Field(description="Null for a record without stages kept yet.")
    holdings: list[Holding]
    tier: TierView | None = Field(description="The tier model's latest assessment.")
    assessments: list[LatestAssessment] = Field(description="The latest one per task.")
    recommendations: list[dict[str, Any]] = Field(
        description="The latest recommendation assessment's offers, best first."
    )
    open_alerts: list[AlertSummary]
    open_complaints: list[ComplaintBrief]
    events: list[StoredEvent] = Field(description="The latest events, latest occurrence first.")
    indices: IndicesView | None = Field(
        default=None, description="Null for a record without monthly aggregates."
    )
    tier_of_record: CustomerTier | None = Field(
        default=None,
        description="The tier under the bank's tier policy, with the gaps to the next tier and "
        "to stay (as GET /v1/customers/{id}/tier); 'tier' above is the tier model's latest "
        "assessment. Null for a record without monthly aggregates.",
    )
    points: PointsBalance | None = Field(
        default=None, description="The points balance; null for a customer without a ledger."
    )
