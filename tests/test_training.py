"""Training on a small book: real signal, honest splits, manifests that round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.scoring.manifest import Manifest, Task
from app.scoring.model import ScoringModel
from app.training.features import HORIZON_MONTHS, build_task_frame, schema_for
from app.training.synth import PRODUCTS, TIERS
from app.training.train import TrainingDataError, time_split


def manifest(models_dir: Path, task: Task) -> Manifest:
    return Manifest.load(models_dir / task.value / "1")


def test_churn_model_finds_the_signal(models_dir: Path) -> None:
    test = manifest(models_dir, Task.CHURN).metrics["test"]
    assert test["roc_auc"] > 0.75
    assert test["pr_auc"] > 2 * test["positive_rate"]  # far better than random ranking
    assert 0 <= test["brier"] < test["positive_rate"]  # better than always saying the base rate
    assert sum(row["count"] for row in test["calibration"]) == test["rows"]


def test_tier_model_metrics(models_dir: Path) -> None:
    test = manifest(models_dir, Task.TIER).metrics["test"]
    assert test["accuracy"] > 0.85
    assert test["macro_f1"] > 0.6
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (len(TIERS), len(TIERS))
    assert matrix.sum() == test["rows"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(test["accuracy"], abs=1e-4)


def test_recommendation_beats_popularity_free_guessing(models_dir: Path) -> None:
    test = manifest(models_dir, Task.RECOMMENDATION).metrics["test"]
    for group in ("all_customers", "new_customers"):
        assert test[group]["customers"] > 0
        # Guessing 7 of 13 products at random gives MAP@7 of roughly 0.3.
        assert test[group]["map_at_7"] > 0.35
        assert 0 < test[group]["hit_rate_at_3"] <= 1


def test_prospect_model_and_value(models_dir: Path) -> None:
    found = manifest(models_dir, Task.PROSPECT)
    test = found.metrics["test"]
    assert test["roc_auc"] > 0.6
    assert test["value_of_converts"]["spearman"] > 0.2
    assert found.value_model_file is not None
    assert found.thresholds["high"] >= found.thresholds["medium"]


def test_split_is_time_ordered_with_a_label_gap(models_dir: Path) -> None:
    split = manifest(models_dir, Task.CHURN).split
    assert split["method"] == "time"
    assert split["train_months"][1] + HORIZON_MONTHS == split["validation_month"]
    assert split["validation_month"] + HORIZON_MONTHS == split["test_month"]


def test_time_split_refuses_a_short_book() -> None:
    with pytest.raises(TrainingDataError, match="too short"):
        time_split(np.array([3, 4, 5]))


def test_manifest_round_trip_and_contents(models_dir: Path, tmp_path: Path) -> None:
    original = manifest(models_dir, Task.CHURN)
    original.save(tmp_path)
    assert Manifest.load(tmp_path) == original
    raw = json.loads((models_dir / "churn" / "1" / "manifest.json").read_text())
    assert raw["schema"]["features"][0]["name"] == "age"
    assert raw["lightgbm_version"] and len(raw["data_fingerprint"]) == 64
    assert raw["explanation_method"] == "path_attribution_saabas"
    assert raw["thresholds"]["high"] > raw["thresholds"]["medium"]


def test_model_file_matches_its_schema(models_dir: Path) -> None:
    for task in Task:
        model = ScoringModel.load(models_dir / task.value / "1")
        assert model.booster.feature_name() == model.schema.names
        assert model.schema == schema_for(task)


def test_retraining_from_the_recorded_fingerprint_gives_the_same_model(
    tmp_path: Path, models_dir: Path
) -> None:
    """Only what the card records (the generator's parameters, the seed, the rounds) is used:
    a fresh book from them, trained again, gives the same data hash and model.txt bytes."""
    from app.training.card import file_sha256
    from app.training.synth import write_book
    from app.training.train import train_bundled

    first = manifest(models_dir, Task.CHURN)
    assert first.card is not None
    generator = first.card["training_data"]["generator"]
    recorded = first.card["reproducibility"]
    book = write_book(
        out_dir=tmp_path / "book",
        customers=generator["customers"],
        months=generator["months"],
        seed=generator["seed"],
    )
    again = train_bundled(
        Task.CHURN,
        book_path=book,
        out_dir=tmp_path / "churn" / "1",
        seed=recorded["seed"],
        max_rounds=recorded["max_rounds"],
    )
    assert again.data_fingerprint == first.card["training_data"]["data_sha256"]
    assert (
        file_sha256(tmp_path / "churn" / "1" / "model.txt")
        == (first.card["model_details"]["model_sha256"])
    )
    assert again.metrics == first.metrics


def test_churn_labels_look_three_months_ahead(prepared_book: pd.DataFrame) -> None:
    frame = build_task_frame(prepared_book, Task.CHURN)
    leavers = set(prepared_book.loc[prepared_book["lifecycle"] == "lost", "customer_id"])
    positives = frame.customer_id[frame.target == 1]
    assert set(positives) <= leavers
    assert frame.month.max() <= prepared_book["month"].max() - HORIZON_MONTHS


def test_recommendation_rows_are_real_additions(prepared_book: pd.DataFrame) -> None:
    frame = build_task_frame(prepared_book, Task.RECOMMENDATION)
    assert set(frame.target.unique()) <= set(range(len(PRODUCTS)))
    product = PRODUCTS[int(frame.target.iloc[0])]
    flag = frame.features[f"has_{product}"].iloc[0]
    assert flag == 0.0  # not held in the month the features describe
