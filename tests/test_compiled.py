"""Compiled inference: built once per model file, cached, checked against LightGBM on load."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from app.alerts.service import ChurnAlerts
from app.batch.persist import DatabaseChunkSink, run_id_for
from app.batch.service import score_file
from app.config import Settings
from app.db.session import create_db_engine
from app.scoring import compiled
from app.scoring.assess import Options
from app.scoring.compiled import (
    TOLERANCE,
    check_rows,
    compile_library,
    library_path,
    load_compiled_model,
    reference_path,
    select_backend,
    use_compiled,
)
from app.scoring.model import ScoringModel
from tests.db_support import migrated_sqlite_database
from tests.rules_support import RULES


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the module: each tiny model is compiled once."""
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def customers(prepared_book: pd.DataFrame) -> pd.DataFrame:
    """Rows of existing customers with full histories."""
    known = prepared_book[
        (prepared_book["lifecycle"] == "existing") & (prepared_book["history_months"] >= 3)
    ]
    return known.head(2000)


@pytest.mark.parametrize("task", ["churn", "tier"])
def test_compiled_predictions_equal_lightgbm_and_are_cached(
    task: str, models_dir: Path, compiled_cache: Path, customers: pd.DataFrame
) -> None:
    directory = models_dir / task / "1"
    model = ScoringModel.load(directory, threads=2)
    model_file = directory / model.manifest.model_file
    status = use_compiled(
        model, model_file=model_file, cache_dir=compiled_cache, compile_missing=True
    )
    assert status.backend == "compiled" and model.backend == "compiled"
    assert status.library == library_path(compiled_cache, model, model_file)
    assert status.library.parent == compiled_cache / task / "1"
    assert status.compile_seconds is not None
    assert status.max_difference is not None and status.max_difference <= TOLERANCE
    matrix = model.schema.encode_columns({n: customers[n].tolist() for n in model.schema.names})
    reference = model.booster.predict(matrix)
    np.testing.assert_allclose(model.predict(matrix), reference, rtol=0, atol=TOLERANCE)
    again = ScoringModel.load(directory, threads=2)
    cached = use_compiled(
        again, model_file=model_file, cache_dir=compiled_cache, compile_missing=False
    )
    assert cached.backend == "compiled" and cached.compile_seconds is None


def test_auto_uses_a_cached_library_only_and_lightgbm_stays_available(
    models_dir: Path, compiled_cache: Path, tmp_path: Path
) -> None:
    directory = models_dir / "churn" / "1"
    model = ScoringModel.load(directory)
    model_file = directory / model.manifest.model_file
    empty = tmp_path / "empty-cache"
    status = select_backend(model, model_file=model_file, choice="auto", cache_dir=empty)
    assert status.backend == "lightgbm" and not empty.exists()  # never compiles on its own
    compile_library(model_file, library_path(compiled_cache, model, model_file))
    status = select_backend(model, model_file=model_file, choice="auto", cache_dir=compiled_cache)
    assert status.backend == "compiled"
    model.use_predictor(None)
    assert model.backend == "lightgbm"
    status = select_backend(
        model, model_file=model_file, choice="lightgbm", cache_dir=compiled_cache
    )
    assert status.backend == "lightgbm"


