"""Event intake: POST /v1/events and a customer's events, on SQLite and PostgreSQL (refusals
decided before anything is stored, on SQLite alone)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.customers.schemas import EventType
from app.customers.tables import CustomerEvent
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.pseudonyms import Pseudonymizer
from tests.conftest import ON_SQLITE_ONLY

SECRET = "s" * 40
NOW = datetime.now(UTC).replace(microsecond=0)


def stamp(days_ago: float = 1.0) -> str:
    """An ISO time ``days_ago`` days before the tests started."""
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def one_of_each(prefix: str, customer_id: str) -> list[dict[str, Any]]:
    """One event of every type for one customer, ids starting with ``prefix``."""
    common = {"customer_id": customer_id}
    events: list[dict[str, Any]] = [
        {
            "type": "customer_profile",
            "age": 41,
            "occupation": "employee",
            "income": 52000.0,
            "region": "north",
            "branch": "B-012",
            "relationship_manager": "rm-042",
            "segment": "affluent",
        },
        {"type": "account_opened", "product": "savings", "account_id": "A-1"},
        {"type": "account_closed", "product": "credit_card", "reason": "fees"},
        {"type": "balance_snapshot", "product": "mortgage", "balance": -120000.5},
        {
            "type": "transaction",
            "amount": 2450.0,
            "direction": "credit",
            "channel": "transfer",
            "category": "salary",
            "currency": "EUR",
        },
        {"type": "digital_session", "platform": "mobile_app", "duration_s": 95.0},
        {"type": "contact", "kind": "branch_visit", "branch": "B-012", "topic": "mortgage"},
        {"type": "complaint", "complaint_id": "K-7", "severity": "high", "category": "fees"},
        {"type": "campaign_response", "campaign_id": "X-1", "response": "accepted"},
    ]
    return [
        {"event_id": f"{prefix}-{i}", "occurred_at": stamp(10 - i), **common, **event}
        for i, event in enumerate(events)
    ]


def as_columns(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The same events in the columns form: null where a field does not apply."""
    names = list(dict.fromkeys(name for event in events for name in event))
    return {"columns": {name: [event.get(name) for event in events] for name in names}}


def stored(engine: Engine, prefix: str) -> list[CustomerEvent]:
    """Rows whose event id starts with ``prefix``, by event id."""
    with Session(engine) as session:
        query = (
            select(CustomerEvent)
            .where(CustomerEvent.event_id.startswith(prefix))
            .order_by(CustomerEvent.event_id, CustomerEvent.tenant)
        )
        return list(session.scalars(query))


def count(engine: Engine, prefix: str) -> int:
    """Rows whose event id starts with ``prefix``."""
    with engine.connect() as connection:
        query = select(func.count()).where(CustomerEvent.event_id.startswith(prefix))
        return connection.scalar(query) or 0


@pytest.fixture
def prefix() -> str:
    """Event ids of one test (the database is shared by the session)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_app(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Any]:
    """Authenticated apps with settings overrides, running until the test ends."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> tuple[FastAPI, TestClient]:
        app = create_app(settings_for(database_url, auth_enabled=True, **overrides), registry)
        test_client = TestClient(app, raise_server_exceptions=False)
        test_client.__enter__()
        clients.append(test_client)
        return app, test_client

    yield build
    for test_client in clients:
        test_client.__exit__(None, None, None)


def key_for(app: FastAPI, *scopes: str, tenant: str | None = None) -> dict[str, str]:
    """Headers carrying a new client's key."""
    _, key = create_client(app.state.engine, name="t", scopes=list(scopes), tenant=tenant)
    return {"X-API-Key": key}


def test_every_type_is_stored_with_both_times_and_read_back_latest_first(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    events = one_of_each(prefix, f"{prefix}-C")
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["new"], result["duplicates"]) == (9, 9, 0)
    received_at = datetime.fromisoformat(result["received_at"])
    rows = stored(engine, prefix)
    assert {row.type for row in rows} == {t.value for t in EventType}
    for row, sent in zip(rows, events, strict=True):
        assert row.occurred_at == datetime.fromisoformat(sent["occurred_at"])
        assert row.received_at == received_at
        assert row.customer_id == f"{prefix}-C" and row.tenant is None
        expected = {k: v for k, v in sent.items() if k not in ("event_id", "type", "customer_id")}
        assert row.payload | {"occurred_at": sent["occurred_at"]} == expected | (
            {"status": "opened"} if sent["type"] == "complaint" else {}  # the default, stored
        )
    page = client.get(f"/v1/customers/{prefix}-C/events", params={"limit": 3}).json()
    assert page["total"] == 9
    assert [item["event_id"] for item in page["items"]] == [
        f"{prefix}-8",
        f"{prefix}-7",
        f"{prefix}-6",
    ]
    only = client.get(f"/v1/customers/{prefix}-C/events", params={"type": "transaction"}).json()
    assert [item["payload"]["amount"] for item in only["items"]] == [2450.0]


