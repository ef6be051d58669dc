"""Bring your own data end to end on a real public file, and the BYOD error messages.

The real file is read from the shared, read-only datasets folder next to the repository; it is
never copied into the repository. The reference AUC is read from its SOURCE.md at test time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from app.batch.service import read_batches
from app.cli.main import cli
from app.config import Settings
from app.http.app import create_app
from app.scoring.arrow import encode_batch
from app.scoring.feature_schema import FeatureKind
from app.scoring.manifest import Manifest, Task
from app.scoring.model import ScoringModel
from app.scoring.registry import ModelRegistry
from app.training.byod import (
    binary_target,
    encode_frame,
    infer_schema,
    read_table,
    split_rows,
)
from tests.conftest import customer_record
from tests.db_support import migrated_sqlite_file

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHURN_DIR = SHARED_DATA / "churn_modelling"
CHURN_FILE = CHURN_DIR / "Churn_Modelling.csv"
CHURN_LEFT_OUT = ("RowNumber", "CustomerId", "Surname", "Exited")
AUC_TOLERANCE = 0.03
REFERENCE_PATTERN = r"mean over seeds 0, 1, 2[^:\n]*:\s*\*\*(\d\.\d+)\*\*"
CVM = Path(sys.executable).with_name("cvm")

runner = CliRunner()
needs_real_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"shared real datasets folder {SHARED_DATA} is absent (never copied into the repo)",
)


def reference_auc(source_md: Path) -> float:
    """The default-LightGBM reference ROC AUC that SOURCE.md reports (mean over seeds 0-2)."""
    match = re.search(REFERENCE_PATTERN, source_md.read_text(encoding="utf-8"))
    assert match is not None, f"no reference AUC in {source_md}"
    return float(match.group(1))


def run_cvm(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``cvm`` command, as a bank would run it."""
    # Passive OpenMP waiting only changes speed: spinning threads crawl when cores are busy.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
    return subprocess.run(
        [str(CVM), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@needs_real_data
@pytest.mark.slow
def test_churn_modelling_trains_serves_and_meets_its_reference(tmp_path: Path) -> None:
    model_dir = tmp_path / "churn" / "1"
    trained = run_cvm(
        "train",
        "churn",
        "--data",
        str(CHURN_FILE),
        "--target",
        "Exited",
        "--id",
        "CustomerId",
        "--drop",
        "RowNumber",
        "--drop",
        "Surname",
        "--trials",
        "1",
        "--out",
        str(model_dir),
    )
    assert trained.returncode == 0, trained.stderr

    manifest = Manifest.load(model_dir)
    reference = reference_auc(CHURN_DIR / "SOURCE.md")
    test_auc = manifest.metrics["test"]["roc_auc"]
    assert test_auc >= reference - AUC_TOLERANCE, (
        f"test ROC AUC {test_auc} vs reference {reference}"
    )
    assert manifest.split["method"] == "stratified_random"
    assert (manifest.target, manifest.id_column) == ("Exited", "CustomerId")

    frame = pd.read_csv(CHURN_FILE)
    # The training window: train and validation shares together; the test share held out.
    assert manifest.training_rows == round(len(frame) * 0.85)
    model = ScoringModel.load(model_dir)
    features = [c for c in frame.columns if c not in CHURN_LEFT_OUT]
    assert [f.column for f in model.schema.features] == features
    assert model.schema["Geography"].categories == ("France", "Germany", "Spain")
    assert model.schema["Gender"].categories == ("Female", "Male")
    categorical = {f.column for f in model.schema.features if f.kind is FeatureKind.CATEGORY}
    assert categorical == {"Geography", "Gender"}

    output = tmp_path / "scores.parquet"
    scored = run_cvm(
        "score",
        "churn",
        "--model",
        str(model_dir),
        "--input",
        str(CHURN_FILE),
        "--output",
        str(output),
    )
    assert scored.returncode == 0, scored.stderr
    assert not output.with_name("scores.rejects.csv").exists()
    scores = pq.read_table(output).to_pandas()
    assert len(scores) == len(frame)
    assert sorted(scores["CustomerId"]) == sorted(frame["CustomerId"].astype(str))
    assert scores["probability"].between(0.0, 1.0).all()
    assert {"band", "reasons"} <= set(scores.columns)

    # The served model is the evaluated one: its scores on the test rows give the manifest's AUC.
    by_id = scores.set_index("CustomerId")["probability"]
    proba = by_id.reindex(frame["CustomerId"].astype(str)).to_numpy()
    labels = frame["Exited"].to_numpy()
    test = split_rows(labels, None, seed=manifest.split["seed"]).test
    assert roc_auc_score(labels[test], proba[test]) == pytest.approx(test_auc, abs=1e-4)


def small_file(n: int = 40) -> pd.DataFrame:
    """A small, valid customer file with both classes."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "age": rng.integers(20, 80, n),
            "segment": rng.choice(["mass", "affluent"], n),
            "country": rng.choice(["FR", "DE"], n),
            "left": np.arange(n) % 2,
            "plan": rng.choice(["basic", "plus", "premium"], n),
        }
    )


def _set(column: str, value: int | str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        edited = frame.copy()
        edited[column] = value
        return edited

    return edit


def _same(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


BASE_ARGS = ("--target", "left", "--id", "customer_id", "--drop", "plan")


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        pytest.param(
            _same,
            ("--target", "churned", "--id", "customer_id", "--drop", "plan"),
            "column(s) not in customers.csv: ['churned']",
            id="missing-target-column",
        ),
        pytest.param(
            _same,
            (*BASE_ARGS, "--drop", "branch"),
            "column(s) not in customers.csv: ['branch']",
            id="missing-dropped-column",
        ),
        pytest.param(
            _set("left", 0),
            BASE_ARGS,
            "target 'left' holds a single class",
            id="constant-target",
        ),
        pytest.param(
            _same,
            (*BASE_ARGS, "--positive", "yes"),
            "no row of target 'left' equals --positive 'yes'",
            id="positive-class-absent",
        ),
        pytest.param(
            _set("customer_id", 7),
            BASE_ARGS,
            "id column 'customer_id' is not unique",
            id="non-unique-id",
        ),
        pytest.param(
            _same,
            ("--target", "plan", "--id", "customer_id", "--drop", "left"),
            "target 'plan' is not binary (values ['basic', 'plus', 'premium']); "
            "name the positive class with --positive",
            id="non-binary-target",
        ),
        pytest.param(
            _set("country", "FR"),
            BASE_ARGS,
            "column 'country' is constant; drop it with --drop",
            id="constant-feature",
        ),
        pytest.param(
            _same,
            ("--target", "left"),
            "--data needs --target and --id",
            id="id-not-given",
        ),
    ],
)
def test_byod_errors_name_the_column_and_the_fix(
    tmp_path: Path,
    edit: Callable[[pd.DataFrame], pd.DataFrame],
    args: tuple[str, ...],
    message: str,
) -> None:
    data = tmp_path / "customers.csv"
    edit(small_file()).to_csv(data, index=False)
    out = tmp_path / "model"
    result = runner.invoke(cli, ["train", "churn", "--data", str(data), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_byod_reports_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(
        cli,
        [
            "train",
            "churn",
            "--data",
            str(tmp_path / "nope.csv"),
            *BASE_ARGS,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "data file not found" in result.output


def test_positive_names_the_class_of_a_text_target() -> None:
    target = pd.Series(["Closed", "open", " closed ", "Open"], name="status")
    assert binary_target(target, "closed").tolist() == [1, 0, 1, 0]


def test_numeric_categories_are_spelt_as_the_scorer_reads_them(tmp_path: Path) -> None:
    """A numeric --categorical column with gaps is float in pandas but int in Arrow: 2.0 vs 2."""
    frame = small_file()
    frame["grade"] = np.where(np.arange(len(frame)) % 5 == 0, np.nan, frame["age"] % 3 + 1)
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    features = read_table(data)[["age", "segment", "grade"]]
    schema = infer_schema(features, ["grade"], data.name)
    assert schema["grade"].categories == ("1", "2", "3")
    served, problems = encode_batch(schema, next(read_batches(data)))
    assert problems == [None] * len(frame)
    np.testing.assert_array_equal(served, encode_frame(features, schema))


@needs_real_data
@pytest.mark.slow
def test_a_bank_trained_churn_model_never_breaks_the_endpoints(
    tmp_path: Path,
    models_dir: Path,
    settings_for: Callable[..., Settings],
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    """Churn_Modelling's churn model served beside the bundled tier, recommendation and
    prospect models: assessments still answer, scoring churn on its own columns too."""
    served = tmp_path / "models"
    for task in ("tier", "recommendation", "prospect"):
        shutil.copytree(models_dir / task, served / task)
    trained = runner.invoke(
        cli,
        [
            *("train", "churn", "--data", str(CHURN_FILE), "--target", "Exited"),
            *("--id", "CustomerId", "--drop", "RowNumber", "--drop", "Surname"),
            *("--trials", "1", "--out", str(served / "churn" / "1")),
        ],
    )
    assert trained.exit_code == 0, trained.output
    url = migrated_sqlite_file(tmp_path / "cvm.db")
    settings = settings_for(url).model_copy(update={"models_dir": served})
    registry = ModelRegistry.load(served)
    churn_schema = registry.loaded[Task.CHURN].schema
    existing = sample_rows["existing"].iloc[0]
    bank_row = pd.read_csv(CHURN_FILE).iloc[0]
    own_columns = {f.name: bank_row[f.column] for f in churn_schema.features}
    own = {k: v.item() if hasattr(v, "item") else v for k, v in own_columns.items()}
    with TestClient(create_app(settings, registry)) as client:
        body = customer_record(existing, registry.loaded[Task.TIER].schema, "C-1")
        plain = client.post("/v1/assessments", json=body)
        assert plain.status_code == 200, plain.text
        answer = plain.json()
        assert answer["lifecycle"] == "existing" and answer["churn"] is None
        assert answer["tier"] is not None and answer["recommendations"] is not None
        (skipped,) = answer["skipped"]
        assert skipped["task"] == "churn" and "Geography" in skipped["missing"]

        both = client.post("/v1/assessments", json={**body, **own})
        assert both.status_code == 200, both.text
        assert both.json()["churn"]["risk_band"] in {"low", "medium", "high"}
        assert both.json()["skipped"] == []

        half = {k: v for k, v in own.items() if k != "Geography"}
        refused = client.post("/v1/assessments", json={**body, **half})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "Geography"

        scored = client.post(
            "/v1/churn/scores", json={"customers": [{"customer_id": "C-1", **own}]}
        )
        assert scored.status_code == 200, scored.text
        assert scored.json()["results"][0]["stage"] == "existing"  # a churn model scores customers
