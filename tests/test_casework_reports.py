"""Casework reports on a seeded data set: the casework report and the half-yearly complaints
return equal a checked-in golden file exactly; filters, permissions, tenancy and bad input."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from schemathesis.generation.case import Case as FuzzCase
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.alerts.tables import Alert
from app.casework.tables import AlertAssignment, Complaint
from app.cli.main import cli
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from tests.casework_support import new_key, put_staff
from tests.conftest import ON_SQLITE_ONLY

GOLDEN = Path(__file__).parent / "golden" / "casework_reports.json"
FIRST_HALF_2026 = {"from": "2026-01-01", "to": "2026-07-01"}
OWNER_BRANCH = {"rm-1": "north", "rm-2": "south", "ct-1": "hq"}


@dataclass(frozen=True)
class Case:
    """One seeded complaint: who, what, when received, and how (and when) it ended."""

    customer: str
    product: str
    owner: str
    received: str
    status: str = "closed"
    closed_after_days: int | None = None
    outcome: str | None = None
    root_cause: str | None = None
    redress: float | None = None


# Two half-years (UK DISP profile: due 8 weeks after receipt); received at 10:00 UTC.
CASES = [
    # 2025H2
    Case("C-1", "current_account", "rm-1", "2025-08-04", "closed", 2, "upheld", "dup_fee", 35),
    Case("C-2", "mortgage", "rm-2", "2025-09-15", "closed", 70, "not_upheld", "rate_terms", 0),
    Case("C-3", "cards", "rm-1", "2025-12-10", "closed", 41, "partially_upheld", "card", 50),
    Case("C-1", "current_account", "rm-1", "2025-11-03", "rejected", 1),
    # 2026H1
    Case("C-4", "current_account", "rm-1", "2026-01-05", "closed", 3, "upheld", "dup_fee", 20),
    Case("C-4", "current_account", "rm-1", "2026-02-02", "closed", 10, "upheld", "dup_fee", 15),
    Case("C-5", "mortgage", "rm-2", "2026-02-16", "closed", 60, "not_upheld", "rate_terms", 0),
    Case("C-6", "mortgage", "rm-2", "2026-03-02", "in_progress"),
    Case("C-7", "cards", "ct-1", "2026-04-01", "closed", 20, "partially_upheld", "card", 120.5),
    Case("C-8", "cards", "rm-1", "2026-05-11", "acknowledged"),
    Case("C-9", "savings", "rm-2", "2026-06-29", "closed", 4, "upheld", "interest_calc", 10),
    Case("C-5", "mortgage", "rm-2", "2026-06-01", "closed", 5, "not_upheld", "rate_terms", 0),
]  # fmt: skip
# Routed churn alerts: (customer, branch, assignee, closed on, outcome).
ALERTS = [
    ("C-1", "north", "rm-1", "2026-02-10", "retained"),
    ("C-4", "north", "rm-1", "2026-03-10", "lost"),
    ("C-5", "south", "rm-2", "2026-04-10", "retained"),
    ("C-6", "south", None, "2026-05-10", "not_reachable"),
    ("C-2", "south", "rm-2", "2025-12-01", "retained"),
]


def at(day: str, hour: int = 10) -> datetime:
    """``day`` at ``hour`` UTC."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def complaint_row(tenant: str, case: Case) -> Complaint:
    """A stored complaint as the service would leave it."""
    received = at(case.received)
    closed = (
        None if case.closed_after_days is None else received + timedelta(case.closed_after_days)
    )
    return Complaint(
        tenant=tenant,
        customer_id=case.customer,
        channel="branch",
        category="fees",
        product=case.product,
        severity="low",
        amount_at_stake=100.0,
        description="Seeded.",
        implicated=[],
        status=case.status,
        branch=OWNER_BRANCH[case.owner],
        received_by=case.owner,
        owner_id=case.owner,
        escalation_level=0,
        profile="uk_disp",
        received_at=received,
        clock_started_at=received,
        due_at=received + timedelta(weeks=8),
        ceiling_at=received + timedelta(weeks=8),
        milestones={},
        complex_case=False,
        extensions=0,
        paused_s=0.0,
        outcome=case.outcome,
        root_cause=case.root_cause,
        product_category=case.product if case.outcome else None,
        redress_amount=case.redress,
        closed_at=closed,
        updated_at=closed or received,
    )


def seed(session: Session, tenant: str) -> None:
    """The seeded complaints and routed alerts of ``tenant``."""
    session.add_all([complaint_row(tenant, case) for case in CASES])
    for customer, branch, assignee, closed_on, outcome in ALERTS:
        closed = at(closed_on)
        alert = Alert(
            customer_id=customer,
            status="resolved",
            risk_band="high",
            probability=0.8,
            peak_probability=0.8,
            above_threshold=True,
            reasons=[],
            actions=[],
            score_count=1,
            opened_request_id="seed",
            last_request_id="seed",
            opened_at=closed - timedelta(days=3),
            last_scored_at=closed - timedelta(days=3),
            updated_at=closed,
            resolved_at=closed,
            outcome=outcome,
            tenant=tenant,
        )
        session.add(alert)
        session.flush()
        session.add(
            AlertAssignment(
                tenant=tenant,
                alert_id=alert.id,
                customer_id=customer,
                reason="churn",
                status="closed",
                branch=branch,
                assignee_id=assignee,
                routed_via="relationship_manager" if assignee else "central_queue",
                assigned_at=closed - timedelta(days=3),
                accept_by=closed - timedelta(days=2),
                closed_at=closed,
                updated_at=closed,
            )
        )
    session.commit()


