"""Request records (issue 20, item 1): a request that timed out (504) but committed later is
found by its retry with the same Idempotency-Key, which answers the first result and writes
nothing; GET /v1/requests/{id} says what became of a request, to its own tenant only."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app.db import migrate
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.scoring.repository import REQUESTS_PER_STATEMENT, RequestRow, insert_requests
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from app.training.synth import generate_book
from app.training.trail import book_events
from tests.db_support import temporary_postgres_database, temporary_sqlite_database
from tests.test_api_failures import churn_customers, count_rows

TIMEOUT_S = 1.0
OUTBOX = (
    "INSERT INTO outbox_message (id, channel, kind, payload, status, attempts, created_at, "
    "next_attempt_at) VALUES ('m1', 'webhook', 'alert_opened', '{}', 'delivered', 1, :at, :at)"
)
ATTEMPT = (
    "INSERT INTO outbox_attempt (message_id, number, dispatcher, started_at, finished_at, ok) "
    "VALUES ('m1', 1, 'd', :at, :at, true)"
)


class Caller:
    """One API client of the app (several share its one TestClient and its lifespan)."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.headers = {"X-API-Key": key}

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, body: Any, key: str | None = None) -> Any:
        headers = self.headers if key is None else {**self.headers, "Idempotency-Key": key}
        return self.client.post(path, json=body, headers=headers)


