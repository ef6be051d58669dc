"""Churn alerts: candidates queued with the scores, processed into alerts, owned, resolved."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
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
    AlertProcessor,
    ChurnAlerts,
    NotificationPlan,
    RetentionActions,
    pending_candidates,
    process_pending,
)
from app.alerts.tables import (
    Alert,
    AlertEvent,
    OutboxMessage,
    alert_table,
)
from app.alerts.worker import AlertProcessorProcess
from app.config import PROJECT_ROOT, Settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.assess import AlertThresholds
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.repository import (
    AlertCandidate,
    AlertCandidateRow,
    insert_alert_candidates,
)
from app.scoring.tables import Score, score_table
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.alert_support import settle_alerts
from tests.conftest import ON_SQLITE_ONLY, customer_record
from tests.db_support import TcpProxy, migrated_postgres_database

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
    """The app with a threshold the test controls, and a fresh all-scopes client: alerts are
    owned by the authenticated client (``client_id_of``)."""
    settings = alert_settings.model_copy(update={"auth_enabled": True})
    app = create_app(settings, registry)
    info, key = create_client(app.state.engine, name="office", scopes=sorted(ALL_SCOPES))
    app.state.test_client_id = info.id
    with TestClient(app, headers={"X-API-Key": key}) as client:
        yield client


def client_id_of(client: TestClient) -> str:
    """The id of the client ``alert_client`` authenticates as: the owner it makes."""
    client_id: str = client.app.state.test_client_id  # type: ignore[attr-defined]
    return client_id


def new_customer() -> str:
    return f"AL-{uuid.uuid4().hex[:12]}"


def score(client: TestClient, *customers: dict[str, Any], reasons: int = 3) -> Any:
    """Score, then wait until the alert processor has recorded what the scores queued."""
    body = {"customers": list(customers), "reasons": reasons}
    response = client.post("/v1/churn/scores", json=body)
    assert response.status_code == 200, response.text
    settle_alerts(client.app)
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


ALERTS = ChurnAlerts(
    thresholds=AlertThresholds(min_probability=0.5),
    policy=AlertPolicy(),
    actions=RetentionActions.load(ACTIONS_FILE),
    plan=NotificationPlan(),
)
_candidate_ids = iter(range(1, 10**9))


def churn_alerts(**policy: Any) -> ChurnAlerts:
    """Alerts from probability 0.5, no notifications, the policy's defaults unless given."""
    return ChurnAlerts(
        thresholds=ALERTS.thresholds,
        policy=AlertPolicy(**policy),
        actions=ALERTS.actions,
        plan=ALERTS.plan,
    )


def candidate_row(
    customer_id: str,
    probability: float,
    *,
    stage: str | None = "existing",
    at: datetime | None = None,
    tenant: str | None = None,
) -> AlertCandidateRow:
    """An alert candidate as the writer queues it."""
    return AlertCandidateRow(
        request_id=f"r-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        tenant=tenant,
        stage=stage,
        probability=probability,
        band="high",
        reasons=[],
        model_version="1",
        source="api",
        created_at=at or datetime.now(UTC),
    )


def candidate(customer_id: str, probability: float, **given: Any) -> AlertCandidate:
    """A candidate as the processor claims it."""
    return AlertCandidate(
        id=next(_candidate_ids), **candidate_row(customer_id, probability, **given)
    )


def queue(engine: Engine, *rows: AlertCandidateRow) -> None:
    """Commit candidates with their scores, as the writer does."""
    with engine.begin() as connection:
        connection.execute(score_table.insert(), [_score_row(row["customer_id"]) for row in rows])
        insert_alert_candidates(connection, rows=rows)


