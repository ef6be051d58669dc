"""The console's second set of pages: queue actions on routed alerts (escalate, reassign),
the value pyramid and model monitoring. Role visibility, 404 out of scope, pagination and
filters, both languages, and the audit line of every view or action."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.alerts.tables import Alert
from app.casework.routing import RoutingPolicy, route_new_alerts
from app.casework.states import AssignmentStatus
from app.casework.tables import AlertAssignment
from app.console import labels
from app.console.charts import Series, interval_svg, stacked_svg
from app.http.app import create_app
from app.modelops import backtest as backtests
from app.modelops import monitoring
from app.modelops.backtest import OutcomeRow, import_outcomes, latest_backtest
from app.modelops.fairness import FairnessStatus
from app.modelops.monitoring import monitor, record_run
from app.modelops.psi import band as psi_band
from app.modelops.service import champion_row, champions
from app.modelops.tables import ModelOutcome
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.repository import TenantScope
from app.security.api_keys import create_client
from app.value.prospects import PlanChannel
from app.value.schemas import MovementMonth
from app.value.service import apply_tiers
from tests.console_support import CHEAP_HASHING, add_staff, csrf_of, customer_with_alert, log_in


@pytest.fixture(scope="module")
def console_app(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """One running app for the module (every churn score opens an alert); each test works
    in a tenant of its own."""
    settings = settings_for(
        database_url, auth_enabled=True, churn_alert_probability=1e-9, **CHEAP_HASHING
    )
    with TestClient(create_app(settings, registry), base_url="https://testserver") as client:
        yield client


@pytest.fixture
def tenant() -> str:
    return f"bank-{uuid.uuid4().hex[:8]}"


def _browser(app: Any) -> TestClient:
    return TestClient(app, base_url="https://testserver")


class AuditLines:
    """The audit logger, replaced: every line the middleware writes."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def _assignment(app: Any, alert_id: int) -> AlertAssignment:
    with app.state.session_factory() as session:
        found = session.scalars(
            select(AlertAssignment).where(AlertAssignment.alert_id == alert_id)
        ).one()
        session.expunge(found)
        assignment: AlertAssignment = found
        return assignment


