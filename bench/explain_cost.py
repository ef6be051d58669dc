"""Cost of reason codes relative to a plain prediction, measured in one run.

Trains a binary LightGBM model of the requested size on synthetic data, then times, for a single
row (repeated over distinct rows) and for batches of 1,000 rows:

* ``booster.predict`` (the plain prediction the service would make anyway),
* for one row, LightGBM's C single-row fast path (``SingleRowPredictor``, raw score), which is
  what the service predicts a single customer with,
* ``PathExplainer.explain`` (prediction and Saabas reason codes from one LightGBM call),
* ``booster.predict(pred_contrib=True)`` (exact TreeSHAP; fewer repetitions, it is slow).

Predict and explain are timed in interleaved rounds so that noise from other processes hits both
alike; the best round (as ``timeit`` advises) and the median are both printed. Usage::

    .venv/bin/python bench/explain_cost.py --trees 300 --leaves 63 --rows 20000 --features 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from app.scoring.explain import PathExplainer
from app.scoring.single_row import PREDICT_RAW_SCORE, SingleRowPredictor

FloatArray = npt.NDArray[np.float64]
BATCH = 1000


def synthetic_book(rows: int, features: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """Features with NaNs and interactions, and a noisy binary label that depends on them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    weights = rng.normal(size=features) * (rng.random(features) < 0.5)
    logit = X @ weights + np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    y = (logit + rng.logistic(size=rows) > 0).astype(np.float64)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def train(X: FloatArray, y: FloatArray, trees: int, leaves: int, seed: int) -> lgb.Booster:
    """A model of exactly the size under study (no early stopping)."""
    params = {
        "objective": "binary",
        "num_leaves": leaves,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "seed": seed,
        "verbose": -1,
    }
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=trees)


def per_row_us(call: Callable[[FloatArray], object], inputs: list[FloatArray]) -> float:
    """Mean microseconds per row over one pass of the inputs."""
    start = time.perf_counter()
    for X in inputs:
        call(X)
    elapsed = time.perf_counter() - start
    return elapsed * 1e6 / sum(len(X) for X in inputs)


def interleaved(
    calls: dict[str, Callable[[FloatArray], object]], inputs: list[FloatArray], rounds: int
) -> dict[str, list[float]]:
    """Per-row cost of each call in every round, rounds interleaved so drift hits all alike."""
    for call in calls.values():  # warm-up: caches, lazy initialisation, thread pools
        call(inputs[0])
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].append(per_row_us(call, inputs))
    return samples