def history_of(engine: Engine, customer_id: str) -> list[tuple[int, str, str]]:
    """(alert id, event kind, status after) of every event of the customer's alerts."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(AlertEvent.alert_id, AlertEvent.kind, AlertEvent.status)
            .join(Alert, Alert.id == AlertEvent.alert_id)
            .where(Alert.customer_id == customer_id)
            .order_by(AlertEvent.id)
        ).all()
    return [(alert_id, kind, status) for alert_id, kind, status in rows]


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
    # A score below the threshold queues no candidate: it is in the customer's score history,
    # and the alert keeps the crossing scores.
    score(alert_client, churn_cases.as_customer("low", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    assert alert["probability"] == pytest.approx(churn_cases.high_probability, abs=1e-6)
    assert alert["peak_probability"] == pytest.approx(churn_cases.high_probability, abs=1e-6)
    assert alert["status"] == "open"
    last = score(alert_client, churn_cases.as_customer("high", customer_id))

    detail = alert_client.get(f"/v1/alerts/{alert['id']}").json()
    assert [e["kind"] for e in detail["history"]] == ["opened", "rescored", "rescored"]
    assert detail["score_count"] == 3
    assert detail["last_request_id"] == last["request_id"]
    assert detail["history"][2]["request_id"] == last["request_id"]
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
    settle_alerts(alert_client.app)
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
        churn_cases.as_customer("high", customer_id),
    )
    (alert,) = alerts_of(alert_client, customer_id)
    history = alert_client.get(f"/v1/alerts/{alert['id']}").json()["history"]
    assert [e["kind"] for e in history] == ["opened", "rescored"]


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
    settle_alerts(alert_client.app)
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
        assert client.app.state.alert_processor is None  # type: ignore[attr-defined]
        score(client, churn_cases.as_customer("high", customer_id))
        assert alerts_of(client, customer_id) == []
        assert pending_candidates(client.app.state.engine) == 0, "no candidate is queued"  # type: ignore[attr-defined]


def test_two_transactions_opening_the_same_alert_make_one(
    engine: Engine, database_url: str
) -> None:
    """The second transaction waits for the first, then records its score on that alert."""
    alerts = churn_alerts()
    customer_id = new_customer()
    second_engine = create_db_engine(database_url)
    first = engine.connect()
    try:
        transaction = first.begin()
        # A write first, as a processor's claim does: on SQLite that takes the write lock.
        first.execute(score_table.insert(), [_score_row(customer_id)])
        assert alerts.record(first, candidates=[candidate(customer_id, 0.9)]).opened
        outcome: dict[str, Any] = {}

        def second() -> None:
            with second_engine.begin() as connection:
                connection.execute(score_table.insert(), [_score_row(customer_id)])
                outcome["summary"] = alerts.record(
                    connection, candidates=[candidate(customer_id, 0.9)]
                )

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
            reason="churn",
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

    me = client_id_of(alert_client)
    acknowledged = alert_client.post(
        f"{url}/acknowledge",
        json={"by": "rm-1", "note": "mine"},
        headers={"X-Request-ID": "office-call-1"},
    )
    assert acknowledged.status_code == 200, acknowledged.text
    body = acknowledged.json()
    assert (body["status"], body["owner"]) == ("acknowledged", me)  # never the body's 'by'
    assert body["acknowledged_at"] is not None

    again = alert_client.post(f"{url}/acknowledge", json={"by": "rm-2"})
    assert again.status_code == 409
    assert again.json()["owner"] == me
    # Another client may not resolve it (tests/test_security.py: ..._owner_is_the_caller...).

    # A score while acknowledged updates the alert and keeps its owner.
    score(alert_client, churn_cases.as_customer("high", customer_id))

    resolved = alert_client.post(
        f"{url}/resolve", json={"by": "rm-1", "outcome": "retained", "note": "rate matched"}
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["outcome"], body["resolved_by"]) == ("resolved", "retained", me)
    assert body["resolution_note"] == "rate matched"
    assert [(e["kind"], e["by"], e["status"]) for e in body["history"]] == [
        ("opened", None, "open"),
        ("acknowledged", me, "acknowledged"),
        ("rescored", None, "acknowledged"),
        ("resolved", me, "resolved"),
    ]
    assert body["history"][-1]["note"] == "outcome: retained; rate matched"
    # Each transition keeps the id of the call that made it: the audit log's line for that id
    # names the authenticated client.
    transitions = [e for e in body["history"] if e["kind"] in ("acknowledged", "resolved")]
    assert transitions[0]["request_id"] == acknowledged.headers["x-request-id"]
    assert acknowledged.headers["x-client-request-id"] == "office-call-1"
    assert transitions[1]["request_id"] == resolved.headers["x-request-id"]

    for action, payload in [
        ("acknowledge", {"by": "rm-1"}),
        ("resolve", {"by": "rm-1", "outcome": "lost"}),
    ]:
        response = alert_client.post(f"{url}/{action}", json=payload)
        assert response.status_code == 409, action
        assert "already resolved" in response.json()["detail"]

    # The next crossing, within the cooldown and no riskier, does not reopen it: it is kept
    # in the resolved alert's history as held.
    held = score(alert_client, churn_cases.as_customer("high", customer_id))
    assert [a["status"] for a in alerts_of(alert_client, customer_id)] == ["resolved"]
    last = alert_client.get(url).json()["history"][-1]
    assert (last["kind"], last["status"]) == ("held", "resolved")
    assert last["request_id"] == held["request_id"]


@ON_SQLITE_ONLY
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
    # 'by' is optional (ignored), but still checked when sent, as before.
    assert alert_client.post(f"{url}/acknowledge", json={"by": ""}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": "a b"}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={"by": "x", "y": 1}).status_code == 422
    assert alert_client.post(f"{url}/acknowledge", json={}).status_code == 200
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
    owner = client_id_of(alert_client)
    # Sorted: alerts opened together get their ids in customer id order.
    customers = sorted(new_customer() for _ in range(5))
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


def test_a_processor_that_fails_mid_way_leaves_the_candidate_for_the_next(
    database_url: str,
    settings_for: Any,
    registry: ModelRegistry,
    churn_cases: ChurnCases,
    engine: Engine,
) -> None:
    """The score and its candidate are committed together; a processing transaction that
    fails (here: its outbox insert) rolls back whole, and the candidate waits for the next."""
    settings = settings_for(
        database_url,
        churn_alert_probability=churn_cases.threshold,
        webhook_enabled=True,
        webhook_url="http://127.0.0.1:9/unused",
        webhook_secret="s3cret",
        alert_processor_in_process=False,  # this test runs the processor itself
    )
    alerts = ChurnAlerts.from_settings(settings)
    assert alerts is not None
    customer_id = new_customer()
    body = {"customers": [churn_cases.as_customer("high", customer_id)]}
    process_pending(engine, alerts=alerts)  # anything other tests left
    with TestClient(create_app(settings, registry)) as client:
        assert client.post("/v1/churn/scores", json=body).status_code == 200
    assert counts(engine, customer_id) == (1, 0, 0)
    assert pending_candidates(engine) == 1, "the candidate is committed with its score"

    _refuse_outbox_inserts(engine)
    try:
        with pytest.raises(Exception, match="outbox refused"):
            process_pending(engine, alerts=alerts)
        assert pending_candidates(engine) == 1, "nothing taken out of the inbox"
        assert counts(engine, customer_id) == (1, 0, 0), "no alert, no message"
    finally:
        _accept_outbox_inserts(engine)

    summary = process_pending(engine, alerts=alerts)
    assert summary.candidates == 1 and len(summary.opened) == 1
    assert pending_candidates(engine) == 0
    assert counts(engine, customer_id) == (1, 1, 1)
    assert [kind for _, kind, _ in history_of(engine, customer_id)] == ["opened"]


@pytest.mark.postgres
def test_postgres_outage_during_a_churn_score_saves_nothing(
    settings_for: Any, registry: ModelRegistry, churn_cases: ChurnCases
) -> None:
    with migrated_postgres_database() as direct_url:
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
                settle_alerts(client.app)
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


def test_candidates_of_prospects_and_lost_customers_open_no_alert(engine: Engine) -> None:
    """The processor checks the stage again (a candidate queued under an older policy)."""
    prospect, lost, kept = new_customer(), new_customer(), new_customer()
    with engine.begin() as connection:
        summary = ALERTS.record(
            connection,
            candidates=[
                candidate(prospect, 0.9, stage="prospect"),
                candidate(lost, 0.9, stage="lost"),
                candidate(kept, 0.9, stage="new"),
            ],
        )
    assert (summary.skipped, len(summary.opened)) == (2, 1)
    assert history_of(engine, prospect) == history_of(engine, lost) == []
    assert [kind for _, kind, _ in history_of(engine, kept)] == ["opened"]


def _resolve(engine: Engine, customer_id: str, at: datetime) -> int:
    with engine.begin() as connection:
        alert_id = connection.scalar(
            select(Alert.id).where(Alert.customer_id == customer_id, Alert.status == "open")
        )
        connection.execute(
            update(alert_table)
            .where(alert_table.c.id == alert_id)
            .values(status="resolved", resolved_at=at, outcome="retained", owner="rm-1")
        )
    assert isinstance(alert_id, int)
    return alert_id


def test_cooldown_holds_a_crossing_after_resolution_unless_the_risk_rose(engine: Engine) -> None:
    alerts = churn_alerts(cooldown=timedelta(hours=1), reopen_margin=0.1)
    customer_id = new_customer()
    resolved_at = datetime.now(UTC) - timedelta(minutes=5)

    def record(probability: float, at: datetime) -> Any:
        with engine.begin() as connection:
            return alerts.record(
                connection, candidates=[candidate(customer_id, probability, at=at)]
            )

    assert record(0.6, resolved_at - timedelta(minutes=10)).opened
    first = _resolve(engine, customer_id, resolved_at)
    # 57 s after resolution, as risky as before (or a little more): held, not reopened.
    assert record(0.6, resolved_at + timedelta(seconds=57)).held == 1
    assert record(0.69, resolved_at + timedelta(minutes=2)).held == 1
    # Risen by the margin over the probability it was resolved at: a new alert.
    second = record(0.71, resolved_at + timedelta(minutes=3)).opened
    assert second and second[0] != first
    _resolve(engine, customer_id, resolved_at + timedelta(minutes=4))
    # Once the cooldown has passed, any crossing opens again.
    third = record(0.6, resolved_at + timedelta(minutes=4) + timedelta(hours=1)).opened
    assert third
    assert history_of(engine, customer_id) == [
        (first, "opened", "open"),
        (first, "held", "resolved"),
        (first, "held", "resolved"),
        (second[0], "opened", "open"),
        (third[0], "opened", "open"),
    ]
    # No cooldown configured: a resolved alert never holds a score.
    _resolve(engine, customer_id, datetime.now(UTC))
    with engine.begin() as connection:
        summary = churn_alerts(cooldown=timedelta(0)).record(
            connection, candidates=[candidate(customer_id, 0.5)]
        )
    assert summary.opened and summary.held == 0


def test_two_processors_at_once_record_each_candidate_once(engine: Engine) -> None:
    """Disjoint claims (PostgreSQL: SKIP LOCKED; SQLite: the write lock), one alert per
    customer even when both open one, and every candidate recorded exactly once."""
    alerts = churn_alerts(cooldown=timedelta(0))
    process_pending(engine, alerts=alerts)  # anything other tests left
    customers = [new_customer() for _ in range(25)]
    rows = [candidate_row(c, 0.6 + i / 1000) for i in range(8) for c in customers]
    queue(engine, *rows)
    barrier = threading.Barrier(2)

    def run(_: int) -> Any:
        barrier.wait()
        return process_pending(engine, alerts=alerts, batch_size=7)

    with ThreadPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(run, range(2)))
    assert sum(s.candidates for s in summaries) == len(rows)
    assert pending_candidates(engine) == 0
    with engine.connect() as connection:
        stored = connection.execute(
            select(Alert.customer_id, Alert.score_count).where(Alert.customer_id.in_(customers))
        ).all()
        events = connection.scalar(
            select(func.count())
            .select_from(AlertEvent)
            .join(Alert, Alert.id == AlertEvent.alert_id)
            .where(Alert.customer_id.in_(customers))
        )
    assert sorted(c for c, _ in stored) == sorted(customers), "one alert per customer"
    assert all(count == 8 for _, count in stored)
    assert events == len(rows)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_the_service_processor_opens_alerts_without_being_asked(
    mode: str, alert_settings: Settings, registry: ModelRegistry, churn_cases: ChurnCases
) -> None:
    settings = alert_settings.model_copy(update={"alert_processor_mode": mode})
    with TestClient(create_app(settings, registry)) as client:
        processor = client.app.state.alert_processor  # type: ignore[attr-defined]
        kind = AlertProcessorProcess if mode == "process" else AlertProcessor
        assert isinstance(processor, kind)
        _an_alert_opens_by_itself(client, churn_cases)
        child = processor if isinstance(processor, AlertProcessorProcess) else None
        assert child is None or child.alive
    assert child is None or not child.alive  # the app's end ended the child


def _an_alert_opens_by_itself(alert_client: TestClient, churn_cases: ChurnCases) -> None:
    customer_id = new_customer()
    body = {"customers": [churn_cases.as_customer("high", customer_id)]}
    started = time.monotonic()
    assert alert_client.post("/v1/churn/scores", json=body).status_code == 200
    engine = alert_client.app.state.engine  # type: ignore[attr-defined]

    def listed() -> list[Any]:
        # Not alerts_of: its total and page may straddle the processor's commit (two reads).
        page = alert_client.get("/v1/alerts", params={"customer_id": customer_id}).json()
        items: list[Any] = page["items"]
        return items

    # The wait includes a processor child's start (it imports the app): on a loaded 2-core
    # machine that alone passed 10 s. The bound is for a processor that never opens one.
    while not listed():
        waited = time.monotonic() - started
        assert waited < 30, f"no alert after {waited:.1f} s; {pending_candidates(engine)} pending"
        time.sleep(0.05)


def test_list_filters_resolved_alerts_by_outcome(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    owner = client_id_of(alert_client)
    customers = sorted(new_customer() for _ in range(3))
    score(alert_client, *(churn_cases.as_customer("high", c) for c in customers))
    ids = [alerts_of(alert_client, c)[0]["id"] for c in customers]
    for alert_id, outcome in zip(ids, ["retained", "lost", "retained"], strict=True):
        url = f"/v1/alerts/{alert_id}"
        assert alert_client.post(f"{url}/acknowledge", json={"by": owner}).status_code == 200
        resolve = {"by": owner, "outcome": outcome}
        assert alert_client.post(f"{url}/resolve", json=resolve).status_code == 200

    def listed(**params: Any) -> list[int]:
        response = alert_client.get("/v1/alerts", params={"owner": owner, **params})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert listed(outcome="retained") == [ids[0], ids[2]]
    assert listed(outcome="lost", status="resolved") == [ids[1]]
    assert listed(outcome="not_reachable") == []
    assert alert_client.get("/v1/alerts", params={"outcome": "happy"}).status_code == 422


def test_the_score_writer_imports_nothing_of_alerts_or_settings() -> None:
    """The writer (thread and child process) gets plain rows: importing it in a fresh
    interpreter loads no alert code and no settings."""
    code = (
        "import sys, app.scoring.writer, app.scoring.writer_process; "
        "print(' '.join(m for m in sys.modules if m.startswith(('app.alerts', 'app.config'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_cli_alerts_process(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli
    from app.config import get_settings

    process_pending(engine, alerts=ALERTS)  # anything other tests left
    customer_id = new_customer()
    queue(engine, candidate_row(customer_id, 0.9), candidate_row(customer_id, 0.95))
    monkeypatch.setenv("CVM_DATABASE_URL", database_url)
    monkeypatch.setenv("CVM_CHURN_ALERT_PROBABILITY", "0.5")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["alerts", "process", "--batch-size", "1"])
        assert result.exit_code == 0, result.output
        assert "candidates 2: opened 1, rescored 1, held 0, skipped 0" in result.output
        assert "left in the inbox: 0" in result.output
        monkeypatch.setenv("CVM_CHURN_ALERTS_ENABLED", "false")
        get_settings.cache_clear()
        assert CliRunner().invoke(cli, ["alerts", "process"]).exit_code == 2
    finally:
        get_settings.cache_clear()
    assert [kind for _, kind, _ in history_of(engine, customer_id)] == ["opened", "rescored"]


def test_the_documented_examples_acknowledge_and_resolve_an_alert(
    alert_client: TestClient, churn_cases: ChurnCases
) -> None:
    customer_id = new_customer()
    score(alert_client, churn_cases.as_customer("high", customer_id))
    (alert,) = alerts_of(alert_client, customer_id)
    schemas = alert_client.get("/openapi.json").json()["components"]["schemas"]
    for step, schema, status in (
        ("acknowledge", "AcknowledgeRequest", "acknowledged"),
        ("resolve", "ResolveRequest", "resolved"),
    ):
        (example,) = schemas[schema]["examples"]
        answer = alert_client.post(f"/v1/alerts/{alert['id']}/{step}", json=example)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
