"""One rule set: the same book assessed through the API and through ``cvm score --persist``
stores the same rows and opens the same alerts."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import get_settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.feature_schema import FeatureKind, FeatureSchema
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.training.features import month_snapshot
from app.training.synth import read_book
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
)

BOOK_CUSTOMERS = 2_000
REASONS = 3
API_CALL_ROWS = 1_000


@contextmanager
def two_databases(backend: str) -> Iterator[tuple[str, str]]:
    """Two fresh, migrated databases of one backend: the API's and the batch's."""
    migrated = migrated_postgres_database if backend == "postgres" else migrated_sqlite_database
    with migrated() as api_url, migrated() as batch_url:
        yield api_url, batch_url


def columns_body(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, Any]:
    """Book rows as the columns a core banking system would send (NaN as null)."""

    def plain(value: Any, kind: FeatureKind) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if kind is FeatureKind.BOOLEAN:
            return bool(value)
        if kind is FeatureKind.INTEGER:
            return int(value)
        if kind is FeatureKind.NUMBER:
            return float(value)
        return str(value)

    columns: dict[str, Any] = {
        "customer_id": [str(c) for c in frame["customer_id"]],
        "lifecycle": [str(v) for v in frame["lifecycle"]],
    }
    for feature in schema.features:
        columns[feature.name] = [plain(v, feature.kind) for v in frame[feature.name].tolist()]
    return {"columns": columns, "reasons": REASONS}


def stored(url: str) -> dict[str, dict[str, Any]]:
    """Every stored score by customer: what the one row shape holds."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT customer_id, task, model_version, outputs, reasons, features, stage,"
                    " probability, band, alert, source FROM score"
                )
            ).mappings()
            return {row["customer_id"]: _decoded(dict(row)) for row in rows}
    finally:
        engine.dispose()


def opened_alerts(url: str) -> dict[str, dict[str, Any]]:
    """The alerts each run opened, by customer."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT customer_id, status, risk_band, probability, reasons FROM alert")
            ).mappings()
            return {row["customer_id"]: _decoded(dict(row)) for row in rows}
    finally:
        engine.dispose()


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for k, v in row.items()}


def assert_same(got: Any, expected: Any, where: str) -> None:
    """Equal, floats to 1e-9."""
    if isinstance(expected, float) and isinstance(got, float):
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory, book_path: Path) -> Path:
    """The last month of the shared book, 2,000 customers of every stage, lifecycle included."""
    book = month_snapshot(read_book(book_path).to_pandas())
    frame = book.sort_values("customer_id").head(BOOK_CUSTOMERS)
    assert set(frame["lifecycle"]) >= {"prospect", "existing", "lost"}
    path = tmp_path_factory.mktemp("snapshot") / "latest.parquet"
    frame.to_parquet(path, index=False)
    return path


ENDPOINTS = {
    Task.CHURN: "/v1/churn/scores",
    Task.TIER: "/v1/tier/scores",
    Task.RECOMMENDATION: "/v1/recommendations",
    Task.PROSPECT: "/v1/prospect/scores",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "backend"),
    [
        (Task.CHURN, "sqlite"),
        pytest.param(Task.CHURN, "postgres", marks=pytest.mark.postgres),
        (Task.RECOMMENDATION, "sqlite"),
        (Task.TIER, "sqlite"),
        (Task.PROSPECT, "sqlite"),
    ],
)
def test_the_api_and_cvm_score_store_the_same_assessments(
    task: Task,
    backend: str,
    snapshot: Path,
    models_dir: Path,
    registry: ModelRegistry,
    settings_for: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with two_databases(backend) as (api_url, batch_url):
        monkeypatch.setenv("CVM_DATABASE_URL", batch_url)
        monkeypatch.setenv("CVM_MODELS_DIR", str(models_dir))
        monkeypatch.setenv("CVM_CHURN_ALERT_BAND", "medium")
        output = tmp_path / "scores.parquet"
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(
                cli,
                [
                    *("score", task.value, "--input", str(snapshot), "--output", str(output)),
                    *("--reasons", str(REASONS), "--persist"),
                ],
            )
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output

        # The API gets the rows the batch found valid, as columns, a thousand per call.
        scored = set(pq.read_table(output).column("customer_id").to_pylist())
        frame = pd.read_parquet(snapshot)
        frame = frame[frame["customer_id"].astype(str).isin(scored)]
        settings = settings_for(api_url, score_writer="thread", churn_alert_band="medium")
        schema = registry.loaded[task].schema
        with TestClient(create_app(settings, registry)) as client:
            for start in range(0, len(frame), API_CALL_ROWS):
                body = columns_body(frame.iloc[start : start + API_CALL_ROWS], schema)
                response = client.post(ENDPOINTS[task], json=body)
                assert response.status_code == 200, response.text

        through_api, through_batch = stored(api_url), stored(batch_url)
        assert len(through_api) == len(scored) > BOOK_CUSTOMERS * 0.9
        assert through_api.keys() == through_batch.keys()
        for customer, row in through_batch.items():
            assert_same(through_api[customer], {**row, "source": "api"}, customer)
        assert {"prospect", "existing", "lost"} <= {r["stage"] for r in through_batch.values()}
        if task is Task.RECOMMENDATION:
            offers = [r["outputs"]["products"] for r in through_batch.values()]
            assert sum(map(len, offers)) > len(offers)  # the comparison covered real offers
        if task is not Task.CHURN:
            return
        alerts_api, alerts_batch = opened_alerts(api_url), opened_alerts(batch_url)
        assert alerts_api.keys() == alerts_batch.keys() and alerts_api
        assert_same(alerts_api, alerts_batch, "alerts")
        assert {through_batch[c]["stage"] for c in alerts_batch} <= {"new", "existing"}
        assert {c for c, row in through_batch.items() if row["alert"]} == alerts_batch.keys()
