"""Next best action (issue 18 item 4): the stages, the priority and its factors, Pega's cold
start, the tie-break, the contact policy and volume caps, over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.actions.policy import (
    ActionKind,
    ActionPolicy,
    Factor,
    InvalidActionPolicy,
    load_action_policy,
    parse_action_policy,
)
from app.actions.rank import (
    ContactVerdict,
    CustomerFacts,
    Evidence,
    Ranking,
    RemovalStage,
    rank_actions,
    smoothed_propensity,
)
from app.actions.service import EvidenceCache, evidence_of
from app.contact.states import ContactChannel, ContactPurpose
from app.http.app import create_app
from app.scoring.assess import Block, Options, ProductScreen, Rules, assess_task, stage_codes
from app.scoring.manifest import Task
from app.scoring.policies import EligibilityRules, RuleStage
from app.scoring.registry import ModelRegistry
from app.training.synth import generate_book
from app.training.trail import book_events
from tests.conftest import ON_SQLITE_ONLY, customer_record

SHIPPED = Path(__file__).parents[1] / "app" / "resources" / "next_best_action.json"
ELIGIBILITY = Path(__file__).parents[1] / "app" / "resources" / "eligibility.json"
PHONE = ContactChannel.PHONE


def policy_of(**changes: Any) -> ActionPolicy:
    """A small policy: one action of each kind and three product offers."""
    data: dict[str, Any] = {
        "version": "t1",
        "starting_propensity": 0.1,
        "starting_evidence": 10,
        "actions": {
            "retention": {"kind": "retention_offer", "value": 400, "stages": ["existing"]},
            "nudge": {"kind": "tier_upgrade_nudge", "value": 150, "max_gap_share": 0.25},
            "call": {"kind": "service_call", "value": 60, "inactive_days": 60},
            "offer_card": {"kind": "product_offer", "product": "credit_card", "value": 120},
            "offer_fund": {"kind": "product_offer", "product": "investment_fund", "value": 350},
            "offer_loan": {"kind": "product_offer", "product": "personal_loan", "value": 250},
        },
    }
    data.update(changes)
    return ActionPolicy.model_validate(data)


def facts_of(**changes: Any) -> CustomerFacts:
    """An existing customer for whom every action passes the first three stages."""
    values: dict[str, Any] = {
        "stage": "existing",
        "tier": "affluent",
        "next_tier": "high_net_worth",
        "next_tier_gap_share": 0.1,
        "churn_probability": 0.6,
        "churn_band": "high",
        "product_propensity": {"credit_card": 0.3, "investment_fund": 0.2, "personal_loan": 0.1},
        "product_refusals": {},
        "open_complaint": True,
        "days_inactive": 5.0,
    }
    values.update(changes)
    return CustomerFacts(**values)


def rank(
    policy: ActionPolicy | None = None,
    facts: CustomerFacts | None = None,
    *,
    evidence: dict[str, Evidence] | None = None,
    contact: dict[ContactPurpose, ContactVerdict] | None = None,
    channel: ContactChannel = PHONE,
) -> Ranking:
    return rank_actions(
        policy or policy_of(max_actions=50),
        facts or facts_of(),
        channel=channel,
        evidence=evidence or {},
        contact=contact or {},
    )


def stages_of(ranking: Ranking) -> dict[str, str]:
    """Each action's outcome: 'offered' or the stage that removed it; each exactly once."""
    names = [o.name for o in ranking.offered] + [r.name for r in ranking.removed]
    assert len(names) == len(set(names))
    outcome = {o.name: "offered" for o in ranking.offered}
    outcome.update({r.name: r.stage.value for r in ranking.removed})
    return outcome


ALL_OFFERED = dict.fromkeys(
    ["retention", "nudge", "call", "offer_card", "offer_fund", "offer_loan"], "offered"
)


# --- the stages, each removing what it should and only it ----------------------------------------


def test_everything_passes_for_a_customer_every_action_fits() -> None:
    assert stages_of(rank()) == ALL_OFFERED


