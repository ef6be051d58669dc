"""Compare two churn model versions on the same out-of-time rows: AUC and Brier of each and of
their difference, with paired bootstrap intervals (the same resamples for both models).

    cvm train churn --book var/book --indices --out var/churn-indices
    python bench/churn_indices_compare.py --book var/book/book.parquet models/churn/1 \
        var/churn-indices

Both models are scored on the book's test month (the split `cvm train` holds out), each on the
features its own manifest names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from app.modelops.stats import interval, resample_counts, weighted_auc, weighted_mean
from app.scoring.feature_schema import FeatureSchema
from app.scoring.manifest import Task
from app.training.features import _encode, build_task_frame, prepare_book
from app.training.train import predict, time_split

SEED = 7


def scores(model_dir: Path, rows: pd.DataFrame) -> np.ndarray:
    """A model's probabilities on the rows, from the features its manifest names."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    schema = FeatureSchema.model_validate(manifest["schema"])
    booster = lgb.Booster(model_file=str(model_dir / "model.txt"))
    return predict(booster, _encode(rows, schema).to_numpy(dtype=np.float64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--book", type=Path, required=True)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    args = parser.parse_args()
    book = pd.read_parquet(args.book)
    prepared = prepare_book(book)
    frame = build_task_frame(prepared, Task.CHURN, indices=True)
    test = time_split(frame.month.to_numpy()).test
    rows = prepared.loc[frame.features.index[test]]
    y = frame.target.to_numpy()[test].astype(np.float64)
    a, b = scores(args.baseline, rows), scores(args.candidate, rows)
    counts = resample_counts(len(y), resamples=args.resamples, seed=SEED)
    ones = np.ones((1, len(y)))

    def both(metric: Any) -> dict[str, Any]:
        ma, mb = metric(a, counts), metric(b, counts)
        pa, pb = float(metric(a, ones)[0]), float(metric(b, ones)[0])
        return {
            "baseline": interval(ma, pa),
            "candidate": interval(mb, pb),
            "difference": interval(mb - ma, pb - pa, digits=5),
        }

    report = {
        "rows": len(y),
        "positive_rate": round(float(y.mean()), 4),
        "resamples": args.resamples,
        "roc_auc": both(lambda p, w: weighted_auc(y, p, w)),
        "brier": both(lambda p, w: weighted_mean((p - y) ** 2, w)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
