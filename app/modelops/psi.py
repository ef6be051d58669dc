"""Population stability against a reference frozen when the model was trained.

Each feature (and the score) keeps the bins of its training distribution: deciles for numbers
(interior cut points; fewer when values repeat), one bin per category, plus a "missing" bin
and an "unseen" bin (categories the training data never had; never an error). Current values
are binned on those same edges, never re-binned on reference and current together.

PSI = sum over bins of (c - r) * ln(c / r), with shares floored at ``FLOOR`` so that an empty
bin counts without dividing by zero. Bands: < 0.10 stable, < 0.25 moderate, else significant.
The bands ignore sample size; the flag does not: under no change, PSI is about
(1/N + 1/M) * chi-square(B - 1) for N reference rows, M current rows and B occupied bins, so
the flag is PSI > (1/N + 1/M) * chi2_0.99(B - 1) (a 1% false-alarm rate).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.scoring.feature_schema import FeatureSchema

FLOOR = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)
MISSING, UNSEEN = "missing", "unseen"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Reference:
    """A feature's (or the score's) frozen bins and their training shares (values..., missing,
    unseen)."""

    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] | None = None
    shares: tuple[float, ...] = ()
    rows: int = 0

    @property
    def value_bins(self) -> int:
        """Bins of present values (the missing and unseen bins follow them)."""
        return len(self.categories) if self.categories is not None else len(self.edges) + 1

    def labels(self) -> list[str]:
        """A readable name per bin."""
        if self.categories is not None:
            values = list(self.categories)
        else:
            bounds = ["-inf", *(f"{e:.6g}" for e in self.edges), "inf"]
            values = [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds)]
        return [*values, MISSING, UNSEEN]

    def counts(self, values: Sequence[Any] | FloatArray) -> IntArray:
        """How many of ``values`` fall in each bin (None or NaN: missing; unknown category:
        unseen)."""
        bins = self.value_bins + 2
        if self.categories is None:
            array = np.asarray(values, dtype=np.float64)
            present = ~np.isnan(array)
            index = np.full(len(array), self.value_bins, dtype=np.int64)
            edges = np.asarray(self.edges, dtype=np.float64)
            index[present] = np.searchsorted(edges, array[present], side="right")
            return np.bincount(index, minlength=bins).astype(np.int64)
        lookup = {c: i for i, c in enumerate(self.categories)}
        missing, unseen = self.value_bins, self.value_bins + 1
        index = np.fromiter(
            (missing if v is None or v != v else lookup.get(str(v), unseen) for v in values),
            dtype=np.int64,
            count=len(values),
        )
        return np.bincount(index, minlength=bins).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        """What the manifest stores."""
        out: dict[str, Any] = {"shares": list(self.shares), "rows": self.rows}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        else:
            out["edges"] = list(self.edges)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        """Read back what ``to_json`` wrote."""
        categories = data.get("categories")
        return cls(
            edges=tuple(float(e) for e in data.get("edges", ())),
            categories=tuple(str(c) for c in categories) if categories is not None else None,
            shares=tuple(float(s) for s in data["shares"]),
            rows=int(data["rows"]),
        )


def numeric_reference(values: FloatArray) -> Reference:
    """Deciles of the present values as frozen edges, and the training shares."""
    present = values[~np.isnan(values)]
    edges = (
        tuple(float(e) for e in np.unique(np.quantile(present, DECILES))) if len(present) else ()
    )
    empty = Reference(edges=edges, rows=len(values))
    counts = empty.counts(values)
    return Reference(edges=edges, shares=tuple(counts / max(len(values), 1)), rows=len(values))


def categorical_reference(values: Sequence[Any], categories: Sequence[str]) -> Reference:
    """One bin per known category, and the training shares."""
    empty = Reference(categories=tuple(categories), rows=len(values))
    counts = empty.counts(values)
    return Reference(
        categories=tuple(categories),
        shares=tuple(counts / max(len(values), 1)),
        rows=len(values),
    )


@dataclass(frozen=True)
class Stability:
    """One PSI with its bands and sample-size-aware flag."""

    psi: float
    band: str
    threshold: float
    flagged: bool
    bins: int
    reference_rows: int
    current_rows: int
    current_shares: tuple[float, ...]


def band(psi: float) -> str:
    """The usual bands: stable (< 0.10), moderate (< 0.25), significant."""
    return "stable" if psi < 0.10 else "moderate" if psi < 0.25 else "significant"


def psi_value(reference: FloatArray, current: FloatArray) -> tuple[float, int]:
    """PSI of two share vectors (floored) over the bins either occupies; and that count."""
    occupied = (reference > 0) | (current > 0)
    r = np.maximum(reference[occupied], FLOOR)
    c = np.maximum(current[occupied], FLOOR)
    return float(np.sum((c - r) * np.log(c / r))), int(occupied.sum())


def chi2_quantile(level: float, dof: int) -> float:
    """The chi-square quantile (scipy)."""
    from scipy.stats import chi2  # imported when monitoring runs: serving never pays for it

    return float(chi2.ppf(level, dof))


def stability(reference: Reference, counts: IntArray) -> Stability:
    """PSI of current bin counts against the frozen reference, its band and flag."""
    rows = int(counts.sum())
    shares = counts / max(rows, 1)
    psi, bins = psi_value(np.asarray(reference.shares, dtype=np.float64), shares)
    threshold = (
        (1 / max(reference.rows, 1) + 1 / max(rows, 1)) * chi2_quantile(0.99, bins - 1)
        if bins > 1
        else float("inf")
    )
    return Stability(
        psi=psi,
        band=band(psi),
        threshold=threshold,
        flagged=rows > 0 and psi > threshold,
        bins=bins,
        reference_rows=reference.rows,
        current_rows=rows,
        current_shares=tuple(float(s) for s in shares),
    )


REFERENCE_KEY = "monitoring_reference"


def training_reference(
    schema: FeatureSchema, matrix: FloatArray, scores: FloatArray | None
) -> dict[str, Any]:
    """The frozen reference of every feature of ``schema`` (``matrix`` as the model takes it:
    categories as codes) and of the headline score, for ``manifest.extras``."""
    features: dict[str, Any] = {}
    for j, spec in enumerate(schema.features):
        column = matrix[:, j]
        if spec.categories:
            labels = [None if v != v else spec.categories[int(v)] for v in column.tolist()]
            features[spec.name] = categorical_reference(labels, spec.categories).to_json()
        else:
            features[spec.name] = numeric_reference(column).to_json()
    return {
        "rows": len(matrix),
        "features": features,
        "score": None if scores is None else numeric_reference(scores).to_json(),
    }