@pytest.mark.parametrize(
    ("facts", "removed"),
    [
        # eligibility
        ({"stage": "new", "churn_probability": None, "churn_band": None},
         {"retention": "eligibility"}),
        ({"churn_probability": None, "churn_band": None}, {"retention": "eligibility"}),
        ({"product_propensity": {"credit_card": 0.3, "personal_loan": 0.1}},
         {"offer_fund": "eligibility"}),
        ({"product_refusals": {"credit_card": ("eligibility", "product rule min_age=18 not met")}},
         {"offer_card": "eligibility"}),
        # applicability
        ({"churn_band": "low"}, {"retention": "applicability"}),
        ({"next_tier": None, "next_tier_gap_share": None}, {"nudge": "applicability"}),
        ({"next_tier_gap_share": 0.26}, {"nudge": "applicability"}),
        ({"open_complaint": False}, {"call": "applicability"}),
        ({"product_refusals": {"personal_loan": ("applicability", "already held")}},
         {"offer_loan": "applicability"}),
        # suitability
        ({"product_refusals": {"investment_fund": ("suitability", "risk_level=R3 not met")}},
         {"offer_fund": "suitability"}),
    ],
)  # fmt: skip
def test_each_check_removes_its_action_and_only_it(
    facts: dict[str, Any], removed: dict[str, str]
) -> None:
    outcome = stages_of(rank(facts=facts_of(**facts)))
    assert outcome == {**ALL_OFFERED, **removed}


def test_a_quiet_customer_without_a_complaint_gets_the_service_call() -> None:
    outcome = stages_of(rank(facts=facts_of(open_complaint=False, days_inactive=60.0)))
    assert outcome["call"] == "offered"
    outcome = stages_of(rank(facts=facts_of(open_complaint=False, days_inactive=59.0)))
    assert outcome["call"] == "applicability"


def test_the_first_failing_stage_is_the_one_reported() -> None:
    # A prospect: every action is ineligible, whatever else fails after.
    facts = facts_of(
        stage="prospect",
        churn_probability=None,
        product_propensity={},
        next_tier=None,
        product_refusals={"credit_card": ("suitability", "x")},
    )
    ranking = rank(facts=facts)
    assert ranking.offered == []
    assert {r.stage for r in ranking.removed} == {RemovalStage.ELIGIBILITY}
    assert all("prospect" in r.reason for r in ranking.removed)


def test_the_least_priority_removes_at_the_priority_stage() -> None:
    policy = policy_of(max_actions=50, min_priority=30.0)
    ranking = rank(policy)
    outcome = stages_of(ranking)
    kept = {name for name, stage in outcome.items() if stage == "offered"}
    assert all(o.priority > 30.0 for o in ranking.offered)
    below = [r for r in ranking.removed if r.stage is RemovalStage.PRIORITY]
    assert below and all(r.priority is not None and r.priority <= 30.0 for r in below)
    assert kept | {r.name for r in below} == set(ALL_OFFERED)


def test_the_contact_policy_removes_the_purposes_it_blocks() -> None:
    blocked = {ContactPurpose.MARKETING: ContactVerdict("open_complaint", "no marketing")}
    outcome = stages_of(rank(contact=blocked))
    assert outcome == {
        **ALL_OFFERED,
        "nudge": "contact_policy",
        "offer_card": "contact_policy",
        "offer_fund": "contact_policy",
        "offer_loan": "contact_policy",
    }
    everything = {p: ContactVerdict("do_not_contact", "asked") for p in ContactPurpose}
    ranking = rank(contact=everything)
    assert ranking.offered == []
    assert all(r.reason == "do_not_contact: asked" for r in ranking.removed)


def test_volume_caps_keep_the_highest_priorities() -> None:
    full = rank(policy_of(max_actions=50))
    capped = rank(policy_of(max_actions=2))
    assert [o.name for o in capped.offered] == [o.name for o in full.offered[:2]]
    assert {r.name for r in capped.removed if r.stage is RemovalStage.VOLUME_CAP} == {
        o.name for o in full.offered[2:]
    }
    per_kind = rank(policy_of(max_actions=50, max_per_kind={"product_offer": 1}))
    products = [o for o in per_kind.offered if o.kind is ActionKind.PRODUCT_OFFER]
    best = next(o for o in full.offered if o.kind is ActionKind.PRODUCT_OFFER)
    assert [o.name for o in products] == [best.name]
    assert sum(r.stage is RemovalStage.VOLUME_CAP for r in per_kind.removed) == 2


