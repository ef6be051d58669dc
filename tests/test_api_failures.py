"""The scoring API when its database or score writer fails: 503, nothing written, and
recovery afterwards."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.casework.schemas import STAFF_EXAMPLE
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from tests.conftest import ON_SQLITE_ONLY, customer_record, models_without
from tests.db_support import TcpProxy, migrated_postgres_database, migrated_sqlite_file


def churn_customers(rows: pd.DataFrame, registry: ModelRegistry, n: int) -> list[dict[str, Any]]:
    model = registry.get(Task.CHURN)
    assert model is not None
    return [customer_record(row, model.schema) for _, row in rows.head(n).iterrows()]


def count_rows(url: str, customer_ids: list[str]) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM score WHERE customer_id = ANY(:ids)")
            if engine.dialect.name == "sqlite":
                marks = ", ".join(f":id{i}" for i in range(len(customer_ids)))
                query = text(f"SELECT count(*) FROM score WHERE customer_id IN ({marks})")
                return int(
                    connection.scalar(query, {f"id{i}": c for i, c in enumerate(customer_ids)}) or 0
                )
            return int(connection.scalar(query, {"ids": customer_ids}) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, str, TcpProxy]]:
    """A migrated PostgreSQL database, reached directly and through a proxy a test can cut."""
    with migrated_postgres_database() as database_url:
        direct = make_url(database_url)
        proxy = TcpProxy("127.0.0.1", direct.port or 5432)
        proxy.start()
        try:
            proxied = direct.set(port=proxy.port).render_as_string(hide_password=False)
            yield database_url, proxied, proxy
        finally:
            proxy.stop()


@pytest.mark.postgres
def test_postgres_down_gives_503_and_writes_nothing(
    proxied_postgres: tuple[str, str, TcpProxy],
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    database_url, url, proxy = proxied_postgres
    customers = churn_customers(sample_rows["existing"], registry, 3)
    app = create_app(settings_for(url), registry)
    with TestClient(app) as client:
        assert client.post("/v1/churn/scores", json={"customers": customers[:1]}).status_code == 200
        proxy.stop()
        response = client.post("/v1/churn/scores", json={"customers": customers[1:]})
        assert response.status_code == 503
        problem = response.json()
        assert problem["code"] == "database_unavailable"
        assert "nothing was saved" in problem["detail"]
        assert "psycopg" not in response.text.lower()  # no driver internals leak
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] is False
        proxy.start()
        assert count_rows(database_url, [c["customer_id"] for c in customers[1:]]) == 0
        again = client.post("/v1/churn/scores", json={"customers": customers[1:]})
        assert again.status_code == 200
        assert client.get("/readyz").status_code == 200
    assert count_rows(database_url, [c["customer_id"] for c in customers]) == 3


def test_broken_database_gives_503_and_writes_nothing(
    tmp_path: Any,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    """A SQLite database whose score table is gone: the call fails whole, then recovers."""
    url = migrated_sqlite_file(tmp_path / "broken.db")
    customers = churn_customers(sample_rows["existing"], registry, 2)
    engine = create_engine(url)
    app = create_app(settings_for(url), registry)
    with TestClient(app) as client:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE score RENAME TO score_away"))
        response = client.post("/v1/churn/scores", json={"customers": customers})
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE score_away RENAME TO score"))
        assert count_rows(url, [c["customer_id"] for c in customers]) == 0
        assert client.post("/v1/churn/scores", json={"customers": customers}).status_code == 200
    assert count_rows(url, [c["customer_id"] for c in customers]) == 2
    engine.dispose()


@ON_SQLITE_ONLY
def test_missing_model_gives_503(
    database_url: str,
    settings_for: Any,
    models_dir: Any,
    sample_rows: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    full = ModelRegistry.load(models_dir)
    partial = ModelRegistry(
        {t: m for t, m in full.loaded.items() if t is not Task.PROSPECT},
        {Task.PROSPECT: "no model"},
    )
    settings = settings_for(database_url).model_copy(
        update={"models_dir": models_without(Task.PROSPECT, models_dir, tmp_path)}
    )
    app = create_app(settings, partial)
    with TestClient(app) as client:
        response = client.post("/v1/prospect/scores", json={"customers": [{"customer_id": "p"}]})
        assert response.status_code == 503
        assert response.json()["code"] == "model_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "missing" in ready.json()["models"]["prospect"]


def test_a_score_writer_that_cannot_come_back_fails_liveness(
    tmp_path: Any,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer process dies and its replacement cannot start: scoring answers 503 with
    nothing written, and /healthz fails so that the orchestrator restarts the worker."""
    url = migrated_sqlite_file(tmp_path / "writer.db")
    customers = churn_customers(sample_rows["existing"], registry, 2)
    app = create_app(settings_for(url, score_writer="process"), registry)
    with TestClient(app) as client:
        assert client.post("/v1/churn/scores", json={"customers": customers[:1]}).status_code == 200
        writer = app.state.scoring.writer
        monkeypatch.setattr("sys.executable", "/bin/false")  # no replacement will start
        os.kill(writer.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while writer.alive:
            assert time.monotonic() < deadline, "the writer did not give up"
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["writer"] is False
        response = client.post("/v1/churn/scores", json={"customers": customers[1:]})
        assert response.status_code == 503 and "nothing was saved" in response.json()["detail"]
        monkeypatch.undo()
    assert count_rows(url, [c["customer_id"] for c in customers]) == 1


def score_in_background(
    client: TestClient, customers: list[dict[str, Any]]
) -> tuple[threading.Thread, list[Any]]:
    """A churn call on another thread (its writer is frozen): the thread and its answer."""
    answers: list[Any] = []
    call = threading.Thread(
        target=lambda: answers.append(
            client.post("/v1/churn/scores", json={"customers": customers})
        )
    )
    call.start()
    return call, answers


def test_a_write_lost_with_the_writer_says_its_outcome_is_unknown(
    tmp_path: Any,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    """The writer process takes a call's rows and dies before confirming them: the 503 must
    not claim that nothing was saved (it cannot know), as a refused write's does."""
    url = migrated_sqlite_file(tmp_path / "unknown.db")
    customers = churn_customers(sample_rows["existing"], registry, 1)
    app = create_app(settings_for(url, score_writer="process"), registry)
    with TestClient(app) as client:
        writer = app.state.scoring.writer
        first = writer.pid
        os.kill(first, signal.SIGSTOP)  # the child takes no more: the call waits in flight
        call, answers = score_in_background(client, customers)
        time.sleep(0.5)
        assert not answers
        os.kill(first, signal.SIGKILL)
        call.join(30)
        (response,) = answers
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "may or may not have been saved" in detail and "nothing was saved" not in detail


def test_readiness_fails_while_the_writer_is_frozen_and_recovers(
    tmp_path: Any,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    url = migrated_sqlite_file(tmp_path / "frozen.db")
    customers = churn_customers(sample_rows["existing"], registry, 1)
    settings = settings_for(url, score_writer="process", score_writer_stall_s=0.3)
    app = create_app(settings, registry)
    with TestClient(app) as client:
        assert client.get("/readyz").json()["committing"] is True
        child = app.state.scoring.writer.pid
        os.kill(child, signal.SIGSTOP)
        call, answers = score_in_background(client, customers)
        time.sleep(0.8)
        frozen = client.get("/readyz")
        assert frozen.status_code == 503 and frozen.json()["committing"] is False
        assert frozen.json()["writer"] is True  # it still takes writes: it does not commit them
        os.kill(child, signal.SIGCONT)
        call.join(30)
        assert answers[0].status_code == 200
        assert client.get("/readyz").status_code == 200


def test_readiness_fails_after_a_failed_commit_until_the_next_one(
    tmp_path: Any,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk makes every commit fail: readiness says so, then recovers with the disk."""
    url = migrated_sqlite_file(tmp_path / "full.db")
    customers = churn_customers(sample_rows["existing"], registry, 2)
    app = create_app(settings_for(url, score_writer="thread"), registry)
    with TestClient(app) as client:
        writer = app.state.scoring.writer
        real_commit = writer._insert_and_commit

        def disk_full(*args: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(writer, "_insert_and_commit", disk_full)
        refused = client.post("/v1/churn/scores", json={"customers": customers[:1]})
        assert refused.status_code == 503
        full = client.get("/readyz")
        assert full.status_code == 503 and full.json()["committing"] is False
        monkeypatch.setattr(writer, "_insert_and_commit", real_commit)
        saved = client.post("/v1/churn/scores", json={"customers": customers[1:]})
        assert saved.status_code == 200
        assert client.get("/readyz").status_code == 200


@pytest.mark.postgres
def test_every_domain_answers_503_while_postgres_is_down(
    proxied_postgres: tuple[str, str, TcpProxy], settings_for: Any, registry: ModelRegistry
) -> None:
    """Reads and writes outside scoring too: a 503 naming the database, never a 500."""
    _, url, proxy = proxied_postgres
    app = create_app(settings_for(url), registry)
    calls = [
        ("GET", "/v1/staff", None),
        ("GET", "/v1/customers/C1/events", None),
        ("GET", "/v1/alerts", None),
        ("GET", "/v1/customers/C1/scores", None),
        ("PUT", "/v1/staff/rm-1", STAFF_EXAMPLE),
    ]
    with TestClient(app) as client:
        proxy.stop()
        for method, path, body in calls:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["code"] == "database_unavailable", path
        proxy.start()
        assert client.get("/v1/alerts").status_code == 200
