"""Wire shapes of churn alerts: lifecycle requests, alert pages and an alert with its history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.alerts.states import AlertCause, AlertStatus, EventKind, Outcome
from app.security.text import ID_PATTERN, TEXT_PATTERN

RiskBand = Literal["low", "medium", "high"]

StaffId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$",
        description=(
            "Ignored, and optional: kept so that existing callers' bodies stay valid. The "
            "owner, the resolver and the history's 'by' are the authenticated client (its id: "
            "'cl_...' for an API key, 'jwt:' and the subject for a token), never the body."
        ),
        examples=["rm-042"],
    ),
]
OwnerId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="A client id, as alerts show it in 'owner'.",
        examples=["cl_5f3a9c2e8b7d4a10"],
    ),
]
Note = Annotated[
    str,
    Field(
        max_length=2000,
        pattern=TEXT_PATTERN,
        description="Free text kept in the history (no NUL characters).",
    ),
]


class AcknowledgeRequest(BaseModel):
    """Take ownership of an open alert: the authenticated client becomes its owner."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"note": "calling the customer this afternoon"}]},
    )

    by: StaffId | None = None
    note: Note | None = None


class ResolveRequest(BaseModel):
    """Close an acknowledged alert with what happened (its owner only)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"outcome": "retained", "note": "matched the competitor's rate"}]
        },
    )

    by: StaffId | None = None
    outcome: Outcome
    note: Note | None = None

    @model_validator(mode="after")
    def _other_needs_a_note(self) -> ResolveRequest:
        if self.outcome is Outcome.OTHER and not (self.note and self.note.strip()):
            raise ValueError("outcome 'other' needs a note saying what happened")
        return self


class AlertReason(BaseModel):
    """One reason of the latest score, as the scoring response gave it."""

    feature: str
    value: str
    contribution: float
    direction: Literal["raises", "lowers"]
    text: str


class AlertSummary(BaseModel):
    """An alert as listed: why it was opened, its state, owner and latest score."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: str
    reason: AlertCause = Field(
        description="churn: the churn warning; otherwise the needs rule that found an "
        "opportunity (idle_inflow, deposit_maturing, first_salary)."
    )
    product: str | None = Field(
        default=None, description="The product a need alert suggests; null on a churn alert."
    )
    status: AlertStatus
    risk_band: RiskBand | None = Field(
        description="Band of the latest score; null on a need alert (no score opened it)."
    )
    probability: float | None = Field(
        description="Churn probability of the latest score; null on a need alert."
    )
    peak_probability: float | None = Field(
        description="Highest probability while the alert was active; null on a need alert."
    )
    above_threshold: bool = Field(
        description="Whether the latest recorded score is above the threshold (alerts record "
        "crossing scores only; false only on alerts last scored before that)."
    )
    actions: list[str] = Field(
        description="Recommended actions: retention actions from the reasons (churn), the "
        "offer and why (a need)."
    )
    model_version: str | None
    score_count: int = Field(description="Scores recorded on the alert, the opening one included.")
    opened_at: datetime
    last_scored_at: datetime
    updated_at: datetime
    owner: str | None = Field(
        description="The client that acknowledged it, and so owns it (its id)."
    )
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    outcome: Outcome | None


class AlertEventOut(BaseModel):
    """One history entry: a score, a threshold crossing or a transition."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: EventKind
    at: datetime
    by: str | None
    status: AlertStatus = Field(description="The alert's status after the event.")
    probability: float | None
    risk_band: RiskBand | None
    request_id: str | None
    note: str | None


class AlertDetail(AlertSummary):
    """An alert with its reasons and full history, oldest first."""

    reasons: list[AlertReason]
    resolution_note: str | None
    opened_request_id: str
    last_request_id: str
    history: list[AlertEventOut]


class AlertChange(BaseModel):
    """What a transition did, for a caller that may change alerts but not read them."""

    id: int
    status: AlertStatus
    owner: str | None
    updated_at: datetime


class AlertPage(BaseModel):
    """One page of alerts, oldest opened first."""

    total: int
    limit: int
    offset: int
    items: list[AlertSummary]


def alert_detail(alert: Any, history: list[Any]) -> AlertDetail:
    """An ORM alert and its events in the wire shape."""
    summary = AlertSummary.model_validate(alert, from_attributes=True)
    return AlertDetail(
        **summary.model_dump(),
        reasons=[AlertReason.model_validate(r) for r in alert.reasons],
        resolution_note=alert.resolution_note,
        opened_request_id=alert.opened_request_id,
        last_request_id=alert.last_request_id,
        history=[AlertEventOut.model_validate(e, from_attributes=True) for e in history],
    )
