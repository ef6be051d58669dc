"""Model cards: written by training, valid against the schema, honest about their data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from app.modelops import stats
from app.modelops.cards import InvalidModelCard, card_errors, data_notice, validate_card
from app.scoring.manifest import Manifest, Task
from app.training.card import file_sha256
from app.training.synth import book_generator, read_book


def card_of(models_dir: Path, task: Task) -> dict[str, Any]:
    card = Manifest.load(models_dir / task.value / "1").card
    assert card is not None
    return card


@pytest.mark.parametrize("task", list(Task))
def test_every_trained_model_has_a_valid_card(models_dir: Path, task: Task) -> None:
    card = card_of(models_dir, task)
    assert card_errors(card) == []
    details = card["model_details"]
    assert details["model_sha256"] == file_sha256(models_dir / task.value / "1" / "model.txt")
    assert card["intended_use"]["not_for_credit_decisions"] is True
    assert any("credit" in use for use in card["intended_use"]["out_of_scope_uses"])
    training = card["training_data"]
    assert training["synthetic"] is True and training["generator"]["seed"] == 11
    assert training["window"]["last_month"] < card["evaluation_data"]["window"]["first_month"]
    assert card["factors"]["not_in_data"] == ["gender"]  # the synthetic book has none
    versions = card["reproducibility"]["library_versions"]
    assert {"python", "lightgbm", "numpy", "scikit-learn"} <= set(versions)
    for estimate in card["metrics"]["model"].values():
        assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
    agreement = card["quantitative_analyses"]["reason_code_agreement"]
    assert 0 < agreement["top1_agreement"] <= 1 and agreement["median_relative_l1_gap"] >= 0
    assert 0 <= agreement["top1_agreement_highest_scored_tenth"] <= 1


def test_baselines_are_scored_on_the_same_rows(models_dir: Path) -> None:
    churn = card_of(models_dir, Task.CHURN)
    baselines = {b["name"]: b["metrics"] for b in churn["quantitative_analyses"]["baselines"]}
    assert baselines["prior_rate"]["roc_auc"]["value"] == 0.5
    assert baselines["logistic_regression"]["roc_auc"]["value"] > 0.6
    tier = card_of(models_dir, Task.TIER)
    names = [b["name"] for b in tier["quantitative_analyses"]["baselines"]]
    assert names == ["prior_rate", "persistence", "logistic_regression"]
    recommendation = card_of(models_dir, Task.RECOMMENDATION)
    (popularity,) = recommendation["quantitative_analyses"]["baselines"]
    test = Manifest.load(models_dir / "recommendation" / "1").metrics["test"]
    assert popularity["metrics"]["map_at_7"]["value"] == pytest.approx(
        test["popularity_baseline_all_customers"]["map_at_7"], abs=1e-4
    )
    assert recommendation["metrics"]["model"]["map_at_7"]["value"] == pytest.approx(
        test["all_customers"]["map_at_7"], abs=1e-4
    )


def test_the_schema_rejects_a_card_that_hides_its_limits(models_dir: Path) -> None:
    card = card_of(models_dir, Task.CHURN)
    for path, value in [
        (("intended_use", "not_for_credit_decisions"), False),
        (("training_data", "synthetic"), "maybe"),
        (("model_details", "model_sha256"), "abc"),
    ]:
        broken = copy.deepcopy(card)
        broken[path[0]][path[1]] = value
        errors = card_errors(broken)
        assert errors and path[1] in errors[0]
    missing = {k: v for k, v in card.items() if k != "ethical_considerations"}
    with pytest.raises(InvalidModelCard, match="ethical_considerations"):
        validate_card(missing)


def test_a_book_not_made_by_cvm_synth_is_the_banks_own(book_path: Path, tmp_path: Path) -> None:
    from app.training.train import train_bundled

    assert book_generator(book_path) is not None
    own = tmp_path / "own.parquet"
    pq.write_table(read_book(book_path).replace_schema_metadata(None), own)
    assert book_generator(own) is None
    manifest = train_bundled(Task.PROSPECT, book_path=own, out_dir=tmp_path / "m", max_rounds=20)
    assert manifest.card is not None
    assert manifest.card["training_data"]["provenance"] == "bank_supplied"
    assert "supplied by the bank" in data_notice(manifest)


def test_bootstrap_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = np.round(0.3 * y + rng.random(400), 2)  # rounded: ties included
    counts = stats.resample_counts(400, resamples=5, seed=1)
    auc = stats.weighted_auc(y, score, counts)
    brier = stats.weighted_mean((score.clip(0, 1) - y) ** 2, counts)
    for b in range(5):
        weights = counts[b]
        assert auc[b] == pytest.approx(roc_auc_score(y, score, sample_weight=weights), abs=1e-12)
        assert brier[b] == pytest.approx(
            brier_score_loss(y, score.clip(0, 1), sample_weight=weights), abs=1e-12
        )
    summary = stats.binary_summary(y, score.clip(0, 1), counts)
    clipped_auc = roc_auc_score(y, score.clip(0, 1))
    assert summary["roc_auc"]["value"] == pytest.approx(clipped_auc, abs=1e-4)
    lift = stats.top_decile_lift(y, score, np.ones((1, 400)))[0]
    top = np.argsort(-score, kind="stable")[:40]
    assert lift == pytest.approx(y[top].mean() / y.mean())


def test_approval_needs_a_valid_card(models_dir: Path) -> None:
    from app.modelops.service import evidence_missing

    manifest = Manifest.load(models_dir / "churn" / "1").model_dump(mode="json", by_alias=True)
    assert evidence_missing(manifest) == []
    assert evidence_missing({**manifest, "card": None}) == [
        "model card: no card in the manifest (retrain with cvm train)"
    ]
    broken = {**manifest, "card": {**manifest["card"], "reproducibility": {}}}
    (missing,) = evidence_missing(broken)
    assert "does not follow its schema" in missing and "reproducibility" in missing


def test_fairness_flags_a_four_fifths_breach_and_small_groups() -> None:
    from app.modelops.fairness import factor_report

    rng = np.random.default_rng(8)
    groups = np.array(["a"] * 2000 + ["b"] * 2000 + ["c"] * 100)
    selected = np.r_[rng.random(2000) < 0.30, rng.random(2000) < 0.10, rng.random(100) < 0.5]
    y = rng.integers(0, 2, len(groups))
    counts = stats.resample_counts(len(groups), resamples=100, seed=2)
    report = factor_report(y, selected, groups, counts)
    by_group = {g["group"]: g for g in report["groups"]}
    assert by_group["c"]["status"] == "too_small" and "selection_rate" not in by_group["c"]
    assert by_group["a"]["selection_rate"]["value"] == pytest.approx(selected[:2000].mean(), 1e-3)
    assert report["selection_rate_ratio"] == pytest.approx(
        selected[2000:4000].mean() / selected[:2000].mean(), abs=1e-3
    )
    assert report["status"] == "amber" and by_group["b"]["interval_excludes_parity"]
    fair = factor_report(y, rng.random(len(groups)) < 0.2, groups, counts)
    assert fair["status"] == "green" and fair["selection_rate_ratio"] > 0.8


def test_the_card_reports_fairness_by_the_factors_in_the_data(models_dir: Path) -> None:
    fairness = card_of(models_dir, Task.CHURN)["quantitative_analyses"]["fairness"]
    assert fairness["applicable"] is True
    assert set(fairness["factors"]) == {"age band", "region"}
    for factor in fairness["factors"].values():
        assert all(g["rows"] < 500 for g in factor["groups"] if g["status"] == "too_small")
    tier = card_of(models_dir, Task.TIER)["quantitative_analyses"]["fairness"]
    assert tier["applicable"] is False
