"""Bank policies kept in files, not code: tier service plans and product eligibility rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from app.scoring.schemas import ServicePlan


def load_service_plans(path: Path) -> dict[str, ServicePlan]:
    """Service plan per tier name."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {tier: ServicePlan.model_validate(plan) for tier, plan in raw["tiers"].items()}


class ProductRule(BaseModel):
    """Who may be offered one product."""

    model_config = ConfigDict(extra="forbid")

    min_age: int | None = None
    max_age: int | None = None
    occupations: list[str] | None = Field(default=None, description="Only these occupations.")
    requires: list[str] = Field(default_factory=list, description="Products held beforehand.")

    def allows(self, *, age: Any, occupation: Any, holding: set[str] | None) -> bool:
        """Whether the rule lets this customer be offered the product (unknowns pass)."""
        if age is not None and self.min_age is not None and age < self.min_age:
            return False
        if age is not None and self.max_age is not None and age > self.max_age:
            return False
        jobs = self.occupations
        if jobs is not None and occupation is not None and occupation not in jobs:
            return False
        return holding is None or all(p in holding for p in self.requires)


class EligibilityRules(BaseModel):
    """Product eligibility: per-product rules and groups of mutually exclusive products."""

    model_config = ConfigDict(extra="forbid")

    products: dict[str, ProductRule] = Field(default_factory=dict)
    exclusive_groups: list[list[str]] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> EligibilityRules:
        """Read the rules file."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def eligible(
        self,
        products: tuple[str, ...],
        held: npt.NDArray[np.bool_] | None,
        customer: Mapping[str, Any],
    ) -> npt.NDArray[np.bool_]:
        """Which products may be offered (held ones never are).

        ``held`` is None when holdings are unknown (cold start): prerequisites are then not
        checked, since a brand-new customer's first products are not on file yet.
        """
        known = held is not None
        held = held if held is not None else np.zeros(len(products), dtype=bool)
        allowed = ~held
        age = customer.get("age")
        occupation = customer.get("occupation")
        holding = {p for p, h in zip(products, held, strict=True) if h}
        for index, product in enumerate(products):
            rule = self.products.get(product)
            if rule is None or not allowed[index]:
                continue
            allowed[index] = rule.allows(
                age=age, occupation=occupation, holding=holding if known else None
            )
        for group in self.exclusive_groups:
            if holding & set(group):
                for index, product in enumerate(products):
                    if product in group:
                        allowed[index] = False
        return allowed

    def drop_conflicts(self, ranked: list[str]) -> list[str]:
        """Keep only the best-ranked product of each exclusive group in one offer."""
        kept: list[str] = []
        for product in ranked:
            if not any(product in g and set(g) & set(kept) for g in self.exclusive_groups):
                kept.append(product)
        return kept
