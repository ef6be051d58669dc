"""Complaints end to end: first-responder ownership, states, transfer, escalation,
deadlines (time travel), the customer's trail, and the append-only audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.casework.service import purge_expired, sweep_deadlines
from app.casework.tables import CaseEvent, Complaint
from app.customers.tables import CustomerEvent
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from tests.casework_support import new_key, put_staff

COMPLAINT = {
    "customer_id": "C-1",
    "channel": "branch",
    "category": "fees",
    "product": "current_account",
    "severity": "low",
    "amount_at_stake": 100.0,
    "description": "Charged twice.",
}
CLOSING = {
    "outcome": "upheld",
    "root_cause": "duplicate_fee_posting",
    "product_category": "current_accounts",
    "redress_amount": 35.0,
}


@dataclass
class Bank:
    """An app with one tenant's staff, each with their own key."""

    client: TestClient
    engine: Engine
    tenant: str
    keys: dict[str, dict[str, str]]

    def post(self, who: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, json=body or {}, headers=self.keys[who])

    def complaint(self, who: str = "rm-1", **fields: Any) -> dict[str, Any]:
        response = self.post(who, "/v1/complaints", {**COMPLAINT, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def step(self, who: str, case: int, action: str, body: dict[str, Any] | None = None) -> Any:
        return self.post(who, f"/v1/complaints/{case}/{action}", body)


STAFF: dict[str, dict[str, Any]] = {
    "bs-1": {"roles": ["branch_supervisor"], "max_severity": "high", "max_amount": 50_000},
    "rm-1": {"supervisor": "bs-1"},
    "rm-2": {"branch": "south"},
    "ct-1": {
        "roles": ["complaints_team"],
        "branch": "hq",
        "max_severity": "high",
        "max_amount": 1e6,
    },
    "ho-1": {
        "roles": ["head_office_approver"],
        "branch": "hq",
        "max_severity": "high",
        "max_amount": 1e6,
    },
}


@pytest.fixture
def bank(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Bank]:
    """The CN profile (15/30 days, one approved extension, 60 at most) and five staff."""
    settings = settings_for(database_url, auth_enabled=True, casework_profile="cn")
    app = create_app(settings, registry)
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    with TestClient(app) as client:
        _, admin = new_key(app, "staff:admin", tenant=tenant)
        keys = {}
        for staff_id, fields in STAFF.items():
            principal, keys[staff_id] = new_key(app, tenant=tenant)
            put_staff(client, admin, staff_id, principal=principal, **fields)
        yield Bank(client, app.state.engine, tenant, keys)


def test_the_receiver_owns_it_through_its_states_and_closing_needs_the_outcome(
    bank: Bank,
) -> None:
    case = bank.complaint()
    assert (case["owner"], case["received_by"], case["status"]) == ("rm-1", "rm-1", "received")
    assert case["branch"] == "north" and case["escalation_level"] == 0
    assert [e["kind"] for e in case["history"]] == ["created"]
    for action, state in [("acknowledge", "acknowledged"), ("start", "in_progress")]:
        response = bank.step("rm-1", case["id"], action, {"note": "ok"})
        assert response.status_code == 200 and response.json()["status"] == state
    response = bank.step("rm-1", case["id"], "close", CLOSING)
    assert response.status_code == 409
    assert response.json()["state"] == "in_progress" and "in_progress" in response.json()["detail"]
    assert bank.step("rm-1", case["id"], "respond").status_code == 200
    response = bank.step("rm-1", case["id"], "close", {**CLOSING, "root_cause": None})
    assert response.status_code == 422 and "root_cause" in response.json()["detail"]
    response = bank.step("rm-1", case["id"], "close", {"outcome": "upheld"})
    assert response.status_code == 422
    closed = bank.step("rm-1", case["id"], "close", CLOSING).json()
    assert (closed["status"], closed["outcome"], closed["redress_amount"]) == (
        "closed",
        "upheld",
        35,
    )
    assert [e["kind"] for e in closed["history"]] == [
        "created",
        "acknowledged",
        "started",
        "responded",
        "closed",
    ]
    assert all(e["actor"] == "rm-1" and e["principal"] for e in closed["history"])
    response = bank.step("rm-1", case["id"], "acknowledge")
    assert response.status_code == 409 and response.json()["state"] == "closed"
    with bank.engine.connect() as connection:
        trail = connection.execute(
            select(CustomerEvent.event_id, CustomerEvent.payload)
            .where(CustomerEvent.tenant == bank.tenant)
            .order_by(CustomerEvent.id)
        ).all()
    assert [(row.event_id, row.payload["status"]) for row in trail] == [
        (f"casework-{case['id']}-opened", "opened"),
        (f"casework-{case['id']}-resolved", "resolved"),
    ]


def test_owner_comes_from_the_credential_and_access_follows_branch_role_and_tenant(
    bank: Bank,
) -> None:
    response = bank.post("rm-1", "/v1/complaints", {**COMPLAINT, "owner": "rm-2"})
    assert response.status_code == 422  # no such field: the credential says who owns it
    case = bank.complaint("rm-1")
    url = f"/v1/complaints/{case['id']}"
    assert bank.client.get(url, headers=bank.keys["bs-1"]).status_code == 200  # same branch
    assert bank.client.get(url, headers=bank.keys["ct-1"]).status_code == 200  # every branch
    response = bank.client.get(url, headers=bank.keys["rm-2"])
    assert response.status_code == 403 and response.json()["code"] == "not_allowed"
    assert bank.step("rm-2", case["id"], "acknowledge").status_code == 403
    assert bank.step("bs-1", case["id"], "acknowledge").status_code == 403  # not the owner
    assert bank.step("ct-1", case["id"], "acknowledge").status_code == 200  # the team may
    app = bank.client.app
    _, stranger = new_key(app, tenant=bank.tenant)  # type: ignore[arg-type]
    response = bank.client.get(url, headers=stranger)
    assert response.status_code == 403 and response.json()["code"] == "not_staff"
    other_tenant = bank.tenant + "-x"
    _, admin = new_key(app, "staff:admin", tenant=other_tenant)  # type: ignore[arg-type]
    principal, outsider = new_key(app, tenant=other_tenant)  # type: ignore[arg-type]
    put_staff(bank.client, admin, "rm-1", principal=principal)
    assert bank.client.get(url, headers=outsider).status_code == 404
    assert bank.client.post(f"{url}/start", json={}, headers=outsider).status_code == 404
    mine = bank.client.get("/v1/complaints", headers=bank.keys["rm-2"]).json()
    assert mine["total"] == 0
    listed = bank.client.get("/v1/complaints", headers=bank.keys["bs-1"]).json()
    assert [c["id"] for c in listed["items"]] == [case["id"]]


def test_beyond_authority_or_implicated_it_escalates_to_the_supervisor_then_the_team(
    bank: Bank,
) -> None:
    high = bank.complaint(severity="high")
    assert (high["owner"], high["escalation_level"], high["received_by"]) == ("bs-1", 1, "rm-1")
    escalated = high["history"][-1]
    assert (escalated["kind"], escalated["from_value"], escalated["to_value"]) == (
        "escalated",
        "rm-1",
        "bs-1",
    )
    assert "authority" in escalated["reason"]
    large = bank.complaint(amount_at_stake=100_000)
    assert (large["owner"], large["escalation_level"]) == ("ct-1", 2)
    implicated = bank.complaint(staff_implicated=["rm-1"])
    assert implicated["owner"] == "bs-1" and "implicated" in implicated["history"][-1]["reason"]
    both = bank.complaint(staff_implicated=["rm-1", "bs-1"])
    assert both["owner"] == "ct-1"
    # An absent supervisor is passed over.
    today = datetime.now().date().isoformat()
    _, admin = new_key(bank.client.app, "staff:admin", tenant=bank.tenant)  # type: ignore[arg-type]
    bank.client.post(
        "/v1/staff/bs-1/absences", json={"starts_on": today, "ends_on": today}, headers=admin
    )
    assert bank.complaint(severity="high")["owner"] == "ct-1"
    # Nobody can take a case implicating the whole chain: refused, nothing stored.
    before = _count(bank, Complaint)
    response = bank.post(
        "rm-1", "/v1/complaints", {**COMPLAINT, "staff_implicated": ["rm-1", "bs-1", "ct-1"]}
    )
    assert response.status_code == 409 and response.json()["code"] == "assignment_refused"
    assert _count(bank, Complaint) == before


def _count(bank: Bank, table: Any) -> int:
    with Session(bank.engine) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(table).where(table.tenant == bank.tenant)
            )
            or 0
        )


