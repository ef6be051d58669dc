"""Churn alerts: opened in the scores' transaction, updated by later scores, owned, resolved."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from app.alerts.repository import NewAlertRow, insert_new_alerts
from app.alerts.service import (
    AlertPolicy,
    ChurnAlerts,
    ChurnObservation,
    NotificationPlan,
    RecordObservations,
    RetentionActions,
)
from app.alerts.tables import (
    Alert,
    AlertEvent,
    OutboxMessage,
    alert_table,
)
from app.config import PROJECT_ROOT, Settings
from app.db.migrate import upgrade
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.tables import Score, score_table
from app.scoring.writer import coalesce
from tests.conftest import customer_record
from tests.db_support import TcpProxy, temporary_postgres_database

ACTIONS_FILE = PROJECT_ROOT / "app" / "resources" / "retention_actions.json"


@dataclass(frozen=True)
class ChurnCases:
    """A low-risk and a high-risk customer record, and a threshold between them."""

    low: dict[str, Any]
    high: dict[str, Any]
    threshold: float
    low_probability: float
    high_probability: float

    def as_customer(self, which: str, customer_id: str) -> dict[str, Any]:
        """The record with another customer id."""
        return {**(self.low if which == "low" else self.high), "customer_id": customer_id}


@pytest.fixture(scope="module")
def churn_cases(sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry) -> ChurnCases:
    """Two records the tiny churn model scores far apart."""
    model = registry.get(Task.CHURN)
    assert model is not None
    records = [customer_record(row, model.schema) for _, row in sample_rows["existing"].iterrows()]
    probabilities = model.predict(model.schema.encode_rows(records))
    order = probabilities.argsort()
    low, high = int(order[0]), int(order[-1])
    assert probabilities[high] > probabilities[low] + 0.01, "tiny model gives no spread"
    return ChurnCases(
        low=records[low],
        high=records[high],
        threshold=float(probabilities[low] + probabilities[high]) / 2,
        low_probability=float(probabilities[low]),
        high_probability=float(probabilities[high]),
    )


@pytest.fixture
def alert_settings(database_url: str, settings_for: Any, churn_cases: ChurnCases) -> Settings:
    """Alerts from the midpoint of the two cases; the webhook on so the outbox is written."""
    settings: Settings = settings_for(
        database_url,
        churn_alert_probability=churn_cases.threshold,
        webhook_enabled=True,
        webhook_url="http://127.0.0.1:9/unused",
        webhook_secret="s3cret",
    )
    return settings


@pytest.fixture
def alert_client(alert_settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    """The app with a threshold the test controls."""
    with TestClient(create_app(alert_settings, registry)) as client:
        yield client


def new_customer() -> str:
    return f"AL-{uuid.uuid4().hex[:12]}"


def score(client: TestClient, *customers: dict[str, Any], reasons: int = 3) -> Any:
    body = {"customers": list(customers), "reasons": reasons}
    response = client.post("/v1/churn/scores", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def alerts_of(client: TestClient, customer_id: str) -> list[dict[str, Any]]:
    page = client.get("/v1/alerts", params={"customer_id": customer_id}).json()
    items: list[dict[str, Any]] = page["items"]
    assert page["total"] == len(items)
    return items


def counts(engine: Engine, customer_id: str) -> tuple[int, int, int]:
    """Scores, alerts and outbox messages stored for one customer."""
    with engine.connect() as connection:
        scores = connection.scalar(
            select(func.count()).select_from(Score).where(Score.customer_id == customer_id)
        )
        alert_ids = connection.scalars(
            select(Alert.id).where(Alert.customer_id == customer_id)
        ).all()
        messages = connection.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.alert_id.in_(alert_ids))
        )
    return int(scores or 0), len(alert_ids), int(messages or 0)


# --- opening and updating ------------------------------------------------------------------------


def test_crossing_opens_one_alert_and_later_scores_update_it(
    alert_client: TestClient, churn_cases: ChurnCases, engine: Engine
) -> None:
    customer_id = new_customer()
    score(alert_client, churn_cases.as_customer("low", customer_id))
    assert alerts_of(alert_client, customer_id) == []
    assert counts(engine, customer_id) == (1, 0, 0)

    first = score(alert_client, churn_cases.as_customer("high", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    assert alert["status"] == "open"
    assert alert["probability"] == first["results"][0]["probability"]
    assert alert["risk_band"] == first["results"][0]["risk_band"]
    assert alert["above_threshold"] is True
    assert alert["score_count"] == 1
    assert alert["actions"], "every alert recommends at least one action"
    detail = alert_client.get(f"/v1/alerts/{alert['id']}").json()
    assert detail["opened_request_id"] == first["request_id"]
    assert detail["reasons"] == first["results"][0]["explanation"]["reasons"]
    assert counts(engine, customer_id) == (2, 1, 1)  # one webhook message

    score(alert_client, churn_cases.as_customer("high", customer_id))
    score(alert_client, churn_cases.as_customer("low", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    assert alert["above_threshold"] is False, "falling below the threshold is recorded"
    assert alert["probability"] == pytest.approx(churn_cases.low_probability, abs=1e-6)
    assert alert["peak_probability"] == pytest.approx(churn_cases.high_probability, abs=1e-6)
    assert alert["status"] == "open"
    last = score(alert_client, churn_cases.as_customer("high", customer_id))

    detail = alert_client.get(f"/v1/alerts/{alert['id']}").json()
    assert [e["kind"] for e in detail["history"]] == [
        "opened",
        "rescored",
        "below_threshold",
        "above_threshold",
    ]
    assert detail["score_count"] == 4
    assert detail["last_request_id"] == last["request_id"]
    assert detail["history"][2]["probability"] == pytest.approx(
        churn_cases.low_probability, abs=1e-6
    )
    assert counts(engine, customer_id) == (5, 1, 1), "only the opening is announced"


def test_concurrent_requests_for_one_customer_open_exactly_one_alert(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    customer_id = new_customer()
    body = {"customers": [churn_cases.as_customer("high", customer_id)], "reasons": 2}
    barrier = threading.Barrier(16)

    def post(_: int) -> int:
        barrier.wait()
        return alert_client.post("/v1/churn/scores", json=body).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(16)))
    assert statuses == [200] * 16
    (alert,) = alerts_of(alert_client, customer_id)
    assert alert["score_count"] == 16
    history = alert_client.get(f"/v1/alerts/{alert['id']}").json()["history"]
    assert [e["kind"] for e in history] == ["opened"] + ["rescored"] * 15


def test_one_request_scoring_a_customer_twice_records_both(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    customer_id = new_customer()
    score(
        alert_client,
        churn_cases.as_customer("low", customer_id),
        churn_cases.as_customer("high", customer_id),
        churn_cases.as_customer("low", customer_id),
    )
    (alert,) = alerts_of(alert_client, customer_id)
    history = alert_client.get(f"/v1/alerts/{alert['id']}").json()["history"]
    assert [e["kind"] for e in history] == ["opened", "below_threshold"]


def test_assessment_opens_a_churn_alert(
    alert_client: TestClient,
    churn_cases: ChurnCases,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
) -> None:
    customer: dict[str, Any] = {}
    row = sample_rows["existing"].iloc[0]
    for task in (Task.TIER, Task.RECOMMENDATION):
        model = registry.get(task)
        assert model is not None
        customer.update(customer_record(row, model.schema))
    customer.update(churn_cases.high)
    customer["customer_id"] = customer_id = new_customer()
    response = alert_client.post("/v1/assessments", json=customer)
    assert response.status_code == 200, response.text
    (alert,) = alerts_of(alert_client, customer_id)
    assert alert["probability"] == response.json()["churn"]["probability"]


def test_alerts_can_be_turned_off(
    database_url: str, settings_for: Any, registry: ModelRegistry, churn_cases: ChurnCases
) -> None:
    settings = settings_for(
        database_url, churn_alerts_enabled=False, churn_alert_probability=0.0001
    )
    customer_id = new_customer()
    with TestClient(create_app(settings, registry)) as client:
        score(client, churn_cases.as_customer("high", customer_id))
        assert alerts_of(client, customer_id) == []


def test_two_transactions_opening_the_same_alert_make_one(
    engine: Engine, database_url: str
) -> None:
    """The second transaction waits for the first, then records its score on that alert."""
    alerts = ChurnAlerts(
        policy=AlertPolicy(min_probability=0.5),
        actions=RetentionActions.load(ACTIONS_FILE),
        plan=NotificationPlan(),
    )
    customer_id = new_customer()
    observation = ChurnObservation(
        customer_id=customer_id,
        probability=0.9,
        risk_band="high",
        above_threshold=True,
        reasons=[],
        request_id="r",
        model_version="1",
    )
    second_engine = create_db_engine(database_url)
    first = engine.connect()
    try:
        transaction = first.begin()
        # Scores first, as the group-commit writer does: on SQLite that takes the write lock.
        first.execute(score_table.insert(), [_score_row(customer_id)])
        assert alerts.record(first, observations=[observation]).opened
        outcome: dict[str, Any] = {}

        def second() -> None:
            with second_engine.begin() as connection:
                connection.execute(score_table.insert(), [_score_row(customer_id)])
                outcome["summary"] = alerts.record(connection, observations=[observation])

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive(), "the second transaction must wait for the first"
        transaction.commit()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        first.close()
        second_engine.dispose()
    assert outcome["summary"].opened == []
    assert len(outcome["summary"].updated) == 1
    with engine.connect() as connection:
        stored = connection.execute(
            select(Alert.score_count).where(Alert.customer_id == customer_id)
        ).all()
    assert [row.score_count for row in stored] == [2]


def _score_row(customer_id: str) -> dict[str, Any]:
    return {
        "request_id": "r",
        "task": "churn",
        "customer_id": customer_id,
        "model_name": "churn",
        "model_version": "1",
        "outputs": {},
        "reasons": [],
        "features": {},
        "created_at": datetime.now(UTC),
        "source": "api",
    }


def test_the_database_allows_one_active_alert_per_customer(engine: Engine) -> None:
    now = datetime.now(UTC)
    customer_id = new_customer()
    row = {
        "customer_id": customer_id,
        "status": "open",
        "risk_band": "high",
        "probability": 0.9,
        "peak_probability": 0.9,
        "above_threshold": True,
        "reasons": [],
        "actions": [],
        "model_version": "1",
        "score_count": 1,
        "opened_request_id": "r",
        "last_request_id": "r",
        "opened_at": now,
        "last_scored_at": now,
        "updated_at": now,
    }
    with engine.begin() as connection:
        connection.execute(alert_table.insert(), [row])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(alert_table.insert(), [{**row, "status": "acknowledged"}])
    with engine.begin() as connection:
        connection.execute(
            update(alert_table)
            .where(alert_table.c.customer_id == customer_id)
            .values(status="resolved")
        )
        connection.execute(alert_table.insert(), [row])  # a new episode after resolution


def test_one_active_alert_per_customer_and_tenant(engine: Engine) -> None:
    now = datetime.now(UTC)
    customer_id = new_customer()

    def alert(tenant: str | None) -> NewAlertRow:
        return NewAlertRow(
            customer_id=customer_id,
            status="open",
            risk_band="high",
            probability=0.9,
            peak_probability=0.9,
            above_threshold=True,
            reasons=[],
            actions=[],
            model_version="1",
            score_count=1,
            opened_request_id="r",
            last_request_id="r",
            opened_at=now,
            last_scored_at=now,
            updated_at=now,
            tenant=tenant,
        )

    for tenant in (None, "bank-a", "bank-b"):
        with engine.begin() as connection:
            assert list(insert_new_alerts(connection, rows=[alert(tenant)])) == [customer_id]
        # The same customer of the same tenant (or of none): skipped, as a lost race is.
        with engine.begin() as connection:
            assert insert_new_alerts(connection, rows=[alert(tenant)]) == {}
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(alert_table.insert(), [alert(tenant)])
    with engine.connect() as connection:
        tenants = connection.scalars(
            select(alert_table.c.tenant).where(alert_table.c.customer_id == customer_id)
        ).all()
    assert sorted(tenants, key=str) == sorted([None, "bank-a", "bank-b"], key=str)
    with pytest.raises(ValueError, match="one tenant"), engine.begin() as connection:
        insert_new_alerts(connection, rows=[alert("bank-a"), alert("bank-c")])


# --- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_transitions_keep_history_and_refuse_illegal_moves(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    customer_id = new_customer()
    score(alert_client, churn_cases.as_customer("high", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    url = f"/v1/alerts/{alert['id']}"

    refused = alert_client.post(f"{url}/resolve", json={"by": "rm-1", "outcome": "retained"})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "conflict"
    assert "acknowledge it before" in refused.json()["detail"]

    acknowledged = alert_client.post(
        f"{url}/acknowledge",
        json={"by": "rm-1", "note": "mine"},
        headers={"X-Request-ID": "office-call-1"},
    )
    assert acknowledged.status_code == 200, acknowledged.text
    body = acknowledged.json()
    assert (body["status"], body["owner"]) == ("acknowledged", "rm-1")
    assert body["acknowledged_at"] is not None

    again = alert_client.post(f"{url}/acknowledge", json={"by": "rm-2"})
    assert again.status_code == 409
    assert again.json()["owner"] == "rm-1"
    other = alert_client.post(f"{url}/resolve", json={"by": "rm-2", "outcome": "retained"})
    assert other.status_code == 409
    assert "only its owner" in other.json()["detail"]

    # A score while acknowledged updates the alert and keeps its owner.
    score(alert_client, churn_cases.as_customer("low", customer_id))

    resolved = alert_client.post(
        f"{url}/resolve", json={"by": "rm-1", "outcome": "retained", "note": "rate matched"}
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["outcome"], body["resolved_by"]) == (
        "resolved",
        "retained",
        "rm-1",
    )
    assert body["resolution_note"] == "rate matched"
    assert [(e["kind"], e["by"], e["status"]) for e in body["history"]] == [
        ("opened", None, "open"),
        ("acknowledged", "rm-1", "acknowledged"),
        ("below_threshold", None, "acknowledged"),
        ("resolved", "rm-1", "resolved"),
    ]
    assert body["history"][-1]["note"] == "outcome: retained; rate matched"
    # Each transition keeps the id of the call that made it: the audit log's line for that id
    # names the authenticated client that reported the staff member.
    transitions = [e for e in body["history"] if e["kind"] in ("acknowledged", "resolved")]
    assert transitions[0]["request_id"] == "office-call-1"
    assert transitions[1]["request_id"] == resolved.headers["x-request-id"]

    for action, payload in [
        ("acknowledge", {"by": "rm-1"}),
        ("resolve", {"by": "rm-1", "outcome": "lost"}),
    ]:
        response = alert_client.post(f"{url}/{action}", json=payload)
        assert response.status_code == 409, action
        assert "already resolved" in response.json()["detail"]

    # A resolved alert is history: the next crossing opens a new one.
    score(alert_client, churn_cases.as_customer("high", customer_id))
    statuses = sorted(a["status"] for a in alerts_of(alert_client, customer_id))
    assert statuses == ["open", "resolved"]


def test_lifecycle_requests_are_validated(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    customer_id = new_customer()
    score(alert_client, churn_cases.as_customer("high", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    url = f"/v1/alerts/{alert['id']}"
    assert alert_client.get("/v1/alerts/999999999").status_code == 404
    assert alert_client.post("/v1/alerts/999999999/acknowledge", json={"by": "x"}).status_code == (
        404
    )
    assert alert_client.post(f"{url}/acknowledge", json={}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": ""}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": "a b"}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": "x", "y": 1}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": "rm-7"}).status_code == 200
    bad_outcome = {"by": "rm-7", "outcome": "happy"}
    assert alert_client.post(f"{url}/resolve", json=bad_outcome).status_code == 422
    no_note = alert_client.post(f"{url}/resolve", json={"by": "rm-7", "outcome": "other"})
    assert no_note.status_code == 422
    assert "note" in no_note.text
    with_note = {"by": "rm-7", "outcome": "other", "note": "moved abroad"}
    assert alert_client.post(f"{url}/resolve", json=with_note).status_code == 200


def test_list_filters_by_status_band_owner_and_age_and_pages(
    alert_client: TestClient, churn_cases: ChurnCases, engine: Engine
) -> None:
    owner = f"rm-{uuid.uuid4().hex[:8]}"
    customers = [new_customer() for _ in range(5)]
    score(alert_client, *(churn_cases.as_customer("high", c) for c in customers))
    ids = [alerts_of(alert_client, c)[0]["id"] for c in customers]
    for alert_id in ids[:4]:
        response = alert_client.post(f"/v1/alerts/{alert_id}/acknowledge", json={"by": owner})
        assert response.status_code == 200
    resolve = {"by": owner, "outcome": "lost"}
    assert alert_client.post(f"/v1/alerts/{ids[0]}/resolve", json=resolve).status_code == 200
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    with engine.begin() as connection:
        connection.execute(
            update(alert_table).where(alert_table.c.id.in_(ids[1:3])).values(opened_at=two_days_ago)
        )

    def listed(**params: Any) -> tuple[int, list[int]]:
        response = alert_client.get("/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        return page["total"], [item["id"] for item in page["items"]]

    assert listed(owner=owner) == (4, [ids[1], ids[2], ids[0], ids[3]])  # oldest opened first
    assert listed(owner=owner, status="acknowledged") == (3, [ids[1], ids[2], ids[3]])
    assert listed(owner=owner, status="resolved") == (1, [ids[0]])
    assert listed(owner=owner, older_than_hours=24) == (2, [ids[1], ids[2]])
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert listed(owner=owner, opened_before=day_ago) == (2, [ids[1], ids[2]])
    assert listed(owner=owner, limit=2, offset=1) == (4, [ids[2], ids[0]])
    band = alerts_of(alert_client, customers[4])[0]["risk_band"]
    assert ids[4] in listed(status="open", band=band, limit=500)[1]
    other_band = next(b for b in ("low", "medium", "high") if b != band)
    assert ids[4] not in listed(band=other_band, limit=500)[1]
    assert alert_client.get("/v1/alerts", params={"status": "closed"}).status_code == 422
    naive = {"opened_before": "2026-01-01T00:00:00"}
    assert alert_client.get("/v1/alerts", params=naive).status_code == 422
    assert alert_client.get("/v1/alerts", params={"limit": 0}).status_code == 422


# --- all or nothing ------------------------------------------------------------------------------


def _refuse_outbox_inserts(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "CREATE FUNCTION cvm_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER cvm_test_refuse_outbox BEFORE INSERT ON outbox_message "
                "FOR EACH ROW EXECUTE FUNCTION cvm_test_refuse()"
            )
        else:
            connection.exec_driver_sql(
                "CREATE TRIGGER cvm_test_refuse_outbox BEFORE INSERT ON outbox_message "
                "BEGIN SELECT RAISE(ABORT, 'outbox refused'); END"
            )


def _accept_outbox_inserts(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP TRIGGER cvm_test_refuse_outbox ON outbox_message")
            connection.exec_driver_sql("DROP FUNCTION cvm_test_refuse()")
        else:
            connection.exec_driver_sql("DROP TRIGGER cvm_test_refuse_outbox")


def test_a_failed_outbox_write_rolls_back_the_score_and_the_alert(
    alert_client: TestClient, churn_cases: ChurnCases, engine: Engine
) -> None:
    customer_id = new_customer()
    body = {"customers": [churn_cases.as_customer("high", customer_id)]}
    _refuse_outbox_inserts(engine)
    try:
        response = alert_client.post("/v1/churn/scores", json=body)
    finally:
        _accept_outbox_inserts(engine)
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert counts(engine, customer_id) == (0, 0, 0)

    assert alert_client.post("/v1/churn/scores", json=body).status_code == 200
    assert counts(engine, customer_id) == (1, 1, 1)


@pytest.mark.postgres
def test_postgres_outage_during_a_churn_score_saves_nothing(
    settings_for: Any, registry: ModelRegistry, churn_cases: ChurnCases
) -> None:
    with temporary_postgres_database() as direct_url:
        upgrade(direct_url)
        proxy = TcpProxy("127.0.0.1", make_url(direct_url).port or 5432)
        proxy.start()
        proxied = make_url(direct_url).set(host="127.0.0.1", port=proxy.port)
        settings = settings_for(
            proxied.render_as_string(hide_password=False),
            churn_alert_probability=churn_cases.threshold,
            webhook_enabled=True,
            webhook_url="http://127.0.0.1:9/unused",
            webhook_secret="s3cret",
        )
        customer_id = new_customer()
        body = {"customers": [churn_cases.as_customer("high", customer_id)]}
        direct = create_db_engine(direct_url)
        try:
            with TestClient(create_app(settings, registry)) as client:
                # Leaves a pooled connection that the outage then severs.
                warm_up = {"customers": [churn_cases.as_customer("high", new_customer())]}
                assert client.post("/v1/churn/scores", json=warm_up).status_code == 200
                proxy.stop()
                response = client.post("/v1/churn/scores", json=body)
                assert response.status_code == 503
                proxy.start()
                assert counts(direct, customer_id) == (0, 0, 0)
                assert client.post("/v1/churn/scores", json=body).status_code == 200
                assert counts(direct, customer_id) == (1, 1, 1)
        finally:
            direct.dispose()
            proxy.stop()


# --- retention actions -----------------------------------------------------------------------


def test_retention_actions_follow_the_reasons_that_raise_the_risk() -> None:
    actions = RetentionActions.load(ACTIONS_FILE)

    def reason(feature: str, direction: str = "raises") -> dict[str, Any]:
        return {"feature": feature, "direction": direction}

    assert actions.for_reasons([reason("open_complaint")]) == [
        "Escalate the open complaint to the branch manager"
    ]
    assert actions.for_reasons([reason("deposits_change_3m_pct")])[0].startswith(
        "Relationship manager call about rates"
    )
    # Reasons lowering the risk recommend nothing; with nothing else, the default applies.
    assert actions.for_reasons([reason("open_complaint", "lowers")]) == actions.default
    assert actions.for_reasons([]) == actions.default
    many = [reason(f) for f in actions.by_feature]
    assert len(actions.for_reasons(many)) == actions.max_actions
    same = actions.for_reasons([reason("deposits_change_3m_pct"), reason("savings_balance")])
    assert len(same) == 1, "the same action is not repeated"


def test_policy_by_band_or_probability() -> None:
    by_band = AlertPolicy(min_band="medium")
    assert by_band.crosses(probability=0.01, risk_band="medium")
    assert by_band.crosses(probability=0.01, risk_band="high")
    assert not by_band.crosses(probability=0.99, risk_band="low")
    by_probability = AlertPolicy(min_band="high", min_probability=0.3)
    assert by_probability.crosses(probability=0.3, risk_band="low")
    assert not by_probability.crosses(probability=0.29, risk_band="high")


def test_a_group_of_writes_records_alerts_in_one_pass() -> None:
    """Callbacks of one tenant merge (one alert lookup per group); others stay apart."""
    from app.alerts.service import RecordObservations
    from app.scoring.writer import coalesce

    alerts = ChurnAlerts(
        policy=AlertPolicy(min_probability=0.5),
        actions=RetentionActions.load(ACTIONS_FILE),
        plan=NotificationPlan(),
    )

    def observed(customer_id: str, tenant: str | None) -> RecordObservations:
        result = {"probability": 0.9, "risk_band": "high", "explanation": None}
        callback = alerts.observe(
            customer_ids=[customer_id],
            results=[result],
            crossed=[True],
            request_id="r",
            model_version="1",
            tenant=tenant,
        )
        assert isinstance(callback, RecordObservations)
        return callback

    calls: list[str] = []

    def plain(connection: Any) -> None:
        calls.append("plain")

    merged = coalesce(
        [observed("a", None), observed("b", None), plain, observed("c", "t1"), observed("d", "t1")]
    )
    assert len(merged) == 3
    first, middle, last = merged
    assert isinstance(first, RecordObservations) and isinstance(last, RecordObservations)
    assert [c for scores in first.scores for c in scores.customer_ids] == ["a", "b"]
    assert middle is plain
    assert [c for scores in last.scores for c in scores.customer_ids] == ["c", "d"]
    assert last.tenant == "t1"
    assert coalesce([observed("x", None), observed("y", "t2")])[1].tenant == "t2"  # type: ignore[attr-defined]


def test_scores_as_columns_record_exactly_what_observations_record(engine: Engine) -> None:
    """The writer records calls' scores as columns and builds observations only for the
    customers an alert concerns; the outcome must be that of recording every observation."""
    alerts = ChurnAlerts(
        policy=AlertPolicy(min_probability=0.5),
        actions=RetentionActions.load(ACTIONS_FILE),
        plan=NotificationPlan(),
    )

    def one_group() -> tuple[RecordObservations, list[str]]:
        a, b, c = new_customer(), new_customer(), new_customer()
        calls = [
            (a, 0.2, "low"),
            (a, 0.9, "high"),
            (b, 0.1, "low"),
            (a, 0.3, "low"),
            (c, 0.7, "high"),
        ]
        callbacks = [
            alerts.observe(
                customer_ids=[customer_id],
                results=[{"probability": p, "risk_band": band, "explanation": None}],
                crossed=[p >= 0.5],
                request_id=f"r{i}",
                model_version="1",
            )
            for i, (customer_id, p, band) in enumerate(calls)
        ]
        (merged,) = coalesce(callbacks)
        assert isinstance(merged, RecordObservations)
        return merged, [a, b, c]

    def history(customers: list[str]) -> list[tuple[int, str]]:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Alert.customer_id, AlertEvent.kind)
                .join(AlertEvent, AlertEvent.alert_id == Alert.id)
                .where(Alert.customer_id.in_(customers))
                .order_by(AlertEvent.id)
            ).all()
        return [(customers.index(customer_id), kind) for customer_id, kind in rows]

    as_columns, columns_customers = one_group()
    with engine.begin() as connection:
        alerts.record_scores(connection, scores=as_columns.scores)
    as_rows, rows_customers = one_group()
    with engine.begin() as connection:
        every_score = [
            ChurnObservation(
                customer_id,
                p,
                band,
                alerts.policy.crosses(probability=p, risk_band=band),
                reasons,
                scores.request_id,
                scores.model_version,
            )
            for scores in as_rows.scores
            for customer_id, p, band, reasons in zip(
                scores.customer_ids,
                scores.probabilities,
                scores.risk_bands,
                scores.reasons,
                strict=True,
            )
        ]
        alerts.record(connection, observations=every_score)
    expected = [(0, "opened"), (0, "below_threshold"), (2, "opened")]
    assert history(columns_customers) == history(rows_customers) == expected