def test_a_library_that_disagrees_is_refused_with_a_warning(
    models_dir: Path, compiled_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = models_dir / "churn" / "1"
    model = ScoringModel.load(source)
    # Another model of the same features: the first 10 trees only.
    shorter = tmp_path / "churn" / "1"
    shutil.copytree(source, shorter)
    model.booster.save_model(shorter / "model.txt", num_iteration=10)
    other = ScoringModel.load(shorter)
    wrong = library_path(compiled_cache, other, shorter / "model.txt")
    wrong.parent.mkdir(parents=True, exist_ok=True)
    # The full model's library filed under the short model's key: it must not be trusted.
    compile_library(source / "model.txt", wrong)
    with caplog.at_level(logging.WARNING, logger="app.scoring.compiled"):
        status = use_compiled(
            other, model_file=shorter / "model.txt", cache_dir=compiled_cache, compile_missing=False
        )
    assert status.backend == "lightgbm" and other.backend == "lightgbm"
    assert status.max_difference is not None and status.max_difference > TOLERANCE
    assert "keeping LightGBM" in caplog.text


def test_check_rows_reach_every_split_edge(models_dir: Path) -> None:
    model = ScoringModel.load(models_dir / "churn" / "1")
    rows = check_rows(model.booster, rows=512)
    assert rows.shape == (512, len(model.schema.names))
    assert np.isnan(rows).any() and np.isfinite(rows).any()


def test_score_file_on_the_compiled_backend_matches_lightgbm(
    models_dir: Path, compiled_cache: Path, customers: pd.DataFrame, tmp_path: Path
) -> None:
    directory = models_dir / "churn" / "1"
    source = tmp_path / "customers.parquet"
    customers.to_parquet(source, index=False)
    outputs = []
    for backend in ("lightgbm", "compiled"):
        model = ScoringModel.load(directory, threads=2)
        select_backend(
            model, model_file=directory / "model.txt", choice=backend, cache_dir=compiled_cache
        )
        assert model.backend == backend
        output = tmp_path / f"{backend}.parquet"
        score_file(
            model, input_path=source, output_path=output, rules=RULES, options=Options(reasons=0)
        )
        outputs.append(pq.read_table(output).to_pandas())
    lightgbm, compiled = outputs
    assert lightgbm["customer_id"].equals(compiled["customer_id"])
    np.testing.assert_allclose(compiled["probability"], lightgbm["probability"], atol=TOLERANCE)
    assert (compiled["band"] == lightgbm["band"]).all()


def test_scores_alone_run_on_the_cached_library_and_equal_lightgbms(
    models_dir: Path, compiled_cache: Path, customers: pd.DataFrame, tmp_path: Path
) -> None:
    directory = models_dir / "churn" / "1"
    model = ScoringModel.load(directory, threads=2)
    select_backend(
        model, model_file=directory / "model.txt", choice="compiled", cache_dir=compiled_cache
    )
    alone = load_compiled_model(directory, cache_dir=compiled_cache, threads=2)
    assert alone is not None and alone.backend == "compiled"
    assert alone.max_difference <= TOLERANCE
    matrix = model.schema.encode_columns({n: customers[n].tolist() for n in model.schema.names})
    np.testing.assert_allclose(
        alone.predict(matrix), model.booster.predict(matrix), rtol=0, atol=TOLERANCE
    )
    source = tmp_path / "customers.parquet"
    customers.to_parquet(source, index=False)
    for scorer, name in ((model, "loaded"), (alone, "alone")):
        score_file(
            scorer,
            input_path=source,
            output_path=tmp_path / f"{name}.parquet",
            rules=RULES,
            options=Options(reasons=0),
        )
    assert pq.read_table(tmp_path / "alone.parquet").equals(
        pq.read_table(tmp_path / "loaded.parquet")
    )
    with pytest.raises(ValueError, match="reasons"):
        score_file(
            alone,
            input_path=source,
            output_path=tmp_path / "reasons.parquet",
            rules=RULES,
            options=Options(reasons=1),
        )


def test_a_reference_vouches_only_for_its_model_file_and_lightgbm_version(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = models_dir / "churn" / "1"
    cache = tmp_path / "cache"
    model = ScoringModel.load(source)
    library = library_path(cache, model, source / "model.txt")
    assert load_compiled_model(source, cache_dir=cache, threads=1) is None  # nothing cached
    compile_library(source / "model.txt", library)
    assert reference_path(library).is_file()
    assert load_compiled_model(source, cache_dir=cache, threads=1) is not None
    # Made by another LightGBM: not trusted, until LightGBM itself is loaded and redoes it.
    monkeypatch.setattr(compiled, "lightgbm_version", lambda: "0.0.0")
    assert load_compiled_model(source, cache_dir=cache, threads=1) is None
    status = use_compiled(
        model, model_file=source / "model.txt", cache_dir=cache, compile_missing=False
    )
    assert status.backend == "compiled"
    assert load_compiled_model(source, cache_dir=cache, threads=1) is not None
    monkeypatch.undo()
    # A library that does not reproduce its reference (falsified here) is refused, with a warning.
    reference = compiled.Reference.load(reference_path(library))
    assert reference is not None
    compiled.Reference(
        reference.rows,
        reference.expected + 1e-6,
        reference.model_digest,
        compiled.lightgbm_version(),
    ).save(reference_path(library))
    with caplog.at_level(logging.WARNING, logger="app.scoring.compiled"):
        assert load_compiled_model(source, cache_dir=cache, threads=1) is None
    assert "keeping LightGBM" in caplog.text
    # Another model file (the first 10 trees) finds the full model's entry under its key: its
    # digest is not the reference's, so it is not used, and no prediction is even compared.
    shorter = tmp_path / "models" / "churn" / "1"
    shutil.copytree(source, shorter)
    model.booster.save_model(shorter / "model.txt", num_iteration=10)
    other = library_path(cache, model, shorter / "model.txt")
    shutil.copy(library, other)
    shutil.copy(reference_path(library), reference_path(other))
    caplog.clear()
    assert load_compiled_model(shorter, cache_dir=cache, threads=1) is None
    assert caplog.text == ""


def test_scores_alone_persist_like_lightgbms(
    models_dir: Path, compiled_cache: Path, customers: pd.DataFrame, tmp_path: Path
) -> None:
    """The database rows of a compiled-alone run are those of a LightGBM-loaded one, and so
    are the churn alerts they open (LightGBM words their reasons)."""
    directory = models_dir / "churn" / "1"
    model = ScoringModel.load(directory, threads=2)
    select_backend(
        model, model_file=directory / "model.txt", choice="compiled", cache_dir=compiled_cache
    )
    alone = load_compiled_model(directory, cache_dir=compiled_cache, threads=2)
    assert alone is not None
    source = tmp_path / "customers.parquet"
    customers.head(300).to_parquet(source, index=False)
    alerts = ChurnAlerts.from_settings(Settings(churn_alert_band="medium"))
    stored, opened = [], []
    for scorer in (model, alone):
        with migrated_sqlite_database() as url:
            engine = create_db_engine(url)
            run_id = run_id_for(input_path=source, model=scorer, chunk_rows=64)
            sink = DatabaseChunkSink(
                engine, model=scorer, run_id=run_id, alerts=alerts, model_dir=directory
            )
            summary = score_file(
                scorer,
                input_path=source,
                output_path=tmp_path / "scores.parquet",
                rules=RULES,
                options=Options(reasons=0),
                chunk_rows=64,
                sink=sink,
            )
            assert summary.rows_persisted == summary.rows_scored > 0
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT request_id, customer_id, outputs, features FROM score")
                )
                stored.append(sorted(tuple(row) for row in rows))
                alerted = connection.execute(text("SELECT customer_id, reasons FROM alert"))
                opened.append(sorted(tuple(row) for row in alerted))
            engine.dispose()
    assert stored[0] == stored[1]
    assert opened[0] and opened[0] == opened[1]
    assert all(reasons != "[]" for _, reasons in opened[1])