def test_a_transfer_needs_a_known_target_a_reason_and_the_targets_acceptance(bank: Bank) -> None:
    case = bank.complaint(staff_implicated=["rm-2"], severity="medium")
    cid = case["id"]
    response = bank.step("rm-1", cid, "transfer", {"to": "nobody", "reason": "x"})
    assert response.status_code == 422 and response.json()["code"] == "unknown_staff"
    assert "to" in response.json()["detail"]
    response = bank.step("rm-1", cid, "transfer", {"to": "rm-2", "reason": "his customer"})
    assert response.status_code == 409 and "implicated" in response.json()["detail"]
    response = bank.step("rm-1", cid, "transfer", {"to": "ct-1"})
    assert response.status_code == 422 and "reason" in response.json()["detail"]
    assert bank.step("rm-1", cid, "accept").status_code == 409  # nothing offered yet
    offered = bank.step("rm-1", cid, "transfer", {"to": "ct-1", "reason": "needs the team"}).json()
    assert (offered["owner"], offered["pending_transfer_to"]) == ("rm-1", "ct-1")
    assert bank.step("ho-1", cid, "accept").status_code == 403
    assert bank.step("rm-1", cid, "acknowledge").status_code == 200  # still the owner's
    taken = bank.step("ct-1", cid, "accept").json()
    assert (taken["owner"], taken["pending_transfer_to"]) == ("ct-1", None)
    transferred = taken["history"][-1]
    assert (transferred["kind"], transferred["from_value"], transferred["to_value"]) == (
        "transferred",
        "rm-1",
        "ct-1",
    )
    assert transferred["reason"] == "needs the team" and transferred["actor"] == "ct-1"
    assert bank.step("rm-1", cid, "start").status_code == 403  # no longer the owner