def test_a_routed_alert_is_reassigned_and_escalated_from_the_queue(
    console_app: TestClient,
    tenant: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app: Any = console_app.app
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    for staff_id in ("rm-1", "rm-2"):
        add_staff(
            app, tenant=tenant, staff_id=staff_id, roles=["relationship_manager"], supervisor="bs-1"
        )
    customer_id = customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-1")
    with app.state.session_factory() as session:
        # The churn alert (its salary also opened a first-salary need alert).
        alert_id = session.scalars(
            select(Alert.id).where(Alert.customer_id == customer_id, Alert.reason == "churn")
        ).one()
        route_new_alerts(
            session, policy=RoutingPolicy(), now=datetime.now(UTC), tenant=TenantScope(tenant)
        )
    assert _assignment(app, alert_id).assignee_id == "rm-1"
    rm1 = _browser(app)
    log_in(rm1, tenant=tenant, staff_id="rm-1")
    queue = rm1.get("/console/queue")
    assert f'id="routed-{alert_id}"' in queue.text
    # Every field of both forms has its label.
    for field in ("escalate-reason", "reassign-to", "reassign-reason"):
        assert f'<label for="{field}-{alert_id}">' in queue.text
    token = csrf_of(queue.text)
    reassign = f"/console/routed/{alert_id}/reassign"
    # Forged and empty tokens: refused, nothing moves.
    for forged in ("", "forged"):
        refused = rm1.post(reassign, data={"csrf_token": forged, "to": "rm-2", "reason": "x"})
        assert refused.status_code == 403
    # No reason: refused naming the field, as the API refuses it.
    refused = rm1.post(reassign, data={"csrf_token": token, "to": "rm-2", "reason": " "})
    assert refused.status_code == 422 and "reason" in refused.text
    unknown = rm1.post(reassign, data={"csrf_token": token, "to": "nobody", "reason": "x"})
    assert unknown.status_code == 422 and "to" in unknown.text
    assert _assignment(app, alert_id).assignee_id == "rm-1"
    audit = AuditLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", audit)
        moved = rm1.post(
            reassign,
            data={
                "csrf_token": token,
                "to": "rm-2",
                "reason": "on leave",
                "back": "/console/queue",
            },
            follow_redirects=False,
        )
    assert moved.status_code == 303 and moved.headers["location"] == "/console/queue"
    (line,) = [entry for entry in audit.lines if entry["event"] == "audit"]
    assert (line["alert"], line["action"], line["client"]) == (alert_id, "reassign", "staff:rm-1")
    assert line["tenant"] == tenant and line["status"] == 303
    assert _assignment(app, alert_id).assignee_id == "rm-2"
    rm2 = _browser(app)
    log_in(rm2, tenant=tenant, staff_id="rm-2")
    token2 = csrf_of(rm2.get("/console/queue").text)
    escalated = rm2.post(
        f"/console/routed/{alert_id}/escalate",
        data={"csrf_token": token2, "reason": "asks for a manager"},
        follow_redirects=False,
    )
    assert escalated.status_code == 303
    assignment = _assignment(app, alert_id)
    assert (assignment.assignee_id, assignment.routed_via) == ("bs-1", "supervisor")
    # rm-1 is no longer the assignee, nor the branch's supervisor: 403 from casework.
    again = rm1.post(
        f"/console/routed/{alert_id}/escalate", data={"csrf_token": token, "reason": "x"}
    )
    assert again.status_code == 403
    missing = rm1.post(
        "/console/routed/999999999/escalate", data={"csrf_token": token, "reason": "x"}
    )
    assert missing.status_code == 404
    # The state filter: an assigned alert is not among the closed ones; a bad state is named.
    assert f'id="routed-{alert_id}"' in rm1.get("/console/queue?routed_status=assigned").text
    assert f'id="routed-{alert_id}"' not in rm1.get("/console/queue?routed_status=closed").text
    bad = rm1.get("/console/queue?routed_status=lost")
    assert bad.status_code == 422 and "routed_status" in bad.text
    assert rm1.get("/console/queue?routed_page=0").status_code == 422
    # Another tenant's staff member with the same id sees nothing of it.
    add_staff(app, tenant="other-bank", staff_id="rm-1", roles=["relationship_manager"])
    other = _browser(app)
    log_in(other, tenant="other-bank", staff_id="rm-1")
    assert f'id="routed-{alert_id}"' not in other.get("/console/queue").text
    token3 = csrf_of(other.get("/console/queue").text)
    stranger = other.post(
        f"/console/routed/{alert_id}/reassign",
        data={"csrf_token": token3, "to": "rm-1", "reason": "x"},
    )
    assert stranger.status_code == 404
    # In Chinese: the section and its buttons.
    rm1.post("/console/language", data={"csrf_token": token, "language": "zh_CN"})
    chinese = rm1.get("/console/queue").text
    assert "已分派预警" in chinese and "转派" in chinese


BALANCES = {  # customer: [(month, savings balance)]
    "A": [("2026-10", 30_000.0), ("2026-11", 150_000.0)],
    "B": [("2026-10", 600_000.0)],
    "C": [("2026-10", 1_000.0)],
}


def _book(
    app: Any, tenant: str, months: set[str], ids: dict[str, str] | None = None
) -> dict[str, str]:
    """Balance snapshots of the three customers in ``months`` (their ids by letter)."""
    _, key = create_client(app.state.engine, name="feed", scopes=["events:write"], tenant=tenant)
    api = TestClient(app, headers={"X-API-Key": key})
    ids = ids or {letter: f"PY-{letter}-{uuid.uuid4().hex[:8]}" for letter in BALANCES}
    events = [
        {
            "event_id": f"{ids[letter]}-{month}",
            "type": "balance_snapshot",
            "customer_id": ids[letter],
            "occurred_at": f"{month}-15T09:00:00Z",
            "product": "savings",
            "balance": balance,
        }
        for letter, history in BALANCES.items()
        for month, balance in history
        if month in months
    ]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code in (200, 201, 202), response.text
    return ids


def _apply(app: Any, tenant: str) -> None:
    with app.state.session_factory() as session:
        apply_tiers(
            session,
            policy=app.state.tier_policy,
            tenant=tenant,
            dry_run=False,
            now=datetime.now(UTC),
        )


def _row(html: str, tier: str) -> str:
    start = html.index(f'<th scope="row">{tier}</th>')
    return html[start : html.index("</tr>", start)]


def test_the_value_pyramid_for_supervisors_and_administrators(
    console_app: TestClient, tenant: str
) -> None:
    app: Any = console_app.app
    ids = _book(app, tenant, {"2026-10"})
    _apply(app, tenant)
    _book(app, tenant, {"2026-11"}, ids)
    _apply(app, tenant)  # A moves up in November
    _book(app, "other-bank", {"2026-10", "2026-11"})  # never counted here
    _apply(app, "other-bank")
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    add_staff(app, tenant=tenant, staff_id="ct-1", roles=["complaints_team"])
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    add_staff(app, tenant=tenant, staff_id="ad-1", roles=["administrator"])
    for staff_id in ("rm-1", "ct-1"):
        browser = _browser(app)
        log_in(browser, tenant=tenant, staff_id=staff_id)
        assert "/console/pyramid" not in browser.get("/console/queue").text  # no link
        assert browser.get("/console/pyramid").status_code == 404
    supervisor = _browser(app)
    log_in(supervisor, tenant=tenant, staff_id="bs-1")
    assert 'href="/console/pyramid"' in supervisor.get("/console/queue").text
    audit = AuditLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", audit)
        page = supervisor.get("/console/pyramid")
    assert page.status_code == 200
    (line,) = [entry for entry in audit.lines if entry["event"] == "audit"]
    assert (line["view"], line["client"], line["tenant"]) == ("pyramid", "staff:bs-1", tenant)
    html = page.text
    # Tiers from the top; counts and balances of this tenant only, in the user's locale.
    order = [html.index(f'<th scope="row">{t}</th>') for t in reversed(app.state.tier_policy.names)]
    assert order == sorted(order)
    assert "€600,000.00" in _row(html, "high_net_worth") and ">1<" in _row(html, "high_net_worth")
    assert "€150,000.00" in _row(html, "affluent")
    assert "€1,000.00" in _row(html, "mass")
    assert ">0<" in _row(html, "private") and "€0.00" in _row(html, "private")
    assert "20.0%" in _row(html, "affluent")  # 150,000 of 751,000 is 20.0% of the value
    # Movements over time: the chart keeps its labels as text; a row per month.
    assert "<svg" in html and "upgrade" in html
    assert '<th scope="row">2026-10</th><td class="num">3</td>' in html
    assert '<th scope="row">2026-11</th><td class="num">0</td><td class="num">1</td>' in html
    # Filtered to November; an impossible month is named; a page past the end is empty.
    november = supervisor.get("/console/pyramid?since=2026-11").text
    assert '<th scope="row">2026-11</th>' in november
    assert '<th scope="row">2026-10</th>' not in november
    assert (
        '<th scope="row">2026-11</th>' not in supervisor.get("/console/pyramid?until=2026-10").text
    )
    bad = supervisor.get("/console/pyramid?since=2026-13")
    assert bad.status_code == 422 and "since" in bad.text
    beyond = supervisor.get("/console/pyramid?page=2").text
    assert '<th scope="row">2026-10</th>' not in beyond and "Page 2" in beyond
    # The administrator sees it too, and in Chinese.
    admin = _browser(app)
    log_in(admin, tenant=tenant, staff_id="ad-1")
    # This app keeps its audit lines in the log only: the audit page says how to keep them.
    assert "CVM_AUDIT_STORE=true" in admin.get("/console/audit").text
    assert supervisor.get("/console/audit").status_code == 404
    token = csrf_of(admin.get("/console/pyramid").text)
    chinese = admin.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": "/console/pyramid"},
    )
    assert chinese.status_code == 200
    assert "价值金字塔" in chinese.text and "升级" in chinese.text
    assert "€600,000.00" in chinese.text


