"""Feature schema, model wrapper, registry and the file scorer."""

from __future__ import annotations

import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from app.batch.service import score_file
from app.scoring.arrow import MissingColumnsError, check_columns, encode, encode_batch
from app.scoring.assess import Options
from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import Task
from app.scoring.model import ModelLoadError, ScoringModel
from app.scoring.registry import ModelRegistry, available_versions
from app.training.features import schema_for
from tests.rules_support import RULES


def test_feature_spec_consistency_is_enforced() -> None:
    with pytest.raises(ValidationError, match="needs its categories"):
        FeatureSpec(name="x", kind=FeatureKind.CATEGORY, description="d")
    with pytest.raises(ValidationError, match="only categorical"):
        FeatureSpec(name="x", kind=FeatureKind.NUMBER, categories=("a",), description="d")
    with pytest.raises(ValidationError, match="minimum above maximum"):
        FeatureSpec(name="x", kind=FeatureKind.NUMBER, minimum=2, maximum=1, description="d")
    with pytest.raises(ValidationError):
        FeatureSpec(name="not valid", kind=FeatureKind.NUMBER, description="d")
    spec = FeatureSpec(name="x", kind=FeatureKind.NUMBER, description="d")
    with pytest.raises(ValidationError, match="duplicate feature names"):
        FeatureSchema(features=(spec, spec))


def test_reason_texts_read_naturally() -> None:
    schema = schema_for(Task.CHURN)
    assert (
        schema["wealth_change_3m_pct"].reason_text(-40.0)
        == "wealth holdings changed -40% in 3 months"
    )
    assert schema["savings_balance"].reason_text(12500.0) == "savings of 12,500 EUR"
    assert schema["occupation"].reason_text(4.0) == "occupation: retired"
    assert schema["open_complaint"].reason_text(1.0) == "open complaint: yes"
    assert schema["card_spend"].reason_text(math.nan).startswith("not on file yet")


def test_values_are_worded_by_kind_and_unit() -> None:
    money = FeatureSpec(name="savings", kind=FeatureKind.NUMBER, description="d", unit="EUR")
    count = FeatureSpec(name="products", kind=FeatureKind.INTEGER, description="d", unit="count")
    share = FeatureSpec(name="change", kind=FeatureKind.NUMBER, description="d", unit="%")
    flag = FeatureSpec(name="flag", kind=FeatureKind.BOOLEAN, description="d")
    assert [money.describe_value(v) for v in (12500.0, 1234.567, math.nan)] == [
        "12,500 EUR",
        "1,234.57 EUR",
        "unknown",
    ]
    assert [count.describe_value(3.0), share.describe_value(-39.6)] == ["3", "-40%"]
    assert [flag.describe_value(v) for v in (1.0, 0.0, math.nan)] == ["yes", "no", "unknown"]


def test_encode_rows_and_columns_agree() -> None:
    schema = schema_for(Task.PROSPECT)
    rows = [
        {
            "age": 30,
            "income": 40000.0,
            "occupation": "employee",
            "region": "north",
            "channel": "web",
            "campaign_contacts": 1,
            "web_visits": 3,
            "campaign_contacts_3m": 2,
            "web_visits_3m": 5,
        },
        {
            "age": 61,
            "income": 90000.0,
            "occupation": "retired",
            "region": "capital",
            "channel": "referral",
            "campaign_contacts": 0,
            "web_visits": 0,
            "campaign_contacts_3m": 0,
            "web_visits_3m": 1,
        },
    ]
    by_rows = schema.encode_rows(rows)
    by_columns = schema.encode_columns({k: [r[k] for r in rows] for k in rows[0]})
    np.testing.assert_array_equal(by_rows, by_columns)
    assert by_rows[1, schema.names.index("occupation")] == 4.0  # "retired" is the 5th category
    assert schema.validate_matrix(by_rows) == [None, None]