# --- priority, levers, cold start, ties -------------------------------------------------------


def test_the_priority_is_the_product_of_its_factors_by_hand() -> None:
    policy = policy_of(
        max_actions=50,
        context_weights={"phone": {"product_offer": 0.8}},
        tier_value_weights={"affluent": 2.0},
        actions={"offer_card": {"kind": "product_offer", "product": "credit_card",
                                "value": 120, "lever": 1.5}},
    )  # fmt: skip
    evidence = {"offer_card": Evidence(responses=30, accepted=6)}
    (offered,) = rank(policy, evidence=evidence).offered
    # Pega: 10/(10+30+1) * 0.1 + 30/(10+30+1) * 0.3
    propensity = 10 / 41 * 0.1 + 30 / 41 * 0.3
    assert offered.propensity.used == pytest.approx(propensity, rel=1e-12)
    assert offered.context_weight == 0.8 and offered.value == 240.0 and offered.lever == 1.5
    assert offered.priority == pytest.approx(propensity * 0.8 * 120 * 2.0 * 1.5, rel=1e-12)


@pytest.mark.parametrize("factor", list(Factor))
def test_switching_a_factor_off_removes_it(factor: Factor) -> None:
    on = policy_of(
        max_actions=50,
        context_weights={"phone": {"product_offer": 0.8}},
        actions={"offer_card": {"kind": "product_offer", "product": "credit_card",
                                "value": 120, "lever": 1.5}},
    )  # fmt: skip
    off = on.model_copy(update={"factors": {factor: False}})
    (with_it,) = rank(on).offered
    (without,) = rank(off).offered
    amounts = {
        Factor.PROPENSITY: with_it.propensity.used,
        Factor.CONTEXT_WEIGHT: with_it.context_weight,
        Factor.VALUE: with_it.value,
        Factor.LEVERS: with_it.lever,
    }
    amount = amounts[factor]
    assert amount is not None and amount != 1.0
    assert without.priority == pytest.approx(with_it.priority / amount, rel=1e-12)
    shown = {
        Factor.CONTEXT_WEIGHT: without.context_weight,
        Factor.VALUE: without.value,
        Factor.LEVERS: without.lever,
    }
    if factor is not Factor.PROPENSITY:
        assert shown[factor] is None
        assert [v for f, v in shown.items() if f is not factor] == [
            v for f, v in amounts.items() if f not in (factor, Factor.PROPENSITY)
        ]


def test_cold_start_follows_pegas_smoothed_propensity() -> None:
    def smooth(model: float | None, e: int, a: int, mature: int | None = None) -> float:
        return smoothed_propensity(
            model, starting=0.2, starting_evidence=50, evidence=Evidence(e, a),
            mature_evidence=mature,
        ).used  # fmt: skip

    assert smooth(0.9, 0, 0) == pytest.approx(50 / 51 * 0.2)  # no evidence: ~ the start
    assert smooth(0.9, 50, 10) == pytest.approx(50 / 101 * 0.2 + 50 / 101 * 0.9)
    assert smooth(0.9, 5000, 10) == pytest.approx(50 / 5051 * 0.2 + 5000 / 5051 * 0.9)
    # Actions no model scores: the observed acceptance rate takes the model's place.
    assert smooth(None, 40, 10) == pytest.approx(50 / 91 * 0.2 + 40 / 91 * 0.25)
    assert smooth(None, 0, 0) == pytest.approx(50 / 51 * 0.2)
    # From the maturity level on, the model's propensity alone.
    assert smooth(0.9, 99, 1, mature=100) == pytest.approx(50 / 150 * 0.2 + 99 / 150 * 0.9)
    assert smooth(0.9, 100, 1, mature=100) == 0.9
    assert smooth(None, 100, 30, mature=100) == pytest.approx(0.3)
    # The more evidence, the closer to the model: monotone toward it.
    path = [smooth(0.9, e, 0) for e in (0, 10, 100, 1000, 10_000)]
    assert path == sorted(path) and 0.9 - path[-1] < 0.01