def test_model_monitoring_for_model_owners_and_administrators(
    console_app: TestClient,
    tenant: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app: Any = console_app.app
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    add_staff(app, tenant=tenant, staff_id="mo-1", roles=["model_owner"])
    add_staff(app, tenant=tenant, staff_id="ad-1", roles=["administrator"])
    customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-1")  # a churn score
    for staff_id in ("rm-1", "bs-1"):
        browser = _browser(app)
        log_in(browser, tenant=tenant, staff_id=staff_id)
        assert 'href="/console/models"' not in browser.get("/console/queue").text
        assert browser.get("/console/models").status_code == 404
    owner = _browser(app)
    log_in(owner, tenant=tenant, staff_id="mo-1")
    assert 'href="/console/models"' in owner.get("/console/queue").text
    # Nothing computed yet: the page says how to compute each, and computes neither itself.
    empty = owner.get("/console/models").text
    assert "No drift run stored yet" in empty and f"cvm monitor churn --tenant {tenant}" in empty
    assert "No backtest stored yet" in empty
    # A drift run (what cvm monitor stores), and outcomes imported for the tenant: the import
    # stores the champion's backtest (the score's horizon has passed by the day reported).
    now = datetime.now(UTC)
    with app.state.session_factory() as session:
        version = champions(session)[Task.CHURN]
        scope = TenantScope(tenant)
        drift = monitor(
            session, task=Task.CHURN, version=version, since=None, limit=5000, tenant=scope
        )
        record_run(session, report=drift, tenant=scope, now=now)
        import_outcomes(
            session,
            task=Task.CHURN,
            rows=[OutcomeRow("someone-else", now)],
            observed_through=now + timedelta(days=92),
            tenant=tenant,
            source="left.csv",
            now=now,
        )
        stored = latest_backtest(session, task=Task.CHURN, version=version, tenant=scope)
    assert stored is not None and not stored.stale and stored.report.months
    audit = AuditLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", audit)
        patch.setattr(backtests, "backtest", lambda *a, **k: pytest.fail("computed per view"))
        patch.setattr(monitoring, "monitor", lambda *a, **k: pytest.fail("computed per view"))
        page = owner.get("/console/models")
    assert page.status_code == 200
    (line,) = [entry for entry in audit.lines if entry["event"] == "audit"]
    assert (line["view"], line["task"], line["client"]) == ("models", "churn", "staff:mo-1")
    html = page.text
    # Drift of this tenant's one stored churn score: a bar per feature, labels as text.
    assert "1 stored scores of your bank" in html
    assert "<svg" in html and ">age<" in html.replace("</text>", "<")
    churn = registry.get(Task.CHURN)
    assert churn is not None
    for feature in churn.schema.features[:3]:
        assert f'<th scope="row">{feature.name}</th>' in html
    # Calibration and fairness come from the champion's card.
    with app.state.session_factory() as session:
        version = champions(session)[Task.CHURN]
        manifest = champion_row(session, task=Task.CHURN, version=version).manifest
    for calibration_bin in manifest["metrics"]["test"]["calibration"]:
        assert f'<th scope="row">{calibration_bin["bin"]}</th>' in html
    # The stored backtest: the month of the one score, when it was computed, not stale.
    assert "Computed when outcomes were imported" in html and "stale" not in html
    assert f'<th scope="row">{stored.report.months[0].month}</th>' in html
    # An outcome that arrived without the import: the page says the backtest is stale.
    with app.state.session_factory() as session:
        session.add(
            ModelOutcome(
                tenant=tenant,
                task="churn",
                customer_id="another",
                occurred_at=now,
                observed_through=now,
                source="direct",
                imported_at=now,
            )
        )
        session.commit()
    assert "this backtest is stale" in owner.get("/console/models").text
    fairness = manifest["card"]["quantitative_analyses"]["fairness"]
    if fairness.get("applicable"):
        for factor in fairness["factors"]:
            assert f'<th scope="row">{factor}</th>' in html
    # Another model by the filter; a model that does not exist is named.
    assert "prospect" in owner.get("/console/models?task=prospect").text
    bad = owner.get("/console/models?task=weather")
    assert bad.status_code == 422 and "task" in bad.text
    admin = _browser(app)
    log_in(admin, tenant=tenant, staff_id="ad-1")
    token = csrf_of(admin.get("/console/models").text)
    chinese = admin.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": "/console/models"},
    )
    assert "模型监控" in chinese.text and "留出月份上的校准" in chinese.text