@dataclass
class Reports:
    """An app whose tenant holds the seeded data, with a key per staff member."""

    client: TestClient
    tenant: str
    keys: dict[str, dict[str, str]]
    database_url: str

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.keys[who])


@pytest.fixture(scope="module")
def reports(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Reports]:
    """The UK DISP profile; the seeded tenant, and another tenant with one complaint. Seeded
    once per database for the module: the tests only read it (or add keys of their own)."""
    settings = settings_for(database_url, auth_enabled=True, casework_profile="uk_disp")
    app = create_app(settings, registry)
    tenant, other = (f"bank-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with TestClient(app) as client:
        keys = {}
        for who, who_tenant, fields in [
            ("rm-1", tenant, {}),
            ("ct-1", tenant, {"roles": ["complaints_team"], "branch": "hq"}),
            ("ct-other", other, {"roles": ["complaints_team"], "branch": "hq"}),
        ]:
            _, admin = new_key(app, "staff:admin", tenant=who_tenant)
            principal, keys[who] = new_key(app, tenant=who_tenant)
            put_staff(client, admin, who, principal=principal, **fields)
        with Session(app.state.engine) as session:
            seed(session, tenant)
            session.add(
                complaint_row(other, Case("X-1", "mortgage", "rm-2", "2026-03-01", "received"))
            )
            session.commit()
        yield Reports(client, tenant, keys, database_url)


def observed(reports: Reports) -> dict[str, Any]:
    """Every report the golden file holds, with the (random) tenant blanked."""
    found = {
        "casework_2026H1": reports.get("ct-1", "/v1/reports/casework", **FIRST_HALF_2026),
        "casework_north_all_time": reports.get("ct-1", "/v1/reports/casework", branch="north"),
        "return_2025H2": reports.get("ct-1", "/v1/reports/complaints-return", half="2025H2"),
        "return_2026H1": reports.get("ct-1", "/v1/reports/complaints-return", half="2026H1"),
    }  # fmt: skip
    result = {}
    for name, response in found.items():
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.pop("tenant") == reports.tenant
        result[name] = body
    return result


def test_reports_equal_the_golden_file(reports: Reports) -> None:
    assert observed(reports) == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_the_golden_return_matches_the_seeded_cases_by_hand(reports: Reports) -> None:
    """The figures a reader can check against CASES, so the golden file is not taken on trust."""
    total = reports.get("ct-1", "/v1/reports/complaints-return", half="2026H1").json()["total"]
    # Received in 2026H1: C-4 twice, C-5 twice, C-6, C-7, C-8, C-9.
    assert total["received"] == 8
    # Closed in 2026H1: C-3 (from 2025), C-4 x2, C-5 x2, C-7; C-9 closes on 3 July.
    assert total["closed"] == 6
    # Within 3 business days: only C-4 of 5 January (closed the 8th, the 3rd business day);
    # C-5 of 1 June closed on the 5th calendar day (the 4th business day) is late for it.
    # Within 8 weeks: all but C-5 of 16 February (60 days).
    assert total["closed_within"] == {"3bd": 1, "8w": 5}
    # Upheld or partially: C-3, C-4 x2, C-7.
    assert (total["upheld"], total["upheld_share"]) == (4, round(4 / 6, 4))
    assert total["redress_total"] == 50 + 20 + 15 + 120.5
    # Open on 1 July: C-6, C-8, C-9.
    assert total["outstanding"] == 3
    casework = reports.get("ct-1", "/v1/reports/casework", **FIRST_HALF_2026).json()
    # Closed on time (by 8 weeks): all closed but C-5 of February; repeat: C-4 and C-5.
    assert (casework["closed"], casework["closed_on_time"]) == (6, 5)
    assert casework["repeat_complaints"] == {"customers": 2, "complaints": 4}
    assert casework["retention_by_reason"] == [
        {"key": "churn", "resolved": 4, "retained": 2, "retention_rate": 0.5}
    ]


def test_another_tenant_sees_only_its_own_cases(reports: Reports) -> None:
    mine = reports.get("ct-other", "/v1/reports/casework").json()
    assert (mine["received"], mine["by_branch"][0]["key"]) == (1, "south")
    assert mine["retention_by_reason"] == [] and mine["top_root_causes"] == []
    total = reports.get("ct-other", "/v1/reports/complaints-return", half="2026H1").json()["total"]
    assert (total["received"], total["closed"], total["outstanding"]) == (1, 0, 1)


def test_staff_outside_cross_branch_roles_report_on_their_branch_only(reports: Reports) -> None:
    own = reports.get("rm-1", "/v1/reports/casework").json()
    assert own["branch"] == "north" and [b["key"] for b in own["by_branch"]] == ["north"]
    assert own == reports.get("ct-1", "/v1/reports/casework", branch="north").json()
    assert reports.get("rm-1", "/v1/reports/casework", branch="south").status_code == 403
    response = reports.get("rm-1", "/v1/reports/complaints-return", half="2026H1")
    assert response.status_code == 403


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"half": "2026H3"}, "half"),
        ({"half": "26H1"}, "half"),
        ({"half": "2026H1", "buckets": "3x"}, "buckets"),
        ({"half": "2026H1", "buckets": "0bd"}, "buckets"),
        ({"buckets": "3bd"}, "half"),
    ],
)
def test_a_bad_return_query_is_a_422_naming_the_field(
    reports: Reports, params: dict[str, str], field: str
) -> None:
    response = reports.get("ct-1", "/v1/reports/complaints-return", **params)
    assert response.status_code == 422 and field in response.text, response.text


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-07-01", "to": "2026-01-01"}, "from"),
        ({"branch": "no such branch!"}, "branch"),
    ],
)
def test_a_bad_report_query_is_a_422_naming_the_field(
    reports: Reports, params: dict[str, str], field: str
) -> None:
    response = reports.get("ct-1", "/v1/reports/casework", **params)
    assert response.status_code == 422 and field in response.text, response.text