def test_columns_store_what_objects_store(client: TestClient, engine: Engine, prefix: str) -> None:
    objects = one_of_each(f"{prefix}o", f"{prefix}-C")
    columns = one_of_each(f"{prefix}c", f"{prefix}-C")
    assert client.post("/v1/events", json={"events": objects}).json()["new"] == 9
    response = client.post("/v1/events", json=as_columns(columns))
    assert response.status_code == 200, response.text
    assert response.json()["new"] == 9

    def shape(row: CustomerEvent) -> tuple[Any, ...]:
        return (row.event_id[-2:], row.type, row.customer_id, row.occurred_at, row.payload)

    assert [shape(r) for r in stored(engine, f"{prefix}o")] == [
        shape(r) for r in stored(engine, f"{prefix}c")
    ]


def transaction(event_id: str, customer_id: str = "C-1", **fields: Any) -> dict[str, Any]:
    """A valid transaction event, with ``fields`` replaced."""
    event = {
        "event_id": event_id,
        "type": "transaction",
        "customer_id": customer_id,
        "occurred_at": stamp(),
        "amount": 10.0,
        "direction": "debit",
        "channel": "card",
    }
    return {**event, **fields}


def test_a_repeated_id_is_counted_and_never_stored_twice(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    a, b, c = (transaction(f"{prefix}-{name}") for name in "abc")
    first = client.post("/v1/events", json={"events": [a, b, {**a, "amount": 99.0}]}).json()
    assert (first["new"], first["duplicates"]) == (2, 1)
    second = client.post("/v1/events", json=as_columns([a, c])).json()
    assert (second["new"], second["duplicates"]) == (1, 1)
    assert client.post("/v1/events", json={"events": [a, b, c]}).json()["duplicates"] == 3
    rows = stored(engine, prefix)
    assert [row.event_id for row in rows] == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    assert rows[0].payload["amount"] == 10.0  # the first one sent is the one kept


def test_calls_racing_with_the_same_events_store_each_once(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    events = [transaction(f"{prefix}-{i}", f"C-{i % 7}") for i in range(300)]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: client.post("/v1/events", json={"events": events}), range(4))
        )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert sum(r.json()["new"] for r in results) == 300
    assert sum(r.json()["duplicates"] for r in results) == 900
    assert count(engine, prefix) == 300


def test_late_and_out_of_order_events_are_kept_by_occurrence(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    customer = f"{prefix}-C"
    newer = transaction(f"{prefix}-new", customer, occurred_at=stamp(1))
    older = transaction(f"{prefix}-old", customer, occurred_at=stamp(400))  # a year late
    skewed = transaction(f"{prefix}-skew", customer, occurred_at=stamp(-60 / 86_400))  # 1 min
    assert client.post("/v1/events", json={"events": [newer, skewed]}).json()["new"] == 2
    assert client.post("/v1/events", json={"events": [older]}).json()["new"] == 1
    rows = {row.event_id: row for row in stored(engine, prefix)}
    assert rows[f"{prefix}-old"].received_at > rows[f"{prefix}-new"].received_at
    assert rows[f"{prefix}-old"].occurred_at < rows[f"{prefix}-new"].occurred_at
    page = client.get(f"/v1/customers/{customer}/events").json()
    assert [item["event_id"] for item in page["items"]] == [
        f"{prefix}-skew",
        f"{prefix}-new",
        f"{prefix}-old",
    ]


def bad_events(prefix: str) -> dict[str, tuple[dict[str, Any], str]]:
    """One bad event per rule, each with the field its 422 must name."""
    return {
        "unknown type": ({**transaction(f"{prefix}-1"), "type": "salary_change"}, "type"),
        "infinite amount": (transaction(f"{prefix}-2", amount=float("inf")), "amount"),
        "NaN balance": (
            {
                "event_id": f"{prefix}-3",
                "type": "balance_snapshot",
                "customer_id": "C-1",
                "occurred_at": stamp(),
                "product": "savings",
                "balance": float("nan"),
            },
            "balance",
        ),
        "in the future": (transaction(f"{prefix}-4", occurred_at=stamp(-1)), "occurred_at"),
        "no customer": (
            {k: v for k, v in transaction(f"{prefix}-5").items() if k != "customer_id"},
            "customer_id",
        ),
        "no zone": (transaction(f"{prefix}-6", occurred_at="2026-11-01T10:00:00"), "occurred_at"),
        "tenant in the body": ({**transaction(f"{prefix}-7"), "tenant": "other"}, "tenant"),
    }


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    "case",
    [
        "unknown type",
        "infinite amount",
        "NaN balance",
        "in the future",
        "no customer",
        "no zone",
        "tenant in the body",
    ],
)
def test_a_bad_event_is_named_and_nothing_of_the_call_is_stored(
    client: TestClient, engine: Engine, prefix: str, case: str
) -> None:
    bad, field = bad_events(prefix)[case]
    good = [transaction(f"{prefix}-good-{i}") for i in range(3)]
    # json.dumps writes Infinity and NaN, as some clients do; 1e999 is read as infinite too.
    body = json.dumps({"events": [*good, bad]}).replace("Infinity", "1e999")
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [f"events[3].{field}"]
    assert f"events[3].{field}" in response.json()["detail"]
    assert count(engine, prefix) == 0