def test_the_auc_chart_draws_months_and_gaps_as_text() -> None:
    svg = interval_svg(
        ["2026-01", "2026-02", "2026-03"],
        [0.91, None, 0.88],
        [0.90, None, 0.86],
        [0.92, None, 0.90],
        axis_label="AUC",
    )
    assert svg.startswith("<svg") and "2026-02" in svg and "AUC" in svg


def test_the_movement_chart_stacks_its_bars_to_scale_with_labels_as_text() -> None:
    svg = stacked_svg(
        ["2026-10", "2026-11"],
        [Series("up", [30, 0], "#1e8449"), Series("down <&>", [10, 20], "#b03a2e")],
        axis_label="customers moved",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "down &lt;&amp;&gt;" in svg and "customers moved" in svg and "2026-11" in svg
    heights = [
        float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)" fill="[^"]+"><title>', svg)
    ]
    assert len(heights) == 3  # the zero is not drawn; the legend's squares are not bars
    assert heights[0] == pytest.approx(3 * heights[1], rel=0.01)  # 30 against 10
    assert heights[2] == pytest.approx(2 * heights[1], rel=0.01)
    assert ">40<" in svg  # the axis reaches the highest stack


def test_the_words_shown_from_data_cover_their_enums() -> None:
    assert set(labels.ASSIGNMENT_STATUSES) == {s.value for s in AssignmentStatus}
    assert set(labels.PLAN_CHANNELS) == {c.value for c in PlanChannel}
    assert set(labels.FAIRNESS_STATUSES) == {s.value for s in FairnessStatus}
    assert {field for _, field, _ in labels.MOVEMENT_CHART} == set(MovementMonth.model_fields) - {
        "month"
    }
    assert set(labels.PSI_BANDS) == {psi_band(0.0), psi_band(0.2), psi_band(1.0)}
