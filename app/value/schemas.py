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
