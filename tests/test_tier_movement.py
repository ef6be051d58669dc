"""The tier-movement model: down/stay/up next month, read against persistence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.scoring.manifest import Manifest, Task
from app.scoring.model import ModelLoadError, ScoringModel
from app.scoring.registry import ModelRegistry
from app.training.movement import MOVEMENTS, TARGET, policy_features, train_tier_movement
from app.training.synth import TIER_CUTOFFS_EUR
from app.training.tuning import TuningOptions

FAST = TuningOptions(trials=2, folds=2, min_rounds=20, patience=10, max_rounds=300)
runner = CliRunner()


def test_the_policy_features_reproduce_the_tier_of_record(prepared_book: pd.DataFrame) -> None:
    """The trailing tier measure rebuilt from the book's columns gives the book's own tier,
    so the features say what the policy reads."""
    policy = policy_features(prepared_book)
    rows = prepared_book["lifecycle"].isin(["new", "existing"]) & policy["value_2m_ago"].notna()
    rebuilt = np.searchsorted(
        np.array(TIER_CUTOFFS_EUR), policy.loc[rows, "value_trailing"].to_numpy(), side="right"
    )
    assert rows.sum() > 1000
    assert np.mean(rebuilt == policy.loc[rows, "tier_now"].to_numpy()) > 0.99


@pytest.fixture(scope="module")
def movement_model(book_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tier-movement model trained once for the module (a training is seconds of CPU)."""
    out = tmp_path_factory.mktemp("movement") / "mv" / "1"
    train_tier_movement(book_path=book_path, out_dir=out, options=FAST)
    return out


def test_tier_movement_beats_persistence(movement_model: Path) -> None:
    manifest = Manifest.load(movement_model)
    assert manifest.classes == MOVEMENTS and manifest.target == TARGET
    assert manifest.extras["synthetic"] is True
    assert "SYNTHETIC" in manifest.data_source
    test = manifest.metrics["test"]
    assert sum(test["class_counts"]) == test["rows"] > 1000
    assert test["class_counts"][0] > 0 and test["class_counts"][2] > 0  # real moves to predict
    # Persistence's accuracy is the share that stays; the model must do at least as well, and
    # its probabilities must beat the movement rates with an interval clear of zero.
    assert test["persistence"]["accuracy"]["value"] == round(
        test["class_counts"][1] / test["rows"], 4
    )
    assert test["accuracy"]["value"] >= test["persistence"]["accuracy"]["value"]
    assert test["log_loss_gain_over_persistence"]["ci_low"] > 0
    assert test["macro_f1"] > test["persistence"]["macro_f1"]
    # The model loads through the ordinary scoring code.
    model = ScoringModel.load(movement_model)
    rows = np.zeros((3, len(model.schema.features)))
    assert model.predict(rows).shape == (3, len(MOVEMENTS))


def test_a_tier_movement_model_cannot_take_the_tier_slot(
    movement_model: Path, models_dir: Path, tmp_path: Path
) -> None:
    """The API returns a tier: a down/stay/up model put under models/tier stops the start-up
    instead of answering tiers with movements."""
    served = tmp_path / "models"
    for task in ("churn", "recommendation", "prospect", "tier"):
        shutil.copytree(models_dir / task, served / task)
    shutil.copytree(movement_model, served / "tier" / "2")
    with pytest.raises(ModelLoadError, match="trained, not served"):
        ModelRegistry.load(served)
    assert ModelRegistry.load(served, pinned={"tier": "1"}).version(Task.TIER) == "1"


def test_cvm_train_tier_movement(book_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "tier-movement" / "1"
    done = runner.invoke(
        cli,
        ["train", "tier-movement", "--book", str(book_path), "--trials", "1", "--out", str(out)],
    )
    assert done.exit_code == 0, done.output
    assert "persistence_accuracy" in done.output and "not served" in done.output
    assert Manifest.load(out).classes == MOVEMENTS
    refused = runner.invoke(
        cli, ["train", "tier-movement", "--data", str(book_path), "--out", str(tmp_path / "x")]
    )
    assert refused.exit_code == 2
    assert "tier-movement trains from a --book alone" in refused.output
