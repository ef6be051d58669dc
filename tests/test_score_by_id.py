"""Score by customer id: from the trail, through the one assessment function; material events
re-assess in the background."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.scoring.manifest import Task
from app.scoring.tables import Score
from app.security.api_keys import create_client
from app.training.features import schema_for
from app.training.synth import generate_book
from app.training.trail import book_events


@pytest.fixture
def existing(client: TestClient) -> list[str]:
    """Ids of existing customers whose trails are stored (a small book of their own)."""
    book: pd.DataFrame = generate_book(customers=40, months=6, seed=9).to_pandas()
    book["customer_id"] = f"sb{uuid.uuid4().hex[:6]}-" + book["customer_id"]
    events = list(book_events(book))
    for start in range(0, len(events), 5000):
        response = client.post("/v1/events", json={"events": events[start : start + 5000]})
        assert response.status_code == 200, response.text
    last = book[(book["month"] == book["month"].max()) & (book["lifecycle"] == "existing")]
    return [str(c) for c in last["customer_id"][:3]]


def test_score_by_id_equals_posting_the_same_features(
    client: TestClient, existing: list[str]
) -> None:
    customer = existing[0]
    by_id = client.post(f"/v1/customers/{customer}/assessment")
    assert by_id.status_code == 200, by_id.text
    answer = by_id.json()
    assert answer["lifecycle"] == "existing" and answer["churn"] is not None
    served = client.get(f"/v1/customers/{customer}/features", params={"month": answer["month"]})
    names = {f.name for f in schema_for(Task.CHURN).features}
    features = {k: v for k, v in served.json()["features"].items() if k in names}
    posted = client.post("/v1/assessments", json={"customer_id": customer, **features})
    assert posted.status_code == 200, posted.text
    for key in ("lifecycle", "churn", "tier", "recommendations", "models"):
        assert answer[key] == posted.json()[key], key
    only = client.post(f"/v1/customers/{customer}/assessment", json={"tasks": ["churn"]})
    assert only.json()["tier"] is None and only.json()["churn"] == answer["churn"]


def test_a_complaint_rescores_in_the_background_within_five_seconds(
    client: TestClient, engine: Engine, existing: list[str]
) -> None:
    customer = existing[1]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    complaint = {
        "event_id": f"{customer}-complaint-now",
        "type": "complaint",
        "customer_id": customer,
        "occurred_at": now,
        "complaint_id": "K-now",
        "severity": "high",
    }
    assert client.post("/v1/events", json={"events": [complaint]}).status_code == 200
    committed = time.monotonic()
    found: list[Score] = []
    while time.monotonic() - committed < 5.0 and not found:
        with Session(engine) as session:
            query = select(Score).where(Score.customer_id == customer, Score.source == "event")
            found = list(session.scalars(query))
        time.sleep(0.1)
    assert found, "no background assessment within 5 s"
    churn = next(row for row in found if row.task == "churn")
    assert churn.features["open_complaint"] is True  # the features it used, with the complaint


def test_unknown_and_other_tenants_customers_are_not_found(
    client: TestClient, existing: list[str]
) -> None:
    assert client.post("/v1/customers/nobody-at-all/assessment").status_code == 404
    _, key = create_client(
        client.app.state.engine,  # type: ignore[attr-defined]
        name="other",
        scopes=["scores:write", "customers:read"],
        tenant="other-bank",
    )
    response = client.post(f"/v1/customers/{existing[0]}/assessment", headers={"X-API-Key": key})
    assert response.status_code == 404, response.text


def test_bulk_assesses_in_order_and_names_a_bad_id_by_index(
    client: TestClient, existing: list[str]
) -> None:
    response = client.post("/v1/customers/assessments", json={"customer_ids": existing[:2]})
    assert response.status_code == 200, response.text
    assert [r["customer_id"] for r in response.json()["results"]] == existing[:2]
    for bad in ("nobody-at-all", "not an id!"):
        response = client.post(
            "/v1/customers/assessments", json={"customer_ids": [existing[0], bad]}
        )
        assert response.status_code == 422, response.text
        fields: list[Any] = [e["field"] for e in response.json()["errors"]]
        assert any("customer_ids[1]" in str(f) for f in fields), fields


def _churn_row(probability: float) -> Any:
    return {
        "task": "churn",
        "customer_id": "c1",
        "probability": probability,
        "band": "high" if probability >= 0.5 else "low",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }


def test_the_stage_is_told_only_a_churn_verdict_it_does_not_know() -> None:
    from app.customers.assessments import risk_news
    from app.customers.lifecycle import LifecycleRules, LifecycleStage
    from app.customers.stages import KnownStage

    rules = LifecycleRules(churn_probability=0.5)
    risky, calm = [_churn_row(0.9)], [_churn_row(0.1)]
    at_risk = KnownStage(LifecycleStage.AT_RISK, at_risk=True)
    active = KnownStage(LifecycleStage.ACTIVE, at_risk=False)
    assert not risk_news(risky, at_risk, rules) and not risk_news(calm, active, rules)
    assert risk_news(risky, active, rules) and risk_news(calm, at_risk, rules)
    # Nothing stored yet (or an evaluated stage that was never told a verdict): tell it.
    assert risk_news(calm, None, rules)
    assert risk_news(calm, KnownStage(LifecycleStage.ACTIVE, at_risk=None), rules)
    # No churn row (other tasks only): nothing to tell.
    tier_only = _churn_row(0.9)
    tier_only["task"] = "tier"
    assert not risk_news([tier_only], None, rules)
