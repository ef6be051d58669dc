"""Response models: the wire contract of every endpoint (documented in /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StageName = Literal["prospect", "new", "existing", "lost"]


class ReasonOut(BaseModel):
    """One feature's push on the score."""

    feature: str
    value: str = Field(description="The customer's value as staff read it.")
    contribution: float = Field(description="Signed, in the score's raw units (log-odds).")
    direction: Literal["raises", "lowers"]
    text: str


class ExplanationOut(BaseModel):
    """Why the model scored as it did: reasons + other_contribution + bias == raw_score."""

    method: str
    raw_score: float
    bias: float
    reasons: list[ReasonOut]
    other_contribution: float = Field(description="Sum of the features not listed.")


class ModelRef(BaseModel):
    """Which model produced the results."""

    task: str
    version: str


class ResponseEnvelope(BaseModel):
    """Fields common to every scoring response."""

    request_id: str
    model: ModelRef
    saved: bool = Field(description="True once every result is committed to the database.")


class ChurnScore(BaseModel):
    """Churn risk of one customer over the next 3 months."""

    customer_id: str
    stage: StageName = Field(description="Lifecycle stage the scores were computed for.")
    probability: float
    risk_band: Literal["low", "medium", "high"]
    alert: bool = Field(
        description="Whether the alert policy's threshold for the customer's stage is crossed."
    )
    explanation: ExplanationOut | None


class ChurnScoreResponse(ResponseEnvelope):
    """Churn scores, in the order the customers were sent."""

    results: list[ChurnScore]


class ServicePlan(BaseModel):
    """What the bank offers a tier: the rewards policy's plan (app/resources/
    rewards_policy.json), as GET /v1/customers/{id}/service-plan shows it."""

    name: str
    services: list[str]
    promotions: list[str]
    points_multiplier: float


class FeatureChange(BaseModel):
    """One actionable change."""

    feature: str
    current: str
    proposed: str
    text: str


class NextTierGap(BaseModel):
    """The smallest change the model says lifts the customer one tier."""

    target_tier: str
    changes: list[FeatureChange]
    probability_of_target: float


class TierScore(BaseModel):
    """Value-pyramid placement of one customer."""

    customer_id: str
    stage: StageName = Field(description="Lifecycle stage the scores were computed for.")
    tier: str
    probabilities: dict[str, float]
    service_plan: ServicePlan | None
    next_tier_gap: NextTierGap | None
    explanation: ExplanationOut | None


class TierScoreResponse(ResponseEnvelope):
    """Tier scores, in request order."""

    results: list[TierScore]


class ProductRecommendation(BaseModel):
    """One product to offer, with why."""

    product: str
    propensity: float = Field(description="Probability this is the next product added.")
    explanation: ExplanationOut | None


class CustomerRecommendations(BaseModel):
    """The top products of one customer, after eligibility rules."""

    customer_id: str
    stage: StageName = Field(description="Lifecycle stage the scores were computed for.")
    cold_start: bool = Field(description="True when only demographics were known.")
    products: list[ProductRecommendation]


class RecommendationResponse(ResponseEnvelope):
    """Recommendations, in request order."""

    results: list[CustomerRecommendations]


class ProspectScore(BaseModel):
    """Conversion and value of one prospect."""

    customer_id: str
    stage: StageName = Field(description="Lifecycle stage the scores were computed for.")
    conversion_probability: float
    value_if_converted: float | None = Field(description="Annual profit in EUR once a customer.")
    expected_value: float | None = Field(description="conversion_probability x value.")
    priority: Literal["low", "medium", "high"]
    explanation: ExplanationOut | None


class ProspectScoreResponse(ResponseEnvelope):
    """Prospect scores, in request order."""

    results: list[ProspectScore]


class SkippedModel(BaseModel):
    """A model the assessment left out, and why."""

    task: str
    reason: str
    missing: list[str] = Field(description="The inputs it needs.")


class AssessmentResponse(BaseModel):
    """Everything that applies to one customer, by lifecycle group."""

    request_id: str
    customer_id: str
    lifecycle: StageName
    saved: bool
    models: list[ModelRef]
    skipped: list[SkippedModel] = Field(
        default_factory=list,
        description="Models that apply at this stage but got none of their inputs.",
    )
    tier: TierScore | None = None
    recommendations: CustomerRecommendations | None = None
    churn: ChurnScore | None = None
    prospect: ProspectScore | None = None


class StoredScore(BaseModel):
    """One persisted result."""

    id: int
    request_id: str
    task: str
    model_name: str | None
    model_version: str | None
    outputs: dict[str, Any]
    reasons: list[Any] | dict[str, Any]
    created_at: datetime
    source: Literal["api", "batch", "event"] = Field(description="Who asked for the score.")
    stage: StageName | None = Field(description="Lifecycle stage when scored (null: before 0007).")
    probability: float | None = Field(
        description="Headline: churn or conversion probability, the tier's, the first offer's."
    )
    band: str | None = Field(description="Its label: risk band, priority, tier, first product.")
    alert: bool | None = Field(description="Whether the alert threshold was crossed.")


class ScoreHistory(BaseModel):
    """A page of a customer's stored results, newest first."""

    customer_id: str
    total: int
    limit: int
    offset: int
    items: list[StoredScore]


class ModelSummary(BaseModel):
    """A loaded model at a glance."""

    task: str
    version: str
    objective: str
    num_trees: int
    created_at: datetime
    explanation_method: str
    headline_metrics: dict[str, float]
    trained_on_synthetic_data: bool | None = Field(
        description="From the model card's provenance; null when the model has no card."
    )
    data_notice: str = Field(description="Where the training data came from, in one sentence.")


class ModelCard(ModelSummary):
    """Everything known about a loaded model."""

    card: dict[str, Any] | None = Field(
        description="The model card (Mitchell et al.'s sections plus the bank's fields) that "
        "`cvm train` wrote and validated; null for models trained before cards existed."
    )

    classes: list[str]
    feature_schema: dict[str, Any]
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    params: dict[str, Any]
    lightgbm_version: str
    data_fingerprint: str
    data_source: str
    training_rows: int
    split: dict[str, Any]
    available_versions: list[str]


class Readiness(BaseModel):
    """What /readyz checked."""

    ready: bool
    database: bool
    writer: bool = Field(description="The score writer (thread or child process) accepts writes.")
    committing: bool = Field(
        default=True,
        description="Rows are being committed: no write waits unanswered past the stall time "
        "and the last commit succeeded (false while the writer is frozen or the disk full).",
    )
    models: dict[str, str]


class RequestOutcome(BaseModel):
    """What became of a scoring request: its rows are committed, and what they were."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0193a5f2c1d87b3e9a4c5d6e7f801234",
                    "status": "committed",
                    "operation": "churn",
                    "tasks": ["churn"],
                    "customers": 2,
                    "rows": 2,
                    "idempotency_key": True,
                    "created_at": "2026-12-06T09:30:00.123456Z",
                    "committed_at": "2026-12-06T09:30:00.125012Z",
                }
            ]
        }
    )

    request_id: str
    status: Literal["committed"] = Field(
        description="Only committed requests are known: one that is not was refused, or rolled "
        "back, or is still on its way to the database."
    )
    operation: str = Field(description="The scoring task, or 'assessment'.")
    tasks: list[str] = Field(description="Tasks whose scores the request stored.")
    customers: int
    rows: int = Field(description="Score rows stored.")
    idempotency_key: bool = Field(description="Whether it ran under an Idempotency-Key.")
    created_at: datetime
    committed_at: datetime
