"""Training inside the training window: folds, early stopping with a floor, the search, the
calibration choice (none, isotonic, Venn-ABERS), the served calibration, and a test split the
tuning never sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from sklearn.isotonic import IsotonicRegression

from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import (
    Calibration,
    CalibrationMethod,
    Calibrator,
    Manifest,
    Objective,
    Task,
)
from app.scoring.model import ScoringModel
from app.training.byod import DataSpec, train_from_file
from app.training.calibration import (
    choose_calibration,
    fit_isotonic,
    fit_venn_abers,
    log_loss,
)
from app.training.train import BASE_PARAMS
from app.training.tuning import (
    TuningOptions,
    candidate_configs,
    tune,
    validation_folds,
)

FAST = TuningOptions(trials=2, folds=2, min_rounds=20, patience=10, max_rounds=300)


def customers(n: int, seed: int) -> pd.DataFrame:
    """A bank-shaped table with a real signal, a category and a time order."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, size=n)
    balance = rng.gamma(2.0, 20_000.0, size=n)
    country = rng.choice(["fr", "de", "es"], size=n)
    active = rng.integers(0, 2, size=n)
    logit = 0.06 * (age - 45) - 1.2 * active + 0.8 * (country == "de") - 1.0
    left = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "customer_no": np.arange(1, n + 1),
            "age": age,
            "balance": balance.round(2),
            "country": country,
            "active": active,
            "left": left,
        }
    )


SPEC = DataSpec(target="left", id_column="customer_no")


def test_venn_abers_matches_the_two_isotonic_fits_by_hand() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 2)  # ties on purpose
    labels = (rng.random(60) < scores**2).astype(np.int64)
    found = fit_venn_abers(scores, labels)
    for knot, value in zip(found.knots, found.values, strict=True):
        fitted = []
        for label in (0, 1):
            model = IsotonicRegression(out_of_bounds="clip")
            model.fit(np.append(scores, knot), np.append(labels, label).astype(float))
            fitted.append(float(model.predict([knot])[0]))
        p0, p1 = fitted
        assert p0 <= p1
        assert value == pytest.approx(np.clip(p1 / (1 - p0 + p1), 1e-4, 1 - 1e-4), abs=1e-12)
    assert found.knots == tuple(np.unique(scores))
    assert list(found.values) == sorted(found.values)  # monotone


def test_a_miscalibrated_score_is_recalibrated_and_a_calibrated_one_may_stay() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    truth = rng.random(n)
    labels = (rng.random(n) < truth).astype(np.int64)
    fold = np.arange(n) % 3
    overconfident = np.clip(truth**3, 1e-3, 1)  # ranks right, probabilities wrong
    choice = choose_calibration(overconfident, labels, fold, time_ordered=False)
    assert choice.method in {"isotonic", "venn_abers"}
    assert choice.log_loss[choice.method] < choice.log_loss["none"] - 0.02
    fresh_truth = rng.random(n)
    fresh = (rng.random(n) < fresh_truth).astype(np.int64)
    calibrate = Calibrator(choice.calibration)
    assert log_loss(fresh, calibrate(fresh_truth**3)) < log_loss(fresh, fresh_truth**3) - 0.02
    # The choice is the lowest held-out loss, "none" included: it wins when nothing beats it.
    honest = choose_calibration(truth, labels, fold, time_ordered=False)
    assert honest.log_loss[honest.method] == min(honest.log_loss.values())
    assert set(honest.log_loss) == {"none", "isotonic", "venn_abers"}


def test_out_of_time_calibration_is_fitted_on_earlier_folds_only() -> None:
    rng = np.random.default_rng(8)
    scores = rng.random(900)
    labels = (rng.random(900) < scores).astype(np.int64)
    fold = np.repeat([0, 1, 2], 300)
    choice = choose_calibration(scores, labels, fold, time_ordered=True)
    assert choice.evaluated_rows == 600  # the first fold has no earlier fold to learn from
    assert "earlier folds" in choice.scheme


def test_isotonic_map_keeps_probabilities_off_zero_and_one() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1])
    found = fit_isotonic(scores, labels)
    assert min(found.values) > 0 and max(found.values) < 1
    assert np.isfinite(log_loss(labels, Calibrator(found)(scores)))


def test_rolling_origin_folds_validate_only_on_later_rows() -> None:
    time = np.random.default_rng(1).permutation(1000)
    labels = np.zeros(1000, dtype=np.int64)
    folds, scheme = validation_folds(labels, time, folds=3, seed=7)
    assert "rolling origin" in scheme
    previous_end = -1
    for fit, valid in folds:
        assert time[fit].max() < time[valid].min()
        assert time[valid].min() > previous_end
        previous_end = int(time[valid].max())
    assert [len(f) for f, _ in folds] == [400, 600, 800]


def test_the_search_is_seeded_and_starts_from_the_house_configuration() -> None:
    assert candidate_configs(7, 6) == candidate_configs(7, 6)
    assert candidate_configs(7, 6)[0] == {}
    assert candidate_configs(7, 6) != candidate_configs(8, 6)
    assert len({tuple(c.items()) for c in candidate_configs(7, 6)}) == 6


def _schema(n_features: int) -> FeatureSchema:
    return FeatureSchema(
        features=tuple(
            FeatureSpec(name=f"x{i}", kind=FeatureKind.NUMBER, description="x")
            for i in range(n_features)
        )
    )