def test_row_wise_and_column_wise_encodings_agree(prepared_book: pd.DataFrame) -> None:
    schema = schema_for(Task.RECOMMENDATION)
    rows: list[dict[str, Any]] = [
        dict(zip(schema.names, values, strict=True))
        for values in prepared_book.head(40)[schema.names].itertuples(index=False)
    ]
    for row in rows[::3]:
        row["card_spend"] = None  # optional features may be missing
    large = schema.encode_rows(rows)  # above the row-wise limit: by column
    small = np.vstack([schema.encode_rows(rows[i : i + 8]) for i in range(0, 40, 8)])
    np.testing.assert_array_equal(large, small)
    assert np.isnan(large[0, schema.names.index("card_spend")])


def test_validate_matrix_names_the_problem() -> None:
    schema = schema_for(Task.PROSPECT)
    matrix = np.zeros((4, len(schema.names)))
    matrix[:, schema.names.index("age")] = [30, 10, np.nan, 40]
    matrix[:, schema.names.index("web_visits")] = [1, 1, 1, 1.5]
    problems = schema.validate_matrix(matrix)
    assert problems[0] is None
    assert problems[1] == "age: below minimum 18"
    assert problems[2] == "age: required value is missing"
    assert problems[3] == "web_visits: must be a whole number"


def test_encode_batch_flags_unknown_categories_and_bad_numbers() -> None:
    schema = schema_for(Task.PROSPECT)
    batch = pa.RecordBatch.from_pydict(
        {
            "age": [30, 40],
            "income": ["50000", "lots"],
            "occupation": ["employee", "pirate"],
            "region": ["north", "south"],
            "channel": ["web", "web"],
            "campaign_contacts": [0, 0],
            "web_visits": [0, 0],
            "campaign_contacts_3m": [0, 0],
            "web_visits_3m": [0, 0],
        }
    )
    matrix, problems = encode_batch(schema, batch)
    assert matrix[0, schema.names.index("income")] == 50000.0
    assert problems[0] is None
    assert problems[1] is not None and ("occupation" in problems[1] or "income" in problems[1])
    with pytest.raises(MissingColumnsError, match="age"):
        check_columns(schema, ["income"])


@pytest.mark.parametrize("category_type", [pa.string(), pa.large_string(), "dictionary"])
def test_encode_gives_each_row_its_first_problem(category_type: Any) -> None:
    """Column by column, as ``validate_matrix`` row by row: the first feature's problem wins,
    and a broken rule wins over a value that could not be read at all."""
    schema = FeatureSchema(
        features=(
            FeatureSpec(name="a", kind=FeatureKind.INTEGER, minimum=0, maximum=10, description="a"),
            FeatureSpec(name="b", kind=FeatureKind.NUMBER, required=False, description="b"),
            FeatureSpec(
                name="c",
                kind=FeatureKind.CATEGORY,
                categories=("x", "y"),
                required=False,
                description="c",
            ),
            FeatureSpec(name="d", kind=FeatureKind.BOOLEAN, description="d"),
        )
    )
    categories = pa.array(["x", "z", "z", "z", "y", "y", "x", "x"])
    if category_type == "dictionary":
        categories = categories.dictionary_encode()
    else:
        categories = categories.cast(category_type)
    batch = pa.RecordBatch.from_pydict(
        {
            "a": [1.0, 11.0, 1.0, 1.0, None, 1.0, 2.5, -math.inf],
            "b": ["2.5", "2.5", "lots", None, "1", "1", "1", "1"],
            "c": categories,
            "d": [True, True, True, True, None, None, True, False],
        }
    )
    encoded = encode(schema, batch)
    expected = [
        None,
        "a: above maximum 10",
        "b: not a number",
        "c: unknown category",
        "a: required value is missing",
        "d: required value is missing",
        "a: must be a whole number",
        "a: below minimum 0",
    ]
    assert [encoded.problem(row) for row in range(8)] == expected
    assert encoded.valid.tolist() == [p is None for p in expected]
    assert encode_batch(schema, batch)[1] == expected
    assert encoded.matrix.flags.c_contiguous and encoded.matrix.dtype == np.float64
    np.testing.assert_array_equal(encoded.matrix[0], [1.0, 2.5, 0.0, 1.0])
    assert np.isnan(encoded.matrix[3, 2])  # an unknown category is a missing value
    # The rules are the schema's own; unreadable values (rows 2, 3) are missing to them.
    assert schema.validate_matrix(encoded.matrix) == [*expected[:2], None, None, *expected[4:]]


