"""Satisfaction and loyalty indices: formulas, weights from settings, and the customer 360."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import IndexWeightsSetting, Settings
from app.customers.features import (
    DEFAULT_INDEX_WEIGHTS,
    LatestValue,
    MonthCounts,
    TrailEvent,
    aggregate,
    derive_features,
    indices,
)
from app.customers.record import index_weights
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.training.features import build_task_frame, prepare_book, schema_for
from app.training.synth import generate_book
from app.training.trail import moment

MARCH = 2025 * 12 + 2


def features_of(events: list[TrailEvent], month: int) -> dict[str, Any]:
    """Features of customer "c" in ``month`` from events, through the running aggregates."""
    deltas, latest = aggregate(events)
    counts = [MonthCounts(m, d.counts, d.last_activity_at) for (_, m), d in deltas.items()]
    stored = [
        LatestValue(v.month, v.kind, v.key, v.occurred_at, v.number, v.text)
        for v in latest.values()
    ]
    return derive_features(month, counts, stored)


def profile(month: int) -> TrailEvent:
    return TrailEvent(
        "c", "customer_profile", moment(month, 0.1), {"age": 40, "customer_since": "2015-03-01"}
    )


def complaint(month: int, day: float, key: str, **fields: Any) -> TrailEvent:
    return TrailEvent("c", "complaint", moment(month, day), {"complaint_id": key, **fields})


def test_open_complaints_weigh_by_severity_and_wait() -> None:
    calm = features_of([profile(MARCH)], MARCH + 2)
    assert calm["open_complaint_severity"] == 0.0
    assert calm["days_unresolved"] == 0
    events = [
        profile(MARCH),
        complaint(MARCH, 10.0, "k1", severity="high"),
        complaint(MARCH + 1, 5.0, "k2", severity="low"),
    ]
    upset = features_of(events, MARCH + 2)
    assert upset["open_complaint_severity"] == 4.0  # high 3 + low 1
    assert upset["days_unresolved"] == 80  # from day 10 of March to the end of May
    assert upset["satisfaction_index"] < calm["satisfaction_index"]
    # Resolving the older complaint leaves the younger one's wait and points.
    resolved = [*events, complaint(MARCH + 2, 1.0, "k1", status="resolved")]
    after = features_of(resolved, MARCH + 2)
    assert (after["open_complaint_severity"], after["days_unresolved"]) == (1.0, 55)
    assert calm["satisfaction_index"] > after["satisfaction_index"] > upset["satisfaction_index"]


def test_the_formulas_as_documented() -> None:
    values: dict[str, Any] = {
        "complaints_3m": 1,
        "open_complaint_severity": 2.0,
        "days_unresolved": 45,
        "branch_visits": 1,
        "tenure_months": 60,
        "products_held": 3,
        "deposits_change_3m_pct": -20.0,
        "wealth_change_3m_pct": None,
        "days_since_last_activity": 9,
    }
    got = indices(values, DEFAULT_INDEX_WEIGHTS)
    # 0.3 (1 - 1/3) + 0.2 (1 - 2/6) + 0.3 (1 - 45/90) + 0.2 (1/2), over weights summing to 1
    assert got["satisfaction_index"] == pytest.approx(100 * (0.2 + 0.2 / 1.5 + 0.15 + 0.1))
    # No wealth trend yet: the share-of-wallet trend is neutral (0.5).
    assert got["loyalty_index"] == pytest.approx(100 * (0.15 + 0.15 + 0.1 + 0.2 * 0.9))
    values["wealth_change_3m_pct"] = 0.0  # mean change -10%: (-10 + 50) / 100
    assert indices(values, DEFAULT_INDEX_WEIGHTS)["loyalty_index"] == pytest.approx(
        100 * (0.15 + 0.15 + 0.2 * 0.4 + 0.2 * 0.9)
    )
    only_tenure = index_weights(
        Settings(index_weights={"loyalty": {"depth": 0, "wallet_trend": 0, "activity": 0}})
    )
    assert indices(values, only_tenure)["loyalty_index"] == pytest.approx(50.0)


def test_weights_are_validated_naming_the_key() -> None:
    defaults = index_weights(Settings())
    assert dict(defaults.satisfaction) == dict(DEFAULT_INDEX_WEIGHTS.satisfaction)
    assert dict(defaults.loyalty) == dict(DEFAULT_INDEX_WEIGHTS.loyalty)
    with pytest.raises(ValidationError, match=r"satisfaction\.happiness"):
        Settings(index_weights={"satisfaction": {"happiness": 1.0}})
    with pytest.raises(ValidationError, match=r"index_weights\.grumpiness"):
        Settings(index_weights={"grumpiness": {}})
    with pytest.raises(ValidationError, match="tenure"):
        Settings(index_weights={"loyalty": {"tenure": -1}})
    zero = dict.fromkeys(("complaints", "severity", "unresolved", "contacts"), 0)
    with pytest.raises(ValidationError, match="at least one weight"):
        IndexWeightsSetting(satisfaction=zero)


def test_the_360_shows_the_indices_under_the_configured_weights(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> None:
    weights = {"satisfaction": {"complaints": 1, "severity": 0, "unresolved": 0, "contacts": 0}}
    app = create_app(settings_for(database_url, index_weights=weights), registry)
    customer = f"ix-{uuid.uuid4().hex[:8]}"

    def event(tag: str, day: float, **fields: Any) -> dict[str, Any]:
        at = moment(MARCH, day).isoformat().replace("+00:00", "Z")
        return {
            "event_id": f"{customer}-{tag}",
            "customer_id": customer,
            "occurred_at": at,
            **fields,
        }

    with TestClient(app) as client:
        posted = client.post(
            "/v1/events",
            json={
                "events": [
                    event("p", 0.1, type="customer_profile", age=40, customer_since="2020-03-01"),
                    event("k", 3.0, type="complaint", complaint_id="K1", severity="high"),
                ]
            },
        )
        assert posted.status_code == 200, posted.text
        view = client.get(f"/v1/customers/{customer}")
        assert view.status_code == 200, view.text
        shown = view.json()["indices"]
        served = client.get(f"/v1/customers/{customer}/features").json()["features"]
    assert shown["month"] == "2025-03"
    # Only complaints count under these weights: one complaint in 3 months -> 100 (1 - 1/3).
    assert shown["satisfaction"] == pytest.approx(100 * 2 / 3)
    assert shown["weights"]["satisfaction"]["complaints"] == 1
    assert shown["inputs"]["open_complaint_severity"] == 3.0
    assert shown["inputs"]["days_unresolved"] == 27
    assert shown["inputs"]["tenure_months"] == 60
    # The features the models read keep the default weights they were trained with.
    assert served["satisfaction_index"] != pytest.approx(shown["satisfaction"])
    assert served["loyalty_index"] == pytest.approx(shown["loyalty"])


def test_the_churn_candidate_reads_the_indices_the_bundled_schema_does_not() -> None:
    book = prepare_book(generate_book(customers=120, months=8, seed=3).to_pandas())
    plain = build_task_frame(book, Task.CHURN)
    candidate = build_task_frame(book, Task.CHURN, indices=True)
    assert "satisfaction_index" not in plain.features.columns
    assert list(candidate.features.columns) == [
        *plain.features.columns,
        "satisfaction_index",
        "loyalty_index",
    ]
    assert candidate.features["loyalty_index"].between(0, 100).all()
    assert candidate.features["satisfaction_index"].nunique() > 1
    assert schema_for(Task.TIER, indices=True) == schema_for(Task.TIER)


def test_train_refuses_indices_beyond_churn(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["train", "tier", "--book", str(tmp_path), "--indices", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0
    assert "--indices trains churn" in result.output
