"""Features from the trail: the synthetic book's events, ingested, serve the training features."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.customers.features import (
    DAYS_PER_MONTH,
    Kind,
    LatestValue,
    MonthCounts,
    TrailEvent,
    aggregate,
    current_values,
    days_since_activity,
    derive_features,
    month_index,
    month_label,
    pct_change,
)
from app.customers.service import feature_history
from app.scoring.feature_schema import FeatureKind
from app.scoring.manifest import Task
from app.training.features import build_task_frame, prepare_book, schema_for
from app.training.synth import generate_book
from app.training.trail import book_events, moment

CHUNK = 5000
# Not (yet) in every task's schema, but derived by the one feature module on both sides.
INDEX_FEATURES = {
    "open_complaint_severity": FeatureKind.NUMBER,
    "days_unresolved": FeatureKind.INTEGER,
    "satisfaction_index": FeatureKind.NUMBER,
    "loyalty_index": FeatureKind.NUMBER,
}


@pytest.fixture(scope="module")
def small_book() -> pd.DataFrame:
    """A small book of its own, ids made unique to this module's run."""
    book: pd.DataFrame = generate_book(customers=80, months=8, seed=5).to_pandas()
    book["customer_id"] = f"tr{uuid.uuid4().hex[:6]}-" + book["customer_id"]
    return book


def training_rows(prepared: pd.DataFrame) -> dict[tuple[str, int], set[str]]:
    """(customer, book month) of every row some task trains on, with the features it uses."""
    wanted: dict[tuple[str, int], set[str]] = {}
    for task in Task:
        frame = build_task_frame(prepared, task)
        names = {f.name for f in schema_for(task).features}
        for customer_id, month in zip(frame.customer_id, frame.month, strict=True):
            wanted.setdefault((str(customer_id), int(month)), set()).update(names)
    return wanted


def same(served: Any, trained: Any, kind: FeatureKind) -> bool:
    """A served value equals the training value (1e-9; missing is NaN in training)."""
    if kind is FeatureKind.CATEGORY:
        return bool(served == trained)
    if served is None:
        return bool(pd.isna(trained))
    return not pd.isna(trained) and math.isclose(served, float(trained), rel_tol=0, abs_tol=1e-9)


def test_ingested_book_serves_the_training_features(
    client: TestClient, small_book: pd.DataFrame
) -> None:
    events = list(book_events(small_book))
    for start in range(0, len(events), CHUNK):
        response = client.post("/v1/events", json={"events": events[start : start + CHUNK]})
        assert response.status_code == 200, response.text
        assert response.json()["duplicates"] == 0
    prepared = prepare_book(small_book)
    rows = {(str(r["customer_id"]), int(r["month"])): r for r in prepared.to_dict("records")}
    kinds = {f.name: f.kind for task in Task for f in schema_for(task).features} | INDEX_FEATURES
    wanted = training_rows(prepared)
    assert len(wanted) > 300
    for names in wanted.values():
        names.update(INDEX_FEATURES)
    # The book must exercise the complaint inputs, or their equality would prove nothing.
    assert (prepared["days_unresolved"] > DAYS_PER_MONTH).any()
    assert (prepared["open_complaint_severity"] > 2.0).any()
    mismatches: list[str] = []
    for (customer_id, month), names in sorted(wanted.items()):
        label = month_label(month_index(datetime(2025, 1, 1, tzinfo=UTC)) + month)
        response = client.get(f"/v1/customers/{customer_id}/features", params={"month": label})
        assert response.status_code == 200, response.text
        served = response.json()["features"]
        trained = rows[(customer_id, month)]
        mismatches += [
            f"{customer_id} {label} {name}: served {served[name]!r}, trained {trained[name]!r}"
            for name in sorted(names)
            if not same(served[name], trained[name], kinds[name])
        ]
    assert not mismatches, mismatches[:10]
    # A history read for a tier derives the measures of its months by the same definitions.
    state: Any = client.app.state  # type: ignore[attr-defined]
    with state.session_factory() as session:
        for customer_id in sorted({customer for customer, _ in wanted})[:40]:
            read = {
                depth: feature_history(
                    session,
                    customer_id=customer_id,
                    caller_tenant=None,
                    pseudonymizer=state.pseudonymizer,
                    depth=depth,
                )
                for depth in ("every", "latest", "value")
            }
            assert read["latest"][-1] == read["every"][-1]
            for (when, full), (_, value), (_, latest) in zip(
                read["every"], read["value"], read["latest"], strict=True
            ):
                assert value == {name: full[name] for name in value}, (customer_id, when)
                assert {"savings_balance", "profit", "products_held"} <= set(value)
                assert latest in (full, value)


