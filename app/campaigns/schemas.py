"""Wire shapes of campaigns: the campaign asked for, its pre-launch check, launch and report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.campaigns.states import Arm, CampaignStatus
from app.contact.states import ContactChannel, ContactPurpose, ContactRule
from app.customers.lifecycle import LifecycleStage
from app.customers.schemas import Code
from app.scoring.manifest import Task

TierName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_ -]+$")]
Probability = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
]


class ScoreBand(BaseModel):
    """Customers whose latest score of a task lies in [min, max]."""

    model_config = ConfigDict(extra="forbid")

    task: Task
    min: Probability | None = None
    max: Probability | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Segment(BaseModel):
    """Who a campaign targets: every condition given must hold (an empty segment: the book)."""

    model_config = ConfigDict(extra="forbid")

    stages: list[LifecycleStage] | None = Field(default=None, min_length=1, max_length=6)
    tiers: list[TierName] | None = Field(default=None, min_length=1, max_length=20)
    scores: list[ScoreBand] = Field(default_factory=list, max_length=4)


class CampaignRequest(BaseModel):
    """A campaign to draft: target, action, channel, schedule, caps, budget, control group and
    the lift it must be able to detect."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "RET-2026-12",
                    "name": "December retention call",
                    "action": "retention_offer",
                    "channel": "email",
                    "purpose": "retention",
                    "target": {
                        "stages": ["active", "at_risk"],
                        "scores": [{"task": "churn", "min": 0.3}],
                    },
                    "priority_task": "churn",
                    "starts_at": "2026-12-07T08:00:00Z",
                    "ends_at": "2027-01-07T08:00:00Z",
                    "control_rate": 0.02,
                    "volume_cap": 5000,
                    "budget": 10000,
                    "cost_per_contact": 1.5,
                    "baseline_rate": 0.05,
                    "minimum_lift": 0.02,
                }
            ]
        },
    )

    code: Code = Field(description="The campaign_id the trail's campaign_response events carry.")
    name: Name
    action: Code = Field(description="What the customer is offered (an NBA action).")
    channel: ContactChannel
    purpose: ContactPurpose = ContactPurpose.MARKETING
    target: Segment
    priority_task: Task | None = Field(
        default=None,
        description="Rank the audience by the latest score of this task (model-targeted); "
        "none: every customer ranks the same, ties broken by id.",
    )
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = Field(
        default=None, description="Responses after it are not counted."
    )
    period: str | None = Field(
        default=None,
        pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
        description="The control group's period (YYYY-MM; default: the month of starts_at): "
        "a customer is held out when hash(customer, period) < control_rate.",
    )
    control_rate: float = Field(default=0.02, gt=0, lt=1)
    volume_cap: int | None = Field(
        default=None, ge=0, le=100_000_000, description="Most customers contacted."
    )
    budget: float | None = Field(default=None, ge=0, le=1e12)
    cost_per_contact: float = Field(default=0.0, ge=0, le=1e6)
    baseline_rate: float = Field(
        default=0.05, gt=0, lt=1, description="The conversion rate expected without contact."
    )
    minimum_lift: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="The smallest rise of the conversion rate (absolute) worth detecting.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.baseline_rate + self.minimum_lift >= 1:
            raise ValueError("baseline_rate + minimum_lift must stay below 1")
        return self


class CampaignOut(BaseModel):
    """A campaign as stored."""

    id: int
    code: str
    name: str
    action: str
    channel: ContactChannel
    purpose: ContactPurpose
    target: Segment
    priority_task: Task | None
    starts_at: datetime
    ends_at: datetime | None
    period: str
    control_rate: float
    volume_cap: int | None
    budget: float | None
    cost_per_contact: float
    baseline_rate: float
    minimum_lift: float
    status: CampaignStatus
    created_by: str
    created_at: datetime
    launched_at: datetime | None


class CampaignPage(BaseModel):
    """A page of campaigns, newest first."""

    total: int
    limit: int
    offset: int
    items: list[CampaignOut]


class BlockedCount(BaseModel):
    """Customers of the segment the contact policy blocks, per rule."""

    rule: ContactRule
    customers: int


class PowerCheck(BaseModel):
    """The pre-launch check: the audience planned now, and whether its arms are large enough
    to detect the minimum lift (two-proportion z-test, 5% two-sided, 80% power)."""

    segment_customers: int = Field(description="Customers matching the segment.")
    blocked: list[BlockedCount]
    contact_limit: int | None = Field(description="The volume cap and the budget's, the lower.")
    treatment: int = Field(description="Customers that launching now would contact.")
    control: int = Field(description="Customers that launching now would hold out.")
    required_treatment: int
    required_control: int
    sufficient: bool
    warning: str | None


class LaunchResult(BaseModel):
    """What launching wrote: the members per arm, the contacts recorded, and the check."""

    campaign: CampaignOut
    check: PowerCheck


class ArmResult(BaseModel):
    """One arm: customers, conversions (an ``accepted`` response) and the rate, with its
    seeded bootstrap 95% interval."""

    arm: Arm
    customers: int
    conversions: int
    rate: float | None
    rate_low: float | None
    rate_high: float | None


class LiftResult(BaseModel):
    """Treatment over control: the rate difference and the relative lift with delta-method 95%
    intervals, the relative lift's bootstrap interval, and whether it is significant."""

    absolute: float
    absolute_low: float
    absolute_high: float
    relative: float | None
    relative_low: float | None
    relative_high: float | None
    bootstrap_relative_low: float | None
    bootstrap_relative_high: float | None
    significant: bool


class DecileRow(BaseModel):
    """One score decile (highest scores first): its arms and the uplift between them."""

    decile: int
    n_treatment: int
    n_control: int
    rate_treatment: float | None
    rate_control: float | None
    uplift: float | None


class UpliftResult(BaseModel):
    """A model-targeted campaign's ranking judged by its outcomes (scikit-uplift's
    definitions): the Qini coefficient with its bootstrap interval, and uplift by decile."""

    score_task: Task
    qini: float | None
    qini_low: float | None
    qini_high: float | None
    deciles: list[DecileRow]


class CostResult(BaseModel):
    """What the contacts cost, per conversion and per conversion the campaign caused."""

    contacts: int
    cost: float
    per_conversion: float | None
    incremental_conversions: float | None
    per_incremental_conversion: float | None


class CampaignReport(BaseModel):
    """A launched campaign's outcome: arms, lift, uplift (model-targeted), cost."""

    campaign_id: int
    code: str
    launched_at: datetime
    responses_until: datetime
    arms: list[ArmResult]
    lift: LiftResult | None = Field(description="None until both arms have customers.")
    uplift: UpliftResult | None
    cost: CostResult
    bootstrap_rounds: int
    bootstrap_seed: int
