"""The contact policy: do-not-contact always blocks; channel caps in rolling windows; the
suppression after negative outcomes; no marketing while a complaint is open. Every blocked
contact names its rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from tests.casework_support import new_key, put_staff


@pytest.fixture(scope="module")
def app_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    # No background writers: a staff write racing one on SQLite fails at once (see report).
    settings = settings_for(
        database_url, auth_enabled=True, churn_alerts_enabled=False, rescore_in_process=False
    )
    with TestClient(create_app(settings, registry)) as client:
        yield client


@pytest.fixture
def keys(app_client: TestClient) -> dict[str, dict[str, str]]:
    """A tenant's contact key, its staff member's key, and another tenant's key."""
    app: Any = app_client.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    principal, staff = new_key(app, tenant=tenant)
    _, admin = new_key(app, "staff:admin", tenant=tenant)
    put_staff(app_client, admin, "rm-1", principal=principal)
    _, other = new_key(app, tenant="another")
    return {"us": staff, "other": other}


def ask(client: TestClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/contact/check", json=body, headers=key)
    assert response.status_code == 200, response.text
    return dict(response.json())


def record(client: TestClient, key: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/contact/records", json=body, headers=key)


def test_channel_caps_hold_for_a_rolling_window_and_spare_service_contacts(
    app_client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    us, customer = keys["us"], "C-cap"
    first = record(app_client, us, customer_id=customer, channel="email", purpose="retention")
    assert first.status_code == 201, first.text
    again = ask(app_client, us, customer_id=customer, channel="email", purpose="marketing")
    assert (again["allowed"], again["rule"]) == (False, "channel_cap")
    assert "1 email contact(s) in the last 7 days (cap 1)" in again["detail"]
    refused = record(app_client, us, customer_id=customer, channel="email", purpose="retention")
    assert refused.status_code == 409 and refused.json()["rule"] == "channel_cap"
    assert ask(app_client, us, customer_id=customer, channel="sms", purpose="retention")["allowed"]
    assert ask(app_client, us, customer_id=customer, channel="email", purpose="service")["allowed"]
    later = (datetime.now(UTC) + timedelta(days=7, minutes=1)).isoformat()
    assert ask(
        app_client, us, customer_id=customer, channel="email", purpose="retention", at=later
    )["allowed"]
    # Another tenant's customer of the same id has contacts of its own (none).
    other = keys["other"]
    assert ask(app_client, other, customer_id=customer, channel="email", purpose="retention")[
        "allowed"
    ]


def test_negative_outcomes_suppress_retention_and_marketing_for_a_while(
    app_client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    us, customer = keys["us"], "C-neg"
    for _ in range(3):  # phone is not capped: only the outcomes count
        response = record(
            app_client,
            us,
            customer_id=customer,
            channel="phone",
            purpose="retention",
            outcome="negative",
        )
        assert response.status_code == 201, response.text
    blocked = ask(app_client, us, customer_id=customer, channel="letter", purpose="marketing")
    assert (blocked["allowed"], blocked["rule"]) == (False, "negative_outcomes")
    assert ask(app_client, us, customer_id=customer, channel="letter", purpose="service")["allowed"]
    later = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    assert ask(
        app_client, us, customer_id=customer, channel="letter", purpose="marketing", at=later
    )["allowed"]


def test_do_not_contact_always_blocks_and_an_open_complaint_stops_marketing(
    app_client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    us, customer = keys["us"], "C-dnc"
    complaint = {
        "customer_id": customer,
        "channel": "branch",
        "category": "fees",
        "product": "current_account",
        "severity": "low",
        "amount_at_stake": 10.0,
        "description": "Charged twice.",
    }
    assert app_client.post("/v1/complaints", json=complaint, headers=us).status_code == 201
    marketing = ask(app_client, us, customer_id=customer, channel="sms", purpose="marketing")
    assert (marketing["allowed"], marketing["rule"]) == (False, "open_complaint")
    assert ask(app_client, us, customer_id=customer, channel="sms", purpose="retention")["allowed"]

    flag = {"reason": "asked by letter"}
    put = app_client.put(f"/v1/contact/do-not-contact/{customer}", json=flag, headers=us)
    assert put.status_code == 200 and put.json()["reason"] == "asked by letter"
    for purpose in ("service", "retention", "marketing"):
        answer = ask(app_client, us, customer_id=customer, channel="letter", purpose=purpose)
        assert (answer["allowed"], answer["rule"]) == (False, "do_not_contact")
    refused = record(app_client, us, customer_id=customer, channel="phone", purpose="service")
    assert refused.status_code == 409 and refused.json()["rule"] == "do_not_contact"
    assert ask(app_client, keys["other"], customer_id=customer, channel="sms", purpose="service")[
        "allowed"
    ]  # another tenant's flag list
    assert app_client.delete(f"/v1/contact/do-not-contact/{customer}", headers=us).status_code == (
        204
    )
    assert app_client.delete(f"/v1/contact/do-not-contact/{customer}", headers=us).status_code == (
        404
    )
    assert ask(app_client, us, customer_id=customer, channel="sms", purpose="service")["allowed"]
    bad = app_client.post(
        "/v1/contact/check",
        json={"customer_id": customer, "channel": "pigeon", "purpose": "service"},
        headers=us,
    )
    assert bad.status_code == 422 and "channel" in bad.json()["detail"]


def test_every_contact_operation_accepts_its_documented_example(
    app_client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    spec = app_client.get("/openapi.json", headers=keys["us"]).json()
    schemas = spec["components"]["schemas"]

    def example(path: str, method: str = "post") -> dict[str, Any]:
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        (found,) = schemas[body["schema"]["$ref"].rsplit("/", 1)[-1]]["examples"]
        return dict(found)

    us = keys["us"]
    check = app_client.post("/v1/contact/check", json=example("/v1/contact/check"), headers=us)
    assert check.status_code == 200 and check.json()["allowed"] is True
    response = record(app_client, us, **example("/v1/contact/records"))
    assert response.status_code == 201, response.text
    flag = example("/v1/contact/do-not-contact/{customer_id}", "put")
    assert app_client.put("/v1/contact/do-not-contact/C1", json=flag, headers=us).status_code == 200
