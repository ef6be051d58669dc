"""Wire shapes of the rewards domain: service plans, points and redemptions."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Clients' keys hold no ':' so they never meet the ledger's own keys (reversal:N, expiry:N).
ClientKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Repeating a key changes nothing: the first posting is returned.",
    ),
]


class GiftOffer(BaseModel):
    """A gift the customer's tier may redeem today."""

    gift_id: str
    name: str
    points_cost: int
    remaining_stock: int
    limit_per_customer: int | None
    active_until: date | None


class ServicePlanView(BaseModel):
    """A customer's service plan: its tier's services, promotions, multiplier and gifts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C-000042",
                    "tier": "affluent",
                    "policy_version": "2026-12-06",
                    "plan_name": "Premier",
                    "services": ["Dedicated relationship manager"],
                    "promotions": ["Mortgage rate discount"],
                    "points_multiplier": 1.5,
                    "gifts": [
                        {
                            "gift_id": "lounge_pass",
                            "name": "Airport lounge day pass",
                            "points_cost": 2000,
                            "remaining_stock": 198,
                            "limit_per_customer": 2,
                            "active_until": "2027-12-31",
                        }
                    ],
                }
            ]
        }
    )

    customer_id: str
    tier: str
    policy_version: str
    plan_name: str
    services: list[str]
    promotions: list[str]
    points_multiplier: float
    gifts: list[GiftOffer]


class EarnRequest(BaseModel):
    """Points earned: multiplied by the tier's multiplier, pending for the lock period."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["earn"]
    points: int = Field(ge=1, le=1_000_000, description="Base points, before the multiplier.")
    idempotency_key: ClientKey
    description: str | None = Field(default=None, max_length=200)


class ReversalRequest(BaseModel):
    """Take back an earn in full, as a new entry referring to it (once per earn)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["reversal"]
    reverses: int = Field(
        ge=1,
        description="The id of the entry to reverse: an earn (its points taken back) or a "
        "redemption (the gift given back: its points returned, its unit back in stock).",
    )
    description: str | None = Field(default=None, max_length=200)


PointsRequest = Annotated[EarnRequest | ReversalRequest, Field(discriminator="kind")]


class RedemptionRequest(BaseModel):
    """Redeem one gift for its points cost."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"gift_id": "cinema_voucher", "idempotency_key": "r-1"}]},
    )

    gift_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    idempotency_key: ClientKey


class PointsBalance(BaseModel):
    """Available (redeemable) and pending (locked) points; total is the sum of the entries."""

    available: int
    pending: int
    total: int


class PointsEntryView(BaseModel):
    """One ledger entry."""

    id: int
    kind: str
    points: int
    refers_to: int | None
    gift_id: str | None
    tier: str | None
    description: str | None
    created_at: datetime
    available_at: datetime | None
    expires_on: date | None


class PostingResult(BaseModel):
    """A posting and the balance after it; ``replayed`` when the key had been used before."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entry": {
                        "id": 7,
                        "kind": "earn",
                        "points": 150,
                        "refers_to": None,
                        "gift_id": None,
                        "tier": "affluent",
                        "description": "card spend November",
                        "created_at": "2026-12-06T20:00:00Z",
                        "available_at": "2026-12-20T20:00:00Z",
                        "expires_on": "2027-12-06",
                    },
                    "balance": {"available": 500, "pending": 150, "total": 650},
                    "replayed": False,
                }
            ]
        }
    )

    entry: PointsEntryView
    balance: PointsBalance
    replayed: bool


class PointsPage(BaseModel):
    """A customer's balance and a page of its entries, newest first."""

    customer_id: str
    balance: PointsBalance
    entries: list[PointsEntryView]
    total_entries: int
    limit: int
    offset: int


class ExpiryRun(BaseModel):
    """What a nightly expiry did."""

    as_of: date
    customers: int
    entries: int
    points: int
