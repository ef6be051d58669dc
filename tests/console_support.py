"""Helpers shared by the console tests: staff with passwords, a customer with an alert."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.casework.schemas import StaffRequest
from app.casework.staff import StaffRow, store_staff
from app.console.service import Passwords, set_password
from app.db.session import writing
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from tests.alert_support import settle_alerts
from tests.conftest import customer_record

PASSWORD = "correct horse battery staple"
# Argon2id at its cheapest: the tests hash and check dozens of passwords.
CHEAP_HASHING = {"console_argon2_time_cost": 1, "console_argon2_memory_kib": 8}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_staff(
    app: FastAPI,
    *,
    tenant: str | None,
    staff_id: str,
    roles: list[str],
    branch: str = "north",
    principal: str | None = None,
    supervisor: str | None = None,
) -> None:
    """A staff member with the test password."""
    request = StaffRequest.model_validate(
        {
            "name": f"Staff {staff_id}",
            "email": f"{staff_id}@bank.example",
            "roles": roles,
            "branch": branch,
            "max_severity": "high",
            "max_amount": 10000,
            "principal": principal,
            "supervisor": supervisor,
        }
    )
    now = datetime.now(UTC)
    # Declared writers (see app.db.session.writing): the app's own threads write beside them.
    with app.state.session_factory() as session:
        store_staff(writing(session), tenant=tenant, rows=[StaffRow(staff_id, request)], now=now)
        set_password(
            writing(session),
            passwords=Passwords.from_settings(app.state.settings),
            tenant=tenant,
            staff_id=staff_id,
            password=PASSWORD,
            now=now,
        )


def csrf_of(html: str) -> str:
    """The first CSRF token in a page."""
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def log_in(
    client: TestClient, *, tenant: str | None, staff_id: str, password: str = PASSWORD
) -> Any:
    """Post the login form as a browser would (token from the form, cookie from the page)."""
    token = csrf_of(client.get("/console/login").text)
    return client.post(
        "/console/login",
        data={
            "csrf_token": token,
            "tenant": tenant or "",
            "staff_id": staff_id,
            "password": password,
        },
        follow_redirects=False,
    )


def customer_with_alert(
    app: FastAPI,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
    *,
    tenant: str,
    manager: str,
    branch: str = "north",
) -> str:
    """A new customer of ``manager`` in ``tenant``: a profile, a transaction, a churn score
    with reasons, and (with the app's threshold near zero) an open alert."""
    customer_id = f"CON-{uuid.uuid4().hex[:10]}"
    _, key = create_client(
        app.state.engine, name="feed", scopes=["events:write", "scores:write"], tenant=tenant
    )
    headers = {"X-API-Key": key}
    api = TestClient(app, headers=headers)  # the app is running already: no second lifespan
    events = {
        "events": [
            {
                "event_id": f"{customer_id}-p",
                "type": "customer_profile",
                "customer_id": customer_id,
                "occurred_at": "2026-11-02T08:00:00Z",
                "branch": branch,
                "relationship_manager": manager,
            },
            {
                "event_id": f"{customer_id}-t",
                "type": "transaction",
                "customer_id": customer_id,
                "occurred_at": "2026-11-30T09:15:00Z",
                "amount": 2450.5,
                "direction": "credit",
                "channel": "transfer",
                "category": "salary",
            },
        ]
    }
    response = api.post("/v1/events", json=events)
    assert response.status_code in (200, 201, 202), response.text
    model = registry.get(Task.CHURN)
    assert model is not None
    row = next(iter(sample_rows["existing"].iterrows()))[1]
    record = customer_record(row, model.schema, customer_id)
    response = api.post("/v1/churn/scores", json={"customers": [record], "reasons": 3})
    assert response.status_code == 200, response.text
    settle_alerts(app)
    return customer_id
