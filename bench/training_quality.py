"""Better training on the real bank datasets: the tuned pipeline against the pipeline before it,
the default LightGBM and each SOURCE.md reference, with intervals.

For each case of ``bench/real_data.py`` (the same files, specs and 70/15/15 split), in one run:

1. **single split**: ``train_from_file`` (search, early stopping with a floor, refit and
   calibration inside the 85% training window) scored once on the 15% test split; the
   pipeline before it (fit on 70%, early stopping on 15%, no refit, no calibration) on the same
   test rows; AUC and Brier with seeded paired bootstrap 95% intervals, and the prior-rate Brier;
2. **nested CV**: the whole tuned pipeline re-run inside each outer fold (stratified 5-fold,
   seed 0, as SOURCE.md's reference; forward chaining for time-ordered cases), against a
   default ``LGBMClassifier`` on the same folds: the like-for-like comparison with the reference.

Usage::

    OMP_WAIT_POLICY=passive .venv/bin/python bench/training_quality.py --out var/training-quality
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # see bench/real_data.py

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from real_data import (  # this folder
    DEFAULT_DATA_DIR,
    TRAIN_SEED,
    Case,
    Prepared,
    build_cases,
    folds,
    prepare,
    reference_auc,
)
from sklearn.metrics import roc_auc_score

from app.modelops import stats
from app.scoring.manifest import Calibrator, Objective
from app.scoring.model import ScoringModel
from app.training.byod import split_rows, train_from_file
from app.training.train import BASE_PARAMS, fit_booster, predict
from app.training.tuning import TuningOptions, tune

FloatArray = npt.NDArray[np.float64]
DEFAULT_CASES = (
    "churn-modelling",
    "bank-marketing-random",
    "bank-marketing-time",
    "thera-bank",
    "berka-loan-bad",
    "berka-card-24m",
)
BOOTSTRAP_SEED = 20240917
RESAMPLES = 500


@dataclass
class Row:
    """What one case measured."""

    key: str
    dataset: str
    task: str
    split: str
    rows: int
    test_rows: int
    reference: float | None
    tuned_auc: dict[str, Any]
    tuned_brier: dict[str, Any]
    before_auc: dict[str, Any]
    before_brier: dict[str, Any]
    auc_gain: dict[str, Any]
    prior_brier: float
    calibration: str
    calibration_log_loss: dict[str, float]
    chosen: dict[str, Any]
    rounds: int
    served_matches: bool
    nested_tuned: list[float]
    nested_default: list[float]
    train_seconds: float
    nested_seconds: float


def single_split(case: Case, prepared: Prepared, out: Path, options: TuningOptions) -> Row:
    """Tuned vs before on the same 15% test split, intervals from paired resamples."""
    started = time.perf_counter()
    model_dir = out / "models" / case.key
    manifest = train_from_file(
        case.task,
        data_path=case.data_path,
        spec=case.spec,
        out_dir=model_dir,
        seed=TRAIN_SEED,
        tuning=options,
    )
    seconds = time.perf_counter() - started
    y, matrix = prepared.labels, prepared.matrix
    split = split_rows(y, prepared.time, TRAIN_SEED)
    served = ScoringModel.load(model_dir, threads=2).predict(matrix[split.test])
    before = fit_booster(
        objective=Objective.BINARY,
        num_classes=2,
        schema=prepared.schema,
        train=(matrix[split.train], y[split.train]),
        validation=(matrix[split.validation], y[split.validation]),
        params={},
        seed=TRAIN_SEED,
    )
    earlier = predict(before, matrix[split.test])
    label = y[split.test].astype(np.float64)
    counts = stats.resample_counts(len(label), resamples=RESAMPLES, seed=BOOTSTRAP_SEED)

    def auc(p: FloatArray) -> stats.Metric:
        return lambda w: stats.weighted_auc(label, p, w)

    def brier(p: FloatArray) -> stats.Metric:
        return lambda w: stats.weighted_mean((p - label) ** 2, w)

    tuning = manifest.split["tuning"]
    calibration = tuning["calibration"]
    prior = float(y[split.train | split.validation].mean())
    return Row(
        key=case.key,
        dataset=case.dataset,
        task=case.task.value,
        split=case.split,
        rows=len(y),
        test_rows=len(label),
        reference=reference_auc(case),
        tuned_auc=stats.with_interval(auc(served), counts),
        tuned_brier=stats.with_interval(brier(served), counts),
        before_auc=stats.with_interval(auc(earlier), counts),
        before_brier=stats.with_interval(brier(earlier), counts),
        auc_gain=stats.with_interval(lambda w: auc(served)(w) - auc(earlier)(w), counts),
        prior_brier=round(float(np.mean((prior - label) ** 2)), 4),
        calibration=calibration["method"],
        calibration_log_loss=calibration["log_loss"],
        chosen={k: v for k, v in tuning["chosen_params"].items() if BASE_PARAMS.get(k) != v},
        rounds=tuning["rounds"],
        served_matches=abs(manifest.metrics["test"]["roc_auc"] - roc_auc_score(label, served))
        < 1e-4,
        nested_tuned=[],
        nested_default=[],
        train_seconds=round(seconds, 1),
        nested_seconds=0.0,
    )


def nested_cv(prepared: Prepared, options: TuningOptions, seed: int) -> tuple[list[float], ...]:
    """Outer-fold AUCs of the whole tuned pipeline and of a default LGBMClassifier."""
    y, matrix = prepared.labels, prepared.matrix
    frame = prepared.features.copy()
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].astype("category")
    tuned_aucs, default_aucs = [], []
    for train, test in folds(prepared, seed):
        time_values = None if prepared.time is None else prepared.time.to_numpy()[train]
        tuned = tune(
            objective=Objective.BINARY,
            num_classes=2,
            schema=prepared.schema,
            matrix=matrix[train],
            labels=y[train],
            base_params=BASE_PARAMS,
            time=time_values,
            seed=TRAIN_SEED,
            options=options,
        )
        proba = Calibrator(tuned.served_calibration)(
            np.asarray(tuned.booster.predict(matrix[test]))
        )
        tuned_aucs.append(float(roc_auc_score(y[test], proba)))
        default = lgb.LGBMClassifier(random_state=seed, verbose=-1)
        default.fit(frame.iloc[train], y[train])
        default_proba = np.asarray(default.predict_proba(frame.iloc[test]))[:, 1]
        default_aucs.append(float(roc_auc_score(y[test], default_proba)))
        print(
            f"  fold {len(tuned_aucs)}: tuned {tuned_aucs[-1]:.4f} default {default_aucs[-1]:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return tuned_aucs, default_aucs


def _ci(metric: dict[str, Any]) -> str:
    return f"{metric['value']:.4f} [{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]"


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else "-"


def markdown(rows: list[Row]) -> str:
    """The README table and its footnotes."""
    lines = [
        "| dataset | task | rows (test) | split | test AUC [95% CI] | test Brier [95% CI] "
        "| before: AUC / Brier | AUC gain [95% CI] | prior-rate Brier | calibration "
        "| nested 5-fold CV AUC, tuned | default LightGBM, same folds | reference (SOURCE.md) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reference = "-" if r.reference is None else f"{r.reference:.4f}"
        if r.reference is not None and r.split == "time-ordered":
            reference += " (random CV)"
        lines.append(
            f"| {r.dataset} | {r.task} | {r.rows:,} ({r.test_rows:,}) | {r.split} "
            f"| {_ci(r.tuned_auc)} | {_ci(r.tuned_brier)} "
            f"| {r.before_auc['value']:.4f} / {r.before_brier['value']:.4f} "
            f"| {r.auc_gain['value']:+.4f} [{r.auc_gain['ci_low']:+.4f}, "
            f"{r.auc_gain['ci_high']:+.4f}] | {r.prior_brier:.4f} | {r.calibration} "
            f"| {_mean_sd(r.nested_tuned)} | {_mean_sd(r.nested_default)} | {reference} |"
        )
    lines += [
        "",
        f"Test: the 15% test split (seed {TRAIN_SEED}) scored once by the served model "
        f"(calibration applied); intervals: {RESAMPLES} paired bootstrap resamples (seed "
        f"{BOOTSTRAP_SEED}). Before: the pipeline this replaced (fit on 70%, early stopping on "
        "15%, no refit, no calibration) on the same test rows. Prior-rate Brier: always "
        "predicting the training window's positive rate. Nested CV: the whole tuned pipeline "
        "inside each outer fold (stratified 5-fold, seed 0, as the references; forward "
        "chaining for time-ordered rows); mean ± sd over the folds.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("var/training-quality"))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_CASES))
    parser.add_argument("--trials", type=int, default=TuningOptions().trials)
    parser.add_argument("--no-nested", action="store_true", help="single split only")
    parser.add_argument("--nested-only", nargs="*", default=None, help="nested CV only for these")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    options = TuningOptions(trials=args.trials)
    cases = {c.key: c for c in build_cases(args.data_dir, out / "data", leak_checks=False)}
    rows = []
    for key in args.only:
        case = cases[key]
        print(f"[{key}] single split", file=sys.stderr, flush=True)
        prepared = prepare(case)
        row = single_split(case, prepared, out, options)
        nested = not args.no_nested and (args.nested_only is None or key in args.nested_only)
        if nested:
            print(f"[{key}] nested CV", file=sys.stderr, flush=True)
            started = time.perf_counter()
            row.nested_tuned, row.nested_default = nested_cv(prepared, options, seed=0)
            row.nested_seconds = round(time.perf_counter() - started, 1)
        rows.append(row)
        (out / "results.json").write_text(
            json.dumps({"lightgbm": lgb.__version__, "rows": [asdict(r) for r in rows]}, indent=2),
            encoding="utf-8",
        )
    table = markdown(rows)
    print(table)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
