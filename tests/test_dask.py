"""Scale-out on Dask: partitions scored by workers equal the single-process scorer exactly;
a model trained through lightgbm.dask is served like any other."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.alerts.service import ChurnAlerts
from app.batch.dask import REJECTS_DIR, dask_client, plan_partitions, score_on_dask
from app.batch.service import score_file
from app.config import Settings, get_settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.assess import Options
from app.scoring.manifest import Manifest, Task
from app.scoring.model import ScoringModel
from app.scoring.registry import ModelRegistry
from app.scoring.rules import rules_from_settings
from app.security.pseudonyms import Pseudonymizer
from app.training.distributed import train_on_dask
from tests.conftest import customer_record
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
    migrated_sqlite_file,
)
from tests.rules_support import RULES

ROWS = 1000
ROW_GROUP = 100


@pytest.fixture(scope="module")
def threads_cluster() -> Iterator[Any]:
    """Two workers in this process: enough to spread partitions, quick to start."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def book_rows(prepared_book: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 rows of the last month, a few with an out-of-range age, in row groups of 100."""
    last = prepared_book[prepared_book["month"] == prepared_book["month"].max()]
    rows = last.sample(n=ROWS, random_state=1).sort_index()
    rows.loc[rows.index[::97], "age"] = 7  # out of range: rejected in every partition
    path = tmp_path_factory.mktemp("dask") / "snapshot.parquet"
    rows.to_parquet(path, index=False, row_group_size=ROW_GROUP)
    return path


def test_partitions_are_runs_of_row_groups(book_rows: Path, tmp_path: Path) -> None:
    parts = plan_partitions(book_rows, rows=250)
    assert [p.row_groups for p in parts] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    shutil.copy(book_rows, dataset / "a.parquet")
    shutil.copy(book_rows, dataset / "b.parquet")
    assert len(plan_partitions(dataset, rows=1000)) == 2


@pytest.mark.parametrize("reasons", [0, 2])
def test_dask_scores_equal_the_single_process_scorer_exactly(
    threads_cluster: Any, models_dir: Path, book_rows: Path, tmp_path: Path, reasons: int
) -> None:
    model_dir = models_dir / "churn" / "1"
    single = tmp_path / "single.parquet"
    expected = score_file(
        ScoringModel.load(model_dir),
        input_path=book_rows,
        output_path=single,
        rules=RULES,
        options=Options(reasons=reasons),
    )
    output = tmp_path / "scored"
    summary = score_on_dask(
        threads_cluster,
        model_dir=model_dir,
        input_path=book_rows,
        output_dir=output,
        rules=RULES,
        options=Options(reasons=reasons),
        chunk_rows=128,
        partition_rows=300,
    )
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (
        expected.rows_read,
        expected.rows_scored,
        expected.rows_rejected,
    )
    assert expected.rows_rejected > 0
    assert pq.read_table(output).equals(pq.read_table(single))
    rejects = pd.concat(pd.read_csv(p) for p in sorted((output / REJECTS_DIR).glob("*.csv")))
    assert expected.rejects_path is not None
    pd.testing.assert_frame_equal(
        rejects.reset_index(drop=True), pd.read_csv(expected.rejects_path)
    )


def persisting(models_dir: Path, book_rows: Path, tmp_path: Path, url: str) -> dict[str, Any]:
    """score_on_dask's arguments for a churn run saved to ``url``."""
    return {
        "model_dir": models_dir / "churn" / "1",
        "input_path": book_rows,
        "output_dir": tmp_path / "scored",
        "rules": RULES,
        "options": Options(reasons=0),
        "chunk_rows": 128,
        "partition_rows": 300,
        "database_url": url,
    }