def test_early_stopping_cannot_collapse_on_noise() -> None:
    """Labels without any signal: the validation loss rises from the first tree, yet the
    chosen round count stays at the floor, and the refit uses it."""
    rng = np.random.default_rng(11)
    matrix = rng.normal(size=(1200, 4))
    labels = (rng.random(1200) < 0.2).astype(np.int64)
    tuned = tune(
        objective=Objective.BINARY,
        num_classes=2,
        schema=_schema(4),
        matrix=matrix,
        labels=labels,
        base_params=BASE_PARAMS,
        time=np.arange(1200),
        seed=7,
        options=FAST,
    )
    assert all(r >= FAST.min_rounds for trial in tuned.trials for r in trial.rounds)
    assert tuned.rounds >= FAST.min_rounds
    assert tuned.booster.current_iteration() == tuned.rounds
    assert "rolling origin" in tuned.scheme


def _train(tmp_path: Path, frame: pd.DataFrame, name: str, spec: DataSpec = SPEC) -> Manifest:
    data = tmp_path / f"{name}.csv"
    frame.to_csv(data, index=False)
    return train_from_file(
        Task.CHURN, data_path=data, spec=spec, out_dir=tmp_path / name / "1", tuning=FAST
    )


def _noisy_test_rows(frame: pd.DataFrame, manifest: Manifest, spec: DataSpec) -> pd.DataFrame:
    """The same file with every feature of the test rows shuffled among them: no signal left,
    same categories and ranges (so the schema inferred from the whole file is unchanged)."""
    from app.training.byod import binary_target, split_rows

    labels = binary_target(frame[spec.target], spec.positive).to_numpy()
    time = frame[spec.time_column] if spec.time_column else None
    test = split_rows(labels, time, 7).test
    assert test.sum() == manifest.metrics["test"]["rows"]
    noisy = frame.copy()
    rng = np.random.default_rng(99)
    for column in ("age", "balance", "country", "active"):
        values = noisy.loc[test, column].to_numpy()
        noisy.loc[test, column] = rng.permutation(values)
    return noisy


@pytest.mark.parametrize("time_column", [None, "customer_no"])
def test_tuning_never_sees_the_test_split(tmp_path: Path, time_column: str | None) -> None:
    spec = DataSpec(target="left", id_column="customer_no", time_column=time_column)
    frame = customers(1600, seed=2)
    clean = _train(tmp_path, frame, "clean", spec)
    noisy = _train(tmp_path, _noisy_test_rows(frame, clean, spec), "noisy", spec)
    assert clean.split["tuning"] == noisy.split["tuning"]
    assert clean.calibration == noisy.calibration
    assert clean.thresholds == noisy.thresholds
    model = (tmp_path / "clean" / "1" / "model.txt").read_text()
    assert model == (tmp_path / "noisy" / "1" / "model.txt").read_text()
    # ... while the test figures, scored once at the end, do see the noise.
    assert clean.metrics["test"]["roc_auc"] > 0.7
    assert noisy.metrics["test"]["roc_auc"] < clean.metrics["test"]["roc_auc"] - 0.1


def test_the_trained_model_serves_its_calibration(tmp_path: Path) -> None:
    manifest = _train(tmp_path, customers(1500, seed=4), "served")
    assert manifest.training_rows == round(1500 * 0.85)
    tuning = manifest.split["tuning"]
    assert len(tuning["trials"]) == FAST.trials
    assert tuning["calibration"]["method"] in {"none", "isotonic", "venn_abers"}
    assert manifest.num_trees == tuning["rounds"]
    model = ScoringModel.load(tmp_path / "served" / "1")
    rows = np.random.default_rng(0).normal(size=(50, len(model.schema.features))) ** 2 * 30
    trees = np.asarray(model.booster.predict(rows))
    served = model.predict(rows)
    np.testing.assert_allclose(served, Calibrator(manifest.calibration)(trees))
    np.testing.assert_allclose(model.predict(rows[:1]), served[:1], rtol=0, atol=1e-9)
    raw = model.raw_scores(rows)
    np.testing.assert_allclose(model.probabilities_from_raw(raw), served, rtol=0, atol=1e-9)


def test_a_calibrated_manifest_is_served_through_its_map(tmp_path: Path) -> None:
    _train(tmp_path, customers(800, seed=6), "mapped")
    directory = tmp_path / "mapped" / "1"
    manifest = Manifest.load(directory)
    halving = Calibration(method=CalibrationMethod.ISOTONIC, knots=(0.0, 1.0), values=(0.0, 0.5))
    manifest.model_copy(update={"calibration": halving}).save(directory)
    model = ScoringModel.load(directory)
    rows = np.random.default_rng(1).random((20, len(model.schema.features))) * 50
    trees = np.asarray(model.booster.predict(rows))
    np.testing.assert_allclose(model.predict(rows), trees / 2)
    np.testing.assert_allclose(model.predict(rows[:1]), trees[:1] / 2, atol=1e-9)


def test_a_calibration_must_be_monotone_and_binary() -> None:
    with pytest.raises(pydantic.ValidationError):
        Calibration(method=CalibrationMethod.ISOTONIC, knots=(0.5, 0.2), values=(0.1, 0.2))
    with pytest.raises(pydantic.ValidationError):
        Calibration(method=CalibrationMethod.ISOTONIC, knots=(0.1, 0.2), values=(0.1, 1.2))
