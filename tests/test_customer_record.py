"""The customer 360 (GET /v1/customers/{id}) on customers of the synthetic book: stages from
their trails, holdings from the aggregates, the latest assessments after a score by id,
open alerts and complaints through their domains, tenant isolation and the audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.customers.record_schemas import CustomerView
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.security.principal import ALL_SCOPES
from app.training.synth import generate_book
from app.training.trail import book_events
from tests.alert_support import settle_alerts
from tests.casework_support import new_key, put_staff
from tests.conftest import ON_SQLITE_ONLY


@dataclass
class Record:
    client: TestClient
    key: dict[str, str]
    other: dict[str, str]
    staff: dict[str, str]
    ids: dict[str, str]  # the book's lifecycle at its last month -> customer id


@pytest.fixture(scope="module")
def book() -> pd.DataFrame:
    frame: pd.DataFrame = generate_book(customers=100, months=6, seed=3).to_pandas()
    frame["customer_id"] = f"cr{uuid.uuid4().hex[:6]}-" + frame["customer_id"]
    return frame


@pytest.fixture(scope="module")
def record(
    database_url: str, settings_for: Any, registry: ModelRegistry, book: pd.DataFrame
) -> Iterator[Record]:
    """One customer of each kind ingested for a tenant; at risk from any churn score."""
    # No background rescoring: the complaint below queues one that would race the staff
    # directory's writes of the next test's setup on SQLite (tests/test_casework_* meet it).
    settings = settings_for(
        database_url, auth_enabled=True, churn_alert_probability=1e-6, rescore_in_process=False
    )
    app = create_app(settings, registry)
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    last = book[book["month"] == book["month"].max()]
    ids = {
        stage: str(last[last["lifecycle"] == stage]["customer_id"].iloc[0])
        for stage in ("existing", "prospect", "lost")
    }
    events = [e for e in book_events(book) if e["customer_id"] in set(ids.values())]
    with TestClient(app) as client:
        _, key = new_key(app, *sorted(ALL_SCOPES), tenant=tenant)
        _, other = new_key(app, *sorted(ALL_SCOPES), tenant=f"{tenant}-other")
        _, admin = new_key(app, "staff:admin", tenant=tenant)
        principal, staff = new_key(app, tenant=tenant)
        put_staff(client, admin, "rm-1", principal=principal, max_severity="high")
        response = client.post("/v1/events", json={"events": events}, headers=key)
        assert response.status_code == 200, response.text
        yield Record(client, key, other, staff, ids)


def test_the_360_shows_stages_holdings_assessments_alerts_and_complaints(
    record: Record, book: pd.DataFrame
) -> None:
    client, customer = record.client, record.ids["existing"]
    complaint = {
        "customer_id": customer,
        "channel": "branch",
        "category": "fees",
        "product": "current_account",
        "severity": "low",
        "amount_at_stake": 100.0,
        "description": "Charged twice.",
    }
    filed = client.post("/v1/complaints", json=complaint, headers=record.staff)
    assert filed.status_code == 201, filed.text
    assessed = client.post(f"/v1/customers/{customer}/assessment", headers=record.key)
    assert assessed.status_code == 200, assessed.text
    settle_alerts(client.app)

    response = client.get(f"/v1/customers/{customer}", params={"events": 3}, headers=record.key)
    assert response.status_code == 200, response.text
    view = CustomerView.model_validate(response.json())
    row = book[(book["customer_id"] == customer) & (book["month"] == book["month"].max())].iloc[0]
    assert view.profile["age"] == float(row["age"])
    held = {h.product: h.balance for h in view.holdings}
    assert set(held) == {p for p in held if bool(row[f"has_{p}"])} and held
    if "current_account" in held:
        assert held["current_account"] == pytest.approx(float(row["current_account_balance"]))
    # The book ended months ago: no activity since, so dormant; the churn score crossed the
    # (test's) threshold, which dormancy outranks but the record keeps.
    assert view.stage is not None
    assert (view.stage.current, view.stage.at_risk) == ("dormant", True)
    assert [m.to_stage for m in view.stage.history][:1] == ["dormant"]
    tasks = {a.task for a in view.assessments}
    assert {"churn", "tier", "recommendation"} <= tasks
    churn = next(a for a in view.assessments if a.task == "churn")
    assert churn.stage == "existing" and churn.reasons
    assert view.tier is not None and view.tier.tier == assessed.json()["tier"]["tier"]
    assert [r["product"] for r in view.recommendations] == [
        p["product"] for p in assessed.json()["recommendations"]["products"]
    ]
    assert [a.customer_id for a in view.open_alerts] == [customer]
    assert [c.id for c in view.open_complaints] == [filed.json()["id"]]
    assert len(view.events) == 3
    assert view.events[0].occurred_at >= view.events[-1].occurred_at


def test_the_360_shows_the_policy_tier_with_its_gaps_and_the_points_balance(
    record: Record,
) -> None:
    client, customer = record.client, record.ids["existing"]
    before = client.get(f"/v1/customers/{customer}", headers=record.key)
    assert before.status_code == 200, before.text
    assert before.json()["points"] is None, "no ledger yet"
    tier = client.get(f"/v1/customers/{customer}/tier", headers=record.key)
    assert tier.status_code == 200, tier.text
    assert before.json()["tier_of_record"] == tier.json()
    earned = client.post(
        f"/v1/customers/{customer}/points",
        json={"kind": "earn", "points": 120, "idempotency_key": "360-1"},
        headers=record.key,
    )
    assert earned.status_code == 201, earned.text
    after = client.get(f"/v1/customers/{customer}", headers=record.key).json()
    assert after["points"] == earned.json()["balance"] and after["points"]["total"] > 0
    prospect = client.get(f"/v1/customers/{record.ids['prospect']}", headers=record.key).json()
    assert prospect["points"] is None


@ON_SQLITE_ONLY
def test_every_view_is_audited(record: Record, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[dict[str, Any]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            lines.append({"event": event, **fields})

    app: Any = record.client.app
    monkeypatch.setattr(app.state.guard, "audit", Recorder())
    customer = record.ids["existing"]
    assert record.client.get(f"/v1/customers/{customer}", headers=record.key).status_code == 200
    (line,) = lines
    assert line["route"] == "/v1/customers/{customer_id}" and line["customer"] == customer
    assert line["view"] == "360" and line["status"] == 200


def test_stages_of_prospects_and_lost_customers_map_to_the_scoring_core(record: Record) -> None:
    for book_stage, stage in (("prospect", "prospect"), ("lost", "lost")):
        customer = record.ids[book_stage]
        view = record.client.get(f"/v1/customers/{customer}", headers=record.key).json()
        assert view["stage"]["current"] == stage, (book_stage, view["stage"])
        assessed = record.client.post(
            f"/v1/customers/{customer}/assessment", headers=record.key
        ).json()
        assert assessed["lifecycle"] == stage


def test_the_360_is_tenant_isolated_and_needs_its_scope(record: Record) -> None:
    customer = record.ids["existing"]
    for headers, status in ((record.other, 404), (record.staff, 403), ({}, 401)):
        answer = record.client.get(f"/v1/customers/{customer}", headers=headers)
        assert answer.status_code == status, answer.text
    missing = record.client.get("/v1/customers/nobody-at-all", headers=record.key)
    assert missing.status_code == 404 and missing.json()["code"] == "customer_not_found"


@ON_SQLITE_ONLY
def test_the_documented_example_is_a_valid_view(record: Record) -> None:
    spec = record.client.get("/openapi.json", headers=record.key).json()
    (example,) = spec["components"]["schemas"]["CustomerView"]["examples"]
    CustomerView.model_validate(example)
    operation = spec["paths"]["/v1/customers/{customer_id}"]["get"]
    assert "404" in operation["responses"]