def test_a_late_event_updates_the_month_it_belongs_to(client: TestClient) -> None:
    customer = f"late-{uuid.uuid4().hex[:8]}"
    march, april = 2025 * 12 + 2, 2025 * 12 + 3

    def event(tag: str, month: int, position: float, **fields: Any) -> dict[str, Any]:
        at = moment(month, position).isoformat().replace("+00:00", "Z")
        return {
            "event_id": f"{customer}-{tag}",
            "customer_id": customer,
            "occurred_at": at,
            **fields,
        }

    def features(label: str) -> dict[str, Any]:
        response = client.get(f"/v1/customers/{customer}/features", params={"month": label})
        assert response.status_code == 200, response.text
        return dict(response.json()["features"])

    snapshot = {"type": "balance_snapshot", "product": "savings"}
    posted = client.post(
        "/v1/events",
        json={
            "events": [
                event("p", march, 0.1, type="customer_profile", age=40, income=30000.0),
                event("b2", april, 20.0, **snapshot, balance=500.0),
                event(
                    "t1",
                    april,
                    10.0,
                    type="transaction",
                    amount=5.0,
                    direction="debit",
                    channel="card",
                ),
            ]
        },
    )
    assert posted.status_code == 200, posted.text
    assert features("2025-04")["savings_balance"] == 500.0
    # Late and out of order: an older April snapshot changes nothing; a March one fills March.
    late = [
        event("b1", april, 5.0, **snapshot, balance=100.0),
        event("b0", march, 15.0, **snapshot, balance=50.0),
        event("t0", march, 29.0, type="transaction", amount=5.0, direction="debit", channel="card"),
    ]
    assert client.post("/v1/events", json={"events": late}).status_code == 200
    april_features, march_features = features("2025-04"), features("2025-03")
    assert april_features["savings_balance"] == 500.0
    assert april_features["transactions"] == 1
    assert march_features["savings_balance"] == 50.0
    assert march_features["transactions"] == 1
    assert march_features["days_since_last_activity"] == 1  # 29 of 30 days
    # A repeated event is a duplicate: it is not counted again.
    assert client.post("/v1/events", json={"events": late}).json()["new"] == 0
    assert features("2025-03")["transactions"] == 1
    assert client.get("/v1/customers/nobody-here/features").status_code == 404


def test_definitions_match_the_books_arithmetic() -> None:
    assert pct_change(150.0, 50.0) == 100.0  # (150 - 50) / 100: the base is floored at 100
    assert pct_change(0.0, 1000.0) == -100.0
    assert pct_change(1e9, 1.0) == 1000.0
    march = 2025 * 12 + 2
    assert days_since_activity(march, moment(march, 29.5 - 7)) == 7
    assert days_since_activity(march + 2, moment(march, 29.5 - 7)) == 67
    assert days_since_activity(march, None) == 365
    deltas, latest = aggregate(
        [
            TrailEvent(
                "c", "complaint", moment(march, 1), {"complaint_id": "k", "status": "opened"}
            ),
            TrailEvent(
                "c", "complaint", moment(march, 9), {"complaint_id": "k", "status": "resolved"}
            ),
        ]
    )
    assert deltas[("c", march)].counts["complaints"] == 1
    stored = [
        LatestValue(v.month, v.kind, v.key, v.occurred_at, v.number, v.text)
        for v in latest.values()
    ]
    counts = [MonthCounts(march, deltas[("c", march)].counts, None)]
    assert derive_features(march, counts, stored)["open_complaint"] is False


def test_current_values_take_the_latest_month_then_occurrence_then_list_order() -> None:
    """Whatever order the rows come in (one statement reads them unsorted), each thing's
    value is that of its latest month, then latest occurrence; on a full tie, the later row."""
    at = datetime(2026, 3, 10, tzinfo=UTC)
    later = datetime(2026, 3, 20, tzinfo=UTC)
    march, april, may = 2026 * 12 + 2, 2026 * 12 + 3, 2026 * 12 + 4
    rows = [
        LatestValue(april, Kind.BALANCE, "savings", at, number=2.0),
        LatestValue(march, Kind.BALANCE, "savings", later, number=1.0),
        LatestValue(may, Kind.BALANCE, "savings", at, number=9.0),  # after the month asked
        LatestValue(march, Kind.PRODUCT, "savings", later, text="closed"),
        LatestValue(march, Kind.PRODUCT, "savings", at, text="opened"),
        LatestValue(march, Kind.PROFILE, "region", at, text="north"),
        LatestValue(march, Kind.PROFILE, "region", at, text="south"),
    ]
    current = current_values(rows, april)
    assert current[(Kind.BALANCE, "savings")].number == 2.0
    assert current[(Kind.PRODUCT, "savings")].text == "closed"
    assert current[(Kind.PROFILE, "region")].text == "south"
    assert current_values(rows, march)[(Kind.BALANCE, "savings")].number == 1.0
