"""The bank's tier policy: a versioned, validated file, and the tiering it defines (pure).

A customer's tier is the highest tier whose cut-offs it meets, every one of them inclusive
(``>=``), on its measures of a month. Upgrades take effect in the month they are earned; a
downgrade only once the customer has stayed below its tier for ``downgrade_after_months``
consecutive months and the tier is older than ``grace_months``. The tier is then the one the
latest month qualifies for. Replaying these rules over a customer's monthly history gives its
policy tier, so a policy change re-tiers the book from the history alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.customers.features import (
    BALANCE_PRODUCTS,
    DEPOSIT_BALANCES,
    WEALTH_BALANCES,
    Feature,
    deposits,
    wealth,
)


class Measure(StrEnum):
    """What a tier's cut-offs may be set on."""

    # Deposits + wealth holdings (funds, brokerage, pension) + insurance value, EUR.
    RELATIONSHIP_BALANCE = "relationship_balance"
    # Mortgage + personal + business loan balances, EUR.
    LOANS = "loans"
    PRODUCTS_HELD = "products_held"
    # The month's profit contributed, EUR.
    PROFIT = "profit"


LOAN_BALANCES = ("mortgage_balance", "personal_loan_balance", "business_loan_balance")


class InvalidPolicy(ValueError):
    """A policy file that cannot be used; the message names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class TierRule(BaseModel):
    """One tier: its name and the cut-offs a customer must all meet (none: everyone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    cutoffs: dict[Measure, float] = Field(default_factory=dict)


class TierPolicy(BaseModel):
    """Tiers from the lowest (no cut-offs) to the highest, and when a downgrade happens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=32)
    downgrade_after_months: int = Field(default=3, ge=1, le=24)
    grace_months: int = Field(default=0, ge=0, le=60)
    tiers: list[TierRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> TierPolicy:
        names = [t.name for t in self.tiers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"tiers[{i}].name: tier {name!r} is defined twice")
        if self.tiers[0].cutoffs:
            raise ValueError("tiers[0].cutoffs: the lowest tier takes everyone; it has none")
        for i, (lower, upper) in enumerate(zip(self.tiers, self.tiers[1:], strict=False), 1):
            if Measure.RELATIONSHIP_BALANCE not in upper.cutoffs:
                raise ValueError(f"tiers[{i}].cutoffs.relationship_balance: required above tier 0")
            for measure, floor in lower.cutoffs.items():
                key = f"tiers[{i}].cutoffs.{measure.value}"
                if measure not in upper.cutoffs:
                    raise ValueError(f"{key}: missing, but the tier below ({lower.name}) sets it")
                if measure is Measure.RELATIONSHIP_BALANCE and upper.cutoffs[measure] <= floor:
                    raise ValueError(
                        f"{key}: {upper.cutoffs[measure]:g} overlaps the tier below"
                        f" ({lower.name}: {floor:g}); it must be higher"
                    )
                if upper.cutoffs[measure] < floor:
                    raise ValueError(
                        f"{key}: {upper.cutoffs[measure]:g} is below the tier below"
                        f" ({lower.name}: {floor:g})"
                    )
        return self

    @property
    def names(self) -> list[str]:
        """Tier names, lowest first."""
        return [t.name for t in self.tiers]

    def rank(self, name: str) -> int | None:
        """A tier's position (0: lowest), None if the policy has no such tier."""
        return self.names.index(name) if name in self.names else None


def parse_policy(raw: str | bytes) -> TierPolicy:
    """A policy from its JSON text; InvalidPolicy names the offending key."""
    try:
        return TierPolicy.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        location = (
            ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
            .replace(".[", "[")
            .removesuffix("[key]")
        )
        message = str(first["msg"]).removeprefix("Value error, ")
        if ":" in message and not location:  # our validator names the key itself
            key, _, rest = message.partition(": ")
            raise InvalidPolicy(key, rest) from None
        if first["type"] == "enum":
            known = ", ".join(m.value for m in Measure)
            message = f"unknown measure; expected one of {known}"
        raise InvalidPolicy(location or "policy", message) from None


def load_policy(path: Path) -> TierPolicy:
    """Read and validate a policy file; InvalidPolicy names the offending key."""
    return parse_policy(path.read_bytes())


# --- measures and tiering ----------------------------------------------------------------------


def _number(value: Feature) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


# The products whose balances make up the relationship balance (deposits + wealth holdings), for
# reads that sum them in the database rather than through ``measures_of``.
RELATIONSHIP_PRODUCTS: tuple[str, ...] = tuple(
    product for name in (*DEPOSIT_BALANCES, *WEALTH_BALANCES) for product in BALANCE_PRODUCTS[name]
)


def measures_of(features: Mapping[str, Feature]) -> dict[Measure, float]:
    """A customer-month's measures from its features (unknown values count as 0)."""
    balances = {name: _number(features.get(name)) for name in BALANCE_PRODUCTS}
    return {
        Measure.RELATIONSHIP_BALANCE: float(deposits(balances) + wealth(balances)),
        Measure.LOANS: sum(balances[name] for name in LOAN_BALANCES),
        Measure.PRODUCTS_HELD: _number(features.get("products_held")),
        Measure.PROFIT: _number(features.get("profit")),
    }


def qualifying_rank(policy: TierPolicy, measures: Mapping[Measure, float]) -> int:
    """The highest tier whose cut-offs are all met (inclusive)."""
    best = 0
    for rank, tier in enumerate(policy.tiers):
        if all(measures[m] >= cutoff for m, cutoff in tier.cutoffs.items()):
            best = rank
    return best


def gaps_to(tier: TierRule, measures: Mapping[Measure, float]) -> dict[Measure, float]:
    """Per cut-off of ``tier``, how much the measure lacks to meet it (0 when met)."""
    return {m: max(0.0, cutoff - measures[m]) for m, cutoff in tier.cutoffs.items()}


@dataclass(frozen=True, slots=True)
class TierState:
    """Where the replay of a monthly history ends."""

    rank: int  # the tier held
    qualifying_rank: int  # the tier the last month qualifies for
    entered_month: int  # index in the history of the month the tier was entered
    months_below: int  # consecutive months, up to the last, below the tier held


def replay(policy: TierPolicy, qualifying: Sequence[int]) -> TierState:
    """The tier held after a history of monthly qualifying ranks (oldest first, no gaps)."""
    if not qualifying:
        raise ValueError("a history of at least one month is needed")
    rank, entered, below = qualifying[0], 0, 0
    for month, earned in enumerate(qualifying[1:], 1):
        if earned > rank:
            rank, entered, below = earned, month, 0
        elif earned == rank:
            below = 0
        else:
            below += 1
            held = month - entered
            if below >= policy.downgrade_after_months and held >= policy.grace_months:
                rank, entered, below = earned, month, 0
    return TierState(rank, qualifying[-1], entered, below)


@dataclass(frozen=True, slots=True)
class TierEvaluation:
    """A customer's policy tier in its latest month, with what it takes to move up or stay."""

    tier: str
    qualifying_tier: str
    measures: dict[Measure, float]
    next_tier: str | None
    gap_to_next: dict[Measure, float] | None
    months_below: int
    downgrade_in_months: int | None  # months left before a downgrade if nothing changes
    gap_to_stay: dict[Measure, float] | None


def evaluate(policy: TierPolicy, history: Sequence[Mapping[str, Feature]]) -> TierEvaluation:
    """The policy tier after a monthly history of features (oldest first, no gaps)."""
    monthly = [measures_of(features) for features in history]
    state = replay(policy, [qualifying_rank(policy, m) for m in monthly])
    latest = monthly[-1]
    held = policy.tiers[state.rank]
    upper = policy.tiers[state.rank + 1] if state.rank + 1 < len(policy.tiers) else None
    projected = state.months_below > 0
    return TierEvaluation(
        tier=held.name,
        qualifying_tier=policy.tiers[state.qualifying_rank].name,
        measures=latest,
        next_tier=upper.name if upper else None,
        gap_to_next=gaps_to(upper, latest) if upper else None,
        months_below=state.months_below,
        downgrade_in_months=_months_left(policy, state, len(monthly)) if projected else None,
        gap_to_stay=gaps_to(held, latest) if projected else None,
    )


def _months_left(policy: TierPolicy, state: TierState, months: int) -> int:
    """Further months below the tier before the downgrade (1: the next month below)."""
    by_count = policy.downgrade_after_months - state.months_below
    by_grace = policy.grace_months - (months - 1 - state.entered_month)
    return max(by_count, by_grace, 1)


def policy_dump(policy: TierPolicy) -> dict[str, Any]:
    """The policy as plain JSON data."""
    return policy.model_dump(mode="json")