def test_extensions_pauses_and_new_facts_move_the_clock_within_the_rules(bank: Bank) -> None:
    case = bank.complaint()
    cid, start = case["id"], datetime.fromisoformat(case["clock_started_at"])
    due = datetime.fromisoformat(case["due_at"])
    assert timedelta(days=15) <= due - start < timedelta(days=16)
    body = {"kind": "approved", "reason": "appraisal abroad"}
    response = bank.step("rm-1", cid, "extend", body)
    assert response.status_code == 403 and "head-office" in response.json()["detail"]
    complex_case = bank.step("rm-1", cid, "extend", {"kind": "complex", "reason": "3 accounts"})
    assert complex_case.status_code == 200
    assert datetime.fromisoformat(complex_case.json()["due_at"]) - due == timedelta(days=15)
    assert bank.step("rm-1", cid, "extend", {"kind": "complex", "reason": "x"}).status_code == 409
    approved = bank.step("ho-1", cid, "extend", body).json()
    assert approved["due_at"] == approved["ceiling_at"] and approved["extensions"] == 1
    response = bank.step("ho-1", cid, "extend", body)
    assert response.status_code == 409 and response.json()["code"] == "deadline_refused"

    response = bank.step("rm-1", cid, "pause", {"reason": "holiday"})
    assert response.status_code == 422 and "reason" in response.json()["detail"]
    paused = bank.step("rm-1", cid, "pause", {"reason": "external_appraisal", "note": "told"})
    assert paused.json()["pause_reason"] == "external_appraisal"
    assert bank.step("rm-1", cid, "pause", {"reason": "litigation"}).status_code == 409
    resumed = bank.step("rm-1", cid, "resume").json()
    assert resumed["paused_at"] is None
    moved = datetime.fromisoformat(resumed["due_at"]) - datetime.fromisoformat(approved["due_at"])
    assert timedelta(0) < moved < timedelta(seconds=30)  # by the time it was stopped
    assert bank.step("rm-1", cid, "resume").status_code == 409
    facts = bank.step("rm-1", cid, "facts", {"reason": "new statements"}).json()
    assert facts["clock_started_at"] > case["clock_started_at"]
    assert [e["kind"] for e in facts["history"]][-5:] == [
        "extended",
        "extended",
        "paused",
        "resumed",
        "facts_added",
    ]


