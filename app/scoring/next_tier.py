"""The next-tier gap: the smallest actionable change the tier model says lifts a customer a tier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.scoring.feature_schema import FeatureKind
from app.scoring.feature_schema import FloatMatrix as FloatArray

if TYPE_CHECKING:  # the tier model is LightGBM's; importing it here would load LightGBM
    from app.scoring.model import ScoringModel

# Amounts (EUR) tried on each actionable balance, smallest first.
STEPS_EUR = (
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
)


def _candidates(model: ScoringModel) -> list[tuple[int, float, str]]:
    """(column, change, kind) for every single-feature change considered, cheapest first."""
    moves: list[tuple[int, float, str]] = []
    for j, feature in enumerate(model.schema.features):
        if not feature.actionable:
            continue
        if feature.kind is FeatureKind.NUMBER and feature.unit == "EUR":
            moves.extend((j, float(step), "amount") for step in STEPS_EUR)
        elif feature.kind is FeatureKind.BOOLEAN:
            moves.append((j, 1.0, "product"))
    # Amounts ordered by size; product additions are weighed as their own kind of change.
    return sorted(moves, key=lambda m: (m[2] == "product", m[1]))


def find_next_tier_gap(
    model: ScoringModel, matrix: FloatArray, tiers: npt.NDArray[np.intp]
) -> list[dict[str, Any] | None]:
    """Per customer, the smallest single change predicted to reach the next tier (or None).

    Every customer's candidate changes are predicted in one call, so a batch costs one pass.
    """
    moves = _candidates(model)
    classes = model.classes
    n, m = len(matrix), len(moves)
    if not moves:
        return [None] * n
    names = model.schema.names
    products_held = names.index("products_held") if "products_held" in names else None
    columns = np.array([j for j, _, _ in moves])
    changes = np.array([c for _, c, _ in moves])
    is_product = np.array([k == "product" for _, _, k in moves])
    trial = np.repeat(matrix, m, axis=0).reshape(n, m, -1)
    base = np.nan_to_num(matrix[:, columns])  # (n, m): current value of each move's feature
    proposed = np.where(is_product, 1.0, base + changes)
    trial[:, np.arange(m), columns] = proposed
    if products_held is not None:
        trial[:, is_product, products_held] += 1.0
    applicable = ~is_product | (base == 0.0)
    probabilities = model.predict(trial.reshape(n * m, -1)).reshape(n, m, -1)
    lifted = applicable & (probabilities.argmax(axis=2) > tiers[:, None])
    lifted &= (tiers + 1 < len(classes))[:, None]
    gaps: list[dict[str, Any] | None] = []
    for row in range(n):
        hits = np.flatnonzero(lifted[row])
        if not len(hits):
            gaps.append(None)
            continue
        best = int(hits[0])
        j, change, kind = moves[best]
        feature = model.schema.features[j]
        text = (
            f"open a {feature.description.removeprefix('Holds a ').rstrip('.')}"
            if kind == "product"
            else f"add {change:,.0f} EUR to {feature.description.rstrip('.').lower()}"
        )
        gaps.append(
            {
                "target_tier": classes[int(probabilities[row, best].argmax())],
                "changes": [
                    {
                        "feature": feature.name,
                        "current": feature.describe_value(float(matrix[row, j])),
                        "proposed": feature.describe_value(float(proposed[row, best])),
                        "text": text,
                    }
                ],
                "probability_of_target": round(float(probabilities[row, best].max()), 6),
            }
        )
    return gaps
