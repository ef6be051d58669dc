"""The staff directory: records, supervisors, absences, principals, tenants, CSV import."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.casework.tables import Staff
from app.cli.main import cli
from app.config import get_settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from tests.casework_support import new_key, put_staff, staff_body
from tests.db_support import migrated_sqlite_database


@pytest.fixture
def app_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """An authenticated app on the parametrised database, without default credentials."""
    app = create_app(settings_for(database_url, auth_enabled=True), registry)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tenant() -> str:
    """A tenant of this test alone: the session's database is shared."""
    return f"bank-{uuid.uuid4().hex[:8]}"


def test_staff_are_created_replaced_listed_and_read(app_client: TestClient, tenant: str) -> None:
    app = app_client.app
    _, admin = new_key(app, "staff:admin", "casework:read", tenant=tenant)  # type: ignore[arg-type]
    put_staff(app_client, admin, "bs-1", roles=["branch_supervisor"], max_severity="high")
    created = put_staff(app_client, admin, "rm-1", supervisor="bs-1", principal=f"jwt:{tenant}")
    assert created["supervisor"] == "bs-1" and created["roles"] == ["relationship_manager"]
    absence = {"starts_on": "2027-01-04", "ends_on": "2027-01-08", "reason": "leave"}
    response = app_client.post("/v1/staff/rm-1/absences", json=absence, headers=admin)
    assert response.status_code == 200, response.text
    replaced = put_staff(app_client, admin, "rm-1", name="Anna Lind", max_amount=7000)
    assert (replaced["name"], replaced["max_amount"], replaced["supervisor"]) == (
        "Anna Lind",
        7000.0,
        None,
    )
    assert replaced["absences"] == [absence]  # kept across a replacement
    assert replaced["created_at"] == created["created_at"]
    page = app_client.get("/v1/staff", params={"role": "branch_supervisor"}, headers=admin).json()
    assert [s["staff_id"] for s in page["items"]] == ["bs-1"] and page["total"] == 1
    page = app_client.get("/v1/staff", params={"branch": "north"}, headers=admin).json()
    assert [s["staff_id"] for s in page["items"]] == ["bs-1", "rm-1"]


def test_bad_records_are_refused_naming_the_field(app_client: TestClient, tenant: str) -> None:
    _, admin = new_key(app_client.app, "staff:admin", tenant=tenant)  # type: ignore[arg-type]
    response = app_client.put("/v1/staff/rm-2", json=staff_body(supervisor="nobody"), headers=admin)
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_staff" and "supervisor" in response.json()["detail"]
    put_staff(app_client, admin, "a")
    put_staff(app_client, admin, "b", supervisor="a")
    response = app_client.put("/v1/staff/a", json=staff_body(supervisor="b"), headers=admin)
    assert response.status_code == 422 and "loop" in response.json()["detail"]
    response = app_client.put("/v1/staff/c", json=staff_body(roles=[]), headers=admin)
    assert response.status_code == 422 and "roles" in response.json()["detail"]
    put_staff(app_client, admin, "d", principal=f"cl_{tenant}")
    response = app_client.put(
        "/v1/staff/e", json=staff_body(principal=f"cl_{tenant}"), headers=admin
    )
    assert response.status_code == 409 and "principal" in response.json()["detail"]
    assert app_client.get("/v1/staff/e", headers=admin).status_code == 403  # no casework:read
    bad = {"starts_on": "2027-01-08", "ends_on": "2027-01-04"}
    response = app_client.post("/v1/staff/d/absences", json=bad, headers=admin)
    assert response.status_code == 422 and "ends_on" in response.json()["detail"]


def test_writes_need_staff_admin_and_reads_stay_in_the_tenant(
    app_client: TestClient, tenant: str
) -> None:
    app = app_client.app
    _, admin = new_key(app, "staff:admin", "casework:read", tenant=tenant)  # type: ignore[arg-type]
    _, worker = new_key(app, "casework:read", "casework:write", tenant=tenant)  # type: ignore[arg-type]
    _, other = new_key(app, "staff:admin", "casework:read", tenant=tenant + "-other")  # type: ignore[arg-type]
    response = app_client.put("/v1/staff/rm-9", json=staff_body(), headers=worker)
    assert response.status_code == 403
    put_staff(app_client, admin, "rm-9")
    assert app_client.get("/v1/staff/rm-9", headers=worker).status_code == 200
    assert app_client.get("/v1/staff/rm-9", headers=other).status_code == 404
    assert app_client.get("/v1/staff", headers=other).json()["total"] == 0
    response = app_client.post(
        "/v1/staff/rm-9/absences",
        json={"starts_on": "2027-01-01", "ends_on": "2027-01-01"},
        headers=other,
    )
    assert response.status_code == 404


CSV_HEADER = "staff_id,name,email,roles,branch,supervisor,max_severity,max_amount,principal\n"


def test_cvm_staff_import_stores_every_row_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    with migrated_sqlite_database() as url:
        monkeypatch.setenv("CVM_DATABASE_URL", url)
        get_settings.cache_clear()
        engine = create_db_engine(url)
        try:
            good = tmp_path / "staff.csv"
            # The supervisor comes after the member who names them.
            good.write_text(
                CSV_HEADER
                + "rm-1,Anna Berg,anna@bank.example,relationship_manager,north,bs-1,medium,5000,"
                "jwt:anna\n"
                "bs-1,Bo Ek,bo@bank.example,branch_supervisor;relationship_manager,north,,high,"
                "50000,\n",
                encoding="utf-8",
            )
            result = runner.invoke(cli, ["staff", "import", str(good), "--tenant", "bank-a"])
            assert result.exit_code == 0, result.output
            assert "2 created, 0 updated" in result.output
            result = runner.invoke(cli, ["staff", "import", str(good), "--tenant", "bank-a"])
            assert "0 created, 2 updated" in result.output
            with engine.connect() as connection:
                boss = connection.execute(
                    select(Staff.roles, Staff.principal).where(Staff.staff_id == "bs-1")
                ).one()
            assert boss.roles == ["branch_supervisor", "relationship_manager"]
            assert boss.principal is None

            bad = tmp_path / "bad.csv"
            bad.write_text(
                CSV_HEADER
                + "rm-7,Cy Dahl,cy@bank.example,relationship_manager,north,,medium,100,\n"
                "rm-8,Di Eng,di@bank.example,cashier,north,,medium,lots,\n",
                encoding="utf-8",
            )
            result = runner.invoke(cli, ["staff", "import", str(bad), "--tenant", "bank-a"])
            assert result.exit_code == 2
            assert "line 3, roles.0" in result.output and "line 3" in result.output
            orphan = tmp_path / "orphan.csv"
            orphan.write_text(
                CSV_HEADER + "rm-7,Cy Dahl,cy@bank.example,relationship_manager,north,bs-9,"
                "medium,100,\n",
                encoding="utf-8",
            )
            result = runner.invoke(cli, ["staff", "import", str(orphan), "--tenant", "bank-a"])
            assert result.exit_code == 2 and "line 2.supervisor" in result.output
            with engine.connect() as connection:
                assert connection.scalar(select(func.count()).select_from(Staff)) == 2
        finally:
            engine.dispose()
            get_settings.cache_clear()
