"""Wire shapes of the model registry: registration, approval, activation and their trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.modelops.status import ModelStatus
from app.security.text import ID_PATTERN, TEXT_PATTERN

VERSION_PATTERN = r"^[A-Za-z0-9._-]+$"

Version = Annotated[
    str, Field(min_length=1, max_length=32, pattern=VERSION_PATTERN, examples=["2"])
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        pattern=TEXT_PATTERN,
        description="Why: kept in the version's append-only trail.",
    ),
]


class RegisterRequest(BaseModel):
    """Register a version found on disk under ``models/<task>/<version>/`` as a candidate."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "version": "2",
                    "owner": "head-of-retention-analytics",
                    "restrictions": "retention outreach only; not for credit decisions",
                }
            ]
        },
    )

    version: Version
    owner: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            pattern=ID_PATTERN,
            description="Who answers for the model (default: the registering client).",
        ),
    ] = None
    restrictions: Annotated[
        str | None, Field(max_length=2000, pattern=TEXT_PATTERN, description="Limits on use.")
    ] = None


class TransitionRequest(BaseModel):
    """An approval, activation or rollback, with its reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "validated on the March out-of-time book"}]},
    )

    reason: Reason


class ModelVersionOut(BaseModel):
    """A registered version and where it stands."""

    model_config = ConfigDict(from_attributes=True)

    task: str
    version: str
    status: ModelStatus
    manifest_sha256: str
    owner: str
    registered_by: str
    registered_at: datetime
    validator: str | None
    validated_at: datetime | None
    restrictions: str | None


class ModelTransitionOut(BaseModel):
    """One status change, as appended."""

    model_config = ConfigDict(from_attributes=True)

    version: str
    from_status: ModelStatus | None
    to_status: ModelStatus
    actor: str
    reason: str
    at: datetime


class ModelRegistryOut(BaseModel):
    """A task's registered versions and every status change, oldest first."""

    task: str
    served_here: str | None = Field(description="The version this process serves now.")
    versions: list[ModelVersionOut]
    transitions: list[ModelTransitionOut]


class ActivationOut(BaseModel):
    """The champion after an activation or rollback."""

    task: str
    champion: ModelVersionOut
    replaced: str | None = Field(description="The version it replaced (now retired).")


class ServedAsOf(BaseModel):
    """Which version of a task served at an instant."""

    task: str
    at: datetime
    version: str | None = Field(description="None: no version served then.")


class FeatureStability(BaseModel):
    """PSI of one feature (or the score) against its frozen training bins."""

    name: str
    psi: float
    band: str = Field(description="stable (< 0.10), moderate (< 0.25) or significant.")
    threshold: float | None = Field(
        description="(1/N + 1/M) x chi2_0.99(B - 1): PSI above it is unlikely without a change "
        "(None when fewer than two bins are occupied)."
    )
    flagged: bool = Field(description="PSI above the sample-size-aware threshold.")
    bins: list[dict[str, float | str]] = Field(
        description="Each bin's training and current share (with 'missing' and 'unseen')."
    )


class MonitoringReport(BaseModel):
    """Drift of a version's served inputs and scores from its training data."""

    task: str
    version: str
    reference_rows: int
    current_rows: int
    since: datetime | None
    features: list[FeatureStability]
    score: FeatureStability | None = Field(
        description="None when the task's stored score has no training reference."
    )


