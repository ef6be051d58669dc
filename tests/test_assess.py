"""The assessment core: stages, bands, alert thresholds, eligibility, one row vs a block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.scoring.assess import (
    STAGE_CODE,
    AlertThresholds,
    Block,
    Options,
    Stage,
    assess_task,
    lifecycle_stages,
    stage_codes,
)
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.policies import EligibilityRules, ProductRule
from tests.rules_support import RULES

NAN = float("nan")


def codes(*stages: Stage) -> np.ndarray:
    return np.array([STAGE_CODE[s] for s in stages], dtype=np.int8)


def test_stages_come_from_tenure_unless_given() -> None:
    tenure = np.array([NAN, 0.0, 2.9, 3.0, 40.0, 40.0])
    given = stage_codes([None, None, None, None, None, "lost"])
    stages = lifecycle_stages(6, tenure_months=tenure, given=given)
    assert (
        stages.tolist()
        == codes(
            Stage.PROSPECT, Stage.NEW, Stage.NEW, Stage.EXISTING, Stage.EXISTING, Stage.LOST
        ).tolist()
    )
    unknown = lifecycle_stages(2, tenure_months=None, unknown=Stage.EXISTING)
    assert unknown.tolist() == codes(Stage.EXISTING, Stage.EXISTING).tolist()


def test_alert_threshold_never_crosses_for_prospects_or_lost_customers() -> None:
    probability = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.6])
    band_codes = np.array([2, 2, 2, 2, 1, 2], dtype=np.int8)
    stages = codes(
        Stage.PROSPECT, Stage.LOST, Stage.NEW, Stage.EXISTING, Stage.EXISTING, Stage.EXISTING
    )
    by_band = AlertThresholds(min_band="high").crossed(probability, band_codes, stages)
    assert by_band.tolist() == [False, False, True, True, False, True]
    by_medium = AlertThresholds(min_band="medium").crossed(probability, band_codes, stages)
    assert by_medium.tolist() == [False, False, True, True, True, True]
    by_probability = AlertThresholds(min_probability=0.5).crossed(probability, band_codes, stages)
    assert by_probability.tolist() == [False, False, True, True, False, True]


def test_eligibility_masks_every_rule_at_once() -> None:
    rules = EligibilityRules(
        products={
            "loan": ProductRule(min_age=18, max_age=70),
            "payroll": ProductRule(occupations=["employee"], requires=["current"]),
        },
        exclusive_groups=[["loan", "business_loan"]],
    )
    products = ("current", "loan", "business_loan", "payroll")
    held = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],  # adult employee with an account: all but what is held
            [0.0, 0.0, 0.0, 0.0],  # minor without an account: no loan, no payroll
            [1.0, 0.0, 1.0, 0.0],  # holds a business loan: the exclusive loan is barred
            [NAN, NAN, NAN, NAN],  # cold start: prerequisites unknown, not checked
            [1.0, 0.0, 0.0, 0.0],  # 71 and retired: too old for the loan, wrong occupation
        ]
    )
    cold = np.isnan(held).all(axis=1)
    allowed = rules.allowed(
        products,
        held=held,
        cold_start=cold,
        age=np.array([30.0, 16.0, 40.0, 30.0, 71.0]),
        occupation=["employee", "employee", "employee", None, "retired"],
    )
    assert allowed.tolist() == [
        [False, True, True, True],
        [True, False, True, False],
        [False, False, False, True],
        [True, True, True, True],
        [False, False, True, False],
    ]
    assert rules.without_conflicts(products, [1, 2, 3]) == [1, 3]


def test_the_cut_offs_belong_to_the_higher_band(models_dir: Path) -> None:
    model = ScoringModel.load(models_dir / "churn" / "1")
    thresholds = model.manifest.thresholds
    rows = np.zeros((1, len(model.schema.features)))
    assessment = assess_task(
        Task.CHURN,
        model,
        Block(ids=["x"], matrix=rows, stages=codes(Stage.EXISTING)),
        rules=RULES,
        options=Options(reasons=0),
    )
    probability = float(assessment.probability[0])
    expected = (
        "high"
        if probability >= thresholds["high"]
        else "medium"
        if probability >= thresholds["medium"]
        else "low"
    )
    assert assessment.band[0] == expected


@pytest.mark.parametrize("task", [Task.CHURN, Task.TIER, Task.RECOMMENDATION, Task.PROSPECT])
def test_one_customer_alone_is_assessed_as_within_a_block(
    task: Task, models_dir: Path, sample_rows: dict[str, pd.DataFrame]
) -> None:
    model = ScoringModel.load(models_dir / task.value / "1")
    frame = sample_rows["prospect" if task is Task.PROSPECT else "existing"].head(20)
    records: list[dict[str, Any]] = frame[model.schema.names].to_dict("records")  # type: ignore[assignment]
    matrix = model.schema.encode_rows(records)
    ids = [str(i) for i in range(len(frame))]
    stages = lifecycle_stages(
        len(ids), tenure_months=model.schema.values_of(matrix, "tenure_months")
    )
    options = Options(reasons=3)
    whole = assess_task(
        task, model, Block(ids=ids, matrix=matrix, stages=stages), rules=RULES, options=options
    )
    together = whole.results()
    for i in (0, 7, 19):
        alone = assess_task(
            task,
            model,
            Block(ids=[ids[i]], matrix=matrix[i : i + 1], stages=stages[i : i + 1]),
            rules=RULES,
            options=options,
        )
        assert_close(alone.results()[0], together[i])


def assert_close(got: object, expected: object) -> None:
    """Equal, floats within 1e-9 (LightGBM's one-row path sums in another order)."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            assert_close(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert_close(a, b)
    else:
        assert got == expected


def test_stored_features_read_the_same_for_one_row_and_for_many(models_dir: Path) -> None:
    model = ScoringModel.load(models_dir / "churn" / "1")
    schema = model.schema
    rng = np.random.default_rng(5)
    matrix = rng.integers(0, 3, size=(40, len(schema.features))).astype(np.float64)
    matrix[::7, ::3] = np.nan
    many = schema.decode_rows(matrix)
    one_by_one = [schema.decode_rows(matrix[i : i + 1])[0] for i in range(len(matrix))]
    assert many == one_by_one
    assert all(
        type(a) is type(b)
        for r, s in zip(many, one_by_one, strict=True)
        for a, b in zip(r.values(), s.values(), strict=True)
    )
