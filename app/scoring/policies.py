"""Bank policies kept in files, not code: tier service plans and product eligibility rules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from app.scoring.schemas import ServicePlan

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]


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


class EligibilityRules(BaseModel):
    """Product eligibility: per-product rules and groups of mutually exclusive products."""

    model_config = ConfigDict(extra="forbid")

    products: dict[str, ProductRule] = Field(default_factory=dict)
    exclusive_groups: list[list[str]] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> EligibilityRules:
        """Read the rules file."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def allowed(
        self,
        products: Sequence[str],
        *,
        held: FloatArray,
        cold_start: BoolArray,
        age: FloatArray | None,
        occupation: Sequence[str | None] | None,
    ) -> BoolArray:
        """Which products may be offered to each customer, as an (n, products) mask.

        ``held`` holds the has-product flags (NaN: unknown). Held products are never offered.
        For a cold-start customer (no holdings on file) prerequisites are not checked: a
        brand-new customer's first products are not on file yet. Unknown ages and
        occupations pass their limits.
        """
        holds = held == 1.0
        allowed = ~holds
        n = len(held)
        ages = np.full(n, np.nan) if age is None else age
        jobs = np.asarray([None] * n if occupation is None else occupation, dtype=object)
        index = {p: j for j, p in enumerate(products)}
        for product, rule in self.products.items():
            j = index.get(product)
            if j is None:
                continue
            ok = np.ones(n, dtype=bool)
            if rule.min_age is not None:
                ok &= ~(ages < rule.min_age)
            if rule.max_age is not None:
                ok &= ~(ages > rule.max_age)
            if rule.occupations is not None:
                ok &= np.fromiter((o is None or o in rule.occupations for o in jobs), bool, n)
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