@ON_SQLITE_ONLY
def test_every_bad_event_of_a_call_is_listed(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    cases = list(bad_events(prefix).values())
    events = [transaction(f"{prefix}-ok"), *(event for event, _ in cases)]
    response = client.post(
        "/v1/events",
        content=json.dumps({"events": events}).replace("Infinity", "1e999"),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [
        f"events[{i}].{field}" for i, (_, field) in enumerate(cases, start=1)
    ]
    assert "unknown event type 'salary_change'" in response.json()["errors"][0]["message"]
    assert count(engine, prefix) == 0


def test_a_whole_float_is_an_integer_and_a_fraction_is_refused(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    profile = one_of_each(prefix, "C-1")[0]
    refused = client.post("/v1/events", json={"events": [{**profile, "age": 41.5}]})
    assert [e["field"] for e in refused.json()["errors"]] == ["events[0].age"]
    assert client.post("/v1/events", json={"events": [{**profile, "age": 41.0}]}).is_success
    assert [row.payload["age"] for row in stored(engine, prefix)] == [41]


@ON_SQLITE_ONLY
def test_bad_columns_name_the_column_and_row(
    client: TestClient, engine: Engine, prefix: str
) -> None:
    events = [transaction(f"{prefix}-{i}") for i in range(4)]
    body = as_columns(events)
    body["columns"]["amount"][2] = -5.0  # a direction says which way: amounts are positive
    body["columns"]["kind"] = [None, "call", None, None]  # not a field of a transaction
    del body["columns"]["customer_id"]
    response = client.post("/v1/events", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [
        "columns.customer_id",
        "columns.amount[2]",
    ]
    body["columns"]["customer_id"] = ["C-1"] * 4
    body["columns"]["amount"][2] = 5.0
    errors = client.post("/v1/events", json=body).json()["errors"]
    assert [(e["field"], e["message"]) for e in errors] == [
        ("columns.kind[1]", "not a field of a transaction event")
    ]
    body["columns"]["kind"] = [None] * 3
    [error] = client.post("/v1/events", json=body).json()["errors"]
    assert error["field"] == "columns"
    assert (
        "every column must have one value per event_id (4); these differ: ['kind']"
        in (error["message"])
    )
    assert count(engine, prefix) == 0


@ON_SQLITE_ONLY
def test_layouts_and_limits(make_app: Any, engine: Engine, prefix: str) -> None:
    app, client = make_app(max_events_per_call=3)
    headers = key_for(app, "events:write")
    events = [transaction(f"{prefix}-{i}") for i in range(4)]
    response = client.post("/v1/events", json={"events": events}, headers=headers)
    assert response.status_code == 413 and response.json()["limit"] == 3
    response = client.post("/v1/events", json=as_columns(events), headers=headers)
    assert response.status_code == 413
    both = {"events": events[:1], **as_columns(events[:1])}
    response = client.post("/v1/events", json=both, headers=headers)
    assert response.status_code == 422 and "both 'events' and 'columns'" in response.text
    response = client.post("/v1/events", json={}, headers=headers)
    assert response.status_code == 422 and "neither 'events'" in response.text
    assert count(engine, prefix) == 0


@ON_SQLITE_ONLY
def test_each_operation_needs_its_scope(make_app: Any) -> None:
    app, client = make_app()
    body = {"events": [transaction(f"s-{uuid.uuid4().hex}")]}
    others = key_for(app, "scores:write", "scores:read", "customers:read", "admin")
    assert client.post("/v1/events", json=body, headers=others).status_code == 403
    writer = key_for(app, "events:write")
    assert client.post("/v1/events", json=body, headers=writer).status_code == 200
    assert client.get("/v1/customers/C-1/events", headers=writer).status_code == 403
    reader = key_for(app, "customers:read")
    assert client.get("/v1/customers/C-1/events", headers=reader).status_code == 200


def test_a_customer_of_another_tenant_is_never_visible_or_writable(
    make_app: Any, engine: Engine, prefix: str
) -> None:
    app, client = make_app()
    bank_a = key_for(app, "events:write", "customers:read", tenant="bank-a")
    bank_b = key_for(app, "events:write", "customers:read", tenant="bank-b")
    customer = f"{prefix}-C"
    sent_a = transaction(f"{prefix}-1", customer, amount=1.0)
    assert client.post("/v1/events", json={"events": [sent_a]}, headers=bank_a).json()["new"] == 1
    # Bank B's event with the same id and customer id is its own: new, not a duplicate.
    sent_b = transaction(f"{prefix}-1", customer, amount=2.0)
    result = client.post("/v1/events", json={"events": [sent_b]}, headers=bank_b).json()
    assert (result["new"], result["duplicates"]) == (1, 0)
    assert {(row.tenant, row.payload["amount"]) for row in stored(engine, prefix)} == {
        ("bank-a", 1.0),
        ("bank-b", 2.0),
    }
    for headers, amount in ((bank_a, 1.0), (bank_b, 2.0)):
        page = client.get(f"/v1/customers/{customer}/events", headers=headers).json()
        assert [item["payload"]["amount"] for item in page["items"]] == [amount]
    bank_c = key_for(app, "customers:read", tenant="bank-c")
    assert client.get(f"/v1/customers/{customer}/events", headers=bank_c).json()["total"] == 0


def test_customer_ids_are_stored_as_pseudonyms(make_app: Any, engine: Engine, prefix: str) -> None:
    app, client = make_app(pseudonym_secret=SECRET)
    headers = key_for(app, "events:write", "customers:read")
    customer = f"{prefix}-C"
    assert client.post(
        "/v1/events", json=as_columns(one_of_each(prefix, customer)), headers=headers
    ).is_success
    pseudonym = Pseudonymizer(SECRET.encode()).pseudonym(customer)
    assert {row.customer_id for row in stored(engine, prefix)} == {pseudonym}
    page = client.get(f"/v1/customers/{customer}/events", headers=headers).json()
    assert page["total"] == 9 and page["customer_id"] == customer


def test_ten_thousand_events_fit_in_one_call(make_app: Any, engine: Engine, prefix: str) -> None:
    """10,000 profiles with UUID event ids, pretty-printed, are over the 4 MiB of the other
    routes: this route alone takes events_max_body_bytes (16 MiB)."""
    app, client = make_app()
    headers = {**key_for(app, "events:write", "scores:write"), "content-type": "application/json"}
    profile = one_of_each(prefix, "C-1")[0]  # the longest event type, every field given
    events = [
        {**profile, "event_id": f"{prefix}-{uuid.uuid4()}", "customer_id": f"C-{i % 700:010d}"}
        for i in range(10_000)
    ]
    body = json.dumps({"events": events}, indent=4).encode()
    assert len(body) > app.state.settings.max_body_bytes
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["new"] == 10_000
    assert count(engine, prefix) == 10_000
    refused = client.post("/v1/churn/scores", content=body, headers=headers)
    assert refused.status_code == 413


@pytest.mark.timeout(180)
def test_fuzzed_intake_and_reads_never_fail_on_the_server(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> None:
    """More examples than tests/test_fuzz.py gives each operation, on both databases; some
    generated bodies must get through (200), not only be refused."""
    settings = settings_for(database_url, auth_enabled=True, rate_limit_per_s=10_000.0)
    app = create_app(settings, registry)  # schemathesis runs its lifespan around each call
    headers = key_for(app, "events:write", "customers:read")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    statuses: dict[str, set[int]] = {}

    def fuzz(operation: Any) -> None:
        seen = statuses.setdefault(operation.path, set())

        @hypothesis.settings(
            max_examples=60,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(operation.as_strategy())
        def call(case: Case[Any]) -> None:
            response = case.call_and_validate(
                headers=headers, excluded_checks=[positive_data_acceptance]
            )
            seen.add(response.status_code)

        call()

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.path in ("/v1/events", "/v1/customers/{customer_id}/events"):
            fuzz(operation)
    assert set(statuses) == {"/v1/events", "/v1/customers/{customer_id}/events"}
    assert all(status < 500 for seen in statuses.values() for status in seen), statuses
    assert 200 in statuses["/v1/events"] and 200 in statuses["/v1/customers/{customer_id}/events"]
