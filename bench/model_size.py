"""Does a deeper model earn its serving cost? Validation metric and explanation cost, one run.

Trains the churn task on the synthetic book with the bundled size and with deeper trees, and
reports each model's VALIDATION ROC AUC (the test month is not looked at: choosing a size is a
choice) next to its prediction and explanation cost per row.

    .venv/bin/python bench/model_size.py --book var/book
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from app.scoring.explain import PathExplainer
from app.scoring.manifest import Objective, Task
from app.training.features import build_task_frame, prepare_book, schema_for
from app.training.synth import read_book
from app.training.train import fit_booster, predict, time_split

SIZES: dict[str, dict[str, Any]] = {
    "bundled (31 leaves, depth 6)": {},
    "deeper (63 leaves, depth 8)": {"num_leaves": 63, "max_depth": 8},
    "deep (127 leaves, no depth limit)": {"num_leaves": 127, "max_depth": -1},
}


def per_row_us(call: Any, row: np.ndarray, repeats: int = 300) -> float:
    """Median-free simple mean of single-row calls, after a warm-up."""
    for _ in range(20):
        call(row)
    started = time.perf_counter()
    for _ in range(repeats):
        call(row)
    return (time.perf_counter() - started) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=Path("var/book"))
    args = parser.parse_args()
    book = prepare_book(read_book(args.book).to_pandas())
    frame = build_task_frame(book, Task.CHURN)
    split = time_split(frame.month.to_numpy())
    schema = schema_for(Task.CHURN)
    matrix = frame.features.to_numpy(dtype=np.float64)
    target = frame.target.to_numpy()
    row = matrix[split.validation][:1]
    print("| size | trees | validation ROC AUC | predict µs/row | predict + reasons µs/row |")
    print("|---|---|---|---|---|")
    for name, params in SIZES.items():
        booster = fit_booster(
            objective=Objective.BINARY,
            num_classes=2,
            schema=schema,
            train=(matrix[split.train], target[split.train]),
            validation=(matrix[split.validation], target[split.validation]),
            params={**params, "num_threads": 1},
        )
        auc = roc_auc_score(target[split.validation], predict(booster, matrix[split.validation]))
        explainer = PathExplainer.from_booster(booster, num_threads=1)
        plain = per_row_us(lambda r, b=booster: b.predict(r, num_threads=1), row)
        explained = per_row_us(explainer.explain, row)
        print(f"| {name} | {booster.num_trees()} | {auc:.4f} | {plain:.0f} | {explained:.0f} |")


if __name__ == "__main__":
    main()
