"""Migration 0024: alert reasons go up, down and up again with rows present; existing alerts
become churn alerts; a need alert may be open beside a customer's churn alert, never two of
one reason; down removes need alerts (and their assignments) and keeps churn ones."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"
REVISION, PREVIOUS = "0024", "0027"
CHURN_ALERT = (
    "INSERT INTO alert (customer_id, status, risk_band, probability, peak_probability,"
    " above_threshold, reasons, actions, score_count, opened_request_id, last_request_id,"
    " opened_at, last_scored_at, updated_at, tenant) VALUES ('C-1', 'open', 'high', 0.9, 0.9,"
    " true, '[]', '[]', 1, 'r', 'r', :now, :now, :now, 't')"
)
NEED_ALERT = (
    "INSERT INTO alert (customer_id, reason, product, status, above_threshold, reasons,"
    " actions, score_count, opened_request_id, last_request_id, opened_at, last_scored_at,"
    " updated_at, tenant) VALUES ('C-1', :reason, 'credit_card', 'open', true, '[]', '[]', 0,"
    " 'r', 'r', :now, :now, :now, 't')"
)
ASSIGNMENT = (
    "INSERT INTO alert_assignment (tenant, alert_id, customer_id, reason, status, branch,"
    " routed_via, assigned_at, accept_by, updated_at) SELECT 't', id, customer_id, reason,"
    " 'assigned', 'n', 'central_queue', :now, :now, :now FROM alert WHERE reason = :reason"
)


def _execute(engine: Engine, sql: str, **params: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), {"now": NOW, **params})


def _reasons(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT reason, product FROM alert ORDER BY id"))
        return [(row.reason, row.product) for row in rows]


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, PREVIOUS)
    _execute(database, CHURN_ALERT)
    migrate.upgrade(url, REVISION)
    assert _reasons(database) == [("churn", None)]
    _execute(database, NEED_ALERT, reason="first_salary")
    _execute(database, ASSIGNMENT, reason="first_salary")
    with pytest.raises(DBAPIError):  # one active alert per customer and reason
        _execute(database, NEED_ALERT, reason="first_salary")
    with pytest.raises(DBAPIError):
        _execute(database, CHURN_ALERT)
    with pytest.raises(DBAPIError):  # an unknown reason
        _execute(database, NEED_ALERT, reason="lottery_win")
    assert _reasons(database) == [("churn", None), ("first_salary", "credit_card")]

    migrate.downgrade(url, PREVIOUS)
    assert {c["name"] for c in inspect(database).get_columns("alert")}.isdisjoint(
        {"reason", "product"}
    )
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM alert")) == 1
        assert connection.scalar(text("SELECT count(*) FROM alert_assignment")) == 0
    with pytest.raises(DBAPIError):  # one active alert per customer again
        _execute(database, CHURN_ALERT)

    migrate.upgrade(url, REVISION)
    _execute(database, NEED_ALERT, reason="idle_inflow")
    _execute(database, ASSIGNMENT, reason="idle_inflow")
    assert _reasons(database) == [("churn", None), ("idle_inflow", "credit_card")]
