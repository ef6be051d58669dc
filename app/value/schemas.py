"""Wire shapes of the value domain: a customer's policy tier, and a re-tiering of the book."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.value.policy import Measure


class CustomerTier(BaseModel):
    """A customer's tier under the bank's tier policy (the tier of record), and what it takes
    to reach the next tier or to keep this one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C-000042",
                    "month": "2026-11",
                    "policy_version": "2026-12-01",
                    "tier": "affluent",
                    "qualifying_tier": "emerging_affluent",
                    "measures": {
                        "relationship_balance": 92500.0,
                        "loans": 0.0,
                        "products_held": 4.0,
                        "profit": 61.5,
                    },
                    "next_tier": "high_net_worth",
                    "gap_to_next": {"relationship_balance": 407500.0},
                    "months_below": 1,
                    "downgrade_in_months": 2,
                    "gap_to_stay": {"relationship_balance": 7500.0},
                    "recorded_tier": "affluent",
                    "recorded_at": "2026-12-01T02:00:00Z",
                }
            ]
        }
    )

    customer_id: str
    month: str = Field(description="The customer's latest month on record (YYYY-MM, UTC).")
    policy_version: str
    tier: str = Field(description="The policy tier after replaying the monthly history.")
    qualifying_tier: str = Field(description="The highest tier the latest month's measures meet.")
    measures: dict[Measure, float] = Field(description="The latest month's measures.")
    next_tier: str | None = Field(description="The tier above; null at the top.")
    gap_to_next: dict[Measure, float] | None = Field(
        description="Per cut-off of the next tier, how much is missing (0: met); null at the top."
    )
    months_below: int = Field(description="Consecutive months, up to the latest, below the tier.")
    downgrade_in_months: int | None = Field(
        description="Further months below the tier before it is lowered; null: none projected."
    )
    gap_to_stay: dict[Measure, float] | None = Field(
        description="Per cut-off of the tier, how much is missing to keep it; null: none needed."
    )
    recorded_tier: str | None = Field(
        description="The tier stored by the latest `cvm tiers apply`; null: never applied."
    )
    recorded_at: datetime | None


class TierFlow(BaseModel):
    """How many customers a re-tiering moves from one tier to another."""

    from_tier: str | None = Field(description="Null: not tiered before.")
    to_tier: str
    customers: int


class RetierResult(BaseModel):
    """What applying a tier policy to a tenant's book changes (or would change, dry run)."""

    policy_version: str
    dry_run: bool
    run_id: str | None = Field(description="Null on a dry run: nothing is stored.")
    customers: int
    moved: int
    flows: list[TierFlow]


class TierLevel(BaseModel):
    """One tier of the value pyramid: its customers of record and the value they hold."""

    tier: str
    customers: int
    relationship_balance: float = Field(
        description="The tier's customers' relationship balances added up (deposits + wealth "
        "holdings + insurance value, latest snapshots)."
    )
    share_of_customers: float
    share_of_value: float


class MovementMonth(BaseModel):
    """Tier movements recorded in one month of the book, by direction."""

    month: str = Field(description="The customers' latest month when they were tiered, YYYY-MM.")
    initial: int
    upgrades: int
    downgrades: int
    retired_tier: int


class Pyramid(BaseModel):
    """The value pyramid of a tenant: tiers from the top down, and movements over time."""

    policy_version: str
    tiers: list[TierLevel]
    movements: list[MovementMonth]


class ProspectOut(BaseModel):
    """A prospect in its segment, with what the prospect model said of it."""

    customer_id: str = Field(description="As stored (a pseudonym when a secret is configured).")
    segment: str
    value_band: str
    buying_power: str
    conversion_probability: float | None
    value_if_converted: float | None = Field(description="Predicted annual value once a customer.")
    expected_value: float | None = Field(description="conversion_probability x value; the rank.")
    income: float | None = Field(description="The income the prospect was scored on.")
    model_version: str | None
    scored_at: datetime


class SegmentPlan(BaseModel):
    """A segment's marketing plan, and how many prospects it holds."""

    segment: str
    prospects: int
    channel: str
    offer: str
    message: str
    contact_within_days: int
    max_contacts_per_month: int


class ProspectPage(BaseModel):
    """One page of prospects, best first, with every segment's plan and size."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "plan_version": "2026-12-01",
                    "segment": "premium.wealthy",
                    "total": 1,
                    "limit": 50,
                    "offset": 0,
                    "items": [
                        {
                            "customer_id": "P-000317",
                            "segment": "premium.wealthy",
                            "value_band": "premium",
                            "buying_power": "wealthy",
                            "conversion_probability": 0.41,
                            "value_if_converted": 212.5,
                            "expected_value": 87.1,
                            "income": 126000.0,
                            "model_version": "1",
                            "scored_at": "2026-12-01T08:00:00Z",
                        }
                    ],
                    "segments": [
                        {
                            "segment": "premium.wealthy",
                            "prospects": 1,
                            "channel": "relationship_manager",
                            "offer": "Private banking introduction",
                            "message": "A relationship manager invites the prospect to a "
                            "wealth review.",
                            "contact_within_days": 3,
                            "max_contacts_per_month": 2,
                        }
                    ],
                }
            ]
        }
    )

    plan_version: str
    segment: str | None = Field(description="The segment asked for; none: every segment.")
    total: int
    limit: int
    offset: int
    items: list[ProspectOut]
    segments: list[SegmentPlan]