def test_warnings_at_60_and_80_percent_and_escalation_at_100_each_fire_once(bank: Bank) -> None:
    case = bank.complaint()
    other = bank.complaint()
    paused = bank.complaint()
    bank.step("rm-1", paused["id"], "pause", {"reason": "litigation"})
    start = datetime.fromisoformat(case["clock_started_at"])
    span = datetime.fromisoformat(case["due_at"]) - start

    def sweep(share: float) -> Any:
        with Session(bank.engine) as session:
            return sweep_deadlines(session, now=start + span * share)

    ours = {case["id"], other["id"]}
    assert ours.isdisjoint(sweep(0.55).owner_warnings)
    assert ours <= set(sweep(0.61).owner_warnings)
    assert ours.isdisjoint(sweep(0.62).owner_warnings)  # once
    found = sweep(0.81)
    assert ours <= set(found.supervisor_warnings) and ours.isdisjoint(found.owner_warnings)
    found = sweep(1.01)
    assert ours <= set(found.escalations) and paused["id"] not in found.escalations
    assert ours.isdisjoint(sweep(1.5).escalations)  # once
    history = bank.client.get(f"/v1/complaints/{case['id']}", headers=bank.keys["bs-1"]).json()
    assert history["owner"] == "bs-1" and history["escalation_level"] == 1
    fired = [(e["kind"], e["actor"], e["to_value"]) for e in history["history"][1:]]
    assert fired == [
        ("warned_owner", "system", "rm-1"),
        ("warned_supervisor", "system", "bs-1"),
        ("escalated", "system", "bs-1"),
    ]


def test_the_audit_trail_takes_no_update_and_closed_cases_leave_after_retention(
    bank: Bank,
) -> None:
    case = bank.complaint()
    cid = case["id"]
    with pytest.raises(DBAPIError, match="append-only"), bank.engine.begin() as connection:
        connection.execute(
            text("UPDATE case_event SET reason = 'x' WHERE complaint_id = :c"), {"c": cid}
        )
    methods = {
        method
        for route in bank.client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1/complaints")
        for method in getattr(route, "methods", ())
    }
    assert methods == {"GET", "POST"}
    bank.step("rm-1", cid, "reject", {"reason": "duplicate"})
    kept = bank.complaint()
    closed_at = datetime.now().astimezone()
    with Session(bank.engine) as session:
        # Other tests' cases closed in the past may go (the database is shared): not this one.
        purge_expired(session, now=closed_at + timedelta(days=1094), retention=timedelta(days=1095))
        assert session.get(Complaint, cid) is not None
    with Session(bank.engine) as session:
        assert (
            purge_expired(
                session, now=closed_at + timedelta(days=1096), retention=timedelta(days=1095)
            )
            >= 1
        )
    with Session(bank.engine) as session:
        left = set(session.scalars(select(Complaint.id).where(Complaint.tenant == bank.tenant)))
        assert cid not in left and kept["id"] in left
        assert (
            session.scalar(
                select(func.count()).select_from(CaseEvent).where(CaseEvent.complaint_id == cid)
            )
            == 0
        )