def test_ties_are_broken_by_kind_then_name_whatever_the_order() -> None:
    same = {"value": 100, "starting_propensity": 0.5, "stages": ["existing"]}
    actions = {
        "b_call": {"kind": "service_call", **same},
        "a_call": {"kind": "service_call", **same},
        "nudge": {"kind": "tier_upgrade_nudge", **same},
        "offer_z": {"kind": "product_offer", "product": "z", **same},
        "offer_y": {"kind": "product_offer", "product": "y", **same},
    }
    facts = facts_of(product_propensity={"y": 0.5, "z": 0.5})
    orders = set()
    for seed in range(5):
        names = list(actions)
        random.Random(seed).shuffle(names)
        policy = policy_of(max_actions=50, actions={n: actions[n] for n in names})
        ranking = rank(policy, facts)
        assert len({o.priority for o in ranking.offered}) == 1
        orders.add(tuple(o.name for o in ranking.offered))
    assert orders == {("offer_y", "offer_z", "nudge", "a_call", "b_call")}


# --- the configuration -------------------------------------------------------------------------


def test_the_shipped_configuration_loads() -> None:
    policy = load_action_policy(SHIPPED)
    kinds = {a.kind for a in policy.actions.values()}
    assert kinds == set(ActionKind)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"actions": {"x": {"kind": "gift", "value": 1}}}, "actions.x.kind"),
        ({"actions": {"x": {"kind": "service_call", "value": 1, "colour": 1}}}, "actions.x.colour"),
        ({"actions": {"x": {"kind": "service_call", "value": -1}}}, "actions.x.value"),
        ({"actions": {"x": {"kind": "service_call", "value": 1, "stages": ["vip"]}}},
         "actions.x.stages"),
        ({"actions": {"x": {"kind": "product_offer", "value": 1}}}, "actions.x.product"),
        ({"context_weights": {"phone": {"service_call": -0.5}}},
         "context_weights.phone.service_call"),
        ({"context_weights": {"fax": {}}}, "context_weights.fax"),
        ({"factors": {"luck": True}}, "factors.luck"),
        ({"starting_propensity": 1.5}, "starting_propensity"),
        ({"max_actions": 0}, "max_actions"),
        ({"surprise": 1}, "surprise"),
    ],
)  # fmt: skip
def test_an_invalid_configuration_is_refused_naming_the_key(
    change: dict[str, Any], key: str
) -> None:
    data = json.loads(SHIPPED.read_text())
    data.update(change)
    with pytest.raises(InvalidActionPolicy) as raised:
        parse_action_policy(json.dumps(data))
    assert raised.value.key == key, str(raised.value)


def test_the_service_refuses_to_start_on_an_invalid_configuration(
    tmp_path: Path, settings_for: Any
) -> None:
    data = json.loads(SHIPPED.read_text())
    data["tier_value_weights"]["platinum"] = 2.0
    path = tmp_path / "nba.json"
    path.write_text(json.dumps(data))
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", next_best_action_file=path)
    with pytest.raises(InvalidActionPolicy, match=r"tier_value_weights\.platinum"):
        create_app(settings)


def test_evidence_counts_decided_responses_per_action() -> None:
    policy = policy_of(
        actions={
            "retention": {"kind": "retention_offer", "value": 1, "campaigns": ["RET-1", "RET-2"]},
            "offer_card": {"kind": "product_offer", "product": "credit_card", "value": 1},
        }
    )
    counts = [
        ("RET-1", None, "accepted", 3),
        ("RET-2", None, "declined", 4),
        ("RET-2", None, "contacted", 40),  # not a decision: no evidence
        ("CARDS", "credit_card", "accepted", 2),
        ("RET-1", "credit_card", "declined", 1),  # names the product: the offer's evidence
        ("OTHER", None, "accepted", 9),
    ]
    assert evidence_of(policy, counts) == {
        "retention": Evidence(7, 3),
        "offer_card": Evidence(3, 2),
    }


