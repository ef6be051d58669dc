"""The scoring API end to end, on SQLite and on PostgreSQL.

What is stored runs on both, the features' JSON included (a missing optional value, a whole
float); refusals and computations that store only incidentally run on SQLite alone."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from app.http.app import _route_spec, api_routes, create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.routes import SCORING_ROUTES
from app.scoring.tables import Score
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.conftest import ON_SQLITE_ONLY, customer_record, models_without


def records(
    rows: pd.DataFrame, registry: ModelRegistry, task: Task, n: int
) -> list[dict[str, Any]]:
    model = registry.get(task)
    assert model is not None
    return [customer_record(row, model.schema) for _, row in rows.head(n).iterrows()]


def stored_count(database_url: str, customer_ids: list[str]) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(
                connection.scalar(
                    select(func.count())
                    .select_from(Score)
                    .where(Score.customer_id.in_(customer_ids))
                )
                or 0
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def refusing_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """The `client` fixture's app, built once for the module's parametrised refusals: each
    of their calls is refused before anything is stored, so one app serves every case."""
    app = create_app(
        settings_for(database_url, auth_enabled=True, rescore_in_process=True), registry
    )
    _, key = create_client(app.state.engine, name="tests", scopes=sorted(ALL_SCOPES))
    with TestClient(app, headers={"X-API-Key": key}) as test_client:
        yield test_client


def assert_explanation_adds_up(explanation: dict[str, Any]) -> None:
    total = explanation["bias"] + explanation["other_contribution"]
    total += sum(r["contribution"] for r in explanation["reasons"])
    assert math.isclose(total, explanation["raw_score"], abs_tol=1e-9)
    sizes = [abs(r["contribution"]) for r in explanation["reasons"]]
    assert sizes == sorted(sizes, reverse=True)
    for reason in explanation["reasons"]:
        assert reason["direction"] == ("raises" if reason["contribution"] > 0 else "lowers")
        assert reason["text"]


def test_churn_scores_are_explained_and_saved(
    client: TestClient,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    database_url: str,
) -> None:
    customers = records(sample_rows["existing"], registry, Task.CHURN, 5)
    response = client.post("/v1/churn/scores", json={"customers": customers, "reasons": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["saved"] is True
    assert [r["customer_id"] for r in body["results"]] == [c["customer_id"] for c in customers]
    model = registry.get(Task.CHURN)
    assert model is not None
    direct = model.predict(model.schema.encode_rows(customers))
    for result, expected in zip(body["results"], direct, strict=True):
        assert result["probability"] == pytest.approx(float(expected), abs=1e-6)
        assert result["risk_band"] in {"low", "medium", "high"}
        assert len(result["explanation"]["reasons"]) <= 3
        assert_explanation_adds_up(result["explanation"])
        raw = result["explanation"]["raw_score"]
        assert 1 / (1 + math.exp(-raw)) == pytest.approx(result["probability"], abs=1e-6)
    history = client.get(f"/v1/customers/{customers[0]['customer_id']}/scores").json()
    assert history["total"] == 1
    stored = history["items"][0]
    assert stored["task"] == "churn"
    assert stored["request_id"] == body["request_id"]
    assert stored["outputs"]["probability"] == body["results"][0]["probability"]
    assert stored["reasons"][0] == body["results"][0]["explanation"]
    assert stored_count(database_url, [c["customer_id"] for c in customers]) == 5


@ON_SQLITE_ONLY
def test_columns_layout_gives_the_same_scores(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customers = records(sample_rows["existing"], registry, Task.CHURN, 4)
    columns = {name: [c[name] for c in customers] for name in customers[0]}
    by_rows = client.post("/v1/churn/scores", json={"customers": customers, "reasons": 0}).json()
    by_columns = client.post("/v1/churn/scores", json={"columns": columns, "reasons": 0}).json()
    assert by_rows["results"] == by_columns["results"]
    assert all(r["explanation"] is None for r in by_columns["results"])


@ON_SQLITE_ONLY
def test_exact_treeshap_on_request(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customers = records(sample_rows["existing"], registry, Task.CHURN, 2)
    body = client.post("/v1/churn/scores", json={"customers": customers, "explain": "exact"}).json()
    for result in body["results"]:
        assert result["explanation"]["method"] == "tree_shap_exact"
        assert_explanation_adds_up(result["explanation"])


@ON_SQLITE_ONLY
def test_tier_scores_with_plan_and_next_tier_gap(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customers = records(sample_rows["existing"], registry, Task.TIER, 20)
    response = client.post("/v1/tier/scores", json={"customers": customers})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    tiers = list(registry.get(Task.TIER).classes)  # type: ignore[union-attr]
    gaps = 0
    for result in results:
        assert result["tier"] in tiers
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert result["service_plan"]["services"]
        assert_explanation_adds_up(result["explanation"])
        gap = result["next_tier_gap"]
        if gap is not None:
            gaps += 1
            assert tiers.index(gap["target_tier"]) > tiers.index(result["tier"])
            assert gap["changes"][0]["text"]
        elif result["tier"] != tiers[-1]:
            continue
    assert gaps > 0, "no customer got a next-tier gap"


@ON_SQLITE_ONLY
def test_recommendations_skip_held_products_and_apply_rules(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customers = records(sample_rows["existing"], registry, Task.RECOMMENDATION, 10)
    body = client.post("/v1/recommendations", json={"customers": customers, "top_k": 4}).json()
    for customer, result in zip(customers, body["results"], strict=True):
        assert result["cold_start"] is False
        assert 0 < len(result["products"]) <= 4
        propensities = [p["propensity"] for p in result["products"]]
        assert propensities == sorted(propensities, reverse=True)
        for product in result["products"]:
            assert customer[f"has_{product['product']}"] is False
            assert_explanation_adds_up(product["explanation"])
        offered = {p["product"] for p in result["products"]}
        assert not {"personal_loan", "business_loan"} <= offered
        if customer["occupation"] not in {"self_employed", "business_owner"}:
            assert "business_loan" not in offered


def test_cold_start_recommendations_from_demographics_only(client: TestClient) -> None:
    customer = {
        "customer_id": f"N-{uuid.uuid4().hex[:8]}",
        "age": 19,
        "income": 21000.0,
        "occupation": "student",
        "region": "capital",
        "tenure_months": 0,
    }
    response = client.post("/v1/recommendations", json={"customers": [customer]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["cold_start"] is True
    offered = [p["product"] for p in result["products"]]
    assert offered and "mortgage" not in offered  # under the rules' minimum age of 21
    assert "business_loan" not in offered


@ON_SQLITE_ONLY
def test_prospect_scores(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    prospects = records(sample_rows["prospect"], registry, Task.PROSPECT, 5)
    body = client.post("/v1/prospect/scores", json={"customers": prospects}).json()
    for result in body["results"]:
        assert 0 <= result["conversion_probability"] <= 1
        assert result["value_if_converted"] >= 0
        assert result["expected_value"] == pytest.approx(
            result["conversion_probability"] * result["value_if_converted"], abs=0.01
        )
        assert result["priority"] in {"low", "medium", "high"}


def test_assessment_by_lifecycle(
    client: TestClient,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    database_url: str,
) -> None:
    schemas = {t: registry.get(t).schema for t in Task}  # type: ignore[union-attr]
    row = sample_rows["existing"].iloc[0]
    customer: dict[str, Any] = {}
    for task in (Task.TIER, Task.CHURN, Task.RECOMMENDATION):
        customer.update(customer_record(row, schemas[task], customer_id="A-1"))
    customer["customer_id"] = f"A-{uuid.uuid4().hex[:8]}"
    response = client.post("/v1/assessments", json=customer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lifecycle"] == "existing"
    assert body["tier"] and body["churn"] and body["recommendations"]
    assert body["prospect"] is None
    assert stored_count(database_url, [customer["customer_id"]]) == 3

    prospect = customer_record(sample_rows["prospect"].iloc[0], schemas[Task.PROSPECT])
    body = client.post("/v1/assessments", json=prospect).json()
    assert body["lifecycle"] == "prospect"
    assert body["prospect"] and body["churn"] is None

    incomplete = {"customer_id": "A-2", "tenure_months": 40, "age": 40}
    response = client.post("/v1/assessments", json=incomplete)
    assert response.status_code == 422
    assert "income" in {e["field"] for e in response.json()["errors"]}


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": 12}, "customers[0].age"),
        ({"income": "lots"}, "customers[0].income"),
        ({"occupation": "astronaut"}, "customers[0].occupation"),
        ({"has_mortgage": 1}, "customers[0].has_mortgage"),
        ({"unexpected": 1}, "customers[0].unexpected"),
        ({"income": None}, "customers[0].income"),
    ],
)
def test_invalid_fields_are_named(
    refusing_client: TestClient,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    database_url: str,
    change: dict[str, Any],
    field: str,
) -> None:
    customers = records(sample_rows["existing"], registry, Task.CHURN, 2)
    customers[0].update(change)
    response = refusing_client.post("/v1/churn/scores", json={"customers": customers})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}
    assert stored_count(database_url, [c["customer_id"] for c in customers]) == 0


@ON_SQLITE_ONLY
def test_missing_field_nan_and_infinity_are_rejected(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customer = records(sample_rows["existing"], registry, Task.CHURN, 1)[0]
    del customer["age"]
    response = client.post("/v1/churn/scores", json={"customers": [customer]})
    assert response.status_code == 422
    assert "customers[0].age" in response.json()["detail"]
    customer["age"] = 40
    body = json.dumps({"customers": [customer]}).replace(
        f'"income": {json.dumps(customer["income"])}', '"income": NaN'
    )
    response = client.post(
        "/v1/churn/scores", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "customers[0].income" in response.json()["detail"]
    body = body.replace('"income": NaN', '"income": 1e999')
    response = client.post(
        "/v1/churn/scores", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


@ON_SQLITE_ONLY
def test_malformed_json_and_wrong_layouts(client: TestClient) -> None:
    response = client.post(
        "/v1/churn/scores", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert client.post("/v1/churn/scores", json={}).status_code == 422
    assert client.post("/v1/churn/scores", json={"customers": []}).status_code == 422
    response = client.post(
        "/v1/churn/scores", json={"columns": {"customer_id": ["a"], "age": [1, 2]}}
    )
    assert response.status_code == 422


@ON_SQLITE_ONLY
def test_batch_limit_is_413(
    database_url: str,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    from app.http.app import create_app

    app = create_app(settings_for(database_url, max_batch_size=3), registry)
    customers = records(sample_rows["existing"], registry, Task.CHURN, 4)
    with TestClient(app) as limited:
        response = limited.post("/v1/churn/scores", json={"customers": customers})
    assert response.status_code == 413
    assert "limit is 3" in response.json()["detail"]
    assert stored_count(database_url, [c["customer_id"] for c in customers]) == 0


def test_history_filters_and_pages(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customer = records(sample_rows["existing"], registry, Task.CHURN, 1)[0]
    for _ in range(3):
        assert client.post("/v1/churn/scores", json={"customers": [customer]}).status_code == 200
    tier_customer = records(sample_rows["existing"], registry, Task.TIER, 1)[0]
    tier_customer["customer_id"] = customer["customer_id"]
    assert client.post("/v1/tier/scores", json={"customers": [tier_customer]}).status_code == 200
    url = f"/v1/customers/{customer['customer_id']}/scores"
    assert client.get(url).json()["total"] == 4
    page = client.get(url, params={"task": "churn", "limit": 2, "offset": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 1
    assert client.get(url, params={"task": "nonsense"}).status_code == 422
    assert client.get(url, params={"limit": 0}).status_code == 422


@ON_SQLITE_ONLY
def test_models_and_model_card(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert {m["task"] for m in models} == {t.value for t in Task}
    card = client.get("/v1/models/churn").json()
    assert card["explanation_method"] == "path_attribution_saabas"
    assert card["metrics"]["test"]["roc_auc"] > 0.5
    assert card["data_fingerprint"]
    assert card["feature_schema"]["features"][0]["name"] == "age"
    # Trained from `cvm synth`'s book: the API says so, in the list and the card.
    assert all(m["trained_on_synthetic_data"] is True for m in models)
    assert "SYNTHETIC" in card["data_notice"]
    assert card["card"]["training_data"]["synthetic"] is True
    assert card["card"]["intended_use"]["not_for_credit_decisions"] is True
    fairness = client.get("/v1/models/churn/fairness").json()
    assert fairness["synthetic_data"] is True and fairness["factors_not_in_data"] == ["gender"]
    assert set(fairness["report"]["factors"]) == {"age band", "region"}
    assert client.get("/v1/models/tier/fairness").status_code == 404
    assert client.get("/v1/models/unknown").status_code == 422


@ON_SQLITE_ONLY
def test_health_ready_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] is True
    assert ready.json()["writer"] is True  # the score writer is up
    client.post("/v1/churn/scores", json={})
    metrics = client.get("/metrics").text
    assert 'cvm_http_requests_total{method="POST",route="/v1/churn/scores",status="422"}' in metrics
    assert 'cvm_group_commit{kind="alive"} 1.0' in metrics
    assert 'cvm_group_commit{kind="restarts"} 0.0' in metrics
    spec = client.get("/openapi.json").json()
    churn_customer = spec["components"]["schemas"]["ChurnCustomer"]
    age = churn_customer["properties"]["age"]
    assert age["minimum"] == 18 and age["unit"] == "years" and age["description"]
    request_body = spec["paths"]["/v1/churn/scores"]["post"]["requestBody"]
    assert request_body["content"]["application/json"]["schema"]["$ref"].endswith(
        "ChurnScoreRequest"
    )
    responses = spec["paths"]["/v1/churn/scores"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ChurnScoreResponse"
    )
    assert {"413", "422", "503"} <= set(responses)
    assert client.get("/docs").status_code == 200
    # The caller's id is echoed apart; the service's own stays unique (issue 20 item 13).
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-client-request-id"] == "abc-123"
    assert uuid.UUID(response.headers["x-request-id"]).version == 7


@ON_SQLITE_ONLY
def test_request_ids_the_service_generates_are_time_ordered_uuids(client: TestClient) -> None:
    # UUIDv7: stored scores' request ids then append to their index instead of scattering.
    first = client.get("/healthz").headers["x-request-id"]
    time.sleep(0.002)
    second = client.get("/healthz").headers["x-request-id"]
    for value in (first, second):
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert value == parsed.hex
    assert first < second
    assert abs(int(first[:12], 16) / 1000 - time.time()) < 60  # the clock's milliseconds


def test_integer_fields_take_whole_floats_and_name_a_fraction(
    client: TestClient,
    database_url: str,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
) -> None:
    """Parquet snapshots written by pandas hold integer columns as floats (30.0)."""
    customers = records(sample_rows["existing"], registry, Task.CHURN, 2)
    whole = [{**c, "tenure_months": float(c["tenure_months"])} for c in customers]
    answer = client.post("/v1/churn/scores", json={"customers": whole})
    assert answer.status_code == 200, answer.text
    columns = {name: [c[name] for c in whole] for name in whole[0]}
    assert client.post("/v1/churn/scores", json={"columns": columns}).status_code == 200

    fraction = [{**whole[0], "tenure_months": 30.5}, whole[1]]
    refused = client.post("/v1/churn/scores", json={"customers": fraction})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "field": "customers[0].tenure_months",
            "message": "Input should be a whole number, got 30.5",
            "type": "int_from_float",
        }
    ]
    assert "customers[0].tenure_months" in refused.json()["detail"]
    columns["tenure_months"] = [columns["tenure_months"][0], 30.5]
    refused = client.post("/v1/churn/scores", json={"columns": columns})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["columns.tenure_months[1]"]
    assessed = client.post("/v1/assessments", json={**whole[0], "tenure_months": 30.5})
    assert assessed.status_code == 422
    assert [e["field"] for e in assessed.json()["errors"]] == ["tenure_months"]
    assert stored_count(database_url, [c["customer_id"] for c in customers]) == 4


@ON_SQLITE_ONLY
def test_a_body_with_customers_and_columns_is_refused_saying_so(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    customers = records(sample_rows["existing"], registry, Task.CHURN, 1)
    columns = {name: [value] for name, value in customers[0].items()}
    answer = client.post("/v1/churn/scores", json={"customers": customers, "columns": columns})
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["type"] == "customers_and_columns"
    assert (
        error["message"]
        == answer.json()["detail"]
        == ("the body has both 'customers' and 'columns'; send one of them, not both")
    )
    neither = client.post("/v1/churn/scores", json={"reasons": 3})
    assert neither.status_code == 422
    assert neither.json()["errors"][0]["type"] == "customers_or_columns"


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "url", "unknown"),
    [
        ("GET", "/v1/alerts?foo=1", ["foo"]),
        ("GET", "/v1/alerts?status=open&zeta=&alpha=2", ["alpha", "zeta"]),
        ("GET", "/v1/customers/X/scores?bogus=", ["bogus"]),
        ("GET", "/v1/models?verbose=1", ["verbose"]),
        ("GET", "/v1/alerts/1?x=1", ["x"]),
        ("POST", "/v1/churn/scores?dry_run=true", ["dry_run"]),
        ("GET", "/healthz?probe=1", ["probe"]),
    ],
)
def test_unknown_query_parameters_are_named_in_a_422(
    refusing_client: TestClient, method: str, url: str, unknown: list[str]
) -> None:
    answer = refusing_client.request(method, url, json={} if method == "POST" else None)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in problem["errors"]] == [f"query.{name}" for name in unknown]
    assert all(repr(name) in problem["detail"] for name in unknown)


@ON_SQLITE_ONLY
def test_declared_query_parameters_still_pass(client: TestClient) -> None:
    assert client.get("/v1/alerts?status=open&limit=5&offset=0").status_code == 200
    assert client.get("/v1/customers/X/scores?task=churn&limit=2").status_code == 200
    assert client.get("/v1/models/churn").status_code == 200
    assert client.get("/v1/nowhere?foo=1").status_code == 404  # unknown route: 404 as before


def test_every_scoring_operation_documents_an_example_that_it_accepts(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    posted = 0
    for path, operations in spec["paths"].items():
        body = operations.get("post", {}).get("requestBody")
        # Casework answers staff members only: tests/test_casework_complaints.py posts those.
        if body is None or "{" in path or path.startswith("/v1/complaints"):
            continue
        reference = body["content"]["application/json"]["schema"]["$ref"]
        (example,) = schemas[reference.rsplit("/", 1)[-1]]["examples"]
        answer = client.post(path, json=example)
        assert answer.status_code in (200, 201), (path, answer.text)  # 201: a record created
        posted += 1
    assert posted >= 5


def test_columns_without_the_optional_columns_are_scored(
    client: TestClient, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    """Issue 20 item 10: every task takes columns holding only its required features."""
    for task, (path, *_) in SCORING_ROUTES.items():
        model = registry.get(task)
        assert model is not None
        required = ["customer_id", *(f.name for f in model.schema.features if f.required)]
        group = "prospect" if task is Task.PROSPECT else "existing"
        customers = records(sample_rows[group], registry, task, 3)
        columns = {name: [c[name] for c in customers] for name in required}
        response = client.post(f"/v1{path}", json={"columns": columns})
        assert response.status_code == 200, (task, response.text)
        assert len(response.json()["results"]) == 3


@ON_SQLITE_ONLY
def test_readiness_names_model_versions_never_paths(
    database_url: str, settings_for: Any, models_dir: Any, tmp_path: Path
) -> None:
    """Issue 20 item 15: /readyz showed where a missing model was looked for."""
    loaded = ModelRegistry.load(models_dir)
    partial = ModelRegistry(
        {t: m for t, m in loaded.loaded.items() if t is not Task.PROSPECT},
        {Task.PROSPECT: f"no model under {tmp_path / 'prospect'}"},
    )
    without = models_without(Task.PROSPECT, models_dir, tmp_path)
    settings = settings_for(database_url).model_copy(update={"models_dir": without})
    with TestClient(create_app(settings, partial)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    models = ready.json()["models"]
    assert models["prospect"] == "missing"
    assert all(v == "missing" or v.startswith("v") for v in models.values())
    assert str(models_dir) not in ready.text and str(tmp_path) not in ready.text


def test_apps_share_their_routes_and_spec_generation() -> None:
    """Building routes and generating the spec cost about a second an app; a process builds
    them once (the suite makes hundreds of apps)."""
    assert api_routes() is api_routes()
    assert _route_spec("t", "1", None, "d") is _route_spec("t", "1", None, "d")
