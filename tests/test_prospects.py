"""Prospects by segment: the plan refused at load naming the key, the segment method at its
cut-offs, `GET /v1/prospects` ranked, filtered and paginated per tenant, and the console page."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.config import PROJECT_ROOT
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.value.prospects import InvalidProspectPlan, load_prospect_plan, parse_prospect_plan
from tests.conftest import customer_record
from tests.console_support import CHEAP_HASHING, add_staff, csrf_of, log_in

SHIPPED = PROJECT_ROOT / "app" / "resources" / "prospect_plans.json"


def raw_plan() -> dict[str, Any]:
    return dict(json.loads(SHIPPED.read_text()))


def test_the_shipped_plan_covers_every_segment() -> None:
    plan = load_prospect_plan(SHIPPED)
    assert len(plan.segments) == len(plan.value_bands) * len(plan.buying_power_bands) == 9
    assert set(plan.plans) == set(plan.segments)
    assert plan.segments[0] == "premium.wealthy"  # the best first


def _without(key: str) -> dict[str, Any]:
    data = raw_plan()
    del data["plans"][key]
    return data


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    data = raw_plan()
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


PLANS, BANDS = "plans", "buying_power_bands"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_without("premium.wealthy"), "plans.premium.wealthy: missing"),
        (_with([PLANS, "gold.rich"], raw_plan()[PLANS]["premium.wealthy"]), "plans.gold.rich: no "),
        (_with(["value_bands", 2, "at_least"], 50), "value_bands[2].at_least: 50 overlaps"),
        (_with([BANDS, 0, "at_least"], 10), "buying_power_bands[0].at_least"),
        (_with([BANDS, 1, "at_least"], None), "buying_power_bands[1].at_least: required"),
        (_with([PLANS, "premium.modest", "colour"], "red"), "plans.premium.modest.colour"),
        (_with([PLANS, "premium.modest", "channel"], "pigeon"), "plans.premium.modest.channel"),
        (_with([PLANS, "standard.modest", "contact_within_days"], 0), "plans.standard.modest."),
        (_with(["value_band"], []), "value_band"),
    ],
)
def test_an_invalid_plan_is_refused_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidProspectPlan) as raised:
        parse_prospect_plan(json.dumps(data))
    assert str(raised.value).startswith(key), str(raised.value)


def test_the_service_refuses_to_start_on_an_invalid_plan(tmp_path: Path, settings_for: Any) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_without("standard.modest")))
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", prospect_plan_file=path)
    with pytest.raises(InvalidProspectPlan, match=r"plans\.standard\.modest: missing"):
        create_app(settings)


def test_segments_at_their_cut_offs() -> None:
    plan = load_prospect_plan(SHIPPED)
    # Exactly at a cut-off qualifies; just below does not; an unknown income is the lowest.
    assert plan.segment_of(value=150.0, income=100_000.0) == "premium.wealthy"
    assert plan.segment_of(value=149.99, income=99_999.99) == "valuable.comfortable"
    assert plan.segment_of(value=50.0, income=40_000.0) == "valuable.comfortable"
    assert plan.segment_of(value=49.99, income=None) == "standard.modest"
    assert plan.segment_of(value=None, income=1e9) == "standard.wealthy"


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    settings = settings_for(database_url, auth_enabled=True, **CHEAP_HASHING)
    with TestClient(create_app(settings, registry), base_url="https://testserver") as client:
        yield client


def _key(app: Any, tenant: str, *scopes: str) -> dict[str, str]:
    _, key = create_client(app.state.engine, name="t", scopes=list(scopes), tenant=tenant)
    return {"X-API-Key": key}


def _score_prospects(
    client: TestClient, registry: ModelRegistry, rows: pd.DataFrame, tenant: str
) -> list[dict[str, Any]]:
    model = registry.get(Task.PROSPECT)
    assert model is not None
    prospects = []
    for i, (_, row) in enumerate(rows.iterrows()):
        record = customer_record(row, model.schema, f"P-{tenant}-{i:02d}")
        record["lifecycle"] = "prospect"
        prospects.append(record)
    headers = _key(client.app, tenant, "scores:write")
    response = client.post("/v1/prospect/scores", json={"customers": prospects}, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_prospects_ranked_by_segment_and_paginated_per_tenant(
    app_client: TestClient, registry: ModelRegistry, sample_rows: dict[str, pd.DataFrame]
) -> None:
    app: Any = app_client.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    rows = sample_rows["prospect"].head(12).copy()
    # Incomes spread over every buying-power band.
    rows["income"] = [5_000.0, 45_000.0, 150_000.0] * 4
    scored = _score_prospects(app_client, registry, rows, tenant)
    _score_prospects(app_client, registry, rows.head(3), f"other-{tenant}")
    reader = _key(app, tenant, "customers:read")
    body = app_client.get("/v1/prospects?limit=500", headers=reader).json()
    assert body["total"] == len(scored) == 12 and body["segment"] is None
    expected = [p["expected_value"] for p in body["items"]]
    assert expected == sorted(expected, reverse=True)
    plan = app.state.prospect_plan
    for item in body["items"]:
        assert item["segment"] == plan.segment_of(
            value=item["value_if_converted"], income=item["income"]
        )
    assert {item["buying_power"] for item in body["items"]} == {"modest", "comfortable", "wealthy"}
    sizes = {s["segment"]: s["prospects"] for s in body["segments"]}
    assert sum(sizes.values()) == 12 and list(sizes) == plan.segments
    # A segment: only its prospects, in the same order.
    chosen = body["items"][0]["segment"]
    one = app_client.get(f"/v1/prospects?segment={chosen}", headers=reader).json()
    assert one["total"] == sizes[chosen]
    assert [i["customer_id"] for i in one["items"]] == [
        i["customer_id"] for i in body["items"] if i["segment"] == chosen
    ]
    # Pages are slices of the ranking.
    page = app_client.get("/v1/prospects?limit=5&offset=5", headers=reader).json()
    assert [i["customer_id"] for i in page["items"]] == [
        i["customer_id"] for i in body["items"][5:10]
    ]
    # Refused: a segment the plan lacks, a malformed one, no scope.
    unknown = app_client.get("/v1/prospects?segment=gold.wealthy", headers=reader)
    assert unknown.status_code == 422 and "segment" in unknown.json()["detail"]
    assert app_client.get("/v1/prospects?segment=a%20b", headers=reader).status_code == 422
    scores_only = _key(app, tenant, "scores:read")
    refused = app_client.get("/v1/prospects", headers=scores_only)
    assert refused.status_code == 403 and "customers:read" in refused.json()["detail"]
    other = app_client.get("/v1/prospects", headers=_key(app, f"other-{tenant}", "customers:read"))
    assert other.json()["total"] == 3  # never the first tenant's
    # Documented with an example the schema accepts.
    spec = app_client.get("/openapi.json", headers=reader).json()
    operation = spec["paths"]["/v1/prospects"]["get"]
    assert operation["security"] and "422" in operation["responses"]
    example = spec["components"]["schemas"]["ProspectPage"]["examples"][0]
    assert example["items"][0]["segment"] in plan.segments


def test_the_prospects_page_for_supervisors_and_administrators(
    app_client: TestClient, registry: ModelRegistry, sample_rows: dict[str, pd.DataFrame]
) -> None:
    app: Any = app_client.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    prospects = sample_rows["prospect"]
    rows = pd.concat([prospects, prospects]).head(25).copy()  # 25 ids: two pages of 20
    rows["income"] = 150_000.0
    _score_prospects(app_client, registry, rows, tenant)
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    rm = TestClient(app, base_url="https://testserver")
    log_in(rm, tenant=tenant, staff_id="rm-1")
    assert rm.get("/console/prospects").status_code == 404
    assert 'href="/console/prospects"' not in rm.get("/console/queue").text
    browser = TestClient(app, base_url="https://testserver")
    log_in(browser, tenant=tenant, staff_id="bs-1")
    page = browser.get("/console/prospects")
    assert page.status_code == 200
    assert page.text.count(f"P-{tenant}-") == 20  # the first page of 25
    assert "?page=2" in page.text
    second = browser.get("/console/prospects?page=2").text
    assert second.count(f"P-{tenant}-") == 5
    assert "€150,000.00" in page.text  # the income, in the configured currency
    modest = browser.get("/console/prospects?segment=standard.modest")
    assert modest.status_code == 200 and f"P-{tenant}-" not in modest.text  # all are wealthy
    assert browser.get("/console/prospects?segment=gold.x").status_code == 422
    token = csrf_of(page.text)
    chinese = browser.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": "/console/prospects"},
    )
    assert "按细分的潜在客户" in chinese.text and "客户经理" in chinese.text
