"""Bank policies kept in files, not code: product eligibility rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]


class RiskLevel(StrEnum):
    """An investment product's risk, R1 (lowest) to R5."""

    R1 = "R1"
    R2 = "R2"
    R3 = "R3"
    R4 = "R4"
    R5 = "R5"


# A customer's risk profile, C1 (most cautious) to C5: suits products up to the same level.
RISK_PROFILES = ("C1", "C2", "C3", "C4", "C5")
RiskProfile = Literal["C1", "C2", "C3", "C4", "C5"]
StageName = Literal["prospect", "new", "existing", "lost"]


class InvalidRules(ValueError):
    """A product rules file that cannot be used; the message names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ProductRule(BaseModel):
    """Who may be offered one product: eligibility (age, occupation, lifecycle stage),
    applicability (products held beforehand, tier) and suitability (the product's risk level
    against the customer's risk profile)."""

    model_config = ConfigDict(extra="forbid")

    # Eligibility
    min_age: int | None = None
    max_age: int | None = None
    occupations: list[str] | None = Field(default=None, description="Only these occupations.")
    stages: list[StageName] | None = Field(default=None, description="Only at these stages.")
    # Applicability
    requires: list[str] = Field(default_factory=list, description="Products held beforehand.")
    tiers: list[str] | None = Field(
        default=None, description="Only customers of these tiers; an unknown tier is not."
    )
    # Suitability
    risk_level: RiskLevel | None = Field(
        default=None,
        description="Offered only to a risk profile at least as high (R3: C3 to C5); a customer "
        "whose profile is unknown is not suitable.",
    )


class RuleStage(StrEnum):
    """The three checks of a product rule, in the order they are applied."""

    ELIGIBILITY = "eligibility"
    APPLICABILITY = "applicability"
    SUITABILITY = "suitability"


# Which fields of a product rule each check reads (held products and exclusive groups are
# applicability too: what the customer holds decides whether a product applies).
RULE_FIELDS: dict[RuleStage, tuple[str, ...]] = {
    RuleStage.ELIGIBILITY: ("min_age", "max_age", "occupations", "stages"),
    RuleStage.APPLICABILITY: ("requires", "tiers"),
    RuleStage.SUITABILITY: ("risk_level",),
}


class EligibilityRules(BaseModel):
    """Product eligibility: per-product rules and groups of mutually exclusive products."""

    model_config = ConfigDict(extra="forbid")

    products: dict[str, ProductRule] = Field(default_factory=dict)
    exclusive_groups: list[list[str]] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> EligibilityRules:
        """Read the rules file; InvalidRules names the offending key (e.g. an unknown field)."""
        return cls.parse(path.read_text(encoding="utf-8"))

    @classmethod
    def parse(cls, text: str) -> EligibilityRules:
        """Rules from their JSON text; InvalidRules names the offending key."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            key = ".".join(str(part) for part in first["loc"]) or "rules"
            message = str(first["msg"])
            if first["type"] == "extra_forbidden":
                known = ", ".join(ProductRule.model_fields)
                message = f"not a rule field; expected one of {known}"
            raise InvalidRules(key, message) from None

    def allowed(
        self,
        products: Sequence[str],
        *,
        held: FloatArray,
        cold_start: BoolArray,
        age: FloatArray | None,
        occupation: Sequence[str | None] | None,
        stages: Sequence[str] | None = None,
        tiers: Sequence[str | None] | None = None,
        risk_profiles: Sequence[str | None] | None = None,
    ) -> BoolArray:
        """Which products may be offered to each customer, as an (n, products) mask.

        ``held`` holds the has-product flags (NaN: unknown). Held products are never offered.
        For a cold-start customer (no holdings on file) prerequisites are not checked: a
        brand-new customer's first products are not on file yet. Unknown ages and
        occupations pass their limits; an unknown stage, tier or risk profile does not pass a
        rule on it (None for the whole argument: unknown for everyone).
        """
        holds = held == 1.0
        allowed = ~holds
        n = len(held)
        known = _Customers(
            ages=np.full(n, np.nan) if age is None else age,
            jobs=np.asarray([None] * n if occupation is None else occupation, dtype=object),
            stages=np.asarray([None] * n if stages is None else stages, dtype=object),
            tiers=np.asarray([None] * n if tiers is None else tiers, dtype=object),
            risk=_risk_ranks(risk_profiles, n),
        )
        index = {p: j for j, p in enumerate(products)}
        for product, rule in self.products.items():
            j = index.get(product)
            if j is None:
                continue
            ok = _rule_mask(rule, known)
            for required in rule.requires:
                k = index.get(required)
                has_it = holds[:, k] if k is not None else np.zeros(n, dtype=bool)
                ok &= cold_start | has_it
            allowed[:, j] &= ok
        for group in self.exclusive_groups:
            members = [index[p] for p in group if p in index]
            if members:
                in_group = holds[:, members].any(axis=1)
                allowed[np.ix_(in_group, members)] = False
        return np.asarray(allowed, dtype=bool)

    def only(self, stage: RuleStage, *fields: str) -> EligibilityRules:
        """These rules restricted to one check (to some of its fields when given): what
        ``allowed`` then refuses, that check refuses. Only applicability keeps the exclusive
        groups."""
        kept = fields or RULE_FIELDS[stage]
        return EligibilityRules(
            products={
                product: ProductRule.model_validate(
                    {name: getattr(rule, name) for name in kept if name in rule.model_fields_set}
                )
                for product, rule in self.products.items()
            },
            exclusive_groups=self.exclusive_groups if stage is RuleStage.APPLICABILITY else [],
        )

    def without_conflicts(self, products: Sequence[str], ranked: Sequence[int]) -> list[int]:
        """Keep only the best-ranked product of each exclusive group in one offer."""
        kept: list[int] = []
        taken: set[str] = set()
        for j in ranked:
            product = products[j]
            if not any(product in g and taken & set(g) for g in self.exclusive_groups):
                kept.append(j)
                taken.add(product)
        return kept


@dataclass(frozen=True, slots=True)
class _Customers:
    """What the rules read of each customer, as arrays."""

    ages: FloatArray
    jobs: npt.NDArray[np.object_]
    stages: npt.NDArray[np.object_]
    tiers: npt.NDArray[np.object_]
    risk: npt.NDArray[np.int8]  # 1-5 (C1-C5); 0 unknown


def _risk_ranks(profiles: Sequence[str | None] | None, n: int) -> npt.NDArray[np.int8]:
    """C1..C5 as 1..5; anything else (unknown) as 0."""
    if profiles is None:
        return np.zeros(n, dtype=np.int8)
    ranks = {profile: rank for rank, profile in enumerate(RISK_PROFILES, 1)}
    return np.fromiter((ranks.get(p, 0) if p else 0 for p in profiles), np.int8, n)


def _rule_mask(rule: ProductRule, known: _Customers) -> BoolArray:
    """Which customers one product's rule lets through (prerequisites aside)."""
    n = len(known.ages)
    ok = np.ones(n, dtype=bool)
    if rule.min_age is not None:
        ok &= ~(known.ages < rule.min_age)
    if rule.max_age is not None:
        ok &= ~(known.ages > rule.max_age)
    if rule.occupations is not None:
        ok &= np.fromiter((o is None or o in rule.occupations for o in known.jobs), bool, n)
    if rule.stages is not None:
        ok &= np.fromiter((s in rule.stages for s in known.stages), bool, n)
    if rule.tiers is not None:
        ok &= np.fromiter((t in rule.tiers for t in known.tiers), bool, n)
    if rule.risk_level is not None:
        ok &= known.risk >= int(rule.risk_level.value[1])
    return ok