def test_cvm_casework_tick_sweeps_once_at_the_time_given(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli
    from app.config import get_settings

    case = bank.complaint()
    start = datetime.fromisoformat(case["clock_started_at"])
    late = (start + (datetime.fromisoformat(case["due_at"]) - start) * 1.01).isoformat()
    monkeypatch.setenv("CVM_DATABASE_URL", bank.engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(cli, ["casework", "tick", "--at", late])
        again = CliRunner().invoke(cli, ["casework", "tick", "--at", late])
        assert CliRunner().invoke(cli, ["casework", "purge"]).exit_code == 0
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert "escalations 0" not in first.output and "escalations 0" in again.output
    history = bank.client.get(f"/v1/complaints/{case['id']}", headers=bank.keys["bs-1"]).json()
    kinds = [e["kind"] for e in history["history"]]
    assert kinds == ["created", "warned_owner", "warned_supervisor", "escalated"]


def test_every_casework_operation_accepts_its_documented_example(bank: Bank) -> None:
    spec = bank.client.get("/openapi.json", headers=bank.keys["rm-1"]).json()
    schemas = spec["components"]["schemas"]

    def example(path: str, method: str = "post") -> dict[str, Any]:
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        (found,) = schemas[body["schema"]["$ref"].rsplit("/", 1)[-1]]["examples"]
        return dict(found)

    _, admin = new_key(bank.client.app, "staff:admin", tenant=bank.tenant)  # type: ignore[arg-type]
    staff = example("/v1/staff/{staff_id}", "put")
    assert bank.client.put("/v1/staff/rm-042", json=staff, headers=admin).status_code == 200
    absence = example("/v1/staff/{staff_id}/absences")
    assert (
        bank.client.post("/v1/staff/ct-1/absences", json=absence, headers=admin).status_code == 200
    )
    case = bank.post("rm-1", "/v1/complaints", example("/v1/complaints"))
    assert case.status_code == 201, case.text
    cid = case.json()["id"]
    steps = ["pause", "resume", "facts", "extend", "transfer", "acknowledge", "start", "respond"]
    for step in [*steps, "close"]:
        path = f"/v1/complaints/{{complaint_id}}/{step}"
        response = bank.step("rm-1", cid, step, example(path))
        assert response.status_code == 200, (step, response.text)
    other = bank.complaint()["id"]
    response = bank.step("rm-1", other, "reject", example("/v1/complaints/{complaint_id}/reject"))
    assert response.status_code == 200, response.text
    covered = {
        path
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/complaints/")
        for method in operations
        if method == "post"
    }
    assert len(covered) == len(steps) + 3  # the steps, close, reject and accept


def test_an_accepted_transfer_can_be_handed_on_and_the_next_owner_accepts_again(
    bank: Bank,
) -> None:
    case = bank.complaint()["id"]
    assert bank.step("rm-1", case, "transfer", {"to": "ct-1", "reason": "fraud"}).status_code == 200
    assert bank.step("ct-1", case, "accept").json()["owner"] == "ct-1"
    offered = bank.step("ct-1", case, "transfer", {"to": "bs-1", "reason": "branch error"})
    assert offered.status_code == 200, offered.text
    # Until the new target accepts, the accepting owner stays accountable.
    assert (offered.json()["owner"], offered.json()["pending_transfer_to"]) == ("ct-1", "bs-1")
    assert bank.step("rm-1", case, "accept").status_code == 403
    taken = bank.step("bs-1", case, "accept")
    assert taken.status_code == 200 and taken.json()["owner"] == "bs-1"
    trail = [
        (e["kind"], e["actor"], e["from_value"], e["to_value"], e["reason"])
        for e in taken.json()["history"]
        if e["kind"] in ("transfer_requested", "transferred")
    ]
    assert trail == [
        ("transfer_requested", "rm-1", "rm-1", "ct-1", "fraud"),
        ("transferred", "ct-1", "rm-1", "ct-1", "fraud"),
        ("transfer_requested", "ct-1", "ct-1", "bs-1", "branch error"),
        ("transferred", "bs-1", "ct-1", "bs-1", "branch error"),
    ]