def test_the_explainer_is_built_once_on_first_use(models_dir: Path) -> None:
    """Scores alone (a batch file without reasons) never pay for the explainer's tables."""
    model = ScoringModel.load(models_dir / "churn" / "1", threads=2)
    assert vars(model)["_explainer"] is None
    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(lambda _: model.explainer, range(8)))
    assert all(explainer is built[0] for explainer in built)
    assert built[0].num_iteration == model.booster.num_trees()


def test_registry_picks_newest_or_pinned(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.copytree(root / "churn" / "1", root / "churn" / "10")
    data = (
        (root / "churn" / "10" / "manifest.json")
        .read_text()
        .replace('"version": "1"', '"version": "10"')
    )
    (root / "churn" / "10" / "manifest.json").write_text(data)
    assert available_versions(root, Task.CHURN) == ["1", "10"]
    assert ModelRegistry.load(root).get(Task.CHURN).manifest.version == "10"  # type: ignore[union-attr]
    pinned = ModelRegistry.load(root, pinned={"churn": "1"})
    assert pinned.get(Task.CHURN).manifest.version == "1"  # type: ignore[union-attr]
    with pytest.raises(ModelLoadError, match="not found"):
        ModelRegistry.load(root, pinned={"churn": "7"})
    shutil.rmtree(root / "prospect")
    partial = ModelRegistry.load(root)
    assert not partial.complete and Task.PROSPECT in partial.missing


def test_broken_model_directory_is_refused(models_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "churn"
    shutil.copytree(models_dir / "churn" / "1", broken)
    (broken / "model.txt").write_text("not a model")
    with pytest.raises(ModelLoadError):
        ScoringModel.load(broken)
    (broken / "manifest.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        ScoringModel.load(broken)


def test_score_file_writes_scores_and_rejects(
    models_dir: Path, prepared_book: pd.DataFrame, tmp_path: Path
) -> None:
    model = ScoringModel.load(models_dir / "churn" / "1")
    known = prepared_book[
        (prepared_book["lifecycle"] == "existing") & (prepared_book["history_months"] >= 3)
    ]
    rows = known.head(300).copy()
    rows.loc[rows.index[:5], "age"] = 7  # out of range: rejected, not fatal
    source = tmp_path / "book.csv"
    rows.to_csv(source, index=False)
    output = tmp_path / "scores.parquet"
    summary = score_file(
        model,
        input_path=source,
        output_path=output,
        rules=RULES,
        options=Options(reasons=2),
        chunk_rows=64,
    )
    assert summary.rows_read == 300 and summary.rows_rejected == 5 and summary.rows_scored == 295
    scored = pq.read_table(output).to_pandas()
    assert list(scored.columns) == [
        "customer_id",
        "stage",
        "probability",
        "band",
        "alert",
        "reasons",
    ]
    assert scored["probability"].between(0, 1).all()
    assert all(1 <= len(r) <= 2 for r in scored["reasons"])
    valid = rows.iloc[5:]
    expected = model.predict(
        model.schema.encode_columns({n: valid[n].tolist() for n in model.schema.names})
    )
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=1e-9)
    assert summary.rejects_path is not None
    rejects = pd.read_csv(summary.rejects_path)
    assert len(rejects) == 5 and rejects["reason"].str.contains("age").all()