class Estimate(BaseModel):
    """A metric with its seeded bootstrap 95% interval (null where undefined, e.g. the AUC of
    a month without a positive)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None


class BacktestMonth(BaseModel):
    """The scores of one month of assessments against what became of the customers."""

    month: str = Field(description="Month the assessments were made (YYYY-MM), or 'all'.")
    rows: int = Field(description="Customers assessed that month whose horizon has passed.")
    positives: int
    metrics: dict[str, Estimate] = Field(
        description="roc_auc, brier, observed_over_expected (observed positives over the sum "
        "of the probabilities) and top_decile_lift."
    )


class BacktestReport(BaseModel):
    """A backtest of stored scores against imported outcomes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task": "churn",
                    "version": "1",
                    "outcome": "left the bank",
                    "horizon_days": 91,
                    "observed_through": "2026-06-30T00:00:00Z",
                    "resamples": 200,
                    "seed": 20240917,
                    "months": [
                        {
                            "month": "2026-01",
                            "rows": 23454,
                            "positives": 795,
                            "metrics": {
                                "roc_auc": {"value": 0.912, "ci_low": 0.903, "ci_high": 0.921},
                                "brier": {"value": 0.0164, "ci_low": 0.015, "ci_high": 0.0178},
                            },
                        }
                    ],
                    "overall": None,
                }
            ]
        }
    )

    task: str
    version: str | None = Field(description="The model version backtested; null: all versions.")
    outcome: str = Field(description="What a positive outcome means for this task.")
    horizon_days: int
    observed_through: datetime = Field(description="Outcomes are complete through this day.")
    resamples: int
    seed: int
    months: list[BacktestMonth]
    overall: BacktestMonth | None


class FairnessReport(BaseModel):
    """Selection rates by gender, age band and region of the served model, from its card."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task": "churn",
                    "version": "1",
                    "measured_on": "test month 14",
                    "synthetic_data": True,
                    "status": "green",
                    "factors_not_in_data": ["gender"],
                    "report": {
                        "selection": "the highest-scored 20% of the rows",
                        "factors": {"region": {"selection_rate_ratio": 0.91, "status": "green"}},
                    },
                }
            ]
        }
    )

    task: str
    version: str
    measured_on: str = Field(description="The held-out rows the card was measured on.")
    synthetic_data: bool
    status: str = Field(description="green, or amber when any factor is amber.")
    factors_not_in_data: list[str]
    report: dict[str, Any] = Field(
        description="Per factor: each group's selection, true- and false-positive rates with "
        "95% intervals, the selection-rate ratio and its status; groups under 500 rows are "
        "reported as too small."
    )


class ShadowRequest(BaseModel):
    """Put an approved challenger in shadow for a share of its task's requests."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"share": 0.1}]})

    share: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description="Share of requests (0..1, chosen by a hash of the request id) that "
            "the challenger scores again in shadow; the champion's answers never change.",
        ),
    ]


class ShadowOut(BaseModel):
    """A task's challenger in shadow, as stored."""

    model_config = ConfigDict(from_attributes=True)

    task: str
    version: str
    share: float
    set_by: str
    set_at: datetime


class ShadowStopped(BaseModel):
    """A shadow ended."""

    task: str
    stopped: str = Field(description="The version that was in shadow.")


class ChallengerOutcomes(BaseModel):
    """Champion and challenger against reported outcomes, on the same rows and resamples."""

    observed_through: datetime
    horizon_days: int
    rows: int = Field(description="Pairs whose horizon has passed (latest per customer-month).")
    positives: int
    resamples: int
    seed: int
    champion: dict[str, Estimate] = Field(description="roc_auc and brier.")
    challenger: dict[str, Estimate] = Field(description="roc_auc and brier.")
    difference: dict[str, Estimate] = Field(
        description="Challenger minus champion, on paired resamples (AUC up and Brier down "
        "favour the challenger)."
    )


class ChallengerReport(BaseModel):
    """How a challenger in shadow compares with the champion on the same requests."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task": "churn",
                    "challenger_version": "5",
                    "champion_versions": ["4"],
                    "pairs": 1200,
                    "mean_difference": 0.0031,
                    "mean_absolute_difference": 0.0184,
                    "band_agreement": 0.94,
                    "rank_correlation": 0.962,
                    "outcomes": None,
                }
            ]
        }
    )

    task: str
    challenger_version: str
    champion_versions: list[str] = Field(description="The champions it was compared with.")
    pairs: int = Field(description="Customers scored by both (the newest pairs, up to limit).")
    mean_difference: float = Field(description="Mean of challenger minus champion probability.")
    mean_absolute_difference: float
    band_agreement: float = Field(description="Share of pairs in the same band.")
    rank_correlation: float | None = Field(
        description="Spearman correlation of the two probabilities (null when one is constant)."
    )
    outcomes: ChallengerOutcomes | None = Field(
        description="AUC and Brier of both with 95% intervals, once outcomes are imported."
    )