# --- over HTTP, on SQLite and PostgreSQL -------------------------------------------------------


@pytest.fixture
def book(client: TestClient) -> pd.DataFrame:
    """A small book of its own, its trail stored through the intake."""
    frame: pd.DataFrame = generate_book(customers=40, months=6, seed=11).to_pandas()
    frame["customer_id"] = f"nba{uuid.uuid4().hex[:6]}-" + frame["customer_id"]
    events = list(book_events(frame))
    for start in range(0, len(events), 5000):
        response = client.post("/v1/events", json={"events": events[start : start + 5000]})
        assert response.status_code == 200, response.text
    return frame


def existing_ids(book: pd.DataFrame) -> list[str]:
    last = book[(book["month"] == book["month"].max()) & (book["lifecycle"] == "existing")]
    return [str(c) for c in last["customer_id"]]


def test_next_best_actions_of_a_customer_over_http(client: TestClient, book: pd.DataFrame) -> None:
    policy = load_action_policy(SHIPPED)
    offered_any = False
    for customer in existing_ids(book)[:4]:
        answer = client.get(f"/v1/customers/{customer}/next-best-actions")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["lifecycle"] == "existing" and body["channel"] == "phone"
        names = [o["action"] for o in body["offered"]] + [r["action"] for r in body["not_offered"]]
        assert sorted(names) == sorted(policy.actions)  # each action exactly once
        priorities = [o["priority"] for o in body["offered"]]
        assert priorities == sorted(priorities, reverse=True)
        assert [o["rank"] for o in body["offered"]] == list(range(1, len(priorities) + 1))
        assert len(body["offered"]) <= policy.max_actions
        offered_any = offered_any or bool(body["offered"])
        # The product rules agree with the assessment's own offers (the one rule set): a
        # product the recommendations offer passes the three checks here.
        assessed = client.post(f"/v1/customers/{customer}/assessment").json()
        recommended = {p["product"] for p in assessed["recommendations"]["products"]}
        churn = assessed["churn"]["probability"]
        for removed in body["not_offered"]:
            if removed["product"] in recommended:
                assert removed["stage"] not in ("eligibility", "applicability", "suitability")
        retention = [o for o in body["offered"] if o["action"] == "retention_offer"]
        for offer in retention:
            assert offer["propensity"]["model"] == pytest.approx(churn, abs=1e-6)
        assert client.get(f"/v1/customers/{customer}/next-best-actions").json() == body
    assert offered_any


def test_the_contact_policy_applies_per_channel(client: TestClient, book: pd.DataFrame) -> None:
    customer = existing_ids(book)[0]
    url = f"/v1/customers/{customer}/next-best-actions"
    before = client.get(url, params={"channel": "email"}).json()
    # One e-mail contact in the window reaches the default cap (1 a week) for e-mail only.
    recorded = client.post(
        "/v1/contact/records",
        json={"customer_id": customer, "channel": "email", "purpose": "marketing"},
    )
    assert recorded.status_code in (200, 201), recorded.text
    email = client.get(url, params={"channel": "email"}).json()
    for item in email["offered"]:
        assert item["purpose"] == "service"
    capped = {r["action"] for r in email["not_offered"] if r["stage"] == "contact_policy"}
    reached = {o["action"] for o in before["offered"] if o["purpose"] != "service"}
    assert reached and reached <= capped
    assert all(
        "channel_cap" in r["reason"] for r in email["not_offered"] if r["stage"] == "contact_policy"
    )
    phone = client.get(url, params={"channel": "phone"}).json()
    assert not [r for r in phone["not_offered"] if r["stage"] == "contact_policy"]

    flagged = client.put(f"/v1/contact/do-not-contact/{customer}", json={"reason": "asked"})
    assert flagged.status_code == 200, flagged.text
    blocked = client.get(url).json()
    assert blocked["offered"] == []
    assert any(r["stage"] == "contact_policy" for r in blocked["not_offered"])
    assert all(
        r["reason"].startswith("do_not_contact")
        for r in blocked["not_offered"]
        if r["stage"] == "contact_policy"
    )