def test_buckets_are_configurable(reports: Reports) -> None:
    response = reports.get(
        "ct-1", "/v1/reports/complaints-return", half="2026H1", buckets=["5d", "15bd"]
    )
    total = response.json()["total"]
    # Within 5 days: C-4 (3 days), C-5 of June (5 days); within 15 business days: also C-4 of
    # February (10 days) and C-7 (20 days over Easter: 1 April + 15 business days = 24 April).
    assert (response.json()["buckets"], total["closed_within"]) == (
        ["5d", "15bd"],
        {"5d": 2, "15bd": 4},
    )


def test_the_cli_prints_the_return_as_json_and_csv(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    monkeypatch.setenv("CVM_DATABASE_URL", reports.database_url)
    monkeypatch.setenv("CVM_CASEWORK_PROFILE", "uk_disp")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        args = ["casework", "report", "--tenant", reports.tenant, "--half", "2026H1"]
        as_json = runner.invoke(cli, args)
        as_csv = runner.invoke(cli, [*args, "--format", "csv"])
        bad = runner.invoke(cli, ["casework", "report", "--half", "2026H9"])
        window = runner.invoke(
            cli, ["casework", "report", "--tenant", reports.tenant, "--from", "2026-01-01"]
        )
    finally:
        get_settings.cache_clear()
    assert as_json.exit_code == 0, as_json.output
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert json.loads(as_json.stdout) == {**golden["return_2026H1"], "tenant": reports.tenant}
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["product"] for r in rows] == [
        "cards",
        "current_account",
        "mortgage",
        "savings",
        "all",
    ]
    assert rows[-1]["received"] == "8" and rows[-1]["within_3bd"] == "1"
    assert bad.exit_code == 2 and "--half" in bad.output
    assert window.exit_code == 0 and json.loads(window.stdout)["received"] == 8


def test_the_report_operations_survive_fuzzing(reports: Reports) -> None:
    """Generated queries as a complaints-team member: no 5xx, every answer as documented."""
    headers = reports.keys["ct-1"]
    spec = reports.client.get("/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [
        found.ok()  # type: ignore[union-attr]
        for found in schema.get_all_operations()
        if found.ok().path.startswith("/v1/reports/")  # type: ignore[union-attr]
    ]
    assert len(operations) == 2
    statuses: set[int] = set()

    for operation in operations:

        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(operation.as_strategy())
        def fuzz(case: FuzzCase[Any]) -> None:
            # The running app's own client: schemathesis's ASGI transport would start the
            # app's lifespan a second time.
            response = reports.client.request(
                case.method, case.formatted_path, params=case.query, headers=headers
            )
            # Every call carries the staff key (authentication has its own tests).
            case.validate_response(
                response, excluded_checks=[positive_data_acceptance, ignored_auth]
            )
            statuses.add(response.status_code)

        fuzz()
    assert 200 in statuses and all(status < 500 for status in statuses), statuses


@ON_SQLITE_ONLY
@pytest.mark.parametrize("path", ["/v1/reports/casework", "/v1/reports/complaints-return"])
def test_reports_need_a_credential_with_casework_read(reports: Reports, path: str) -> None:
    params = {"half": "2026H1"} if path.endswith("return") else {}
    assert reports.client.get(path, params=params).status_code == 401
    app: Any = reports.client.app
    _, writer_only = new_key(app, "casework:write", tenant=reports.tenant)
    refused = reports.client.get(path, params=params, headers=writer_only)
    assert refused.status_code == 403 and "casework:read" in refused.json()["detail"]
    # A reader that acts as no staff member: 403 too, never another tenant's figures.
    _, stranger = new_key(app, "casework:read", tenant=reports.tenant)
    assert reports.client.get(path, params=params, headers=stranger).status_code == 403
