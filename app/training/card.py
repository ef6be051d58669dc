"""The model card ``cvm train`` writes: measured on the held-out rows, validated on writing.

Everything in it is computed here from the model as saved (``model.txt``) and the rows it was
trained and tested on: intervals from a seeded bootstrap of the test rows, baselines fitted on
the training rows and scored on the same test rows, reason-code fidelity against exact
TreeSHAP on a sample, and the facts needed to rebuild the model bit for bit.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from app.modelops import stats
from app.modelops.cards import NOT_FOR_CREDIT, validate_card
from app.modelops.fairness import fairness_report
from app.scoring.explain import METHOD_TREESHAP, PathExplainer, exact_explanation
from app.scoring.feature_schema import FeatureKind, FeatureSchema
from app.scoring.manifest import MODEL_FILE, Calibrator, Manifest, Objective, Task

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REASON_SAMPLE_ROWS = 10_000
THREADS = 2  # as training (BASE_PARAMS): more OpenMP threads than cores only contend
BASELINE_TRAINING_ROWS = 50_000  # logistic regression is fitted on at most this many rows
LIBRARIES = ("lightgbm", "numpy", "pandas", "scikit-learn", "scipy", "pyarrow")
RELEVANT_FACTORS = ("gender", "age band", "region")

PRIMARY_USES: dict[Task, list[str]] = {
    Task.CHURN: [
        "Rank existing customers by their chance of leaving within three months, so relationship "
        "managers can offer service or retention actions first where they matter most."
    ],
    Task.TIER: [
        "Anticipate next month's value tier to plan service levels and relationship cover."
    ],
    Task.RECOMMENDATION: [
        "Order the products a customer does not yet hold by how likely they are to add each, "
        "for next-best-offer conversations."
    ],
    Task.PROSPECT: [
        "Rank prospects by their chance of becoming customers and the value they would bring, "
        "to plan outreach."
    ],
}
OUT_OF_SCOPE = [
    NOT_FOR_CREDIT,
    "Not for pricing, eligibility, collections or fraud decisions.",
    "Not for automated decisions about individuals without human review.",
    "Not for populations, products or periods unlike the training data (see training_data).",
]
ETHICS = [
    "Scores can encode differences between groups of customers; the fairness section and "
    "GET /v1/models/{task}/fairness report selection rates by group before use.",
    "Customers may object to profiling for marketing (GDPR art. 21); honour objections before "
    "acting on a score.",
    "Reason codes are path attributions, an approximation of TreeSHAP; their agreement is "
    "measured in quantitative_analyses.reason_code_agreement.",
]


@dataclass(frozen=True)
class Provenance:
    """Where the training data came from."""

    synthetic: bool
    source: str
    generator: dict[str, Any] | None = None


@dataclass(frozen=True)
class HeldOut:
    """The matrices and labels the card is measured on."""

    train_x: FloatArray
    train_y: IntArray
    test_x: FloatArray
    test_y: IntArray
    held_out: str
    training_window: dict[str, Any]
    evaluation_window: dict[str, Any]
    persistence: IntArray | None = None  # tier: this month's tier of each test row
    ranking: tuple[FloatArray, FloatArray] | None = None  # recommendation: model, popularity AP
    factors: dict[str, npt.NDArray[np.str_]] | None = None  # test rows' groups, by factor
    baseline_rows: int = BASELINE_TRAINING_ROWS  # logistic regression's training sample
    reason_rows: int = REASON_SAMPLE_ROWS  # rows compared with TreeSHAP


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


GIT_STATUS = ("git", "status", "--porcelain", "--untracked-files=no", "--")


def git_state() -> tuple[str | None, bool | None]:
    """The commit the code was at, and whether tracked files differed from it."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            # The bundled models are written under models/ by this very run: not the code.
            ["git", "-C", str(here), *GIT_STATUS[1:], ":/", ":(top,exclude)models"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def library_versions() -> dict[str, str]:
    """Python's and the numeric libraries' versions."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _logistic_regression(schema: FeatureSchema, seed: int) -> Pipeline:
    categorical = [i for i, f in enumerate(schema.features) if f.kind is FeatureKind.CATEGORY]
    numeric = [i for i in range(len(schema.names)) if i not in categorical]
    # Balances are heavy-tailed: a signed log keeps a few millionaires from dominating the fit.
    signed_log = FunctionTransformer(lambda x: np.sign(x) * np.log1p(np.abs(x)))
    columns = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("log", signed_log),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            (
                "category",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline(
        [("columns", columns), ("model", LogisticRegression(max_iter=300, random_state=seed))]
    )


def _fit_logistic(schema: FeatureSchema, held: HeldOut, seed: int) -> tuple[FloatArray, str]:
    rng = np.random.default_rng(seed)
    rows = np.arange(len(held.train_y))
    if len(rows) > held.baseline_rows:
        rows = np.sort(rng.choice(rows, held.baseline_rows, replace=False))
    pipeline = _logistic_regression(schema, seed)
    # One BLAS thread: lbfgs's small matrix products run ~10x slower when OpenBLAS threads
    # contend for a busy machine's cores.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(held.train_x[rows], held.train_y[rows])
        proba = np.asarray(pipeline.predict_proba(held.test_x), dtype=np.float64)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    note = (
        f"logistic regression on {len(rows):,} training rows (median-imputed, signed-log, "
        f"standardised; categories one-hot){'' if converged else '; lbfgs did not converge'}"
    )
    return proba, note


def _macro_f1(y: IntArray, predicted: IntArray, classes: int, w: FloatArray) -> FloatArray:
    scores = []
    for c in range(classes):
        tp = w @ ((predicted == c) & (y == c)).astype(np.float64)
        fp = w @ ((predicted == c) & (y != c)).astype(np.float64)
        fn = w @ ((predicted != c) & (y == c)).astype(np.float64)
        denominator = 2 * tp + fp + fn
        scores.append(
            np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0)
        )
    return np.asarray(np.mean(scores, axis=0), dtype=np.float64)


def _class_metrics(
    y: IntArray, predicted: IntArray, classes: int, counts: FloatArray
) -> dict[str, Any]:
    correct = (predicted == y).astype(np.float64)
    return {
        "accuracy": stats.with_interval(lambda w: stats.weighted_mean(correct, w), counts),
        "macro_f1": stats.with_interval(lambda w: _macro_f1(y, predicted, classes, w), counts),
    }


def _binary_analyses(
    schema: FeatureSchema, held: HeldOut, proba: FloatArray, counts: FloatArray, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    y = held.test_y
    prior = float(held.train_y.mean())
    logistic, note = _fit_logistic(schema, held, seed)
    baselines = [
        {
            "name": "prior_rate",
            "description": f"every row scored at the training positive rate ({prior:.4f})",
            "metrics": stats.binary_summary(y, np.full(len(y), prior), counts),
        },
        {
            "name": "logistic_regression",
            "description": note,
            "metrics": stats.binary_summary(y, logistic[:, 1], counts),
        },
    ]
    return stats.binary_summary(y, proba, counts), baselines


def _tier_analyses(
    schema: FeatureSchema, held: HeldOut, proba: FloatArray, counts: FloatArray, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    y = held.test_y
    k = proba.shape[1]
    majority = int(np.bincount(held.train_y, minlength=k).argmax())
    logistic, note = _fit_logistic(schema, held, seed)
    baselines = [
        {
            "name": "prior_rate",
            "description": "every row given the training set's most frequent tier",
            "metrics": _class_metrics(y, np.full(len(y), majority), k, counts),
        },
        {
            "name": "logistic_regression",
            "description": note,
            "metrics": _class_metrics(y, np.asarray(logistic.argmax(axis=1)), k, counts),
        },
    ]
    if held.persistence is not None:
        baselines.insert(
            1,
            {
                "name": "persistence",
                "description": "next month's tier is this month's tier",
                "metrics": _class_metrics(y, held.persistence, k, counts),
            },
        )
    return _class_metrics(y, np.asarray(proba.argmax(axis=1)), k, counts), baselines


def _ranking_analyses(
    held: HeldOut, counts: FloatArray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    assert held.ranking is not None
    model_ap, popularity_ap = held.ranking
    model = {"map_at_7": stats.with_interval(lambda w: stats.weighted_mean(model_ap, w), counts)}
    popularity = {
        "map_at_7": stats.with_interval(lambda w: stats.weighted_mean(popularity_ap, w), counts)
    }
    baselines = [
        {
            "name": "popularity",
            "description": "products ranked by how often the training months added them",
            "metrics": popularity,
        }
    ]
    return model, baselines


def reason_code_agreement(
    booster: lgb.Booster, matrix: FloatArray, *, rows: int = REASON_SAMPLE_ROWS, seed: int
) -> dict[str, Any]:
    """How well the served reason codes (path attribution) match exact TreeSHAP on a sample:
    same top feature, same sign on TreeSHAP's top three, and the median relative L1 gap."""
    rng = np.random.default_rng(seed)
    sample = matrix
    if len(matrix) > rows:
        sample = matrix[np.sort(rng.choice(len(matrix), rows, replace=False))]
    path = PathExplainer.from_booster(booster, num_threads=THREADS).explain(sample)
    exact = exact_explanation(booster, sample, num_threads=THREADS)
    # The class explained is the predicted one (binary: the single output).
    chosen = exact.raw_score.argmax(axis=1)
    n = len(sample)
    a = path.contributions[np.arange(n), chosen]
    b = exact.contributions[np.arange(n), chosen, :-1]
    a = a[:, : b.shape[1]]
    same_top = np.abs(a).argmax(axis=1) == np.abs(b).argmax(axis=1)
    top1 = float(np.mean(same_top))
    # The rows acted on: the highest-scored tenth (of the predicted class's raw score).
    raw = exact.raw_score[np.arange(n), chosen]
    highest = raw >= np.quantile(raw, 0.9)
    top3 = np.argsort(-np.abs(b), axis=1, kind="stable")[:, :3]
    a3, b3 = np.take_along_axis(a, top3, axis=1), np.take_along_axis(b, top3, axis=1)
    signed = b3 != 0
    sign = float(np.mean(np.sign(a3[signed]) == np.sign(b3[signed]))) if signed.any() else 1.0
    l1 = np.abs(b).sum(axis=1)
    gap = np.abs(a - b).sum(axis=1)[l1 > 0] / l1[l1 > 0]
    return {
        "rows": n,
        "reference": METHOD_TREESHAP,
        "top1_agreement": round(top1, 4),
        "top1_agreement_highest_scored_tenth": round(float(np.mean(same_top[highest])), 4),
        "top3_sign_agreement": round(sign, 4),
        "median_relative_l1_gap": round(float(np.median(gap)) if len(gap) else 0.0, 4),
    }


def _command(task: Task, provenance: Provenance, seed: int, max_rounds: int | None) -> str:
    rounds = "" if max_rounds is None else f" (max_rounds={max_rounds} via train_bundled)"
    train = f"cvm train {task.value} --book BOOK --out DIR --seed {seed}{rounds}"
    g = provenance.generator
    if g is None:
        return f"{train}, BOOK being {provenance.source}"
    return f"cvm synth --customers {g['customers']} --months {g['months']} --seed {g['seed']} " + (
        f"--out BOOK && {train}"
    )


def build_card(
    *,
    manifest: Manifest,
    model_dir: Path,
    held: HeldOut,
    provenance: Provenance,
    seed: int,
    max_rounds: int | None = None,
    factors_in_data: list[str],
) -> dict[str, Any]:
    """Measure and assemble the card of the model saved in ``model_dir``; validated."""
    booster = lgb.Booster(model_file=str(model_dir / MODEL_FILE))
    task = manifest.task
    if task is Task.RECOMMENDATION:
        assert held.ranking is not None
        counts = stats.resample_counts(len(held.ranking[0]), seed=seed)
        model_metrics, baselines = _ranking_analyses(held, counts)
    else:
        counts = stats.resample_counts(len(held.test_y), seed=seed)
        trees = np.asarray(booster.predict(held.test_x), dtype=np.float64)
        proba = Calibrator(manifest.calibration)(trees) if trees.ndim == 1 else trees
        analyses = (
            _tier_analyses if manifest.objective is Objective.MULTICLASS else _binary_analyses
        )
        model_metrics, baselines = analyses(manifest.feature_schema, held, proba, counts, seed)
    rows = counts.shape[1]
    fairness: dict[str, Any] = {
        "applicable": False,
        "reason": "selection rates are defined for the binary tasks (churn, prospect)",
    }
    if manifest.objective is Objective.BINARY and held.factors:
        fairness = {
            "applicable": True,
            **fairness_report(held.test_y, proba, dict(held.factors), seed=seed),
        }
    commit, dirty = git_state()
    caveats = [
        f"Measured once, on {held.held_out}; performance on later months is monitored by "
        "backtests (cvm backtest) and drift (GET /v1/models/{task}/monitoring).",
    ]
    if provenance.synthetic:
        caveats.insert(
            0,
            "Trained and evaluated on SYNTHETIC data generated by CVM: the figures describe the "
            "simulator, not any bank's customers. Retrain on the bank's own data before use.",
        )
    card = {
        "card_version": "1",
        "model_details": {
            "task": task.value,
            "version": manifest.version,
            "algorithm": f"LightGBM {lgb.__version__} gradient-boosted trees",
            "objective": manifest.objective.value,
            "classes": list(manifest.classes),
            "num_trees": manifest.num_trees,
            "created_at": manifest.created_at.isoformat(),
            "model_sha256": file_sha256(model_dir / MODEL_FILE),
            "explanation_method": manifest.explanation_method,
            "owner": None,
        },
        "intended_use": {
            "primary_uses": PRIMARY_USES[task],
            "primary_users": ["relationship managers", "retention and marketing analysts"],
            "out_of_scope_uses": OUT_OF_SCOPE,
            "not_for_credit_decisions": True,
        },
        "factors": {
            "relevant": list(RELEVANT_FACTORS),
            "in_data": factors_in_data,
            "not_in_data": [f for f in RELEVANT_FACTORS if f not in factors_in_data],
        },
        "metrics": {
            "held_out": held.held_out,
            "rows": rows,
            "model": model_metrics,
            "bootstrap": {"resamples": counts.shape[0], "seed": seed, "level": stats.LEVEL},
        },
        "evaluation_data": {
            "split": manifest.split,
            "window": held.evaluation_window,
            "rows": len(held.test_y),
        },
        "training_data": {
            "provenance": "synthetic" if provenance.synthetic else "bank_supplied",
            "synthetic": provenance.synthetic,
            "source": provenance.source,
            "generator": provenance.generator,
            "data_sha256": manifest.data_fingerprint,
            "window": held.training_window,
            "rows": manifest.training_rows,
        },
        "quantitative_analyses": {
            "baselines": baselines,
            "reason_code_agreement": reason_code_agreement(
                booster, held.test_x, rows=held.reason_rows, seed=seed
            ),
            "fairness": fairness,
        },
        "ethical_considerations": ETHICS,
        "caveats_and_recommendations": caveats,
        "reproducibility": {
            "seed": seed,
            "max_rounds": max_rounds,
            "git_commit": commit,
            "git_dirty": dirty,
            "library_versions": library_versions(),
            "command": _command(task, provenance, seed, max_rounds),
        },
    }
    validate_card(card)
    return card
