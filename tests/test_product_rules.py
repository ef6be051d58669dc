"""The product catalogue's rules (issue 18, item 3): eligibility, applicability and
suitability in the one rule set the assessment core applies; a bad rule refused at load."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.policies import EligibilityRules, InvalidRules, ProductRule, RiskLevel
from app.scoring.registry import ModelRegistry
from tests.conftest import ON_SQLITE_ONLY, customer_record

SHIPPED = Path(__file__).parents[1] / "app" / "resources" / "eligibility.json"
PRODUCTS = ["fund", "brokerage", "loan", "premier_card"]
RULES = EligibilityRules(
    products={
        "fund": ProductRule(risk_level=RiskLevel.R3),
        "brokerage": ProductRule(risk_level=RiskLevel.R5, stages=["existing"]),
        "loan": ProductRule(stages=["new", "existing"], min_age=18),
        "premier_card": ProductRule(tiers=["affluent", "private"]),
    }
)


def allowed(**given: Any) -> dict[str, list[bool]]:
    """Per product, which of the customers (as many as the longest argument) may get it."""
    n = max(len(v) for v in given.values())
    mask = RULES.allowed(
        PRODUCTS,
        held=np.zeros((n, len(PRODUCTS))),
        cold_start=np.zeros(n, dtype=bool),
        age=np.full(n, 40.0),
        occupation=None,
        **given,
    )
    return {p: mask[:, j].tolist() for j, p in enumerate(PRODUCTS)}


def test_a_risk_level_is_offered_only_to_a_profile_at_least_as_high() -> None:
    profiles = ["C1", "C2", "C3", "C4", "C5", None, "C9"]
    result = allowed(risk_profiles=profiles, stages=["existing"] * 7)
    assert result["fund"] == [False, False, True, True, True, False, False]
    assert result["brokerage"] == [False, False, False, False, True, False, False]
    # Unknown for everyone: no risk-rated product at all; the others still offered.
    unknown = allowed(stages=["existing", "new"])
    assert unknown["fund"] == unknown["brokerage"] == [False, False]
    assert unknown["loan"] == [True, True]


def test_stage_and_tier_rules() -> None:
    result = allowed(
        stages=["existing", "new", "prospect", "existing"],
        tiers=["affluent", "mass", None, "private"],
        risk_profiles=["C5", "C5", "C5", "C5"],
    )
    assert result["loan"] == [True, True, False, True]
    assert result["brokerage"] == [True, False, False, True]
    assert result["premier_card"] == [True, False, False, True]  # an unknown tier: not offered


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"products": {"mortgage": {"min_income": 20000}}}, "products.mortgage.min_income"),
        ({"products": {"fund": {"risk_level": "R9"}}}, "products.fund.risk_level"),
        ({"products": {"fund": {"stages": ["retired"]}}}, "products.fund.stages.0"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_rule_is_refused_at_load_naming_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidRules) as raised:
        EligibilityRules.parse(json.dumps(change))
    assert raised.value.key == key and str(raised.value).startswith(f"{key}: ")
    if key.endswith("min_income"):
        assert "not a rule field" in str(raised.value)


def test_the_service_refuses_to_start_on_a_bad_rule(tmp_path: Path, settings_for: Any) -> None:
    rules = json.loads(SHIPPED.read_text())
    rules["products"]["mortgage"]["min_income"] = 1
    path = tmp_path / "eligibility.json"
    path.write_text(json.dumps(rules))
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", eligibility_file=path)
    with pytest.raises(InvalidRules, match=r"products\.mortgage\.min_income"):
        create_app(settings)


RISK_RATED = {"investment_fund", "brokerage", "pension"}


@ON_SQLITE_ONLY
def test_recommendations_offer_risk_rated_products_only_to_suitable_profiles(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    model = registry.get(Task.RECOMMENDATION)
    assert model is not None
    customers = [
        customer_record(row, model.schema) for _, row in sample_rows["existing"].head(40).iterrows()
    ]
    every = len(model.classes)

    def offered(**extra: Any) -> list[set[str]]:
        body = {"customers": [{**c, **extra} for c in customers], "top_k": every}
        answer = client.post("/v1/recommendations", json=body)
        assert answer.status_code == 200, answer.text
        return [{p["product"] for p in r["products"]} for r in answer.json()["results"]]

    unknown, cautious, bold = offered(), offered(risk_profile="C1"), offered(risk_profile="C5")
    assert all(not (o & RISK_RATED) for o in unknown + cautious)
    assert any(o & {"investment_fund", "brokerage"} for o in bold)
    for customer, products in zip(customers, bold, strict=True):
        assert all(not customer[f"has_{p}"] for p in products)
    # As columns too: a profile per customer.
    columns = {name: [c[name] for c in customers] for name in customers[0]}
    columns["risk_profile"] = ["C5"] * len(customers)
    answer = client.post("/v1/recommendations", json={"columns": columns, "top_k": every})
    assert [{p["product"] for p in r["products"]} for r in answer.json()["results"]] == bold
    bad = client.post(
        "/v1/recommendations", json={"customers": [{**customers[0], "risk_profile": "C7"}]}
    )
    assert bad.status_code == 422 and "risk_profile" in bad.text


def test_score_by_id_reads_the_risk_profile_from_the_trail(client: TestClient) -> None:
    customer = f"rp-{uuid.uuid4().hex[:8]}"
    events: list[dict[str, Any]] = [
        {
            "event_id": f"{customer}-p",
            "customer_id": customer,
            "type": "customer_profile",
            "occurred_at": "2026-03-02T09:00:00Z",
            "age": 45,
            "income": 90000.0,
            "occupation": "employee",
            "region": "capital",
            "customer_since": "2020-01-01",
            "risk_profile": "C5",
        },
        *(
            {
                "event_id": f"{customer}-o{i}",
                "customer_id": customer,
                "type": "account_opened",
                "occurred_at": "2026-03-03T09:00:00Z",
                "product": product,
            }
            for i, product in enumerate(["current_account", "savings"])
        ),
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 200
    features = client.get(f"/v1/customers/{customer}/features").json()["features"]
    assert features["risk_profile"] == "C5"
