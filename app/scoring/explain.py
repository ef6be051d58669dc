"""Reason codes: per-feature contributions that, with a bias term, sum to the model's raw score.

Two methods share one layout, ``(n_rows, n_outputs, n_features + 1)`` with the bias last:

* ``PathExplainer`` (Saabas path attribution) runs on every score. Each leaf's contribution
  vector is fixed by the tree, so it is computed once at load time; explaining is then one
  ``pred_leaf`` call to LightGBM plus a gather-and-sum in numpy.
* ``exact_explanation`` (TreeSHAP via ``pred_contrib``) costs tens to hundreds of predictions and
  is meant for audits, not the request path.

See docs/explanations.md for the measured costs and the trade-off between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import lightgbm
import numpy as np
import numpy.typing as npt

from app.scoring.single_row import PREDICT_LEAF_INDEX, SingleRowPredictor

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


def resolve_num_iteration(booster: lightgbm.Booster, num_iteration: int | None) -> int:
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


def _threads(num_threads: int) -> dict[str, Any]:
    """Predict keyword for LightGBM; none at all when 0, so its default stays in charge."""
    return {"num_threads": num_threads} if num_threads > 0 else {}


def _check_matrix(X: np.ndarray, n_features: int) -> None:
    """Reject input LightGBM would misread or fail on with a less useful message."""
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} columns, got shape {X.shape}")


def _tree_leaf_table(tree: dict[str, Any], n_features: int) -> FloatArray:
    """One row per leaf of one tree: its contributions, bias, then its leaf value."""
    num_leaves = int(tree["num_leaves"])
    table = np.zeros((num_leaves, n_features + 2))
    root: dict[str, Any] = tree["tree_structure"]
    root_value = float(root["leaf_value"] if "leaf_value" in root else root["internal_value"])
    # Iterative walk: leaf-wise trees can be far deeper than Python's recursion limit allows.
    stack: list[tuple[dict[str, Any], list[tuple[int, float]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ValueError("linear_tree models are not supported: leaves are not constants")
            row = table[int(node.get("leaf_index", 0))]
            row[n_features] = root_value
            row[n_features + 1] = node["leaf_value"]
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
    return table


class PathExplainer:
    """Path attribution (Saabas) with per-leaf contribution vectors precomputed at load time."""

    def __init__(
        self,
        *,
        booster: lightgbm.Booster,
        num_iteration: int,
        feature_names: tuple[str, ...],
        leaf_table: FloatArray,
        tree_offsets: npt.NDArray[np.intp],
        num_threads: int = 0,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.booster = booster
        self.num_iteration = num_iteration
        self.num_threads = num_threads
        self.num_outputs = len(tree_offsets) // num_iteration
        self.feature_names = feature_names
        self.n_features = len(feature_names)
        self.chunk_rows = chunk_rows
        # One row per leaf of every tree: contributions, bias, leaf value (n_features + 2).
        # The leaf value rides along so one gather yields both the reasons and the raw score.
        self._leaf_table = leaf_table
        self._tree_offsets = tree_offsets  # first row of each tree in the table
        # One row (a single-customer API call) skips Booster.predict's Python overhead.
        self._single_row_leaves = SingleRowPredictor(
            booster,
            predict_type=PREDICT_LEAF_INDEX,
            num_iteration=num_iteration,
            n_outputs=len(tree_offsets),
        )

    @classmethod
    def from_booster(
        cls,
        booster: lightgbm.Booster,
        *,
        num_iteration: int | None = None,
        num_threads: int = 0,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> PathExplainer:
        """Parse the model once and precompute every leaf's contribution vector.

        ``num_threads`` goes to LightGBM's predict (0: its default, all cores).
        """
        n_iter = resolve_num_iteration(booster, num_iteration)
        model = booster.dump_model(num_iteration=n_iter)
        feature_names = tuple(str(name) for name in model["feature_names"])
        trees: list[dict[str, Any]] = model["tree_info"][
            : n_iter * booster.num_model_per_iteration()
        ]
        tables = [_tree_leaf_table(tree, len(feature_names)) for tree in trees]
        leaf_table = np.concatenate(tables)
        if model.get("average_output", False):  # see _averages_iterations
            leaf_table /= n_iter
        sizes = np.array([len(table) for table in tables], dtype=np.intp)
        return cls(
            booster=booster,
            num_iteration=n_iter,
            feature_names=feature_names,
            leaf_table=leaf_table,
            tree_offsets=np.cumsum(sizes) - sizes,
            num_threads=num_threads,
            chunk_rows=chunk_rows,
        )

    @property
    def table_bytes(self) -> int:
        """Memory held by the precomputed tables, to keep model size honest."""
        return int(self._leaf_table.nbytes + self._tree_offsets.nbytes)

    def explain(self, X: np.ndarray) -> Explanation:
        """Raw score and path contributions for each row, from a single LightGBM call per chunk."""
        _check_matrix(X, self.n_features)
        n, k = X.shape[0], self.num_outputs
        if n == 1:
            summed = self._sum_leaves_of_row(X[0])
            return Explanation(
                raw_score=summed[..., -1], contributions=summed[..., :-1], method=METHOD_PATH
            )
        summed = np.empty((n, k, self.n_features + 2))
        for start in range(0, n, self.chunk_rows):
            self._sum_leaves(X[start : start + self.chunk_rows], summed[start:])
        # Views, not copies: the leaf-value column summed to the raw score, the rest to reasons.
        return Explanation(
            raw_score=summed[..., -1], contributions=summed[..., :-1], method=METHOD_PATH
        )

    def _sum_leaves_of_row(self, row: np.ndarray) -> FloatArray:
        """(1, outputs, n_features + 2) for one row: the single-row fast path, one gather."""
        leaves = self._single_row_leaves(row).astype(np.intp) + self._tree_offsets
        # Trees run iteration-major (tree t belongs to output t % k): one column per output.
        per_output = leaves.reshape(self.num_iteration, self.num_outputs)
        summed: FloatArray = np.add.reduce(self._leaf_table[per_output], axis=0)
        return summed[np.newaxis]

    def _sum_leaves(self, X: np.ndarray, out: FloatArray) -> None:
        """Into out[:len(X)]: per row and output, the sum of the table rows of the leaves hit."""
        leaves = np.asarray(
            self.booster.predict(
                X, pred_leaf=True, num_iteration=self.num_iteration, **_threads(self.num_threads)
            ),
            dtype=np.int32,
        )
        n, k = X.shape[0], self.num_outputs
        # Tree t belongs to output t % k; after the transpose the trees of one output are
        # contiguous: (rows, outputs, iterations).
        leaf_rows = (leaves + self._tree_offsets).reshape(n, self.num_iteration, k)
        leaf_rows = np.ascontiguousarray(leaf_rows.transpose(0, 2, 1))
        # Gather a block of rows' leaf vectors and sum over the trees with einsum: faster than
        # .sum(axis=-2), and unlike matmul it never wakes BLAS threads that would fight
        # LightGBM's OpenMP pool for the cores (docs/explanations.md). The block bounds memory.
        block = max(1, _GATHER_BLOCK_BYTES // (leaf_rows[0].size * self._leaf_table.shape[1] * 8))
        for start in range(0, n, block):
            gathered = np.take(self._leaf_table, leaf_rows[start : start + block], axis=0)
            np.einsum("rkiw->rkw", gathered, out=out[start : start + len(gathered)])


def exact_explanation(
    booster: lightgbm.Booster,
    X: np.ndarray,
    *,
    num_iteration: int | None = None,
    num_threads: int = 0,
) -> Explanation:
    """TreeSHAP contributions in the PathExplainer layout; slow, for audits."""
    n_features = booster.num_feature()
    _check_matrix(X, n_features)
    n_iter = resolve_num_iteration(booster, num_iteration)
    k = booster.num_model_per_iteration()
    threads = _threads(num_threads)
    contrib = np.asarray(
        booster.predict(X, pred_contrib=True, num_iteration=n_iter, **threads), dtype=np.float64
    )
    raw = np.asarray(
        booster.predict(X, raw_score=True, num_iteration=n_iter, **threads), dtype=np.float64
    )
    if _averages_iterations(booster):
        contrib /= n_iter
        raw /= n_iter
    n = X.shape[0]
    return Explanation(
        raw_score=raw.reshape(n, k),
        contributions=contrib.reshape(n, k, n_features + 1),
        method=METHOD_TREESHAP,
    )