@pytest.fixture
def frozen_app(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[tuple[FastAPI, Caller, Caller]]:
    """An app whose score writer is a child process a test can freeze, with a client of
    tenant "bank-a" and one of tenant "bank-b"."""
    settings = settings_for(
        database_url,
        auth_enabled=True,
        tenant_isolation=True,
        score_writer="process",
        request_timeout_s=TIMEOUT_S,
    )
    app = create_app(settings, registry)
    scopes = sorted(ALL_SCOPES)
    _, key_a = create_client(app.state.engine, name="a", scopes=scopes, tenant="bank-a")
    _, key_b = create_client(app.state.engine, name="b", scopes=scopes, tenant="bank-b")
    with TestClient(app) as client:
        yield app, Caller(client, key_a), Caller(client, key_b)


def wait_until_committed(client: Caller, request_id: str) -> dict[str, Any]:
    """Poll GET /v1/requests/{id} until the request is committed."""
    deadline = time.monotonic() + 20
    while True:
        answer = client.get(f"/v1/requests/{request_id}")
        if answer.status_code == 200:
            found: dict[str, Any] = answer.json()
            return found
        assert answer.status_code == 404
        assert time.monotonic() < deadline, "the timed-out request never committed"
        time.sleep(0.05)


def timed_out_call(app: FastAPI, client: Caller, customers: list[dict[str, Any]], key: str) -> str:
    """A churn call whose writer is frozen past the request timeout: 504; its request id."""
    child = app.state.scoring.writer.pid
    os.kill(child, signal.SIGSTOP)
    try:
        first = client.post("/v1/churn/scores", {"customers": customers}, key)
    finally:
        os.kill(child, signal.SIGCONT)
    assert first.status_code == 504
    return str(first.headers["X-Request-ID"])


def test_a_retry_after_a_timeout_that_committed_answers_the_first_result(
    frozen_app: tuple[FastAPI, Caller, Caller],
    database_url: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app, bank_a, bank_b = frozen_app
    customers = churn_customers(sample_rows["existing"], registry, 2)
    for customer in customers:
        customer["customer_id"] = f"R-{uuid.uuid4().hex[:12]}"
    ids = [c["customer_id"] for c in customers]
    key = f"retry-{uuid.uuid4()}"
    first_id = timed_out_call(app, bank_a, customers, key)
    # The client gave up, but the write was still queued: it commits after the 504.
    outcome = wait_until_committed(bank_a, first_id)
    assert outcome["status"] == "committed"
    assert (outcome["operation"], outcome["tasks"]) == ("churn", ["churn"])
    assert (outcome["customers"], outcome["rows"], outcome["idempotency_key"]) == (2, 2, True)
    assert count_rows(database_url, ids) == 2

    retry = bank_a.post("/v1/churn/scores", {"customers": customers}, key)
    assert retry.status_code == 200
    assert retry.json()["request_id"] == first_id
    assert [r["customer_id"] for r in retry.json()["results"]] == ids
    again = bank_a.post("/v1/churn/scores", {"customers": customers}, key)
    assert again.status_code == 200 and again.content == retry.content
    assert count_rows(database_url, ids) == 2  # written once
    # The retry's own request wrote nothing: it has no record.
    assert bank_a.get(f"/v1/requests/{retry.headers['X-Request-ID']}").status_code == 404

    # Another tenant cannot learn of it; a request id never seen answers 404 too.
    hidden = bank_b.get(f"/v1/requests/{first_id}")
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
    assert bank_a.get(f"/v1/requests/{uuid.uuid4().hex}").status_code == 404
    # The key with another body is refused, not run.
    other = bank_a.post("/v1/churn/scores", {"customers": customers[:1]}, key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert count_rows(database_url, ids) == 2


def test_a_retry_racing_the_first_write_writes_nothing(
    frozen_app: tuple[FastAPI, Caller, Caller],
    database_url: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    """The retry reaches the writer while the first try's rows are still queued: the unique
    Idempotency-Key digest lets exactly one of the two writes commit."""
    app, bank_a, _ = frozen_app
    customers = churn_customers(sample_rows["existing"], registry, 3)
    for customer in customers:
        customer["customer_id"] = f"Q-{uuid.uuid4().hex[:12]}"
    ids = [c["customer_id"] for c in customers]
    key = f"race-{uuid.uuid4()}"
    child = app.state.scoring.writer.pid
    os.kill(child, signal.SIGSTOP)
    answers: list[Any] = []
    try:
        first = bank_a.post("/v1/churn/scores", {"customers": customers}, key)
        assert first.status_code == 504
        retry = threading.Thread(
            target=lambda: answers.append(
                bank_a.post("/v1/churn/scores", {"customers": customers}, key)
            )
        )
        retry.start()
        time.sleep(0.3)  # both writes now wait in the frozen writer
    finally:
        os.kill(child, signal.SIGCONT)
    retry.join(20)
    (answer,) = answers
    assert answer.status_code == 200
    assert answer.json()["request_id"] == first.headers["X-Request-ID"]
    assert count_rows(database_url, ids) == 3


def test_requests_without_a_key_are_recorded_too(
    client: TestClient, registry: ModelRegistry, sample_rows: dict[str, pd.DataFrame]
) -> None:
    customers = churn_customers(sample_rows["existing"], registry, 1)
    scored = client.post("/v1/churn/scores", json={"customers": customers})
    assert scored.status_code == 200
    outcome = client.get(f"/v1/requests/{scored.json()['request_id']}").json()
    assert (outcome["customers"], outcome["rows"], outcome["idempotency_key"]) == (1, 1, False)
    assessed = client.post("/v1/assessments", json=customers[0])
    assert assessed.status_code == 200
    outcome = client.get(f"/v1/requests/{assessed.json()['request_id']}").json()
    assert outcome["operation"] == "assessment"
    assert outcome["tasks"] == [m["task"] for m in assessed.json()["models"]]
    assert outcome["rows"] == len(outcome["tasks"])


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0010_goes_up_down_and_up_with_rows_present(kind: str) -> None:
    """Request records, and the tenant of outbox messages; nothing else is lost either way."""
    temporary = temporary_postgres_database if kind == "postgres" else temporary_sqlite_database
    score = (
        "INSERT INTO score (request_id, task, customer_id, outputs, reasons, features, "
        "created_at, source) VALUES ('r1', 'churn', 'c1', '{}', '[]', '{}', :at, 'api')"
    )
    record = (
        "INSERT INTO request_record (request_id, tenant, operation, status, tasks, customers, "
        "rows, key_digest, created_at, committed_at) VALUES "
        "('r1', 'bank-a', 'churn', 'committed', '[\"churn\"]', 1, 1, :key, :at, :at)"
    )
    at = datetime.now(UTC)
    with temporary() as url:
        migrate.upgrade(url, "0009")
        engine = create_db_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text(score), {"at": at})
                connection.execute(text(OUTBOX), {"at": at})
                connection.execute(text(ATTEMPT), {"at": at})
            migrate.upgrade(url)
            with engine.begin() as connection:
                connection.execute(text(record), {"at": at, "key": "k" * 64})
                with pytest.raises(IntegrityError), connection.begin_nested():
                    # The Idempotency-Key digest is unique: a second request cannot take it.
                    connection.execute(
                        text(record.replace("'r1'", "'r2'")), {"at": at, "key": "k" * 64}
                    )
                connection.execute(text("UPDATE outbox_message SET tenant = 'bank-a'"))
            migrate.downgrade(url, "0009")
            assert "request_record" not in inspect(engine).get_table_names()
            with engine.begin() as connection:
                assert connection.scalar(text("SELECT count(*) FROM outbox_attempt")) == 1
            migrate.upgrade(url)
            with engine.begin() as connection:
                connection.execute(text(record), {"at": at, "key": "k" * 64})
                assert connection.scalar(text("SELECT count(*) FROM score")) == 1
                assert connection.scalar(text("SELECT count(*) FROM request_record")) == 1
                assert connection.scalar(text("SELECT tenant FROM outbox_message")) is None
                assert connection.scalar(text("SELECT count(*) FROM outbox_attempt")) == 1
        finally:
            engine.dispose()


def test_a_retried_assessment_by_id_answers_the_first_result(
    frozen_app: tuple[FastAPI, Caller, Caller], database_url: str
) -> None:
    """Score by id keeps the same promise: a retry after a 504 that committed writes nothing."""
    app, bank_a, _ = frozen_app
    book = generate_book(customers=10, months=4, seed=5).to_pandas()
    book["customer_id"] = f"I{uuid.uuid4().hex[:6]}-" + book["customer_id"]
    events = list(book_events(book))
    assert bank_a.post("/v1/events", {"events": events}).status_code == 200
    last = book[(book["month"] == book["month"].max()) & (book["lifecycle"] == "existing")]
    customer = str(last["customer_id"].iloc[0])
    path = f"/v1/customers/{customer}/assessment"
    key = f"by-id-{uuid.uuid4()}"
    child = app.state.scoring.writer.pid
    os.kill(child, signal.SIGSTOP)
    try:
        first = bank_a.post(path, None, key)
    finally:
        os.kill(child, signal.SIGCONT)
    assert first.status_code == 504
    first_id = str(first.headers["X-Request-ID"])
    outcome = wait_until_committed(bank_a, first_id)
    assert outcome["operation"] == "assessment_by_id"
    stored = count_rows(database_url, [customer])
    assert stored == outcome["rows"] > 0

    retry = bank_a.post(path, None, key)
    assert retry.status_code == 200, retry.text
    assert retry.json()["request_id"] == first_id
    assert count_rows(database_url, [customer]) == stored  # written once


def test_a_group_of_records_past_one_statement_is_inserted_whole(database_url: str) -> None:
    """Records are inserted in statements of REQUESTS_PER_STATEMENT; a repeated request id or
    key digest is left out, however the group is cut."""
    now = datetime.now(UTC)
    rows: list[RequestRow] = [
        RequestRow(
            request_id=f"g-{uuid.uuid4().hex}",
            tenant="bank-a",
            operation="churn",
            tasks=["churn"],
            customers=1,
            rows=1,
            key_digest=f"{i:064d}" if i % 2 else None,
            request_digest=None,
            response=b"sealed" if i % 2 else None,
            created_at=now,
        )
        for i in range(REQUESTS_PER_STATEMENT + 3)
    ]
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            first = insert_requests(connection, rows=rows[:2], committed_at=now)
            inserted = insert_requests(connection, rows=rows, committed_at=now)
            again = insert_requests(
                connection, rows=[{**rows[5], "request_id": "g-new"}], committed_at=now
            )
        assert first == {rows[0]["request_id"], rows[1]["request_id"]}
        assert inserted == {r["request_id"] for r in rows[2:]}
        assert again == set()  # row 5's key digest is taken
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT tasks, response FROM request_record WHERE request_id = :id"),
                {"id": rows[1]["request_id"]},
            ).one()
        tasks = stored[0] if isinstance(stored[0], list) else json.loads(stored[0])  # PG parses
        assert (tasks, bytes(stored[1])) == (["churn"], b"sealed")
    finally:
        engine.dispose()
