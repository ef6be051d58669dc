"""Recommendation on a bank's own monthly product-ownership panel: additions, MAP@7, new
customers, and a test month the tuning never sees."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.scoring.manifest import Manifest, Task
from app.scoring.model import ScoringModel
from app.training.panel import PanelSpec, train_recommendation_panel, transitions
from app.training.synth import PRODUCTS
from app.training.train import TrainingDataError
from app.training.tuning import TuningOptions

FAST = TuningOptions(trials=2, folds=2, min_rounds=20, patience=10, max_rounds=200)
PANEL_COLUMNS = ["customer_id", "month", "age", "income", "occupation", "region", "channel"]
runner = CliRunner()


def panel_of(prepared_book: pd.DataFrame) -> pd.DataFrame:
    """The synthetic book as a Santander-style panel: customers' months, one flag a product."""
    customers = prepared_book[prepared_book["lifecycle"].isin(["new", "existing"])]
    flags = {f"has_{p}": p for p in PRODUCTS}
    panel = customers[PANEL_COLUMNS + list(flags)].rename(columns=flags)
    panel[list(PRODUCTS)] = panel[list(PRODUCTS)].astype(int)
    return panel.reset_index(drop=True)


SPEC = PanelSpec(id_column="customer_id", month_column="month", products=list(PRODUCTS))


def test_additions_are_next_month_holdings_not_held_now() -> None:
    panel = pd.DataFrame(
        {
            "id": ["a", "a", "a", "b", "b", "c"],
            "month": ["2024-01", "2024-02", "2024-04", "2024-02", "2024-03", "2024-03"],
            "age": [30, 30, 30, 50, 50, 40],
            "x": [1, 1, 0, 0, 0, 0],
            "y": [0, 1, 1, 0, 1, 0],
            "z": [0, 0, 1, 1, 1, 0],
        }
    )
    pairs = transitions(panel, PanelSpec(id_column="id", month_column="month", products="xyz"))
    # a: Jan->Feb adds y; Feb->Apr skips a month (no pair). b: Feb->Mar adds y. c: no next.
    assert len(pairs.month) == 2
    np.testing.assert_array_equal(pairs.added, [[False, True, False], [False, True, False]])
    np.testing.assert_array_equal(pairs.held, [[True, False, False], [False, False, True]])
    assert pairs.features["has_x"].tolist() == [1, 0]
    assert pairs.features["months_in_panel"].tolist() == [1, 1]
    assert pairs.new.tolist() == [False, True]  # b arrived after the panel's first month


def test_panel_recommendation_beats_popularity(prepared_book: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "panel.csv"
    panel_of(prepared_book).to_csv(data, index=False)
    manifest = train_recommendation_panel(
        data_path=data, spec=SPEC, out_dir=tmp_path / "rec" / "1", tuning=FAST
    )
    assert manifest.task is Task.RECOMMENDATION and manifest.classes == PRODUCTS
    test = manifest.metrics["test"]
    model, popular = test["all_customers"], test["popularity_baseline_all_customers"]
    assert model["customers"] == popular["customers"] > 30
    assert model["map_at_7"] > popular["map_at_7"]
    interval = model["map_at_7_interval"]
    assert interval["ci_low"] <= model["map_at_7"] <= interval["ci_high"]
    assert "new_customers" in test
    assert manifest.split["tuning"]["validation"].startswith("rolling origin")
    scoring = ScoringModel.load(tmp_path / "rec" / "1")
    assert scoring.schema.names[-1] == "months_in_panel"


def test_the_panel_tuning_never_sees_the_test_month(
    prepared_book: pd.DataFrame, tmp_path: Path
) -> None:
    panel = panel_of(prepared_book)
    last = panel["month"].max()
    noisy = panel.copy()
    rng = np.random.default_rng(5)
    final = noisy["month"] == last  # the additions of the test month are read from this month
    for product in PRODUCTS:
        noisy.loc[final, product] = rng.permutation(noisy.loc[final, product].to_numpy())
    runs = {}
    for name, frame in (("clean", panel), ("noisy", noisy)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        runs[name] = train_recommendation_panel(
            data_path=tmp_path / f"{name}.csv",
            spec=SPEC,
            out_dir=tmp_path / name / "1",
            tuning=FAST,
        )
    assert runs["clean"].split["tuning"] == runs["noisy"].split["tuning"]
    model = (tmp_path / "clean" / "1" / "model.txt").read_text()
    assert model == (tmp_path / "noisy" / "1" / "model.txt").read_text()
    clean, noisy_test = (r.metrics["test"]["all_customers"] for r in runs.values())
    assert clean != noisy_test


def test_cvm_train_recommendation_from_a_panel(prepared_book: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "panel.csv"
    panel_of(prepared_book).to_csv(data, index=False)
    products = [arg for p in PRODUCTS for arg in ("--product", p)]
    out = tmp_path / "recommendation" / "4"
    args = ["train", "recommendation", "--data", str(data), "--id", "customer_id"]
    done = runner.invoke(
        cli, [*args, "--time", "month", *products, "--trials", "1", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "map_at_7" in done.output
    assert Manifest.load(out).target == "product_added"
    refused = runner.invoke(cli, [*args, "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    assert "--time and --product" in " ".join(refused.output.split())


@pytest.mark.parametrize(
    ("products", "message"),
    [
        (["current_account", "savings"], "at least three product columns"),
        (["nope", "savings", "mortgage"], "column(s) not in panel.csv: ['nope']"),
    ],
)
def test_panel_errors_name_the_fix(
    prepared_book: pd.DataFrame, tmp_path: Path, products: list[str], message: str
) -> None:

    data = tmp_path / "panel.csv"
    panel_of(prepared_book).head(50).to_csv(data, index=False)
    spec = PanelSpec(id_column="customer_id", month_column="month", products=products)
    with pytest.raises(TrainingDataError, match=re.escape(message)):
        train_recommendation_panel(data_path=data, spec=spec, out_dir=tmp_path / "m", tuning=FAST)
