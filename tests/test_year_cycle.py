"""Derived features (``--year-cycle``): one definition in the schema, the same values whether a
table is encoded for training, a file for the batch scorer, or a request for the API."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.batch.service import read_batches, score_file
from app.cli.main import cli
from app.config import Settings
from app.http.app import create_app
from app.scoring.arrow import encode_batch
from app.scoring.assess import Options
from app.scoring.feature_schema import (
    Derivation,
    DerivedFrom,
    FeatureKind,
    FeatureSchema,
    FeatureSpec,
    month_number,
)
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.registry import ModelRegistry
from app.scoring.request_schemas import customer_model
from app.scoring.rules import rules_from_settings
from app.training.byod import encode_frame, infer_schema, read_table
from tests.db_support import migrated_sqlite_file

runner = CliRunner()
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def calendar_file(n: int = 400) -> pd.DataFrame:
    """Customers contacted on dates through the year; the summer ones leave more often."""
    rng = np.random.default_rng(3)
    month = rng.integers(1, 13, n)
    summer = (month >= 6) & (month <= 8)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "age": rng.integers(20, 80, n),
            "segment": rng.choice(["mass", "affluent"], n),
            "month": [MONTHS[m - 1] for m in month],
            "day": rng.integers(1, 29, n),
            "left": (rng.random(n) < np.where(summer, 0.7, 0.2)).astype(int),
        }
    )


def schema_of(month: FeatureSpec) -> FeatureSchema:
    """A month feature, a day feature and the two derived ones."""
    day = FeatureSpec(name="day", kind=FeatureKind.INTEGER, description="Day.")
    derived = [
        FeatureSpec(
            name=f"year_{function.value}",
            kind=FeatureKind.NUMBER,
            description="Time of year.",
            required=False,
            derived=DerivedFrom(function=function, month="month", day="day"),
        )
        for function in (Derivation.YEAR_ANGLE_SIN, Derivation.YEAR_ANGLE_COS)
    ]
    return FeatureSchema(features=(month, day, *derived))


def test_month_names_abbreviations_and_numbers_are_read_as_months() -> None:
    assert [month_number(x) for x in ("Jan", "january", "SEP", "12", "01")] == [1, 1, 9, 12, 1]
    assert [month_number(x) for x in ("ju", "13", "0", "smarch", "")] == [None] * 5


@pytest.mark.parametrize(
    "month",
    [
        FeatureSpec(
            name="month",
            kind=FeatureKind.CATEGORY,
            categories=("dec", "jan", "jul", "nonsense"),
            description="Month.",
            required=False,
        ),
        FeatureSpec(name="month", kind=FeatureKind.NUMBER, description="Month.", required=False),
    ],
    ids=["category", "number"],
)
def test_the_day_of_the_year_becomes_an_angle_and_bad_dates_are_missing(
    month: FeatureSpec,
) -> None:
    schema = schema_of(month)
    categorical = month.kind is FeatureKind.CATEGORY
    jan, jul, dec, nonsense = (1, 2, 0, 3) if categorical else (1, 7, 12, 13)
    rows: list[dict[str, Any]] = [
        {"month": "jan" if categorical else jan, "day": 1},
        {"month": "jul" if categorical else jul, "day": 2},  # day 182 of 365: half a turn
        {"month": "dec" if categorical else dec, "day": 31},
        {"month": None, "day": 5},
        {"month": "jan" if categorical else jan, "day": 40},
        {"month": "nonsense" if categorical else nonsense, "day": 5},
    ]
    matrix = schema.encode_rows(rows)
    assert matrix[0, 2:].tolist() == [0.0, 1.0]
    assert matrix[1, 2] == pytest.approx(math.sin(math.pi * 364 / 365))
    assert matrix[1, 3] == pytest.approx(-1.0, abs=1e-4)
    # December 31 is one day before January 1 on the circle, not 364 days after it.
    assert matrix[2, 2:].tolist() == pytest.approx(
        [math.sin(-2 * math.pi / 365), math.cos(2 * math.pi / 365)]
    )
    assert np.isnan(matrix[3:, 2:]).all()


def test_derived_features_must_read_inputs_and_be_optional_numbers() -> None:
    month = FeatureSpec(name="month", kind=FeatureKind.INTEGER, description="Month.")
    with pytest.raises(ValueError, match="derived from 'weekday': not an input"):
        FeatureSchema(
            features=(
                month,
                FeatureSpec(
                    name="angle",
                    kind=FeatureKind.NUMBER,
                    description="Angle.",
                    required=False,
                    derived=DerivedFrom(
                        function=Derivation.YEAR_ANGLE_SIN, month="month", day="weekday"
                    ),
                ),
            )
        )
    with pytest.raises(ValueError, match="must be an optional number"):
        FeatureSpec(
            name="angle",
            kind=FeatureKind.NUMBER,
            description="Angle.",
            derived=DerivedFrom(function=Derivation.YEAR_ANGLE_SIN, month="month", day="day"),
        )


def test_training_files_and_requests_encode_the_same_derived_values(tmp_path: Path) -> None:
    frame = calendar_file(60)
    frame.loc[3, "month"] = None  # a missing month: derived values missing, row still valid
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    features = read_table(data)[["age", "segment", "month", "day"]]
    schema = infer_schema(features, [], data.name, ("month", "day"))
    assert [f.name for f in schema.inputs] == ["age", "segment", "month", "day"]
    assert schema.names[4:] == ["month_day_year_sin", "month_day_year_cos"]
    trained = encode_frame(features, schema)
    assert np.isnan(trained[3, 4:]).all() and not np.isnan(np.delete(trained, 3, 0)).any()

    served, problems = encode_batch(schema, next(read_batches(data)))
    assert problems == [None] * len(frame)
    np.testing.assert_array_equal(served, trained)

    records: list[dict[str, Any]] = [
        {
            str(k): (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
            for k, v in r.items()
        }
        for r in features.to_dict(orient="records")
    ]
    np.testing.assert_array_equal(schema.encode_rows(records[:1]), trained[:1])  # row-wise path
    np.testing.assert_array_equal(schema.encode_rows(records), trained)  # column-wise path
    columns = {name: [r[name] for r in records] for name in features.columns}
    np.testing.assert_array_equal(schema.encode_columns(columns), trained)

    # Callers send the inputs only: the request model has no field for a derived feature.
    request = customer_model(Task.CHURN, schema)
    assert "month_day_year_sin" not in request.model_fields
    assert {"age", "segment", "month", "day"} <= set(request.model_fields)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.assign(month=f["month"].replace("jan", "janvier?")),
            "--year-cycle month column 'month' holds values that are not months: ['janvier?']",
        ),
        (
            lambda f: f.assign(day=f["day"] + 10),
            "--year-cycle day column 'day' must hold days of the month, 1-31",
        ),
        (
            lambda f: f.drop(columns=["day"]),
            "column(s) not in customers.csv: ['day']",
        ),
    ],
    ids=["not-a-month", "not-a-day", "no-day-column"],
)
def test_year_cycle_errors_name_the_column(
    tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    data = tmp_path / "customers.csv"
    edit(calendar_file(60)).to_csv(data, index=False)
    out = tmp_path / "model"
    result = runner.invoke(
        cli,
        [
            *("train", "churn", "--data", str(data), "--target", "left"),
            *("--id", "customer_id", "--year-cycle", "month", "day", "--out", str(out)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.slow
def test_a_model_with_a_year_cycle_scores_alike_through_the_api_and_the_batch(
    tmp_path: Path, models_dir: Path, settings_for: Callable[..., Settings]
) -> None:
    served = tmp_path / "models"
    for task in ("tier", "recommendation", "prospect"):
        shutil.copytree(models_dir / task, served / task)
    frame = calendar_file()
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    model_dir = served / "churn" / "1"
    trained = runner.invoke(
        cli,
        [
            *("train", "churn", "--data", str(data), "--target", "left"),
            *("--id", "customer_id", "--year-cycle", "month", "day"),
            *("--trials", "1", "--out", str(model_dir)),
        ],
    )
    assert trained.exit_code == 0, trained.output
    model = ScoringModel.load(model_dir)
    assert model.booster.feature_importance()[-2:].sum() > 0  # the model uses the time of year
    batch = tmp_path / "scores.parquet"
    score_file(
        model,
        input_path=data,
        output_path=batch,
        rules=rules_from_settings(Settings()),
        options=Options(reasons=0),
    )
    by_file = pq.read_table(batch).to_pandas().set_index("customer_id")["probability"]

    url = migrated_sqlite_file(tmp_path / "cvm.db")
    settings = settings_for(url).model_copy(update={"models_dir": served})
    rows = frame.head(20)
    customers = [
        {
            "customer_id": str(customer_id),
            "age": int(age),
            "segment": str(segment),
            "month": str(month),
            "day": int(day),
        }
        for customer_id, age, segment, month, day in zip(
            rows["customer_id"],
            rows["age"],
            rows["segment"],
            rows["month"],
            rows["day"],
            strict=True,
        )
    ]
    with TestClient(create_app(settings, ModelRegistry.load(served))) as client:
        one = client.post("/v1/churn/scores", json={"customers": customers[:1]})
        many = client.post("/v1/churn/scores", json={"customers": customers})
        columns = client.post(
            "/v1/churn/scores",
            json={"columns": {k: [c[k] for c in customers] for k in customers[0]}},
        )
        refused = client.post(
            "/v1/churn/scores",
            json={"customers": [{**customers[0], "month_day_year_sin": 0.5}]},
        )
    for response in (one, many, columns):
        assert response.status_code == 200, response.text
    expected = by_file.reindex([c["customer_id"] for c in customers]).to_numpy()
    for response in (one, many, columns):
        got = [r["probability"] for r in response.json()["results"]]
        np.testing.assert_allclose(got, expected[: len(got)], rtol=0, atol=1e-6)
    assert refused.status_code == 422
    assert "month_day_year_sin" in refused.text


@pytest.mark.parametrize(
    "args",
    [
        ("churn", "--book", "var/book"),
        ("recommendation", "--data", "panel.csv", "--id", "id", "--time", "m", "--product", "p"),
    ],
    ids=["book", "panel"],
)
def test_year_cycle_is_refused_where_it_would_be_ignored(tmp_path: Path, args: tuple[str]) -> None:
    out = tmp_path / "model"
    result = runner.invoke(cli, ["train", *args, "--year-cycle", "month", "day", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "--year-cycle reads two columns of your own file" in " ".join(result.output.split())
    assert not out.exists()