@ON_SQLITE_ONLY
def test_unknown_customers_and_bad_parameters(client: TestClient, book: pd.DataFrame) -> None:
    missing = client.get("/v1/customers/nobody-here/next-best-actions")
    assert missing.status_code == 404
    customer = existing_ids(book)[0]
    url = f"/v1/customers/{customer}/next-best-actions"
    assert client.get(url, params={"channel": "fax"}).status_code == 422
    assert client.get(url, params={"chanel": "phone"}).status_code in (400, 422)


def test_evidence_is_counted_from_campaign_responses(
    client: TestClient, book: pd.DataFrame, engine: Engine
) -> None:
    tenant_book = existing_ids(book)
    responses = [
        {
            "event_id": f"resp-{uuid.uuid4().hex[:10]}",
            "customer_id": tenant_book[i % len(tenant_book)],
            "type": "campaign_response",
            "occurred_at": "2026-01-10T09:00:00Z",
            "campaign_id": "CARD-PUSH",
            "response": "accepted" if i < 3 else "declined",
            "product": "credit_card",
        }
        for i in range(8)
    ]
    assert client.post("/v1/events", json={"events": responses}).status_code == 200
    policy = load_action_policy(SHIPPED)
    with Session(engine) as session:
        evidence = EvidenceCache(ttl_s=0).get(session, policy=policy, tenant=None)
    card = evidence["offer_credit_card"]
    # Other tests of the session may add responses to the shared database: at least these.
    assert card.responses >= 8 and card.accepted >= 3


@ON_SQLITE_ONLY
def test_the_operation_is_documented_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/customers/{customer_id}/next-best-actions"]["get"]
    assert {"200", "404", "422"} <= set(operation["responses"])
    assert operation["security"]
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    (example,) = schema["examples"]
    assert example["offered"][0]["propensity"]["cold_start"] is True


# --- the product rules split in three: the same verdicts as the whole rule set ---------------


@pytest.mark.parametrize("profile", [None, "C1", "C5"])
def test_the_product_screen_refuses_exactly_what_the_rule_set_refuses(
    sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, profile: str | None
) -> None:
    model = registry.get(Task.RECOMMENDATION)
    assert model is not None
    rules = EligibilityRules.load(ELIGIBILITY)
    records = [
        customer_record(row, model.schema) for _, row in sample_rows["existing"].head(30).iterrows()
    ]
    rows = [{k: v for k, v in r.items() if k in set(model.schema.names)} for r in records]
    block = Block(
        ids=[r["customer_id"] for r in records],
        matrix=model.schema.encode_rows(rows),
        stages=stage_codes(["existing"] * len(rows)),
        risk_profiles=[profile] * len(rows),
        tiers=["affluent"] * len(rows),
    )
    assessment = assess_task(
        Task.RECOMMENDATION,
        model,
        block,
        rules=Rules(eligibility=rules),
        options=Options(reasons=0, top_k=len(model.classes), next_tier_gap=False),
    )
    screen = ProductScreen(rules)
    stages_seen = set()
    for i in range(len(rows)):
        refused = screen.screen(assessment, i)
        offered = {model.classes[j] for j in assessment.offers[i]} if assessment.offers else set()
        passed = set(model.classes) - set(refused)
        # The three checks pass exactly the products the whole rule set allows: those offered
        # (every product asked for), and those dropped only for a better one of their
        # exclusive group.
        assert offered <= passed, (i, {p: refused[p] for p in offered & set(refused)})
        for product in passed - offered:
            group = next(g for g in rules.exclusive_groups if product in g)
            assert offered & set(group), (i, product)
        # Every refusal names a stage and the rule (or the holding) behind it.
        for stage, why in refused.values():
            stages_seen.add(stage)
            assert why
    assert RuleStage.APPLICABILITY in stages_seen  # products held
    if profile != "C5":
        assert RuleStage.SUITABILITY in stages_seen  # risk-rated products
