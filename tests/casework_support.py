"""Helpers shared by the casework tests: keys, staff records, an app on a database."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.security.api_keys import create_client

CASEWORK_SCOPES = ("casework:read", "casework:write")


def new_key(app: FastAPI, *scopes: str, tenant: str | None = None) -> tuple[str, dict[str, str]]:
    """A new client's id and headers carrying its key."""
    info, key = create_client(
        app.state.engine, name="t", scopes=list(scopes or CASEWORK_SCOPES), tenant=tenant
    )
    return info.id, {"X-API-Key": key}


def staff_body(**overrides: Any) -> dict[str, Any]:
    """A valid staff record; fields overridden by keyword."""
    body: dict[str, Any] = {
        "name": "Anna Berg",
        "email": "anna@bank.example",
        "roles": ["relationship_manager"],
        "branch": "north",
        "max_severity": "medium",
        "max_amount": 5000.0,
    }
    body.update(overrides)
    return body


def put_staff(client: TestClient, admin: dict[str, str], staff_id: str, **fields: Any) -> Any:
    """Create or replace a staff member; the stored record."""
    response = client.put(f"/v1/staff/{staff_id}", json=staff_body(**fields), headers=admin)
    assert response.status_code == 200, response.text
    return response.json()
