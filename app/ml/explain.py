"""Reason codes: per-feature contributions that, with a bias term, sum to the model's raw score.

Two methods share one layout, ``(n_rows, n_outputs, n_features + 1)`` with the bias last:

* ``PathExplainer`` (Saabas path attribution) runs on every score. Each leaf's contribution
  vector is fixed by the tree, so it is computed once at load time; explaining is then one
  ``pred_leaf`` call to LightGBM plus a gather-and-sum in numpy.
* ``exact_explanation`` (TreeSHAP via ``pred_contrib``) costs hundreds of predictions per row and
  is meant for audits, not the request path.

See docs/explanations.md for the measured costs and the trade-off between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import lightgbm
import numpy as np
import numpy.typing as npt

METHOD_PATH: Final = "path_attribution_saabas"
METHOD_TREESHAP: Final = "tree_shap_exact"

FloatArray = npt.NDArray[np.float64]

# Rows handed to LightGBM per call: bounds the (rows, trees) leaf-index matrix.
DEFAULT_CHUNK_ROWS: Final = 4096
# Size of one block of gathered (rows, outputs, iterations, features + 1) vectors: small enough to
# stay in cache, large enough to amortise numpy's per-call overhead.
_GATHER_BLOCK_BYTES: Final = 2 << 20


@dataclass(frozen=True, eq=False)  # eq=False: elementwise array comparison has no single truth
class Explanation:
    """Raw scores and the per-feature contributions that add up to them."""

    raw_score: FloatArray
    """(n, k), before the link: k = 1 for binary and regression, num_class for multiclass."""
    contributions: FloatArray
    """(n, k, n_features + 1), bias last; ``contributions.sum(-1)`` is raw_score up to rounding."""
    method: str = METHOD_PATH


def _resolve_num_iteration(booster: lightgbm.Booster, num_iteration: int | None) -> int:
    """Iterations to use, following ``Booster.predict``: None means best_iteration, else all."""
    total = booster.num_trees() // booster.num_model_per_iteration()
    if total == 0:
        raise ValueError("the model has no trees")
    if num_iteration is None:
        num_iteration = booster.best_iteration
    return total if num_iteration <= 0 else min(num_iteration, total)


def _averages_iterations(booster: lightgbm.Booster) -> bool:
    """True for boosting="rf": its prediction is the mean of the trees, not their sum."""
    # LightGBM's own raw_score and pred_contrib return the sum even then; only the link input
    # (the mean) is a log-odds, so both methods here divide by the number of iterations.
    return bool(booster.dump_model(num_iteration=1).get("average_output", False))


def _check_matrix(X: np.ndarray, n_features: int) -> None:
    """Reject input LightGBM would misread or fail on with a less useful message."""
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} columns, got shape {X.shape}")


def _tree_leaf_table(tree: dict[str, Any], n_features: int) -> tuple[FloatArray, FloatArray]:
    """Per-leaf contribution vectors (bias in the last column) and leaf values of one tree."""
    num_leaves = int(tree["num_leaves"])
    contributions = np.zeros((num_leaves, n_features + 1))
    leaf_values = np.zeros(num_leaves)
    root: dict[str, Any] = tree["tree_structure"]
    root_value = float(root["leaf_value"] if "leaf_value" in root else root["internal_value"])
    # Iterative walk: leaf-wise trees can be far deeper than Python's recursion limit allows.
    stack: list[tuple[dict[str, Any], list[tuple[int, float]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ValueError("linear_tree models are not supported: leaves are not constants")
            leaf = int(node.get("leaf_index", 0))
            leaf_values[leaf] = node["leaf_value"]
            row = contributions[leaf]
            row[n_features] = root_value
            for feature, delta in path:
                row[feature] += delta
            continue
        feature = int(node["split_feature"])
        parent_value = float(node["internal_value"])
        for side in ("left_child", "right_child"):
            child: dict[str, Any] = node[side]
            child_value = float(
                child["leaf_value"] if "leaf_value" in child else child["internal_value"]
            )
            stack.append((child, [*path, (feature, child_value - parent_value)]))
    return contributions, leaf_values


class PathExplainer:
    """Path attribution (Saabas) with per-leaf contribution vectors precomputed at load time."""

    def __init__(
        self,
        *,
        booster: lightgbm.Booster,
        num_iteration: int,
        num_outputs: int,
        feature_names: tuple[str, ...],
        leaf_contributions: FloatArray,
        leaf_values: FloatArray,
        tree_offsets: npt.NDArray[np.int32],
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.booster = booster
        self.num_iteration = num_iteration
        self.num_outputs = num_outputs
        self.feature_names = feature_names
        self.n_features = len(feature_names)
        self.chunk_rows = chunk_rows
        self._leaf_contributions = leaf_contributions
        self._leaf_values = leaf_values
        self._tree_offsets = tree_offsets

    @classmethod
    def from_booster(
        cls,
        booster: lightgbm.Booster,
        *,
        num_iteration: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> PathExplainer:
        """Parse the model once and precompute every leaf's contribution vector."""
        n_iter = _resolve_num_iteration(booster, num_iteration)
        k = booster.num_model_per_iteration()
        model = booster.dump_model(num_iteration=n_iter)
        feature_names = tuple(str(name) for name in model["feature_names"])
        trees: list[dict[str, Any]] = model["tree_info"][: n_iter * k]
        tables = [_tree_leaf_table(tree, len(feature_names)) for tree in trees]
        leaf_contributions = np.concatenate([contrib for contrib, _ in tables])
        leaf_values = np.concatenate([values for _, values in tables])
        if model.get("average_output", False):  # see _averages_iterations
            leaf_contributions /= n_iter
            leaf_values /= n_iter
        sizes = [len(values) for _, values in tables]
        tree_offsets = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.int32)
        return cls(
            booster=booster,
            num_iteration=n_iter,
            num_outputs=k,
            feature_names=feature_names,
            leaf_contributions=leaf_contributions,
            leaf_values=leaf_values,
            tree_offsets=tree_offsets,
            chunk_rows=chunk_rows,
        )

    @property
    def table_bytes(self) -> int:
        """Memory held by the precomputed tables, to keep model size honest."""
        return int(
            self._leaf_contributions.nbytes + self._leaf_values.nbytes + self._tree_offsets.nbytes
        )

    def explain(self, X: np.ndarray) -> Explanation:
        """Raw score and path contributions for each row, from a single LightGBM call per chunk."""
        _check_matrix(X, self.n_features)
        n, k = X.shape[0], self.num_outputs
        if n == 0:
            return Explanation(
                raw_score=np.empty((0, k)), contributions=np.empty((0, k, self.n_features + 1))
            )
        if n <= self.chunk_rows:  # the common case: no copy into a preallocated result
            raw_score, contributions = self._explain_chunk(X)
            return Explanation(raw_score=raw_score, contributions=contributions, method=METHOD_PATH)
        raw_score = np.empty((n, k))
        contributions = np.empty((n, k, self.n_features + 1))
        for start in range(0, n, self.chunk_rows):
            stop = min(start + self.chunk_rows, n)
            raw_score[start:stop], contributions[start:stop] = self._explain_chunk(X[start:stop])
        return Explanation(raw_score=raw_score, contributions=contributions, method=METHOD_PATH)

    def _explain_chunk(self, X: np.ndarray) -> tuple[FloatArray, FloatArray]:
        """Leaf indices from LightGBM, then gather and sum the precomputed per-leaf vectors."""
        leaves = np.asarray(
            self.booster.predict(X, pred_leaf=True, num_iteration=self.num_iteration),
            dtype=np.int32,
        )
        n, k, width = X.shape[0], self.num_outputs, self.n_features + 1
        # Flat-table row of each (row, tree) leaf; tree t belongs to output t % k, so after the
        # transpose the trees of one output are contiguous: (rows, outputs, iterations).
        leaf_rows = np.add(leaves, self._tree_offsets, dtype=np.intp)
        leaf_rows = leaf_rows.reshape(n, self.num_iteration, k).transpose(0, 2, 1).copy()
        ones = np.ones(self.num_iteration)
        raw_score: FloatArray = np.take(self._leaf_values, leaf_rows) @ ones
        contributions = np.empty((n, k, width))
        # A matrix-vector product over a small block of gathered rows sums the trees faster than
        # a reduction or a per-tree loop (docs/explanations.md); the block bounds memory.
        block = max(1, _GATHER_BLOCK_BYTES // (leaf_rows[0].size * width * 8))
        for start in range(0, n, block):
            gathered = np.take(self._leaf_contributions, leaf_rows[start : start + block], axis=0)
            np.matmul(ones, gathered, out=contributions[start : start + block])
        return raw_score, contributions


def exact_explanation(
    booster: lightgbm.Booster, X: np.ndarray, *, num_iteration: int | None = None
) -> Explanation:
    """TreeSHAP contributions in the PathExplainer layout; slow, for audits."""
    n_features = booster.num_feature()
    _check_matrix(X, n_features)
    n_iter = _resolve_num_iteration(booster, num_iteration)
    k = booster.num_model_per_iteration()
    contrib = np.asarray(
        booster.predict(X, pred_contrib=True, num_iteration=n_iter), dtype=np.float64
    )
    raw = np.asarray(booster.predict(X, raw_score=True, num_iteration=n_iter), dtype=np.float64)
    if _averages_iterations(booster):
        contrib /= n_iter
        raw /= n_iter
    n = X.shape[0]
    return Explanation(
        raw_score=raw.reshape(n, k),
        contributions=contrib.reshape(n, k, n_features + 1),
        method=METHOD_TREESHAP,
    )
