"""The bank's rewards policy: per-tier service plans, the points rules and the gift catalogue,
as a versioned file validated at load (pure).

Earned points are multiplied by the tier's multiplier, stay pending for ``lock_days`` and
then become available; they expire by the ``expiry`` rule (after N days, at the end of the
month or year they were earned in, or never), the oldest first.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME = r"^[a-z][a-z0-9_]*$"


class InvalidRewardsPolicy(ValueError):
    """A rewards policy that cannot be used; the message names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ExpiryRule(StrEnum):
    """When earned points expire."""

    AFTER_DAYS = "after_days"
    MONTH_END = "month_end"
    YEAR_END = "year_end"
    NEVER = "never"


class Expiry(BaseModel):
    """The expiry rule; ``days`` only (and always) with ``after_days``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: ExpiryRule
    days: int | None = Field(default=None, ge=1, le=36_500)

    @model_validator(mode="after")
    def _days(self) -> Expiry:
        if (self.rule is ExpiryRule.AFTER_DAYS) != (self.days is not None):
            raise ValueError("expiry.days: set exactly when the rule is after_days")
        return self

    def last_day(self, earned_on: date) -> date | None:
        """The last day points earned on ``earned_on`` may be used (None: they never expire)."""
        if self.rule is ExpiryRule.AFTER_DAYS:
            assert self.days is not None  # checked at load
            return earned_on + timedelta(days=self.days)
        if self.rule is ExpiryRule.MONTH_END:
            end = calendar.monthrange(earned_on.year, earned_on.month)[1]
            return earned_on.replace(day=end)
        if self.rule is ExpiryRule.YEAR_END:
            return date(earned_on.year, 12, 31)
        return None


class ServicePlan(BaseModel):
    """What one tier is offered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    services: list[str] = Field(default_factory=list)
    promotions: list[str] = Field(default_factory=list)
    points_multiplier: float = Field(gt=0, le=100)


class Gift(BaseModel):
    """One gift of the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gift_id: str = Field(min_length=1, max_length=64, pattern=NAME)
    name: str = Field(min_length=1, max_length=128)
    points_cost: int = Field(ge=1, le=10_000_000)
    tiers: list[str] = Field(min_length=1)  # the tiers it is visible to
    stock: int = Field(ge=0, le=100_000_000)  # per tenant
    limit_per_customer: int | None = Field(default=None, ge=1)
    active_from: date | None = None
    active_until: date | None = None  # inclusive

    def active_on(self, day: date) -> bool:
        """Whether the gift can be redeemed on ``day``."""
        after_start = self.active_from is None or self.active_from <= day
        return after_start and (self.active_until is None or day <= self.active_until)


class RewardsPolicy(BaseModel):
    """Service plans per tier, the points rules and the gift catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=32)
    lock_days: int = Field(ge=0, le=365)
    expiry: Expiry
    plans: dict[str, ServicePlan] = Field(min_length=1)
    gifts: list[Gift] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RewardsPolicy:
        seen: set[str] = set()
        for i, gift in enumerate(self.gifts):
            if gift.gift_id in seen:
                raise ValueError(f"gifts[{i}].gift_id: gift {gift.gift_id!r} is defined twice")
            seen.add(gift.gift_id)
            for j, tier in enumerate(gift.tiers):
                if tier not in self.plans:
                    raise ValueError(f"gifts[{i}].tiers[{j}]: no plan for tier {tier!r}")
            if gift.active_from and gift.active_until and gift.active_until < gift.active_from:
                raise ValueError(f"gifts[{i}].active_until: before active_from")
        return self

    def gift(self, gift_id: str) -> Gift | None:
        """A gift by id."""
        return next((g for g in self.gifts if g.gift_id == gift_id), None)

    def check_tiers(self, tiers: list[str]) -> None:
        """Refuse a policy that lacks a plan for one of the tier policy's tiers."""
        for tier in tiers:
            if tier not in self.plans:
                raise InvalidRewardsPolicy(f"plans.{tier}", "missing; the tier policy has it")


def parse_rewards_policy(raw: str | bytes) -> RewardsPolicy:
    """A rewards policy from its JSON text; InvalidRewardsPolicy names the offending key."""
    try:
        return RewardsPolicy.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        location = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
        location = location.replace(".[", "[")
        message = str(first["msg"]).removeprefix("Value error, ")
        if ": " in message and first["type"] == "value_error":  # our validator names the key
            key, _, rest = message.partition(": ")
            raise InvalidRewardsPolicy(key, rest) from None
        raise InvalidRewardsPolicy(location or "policy", message) from None


def load_rewards_policy(path: Path) -> RewardsPolicy:
    """Read and validate a rewards policy file; InvalidRewardsPolicy names the offending key."""
    return parse_rewards_policy(path.read_bytes())