def accumulators(explainer: PathExplainer, X: FloatArray) -> dict[str, Callable[[], object]]:
    """Ways to sum the per-leaf table rows (binary model), given LightGBM's leaf indices.

    The explainer's dense rows (contributions, bias, leaf value) are compared with the sparse
    alternative: each leaf's nonzero (column, value) pairs, padded to the longest.
    """
    dense = explainer._leaf_table
    width = dense.shape[1]
    leaves = np.asarray(explainer.booster.predict(X, pred_leaf=True), dtype=np.int32)
    leaf_rows = leaves + explainer._tree_offsets
    n, trees = leaf_rows.shape
    nonzero = dense != 0
    depth = int(nonzero.sum(axis=1).max())
    slots = np.zeros((len(dense), depth), dtype=np.int32)  # padding adds 0.0 to column 0
    deltas = np.zeros((len(dense), depth))
    for leaf, row in enumerate(nonzero):
        columns = np.flatnonzero(row)
        slots[leaf, : len(columns)] = columns
        deltas[leaf, : len(columns)] = dense[leaf, columns]
    ones = np.ones(trees)
    block = max(1, (2 << 20) // (trees * width * 8))

    def sparse_bincount() -> object:
        flat = slots[leaf_rows] + (np.arange(n, dtype=np.intp) * width)[:, None, None]
        return np.bincount(flat.ravel(), deltas[leaf_rows].ravel(), minlength=n * width)

    def sparse_add_at() -> object:
        out = np.zeros((n, width))
        rows = np.broadcast_to(np.arange(n)[:, None, None], (n, trees, depth))
        np.add.at(out, (rows, slots[leaf_rows]), deltas[leaf_rows])
        return out

    def dense_tree_loop() -> object:
        out = np.zeros((n, width))
        for tree_rows in leaf_rows.T.copy():
            out += dense[tree_rows]
        return out

    def dense_block_sum() -> object:
        return [dense[leaf_rows[i : i + block]].sum(axis=1) for i in range(0, n, block)]

    def dense_block_matmul() -> object:
        return [ones @ dense[leaf_rows[i : i + block]] for i in range(0, n, block)]

    def dense_block_einsum() -> object:
        return [np.einsum("rtw->rw", dense[leaf_rows[i : i + block]]) for i in range(0, n, block)]

    return {
        f"sparse (padded to {depth}) + np.bincount": sparse_bincount,
        f"sparse (padded to {depth}) + np.add.at": sparse_add_at,
        "dense, loop over trees": dense_tree_loop,
        f"dense, {block}-row blocks, .sum(axis)": dense_block_sum,
        f"dense, {block}-row blocks, ones @ (BLAS)": dense_block_matmul,
        f"dense, {block}-row blocks, einsum (used)": dense_block_einsum,
    }


def best_call_us(call: Callable[[], object], repeat: int, rounds: int) -> float:
    """Fastest round's mean microseconds per call."""
    call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        samples.append((time.perf_counter() - start) * 1e6 / repeat)
    return min(samples)


def tree_depths(booster: lgb.Booster) -> list[int]:
    """Depth of every leaf, to relate cost to the shape of the trees."""
    depths: list[int] = []
    for tree in booster.dump_model()["tree_info"]:
        stack = [(tree["tree_structure"], 0)]
        while stack:
            node, depth = stack.pop()
            if "leaf_value" in node:
                depths.append(depth)
            else:
                stack.extend([(node["left_child"], depth + 1), (node["right_child"], depth + 1)])
    return depths


def main() -> None:
    """Train, time, print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--leaves", type=int, default=63)
    parser.add_argument("--rows", type=int, default=20000, help="training rows")
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--model", help="time this LightGBM model file instead (inputs: random, with NaNs)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="LightGBM predict threads (0: its default, all)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--single-rows", type=int, default=300, help="distinct rows per round")
    parser.add_argument("--contrib-single-rows", type=int, default=20)
    parser.add_argument("--contrib-batch-rows", type=int, default=BATCH)
    parser.add_argument(
        "--accumulators", action="store_true", help="also time alternative ways to sum leaves"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    if args.model:
        booster = lgb.Booster(model_file=args.model)
        args.features = booster.num_feature()
        origin = f"loaded from {args.model}"
    else:
        X, y = synthetic_book(args.rows, args.features, args.seed)
        booster = train(X, y, args.trees, args.leaves, args.seed)
        origin = f"trained on {args.rows} rows in {time.perf_counter() - start:.1f} s"
    start = time.perf_counter()
    explainer = PathExplainer.from_booster(booster, num_threads=args.threads)
    load_ms = (time.perf_counter() - start) * 1e3

    X_score, _ = synthetic_book(max(BATCH, args.single_rows), args.features, args.seed + 1)
    k = booster.num_model_per_iteration()
    raw = np.asarray(booster.predict(X_score, raw_score=True), dtype=np.float64)
    raw = raw.reshape(len(X_score), k)
    explanation = explainer.explain(X_score)
    additivity_error = float(np.abs(explanation.contributions.sum(-1) - raw).max())
    score_error = float(np.abs(explanation.raw_score - raw).max())

    singles = [X_score[i : i + 1] for i in range(args.single_rows)]
    threads = {"num_threads": args.threads} if args.threads > 0 else {}

    def predict(X: FloatArray) -> object:
        return booster.predict(X, **threads)

    fast = SingleRowPredictor(
        booster, predict_type=PREDICT_RAW_SCORE, num_iteration=explainer.num_iteration, n_outputs=k
    )

    def predict_fast(X: FloatArray) -> object:
        return fast(X[0])

    calls: dict[str, Callable[[FloatArray], object]] = {
        "predict": predict,
        "explain": explainer.explain,
    }
    single = interleaved({**calls, "fast": predict_fast}, singles, args.rounds)
    batch = interleaved(calls, [X_score[:BATCH]] * 3, args.rounds)

    def contrib(X: FloatArray) -> object:
        return booster.predict(X, pred_contrib=True, **threads)

    contrib_single = per_row_us(contrib, singles[: args.contrib_single_rows])
    contrib_batch = per_row_us(contrib, [X_score[: args.contrib_batch_rows]])

    depths = tree_depths(booster)
    leaves = [tree["num_leaves"] for tree in booster.dump_model()["tree_info"]]
    print(
        f"model: {booster.num_trees()} trees ({k} per iteration), {max(leaves)} leaves max,"
        f" {args.features} features; leaf depth mean {np.mean(depths):.1f}, max {max(depths)};"
        f" {origin}"
    )
    print(
        f"explainer: tables {explainer.table_bytes / 2**20:.1f} MiB, built in {load_ms:.0f} ms;"
        f" |sum(contrib) - raw| max {additivity_error:.1e}, |raw_score - raw| max {score_error:.1e}"
    )
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f},"
        f" LightGBM threads {args.threads or 'default'},"
        f" LightGBM {lgb.__version__}, numpy {np.__version__}"
    )
    print()
    print(f"us/row over {args.rounds} interleaved rounds: best (median)")
    print(f"{'method':<26}{'1 row':>20}{f'{BATCH} rows':>20}")
    for label, name in (
        ("booster.predict", "predict"),
        ("single-row fast path", "fast"),
        ("PathExplainer.explain", "explain"),
    ):
        one, many = single[name], batch.get(name)
        one_text = f"{min(one):.1f} ({statistics.median(one):.1f})"
        many_text = "-" if many is None else f"{min(many):.1f} ({statistics.median(many):.1f})"
        print(f"{label:<26}{one_text:>20}{many_text:>20}")
    print(f"{'pred_contrib (TreeSHAP)':<26}{contrib_single:>20.0f}{contrib_batch:>20.0f}")
    print()
    for stat_name, stat in (("best", min), ("median", statistics.median)):
        one_ratio = stat(single["explain"]) / stat(single["predict"])
        many_ratio = stat(batch["explain"]) / stat(batch["predict"])
        print(
            f"ratio explain/predict ({stat_name}):".ljust(34)
            + f"1 row {one_ratio:.2f}x, {BATCH} rows {many_ratio:.2f}x"
        )
    print(
        "ratio explain/fast path (best):".ljust(34)
        + f"1 row {min(single['explain']) / min(single['fast']):.2f}x"
    )
    print(
        "ratio treeshap/predict (best):".ljust(34)
        + f"1 row {contrib_single / min(single['predict']):.0f}x,"
        + f" {BATCH} rows {contrib_batch / min(batch['predict']):.0f}x"
    )

    if args.accumulators and k > 1:
        print("\n--accumulators times binary models only")
    elif args.accumulators:
        print()
        print(f"{'summing step only, best us/row':<48}{'1 row':>8}{f'{BATCH} rows':>12}")
        one_row = accumulators(explainer, X_score[:1])
        many_rows = accumulators(explainer, X_score[:BATCH])
        for label, sum_one in one_row.items():
            one_us = best_call_us(sum_one, repeat=200, rounds=args.rounds)
            many_us = best_call_us(many_rows[label], repeat=3, rounds=args.rounds) / BATCH
            print(f"{label:<48}{one_us:>8.1f}{many_us:>12.1f}")


if __name__ == "__main__":
    main()