def customer_ids_in(url: str, table: str) -> list[str]:
    """Every customer_id stored in ``table``."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return [r[0] for r in connection.execute(text(f"SELECT customer_id FROM {table}"))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_dask_persists_each_partition_once(
    threads_cluster: Any, models_dir: Path, book_rows: Path, tmp_path: Path, kind: str
) -> None:
    factory = migrated_sqlite_database if kind == "sqlite" else migrated_postgres_database
    with factory() as url:
        arguments = persisting(models_dir, book_rows, tmp_path, url)
        first = score_on_dask(threads_cluster, **arguments)
        again = score_on_dask(threads_cluster, **arguments)
        ids = customer_ids_in(url, "score")
    scored = pq.read_table(tmp_path / "scored").column("customer_id").to_pylist()
    assert Counter(ids) == Counter(scored)
    # The summaries in the messages: this failed once in ~20 full runs on PostgreSQL, and the
    # output of that run was lost; the next failure should say which count was off.
    assert first.chunks_persisted == first.chunks and first.chunks_skipped == 0, first
    assert again.chunks_skipped == first.chunks and again.rows_persisted == 0, (first, again)


def test_dask_workers_store_pseudonyms_open_alerts_and_refuse_another_secret(
    threads_cluster: Any,
    models_dir: Path,
    book_rows: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = b"dask-test-secret-" + b"d" * 32
    # The workers (threads here) read the secret from their own settings, never from the client.
    monkeypatch.setenv("CVM_PSEUDONYM_SECRET", secret.decode())
    get_settings.cache_clear()
    try:
        with migrated_sqlite_database() as url:
            arguments = persisting(models_dir, book_rows, tmp_path, url)
            with pytest.raises(ValueError, match="differs from the client"):
                score_on_dask(
                    threads_cluster,
                    **arguments,
                    pseudonymizer=Pseudonymizer(b"x" * 32),
                )
            settings = Settings(churn_alert_band="medium")
            arguments["rules"] = rules_from_settings(settings)
            score_on_dask(
                threads_cluster,
                **arguments,
                pseudonymizer=Pseudonymizer(secret),
                alerts=ChurnAlerts.from_settings(settings),
            )
            ids = customer_ids_in(url, "score")
            alerted = set(customer_ids_in(url, "alert"))
    finally:
        get_settings.cache_clear()
    scored = pq.read_table(tmp_path / "scored").to_pandas()
    pseudonyms = Pseudonymizer(secret).pseudonyms
    assert Counter(ids) == Counter(pseudonyms(list(scored["customer_id"])))
    # Medium or high risk opens an alert, for customers the bank can still keep.
    at_risk = scored["band"].isin(["medium", "high"]) & scored["stage"].isin(["new", "existing"])
    assert (scored["alert"] == at_risk).all()
    assert alerted and alerted == set(pseudonyms(list(scored.loc[at_risk, "customer_id"])))
    assert (~at_risk & scored["band"].isin(["medium", "high"])).any(), "a lost one at risk"


def test_a_model_trained_on_dask_is_served_like_any_other(
    book_path: Path,
    models_dir: Path,
    sample_rows: dict[str, pd.DataFrame],
    settings_for: Any,
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.rmtree(root / "churn" / "1")
    # Separate processes: LightGBM's network (one per process) links the two workers.
    with dask_client("local", workers=2, threads=1) as client:
        manifest = train_on_dask(
            Task.CHURN, client=client, book_path=book_path, out_dir=root / "churn" / "1", rounds=20
        )
    assert manifest.num_trees == 20 and manifest.extras["trained_on"] == "lightgbm.dask"
    assert manifest.metrics["test"]["roc_auc"] > 0.75
    assert {"medium", "high"} <= manifest.thresholds.keys()
    assert Manifest.load(root / "churn" / "1") == manifest
    model = ScoringModel.load(root / "churn" / "1")
    registry = ModelRegistry.load(root)
    customers = [
        customer_record(row, model.schema, f"D-{i}")
        for i, (_, row) in enumerate(sample_rows["existing"].head(5).iterrows())
    ]
    api_url = migrated_sqlite_file(tmp_path / "api.db")
    with TestClient(create_app(settings_for(api_url), registry)) as api:
        response = api.post("/v1/churn/scores", json={"customers": customers, "reasons": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    matrix = model.schema.encode_rows(
        [{k: v for k, v in c.items() if k != "customer_id"} for c in customers]
    )
    for result, expected in zip(body["results"], model.predict(matrix), strict=True):
        assert result["probability"] == pytest.approx(float(expected), abs=1e-6)
        assert result["explanation"]["reasons"]
