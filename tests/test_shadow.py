"""Champion/challenger in shadow (issue 17, item 2): a challenger scores a share of the
champion's requests after they are answered, stored apart and joined by request id; the
champion's answers do not change by a byte; a full queue drops and counts, never waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli.main import cli
from app.db.session import create_db_engine
from app.http.app import create_app
from app.modelops import service
from app.modelops.backtest import OutcomeRow, import_outcomes
from app.observability import Metrics
from app.scoring.assess import Block, Options, Rules, assess_task, stage_codes
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.shadow import ShadowJob, ShadowScorer, selected
from app.scoring.tables import Score, ShadowScore
from app.security.api_keys import create_client
from app.training.synth import generate_book
from app.training.trail import book_events
from tests.conftest import customer_record
from tests.db_support import migrated_sqlite_file
from tests.test_modelops import T0, app_settings, keys

# The fixtures of the registry's tests: every task's version 1, churn 2..4 (4 the champion).
from tests.test_modelops import db as db
from tests.test_modelops import fresh_url as fresh_url
from tests.test_modelops import versions_dir as versions_dir


def test_the_share_is_respected_and_reproducible() -> None:
    ids = [f"{i:032x}" for i in range(20_000)]
    for share in (0.1, 0.5):
        picked = sum(selected(request_id, share) for request_id in ids)
        assert abs(picked / len(ids) - share) < 0.015
    assert [selected(i, 0.3) for i in ids[:500]] == [selected(i, 0.3) for i in ids[:500]]
    assert not any(selected(i, 0.0) for i in ids[:500])
    assert all(selected(i, 1.0) for i in ids[:500])


def _body(sample_rows: dict[str, pd.DataFrame], model: ScoringModel, n: int) -> dict[str, Any]:
    rows = sample_rows["existing"].iloc[:n]
    return {
        "customers": [
            customer_record(row, model.schema, customer_id=f"C-{i}")
            for i, (_, row) in enumerate(rows.iterrows())
        ]
    }


def _shadow_rows(engine: Engine) -> list[ShadowScore]:
    with Session(engine) as session:
        return list(session.scalars(select(ShadowScore).order_by(ShadowScore.id)))


def _approve(engine: Engine, versions_dir: Path, version: str) -> None:
    with Session(engine) as session:
        service.bootstrap(session, models_dir=versions_dir, now=T0)
        service.approve_version(
            session, task=Task.CHURN, version=version, actor="val", reason="ok", now=T0
        )


def test_shadow_scores_a_share_apart_joined_by_request_id_and_answers_are_unchanged(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    registrant, admin = keys(db)
    _approve(db, versions_dir, "2")
    _, reader_key = create_client(db, name="reader", scopes=["models:read", "scores:write"])
    settings = app_settings(fresh_url, versions_dir)
    with (
        TestClient(create_app(settings), headers=admin) as client,
        TestClient(create_app(settings), headers=admin) as other,
    ):
        scoring = client.app.state.scoring  # type: ignore[attr-defined]
        body = _body(sample_rows, scoring.model(Task.CHURN), 3)
        off = client.post("/v1/churn/scores", json=body)
        assert off.status_code == 200, off.text

        # Admin only; the champion itself 409; unknown 404; a bad share 422 naming it.
        shadow_path = "/v1/models/churn/versions/{}/shadow"
        denied = client.post(
            shadow_path.format("2"), json={"share": 1.0}, headers={"X-API-Key": reader_key}
        )
        assert denied.status_code == 403
        assert client.post(shadow_path.format("4"), json={"share": 1.0}).status_code == 409
        assert client.post(shadow_path.format("1"), json={"share": 1.0}).status_code == 409
        assert client.post(shadow_path.format("9"), json={"share": 1.0}).status_code == 404
        bad = client.post(shadow_path.format("2"), json={"share": 1.5})
        assert bad.status_code == 422 and "share" in bad.text
        assert _shadow_rows(db) == []

        started = client.post(shadow_path.format("2"), json={"share": 1.0}, headers=registrant)
        assert started.status_code == 200, started.text
        assert started.json()["version"] == "2" and started.json()["share"] == 1.0
        assert scoring.challenger(Task.CHURN) is not None  # here at once
        deadline = time.monotonic() + 3  # the other worker on its next poll
        while other.app.state.scoring.challenger(Task.CHURN) is None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the other worker never saw the shadow"
            time.sleep(0.05)

        on = client.post("/v1/churn/scores", json=body)
        assert on.status_code == 200, on.text
        # Byte-identical but for the request id each call gets.
        off_id, on_id = off.json()["request_id"], on.json()["request_id"]
        assert on.content.replace(on_id.encode(), off_id.encode()) == off.content

        client.app.state.shadow.drain()  # type: ignore[attr-defined]
        rows = _shadow_rows(db)
        assert [r.request_id for r in rows] == [on_id] * 3
        assert [r.customer_id for r in rows] == ["C-0", "C-1", "C-2"]
        answered = {r["customer_id"]: r["probability"] for r in on.json()["results"]}
        for row in rows:
            assert (row.champion_version, row.challenger_version) == ("4", "2")
            assert row.champion_probability == pytest.approx(answered[row.customer_id], abs=1e-6)
            # Version 2 is a copy of 4's model: the same features give the same score.
            assert row.challenger_probability == pytest.approx(row.champion_probability)

        # At a share of 0.5, exactly the requests whose id hashes into it are shadowed.
        half = client.post(shadow_path.format("2"), json={"share": 0.5})
        assert half.status_code == 200
        ids = [client.post("/v1/churn/scores", json=body).json()["request_id"] for _ in range(16)]
        client.app.state.shadow.drain()  # type: ignore[attr-defined]
        shadowed = {r.request_id for r in _shadow_rows(db)} - {on_id}
        assert shadowed == {i for i in ids if selected(i, 0.5)}

        stopped = client.delete("/v1/models/churn/shadow")
        assert stopped.status_code == 200 and stopped.json()["stopped"] == "2"
        assert scoring.challenger(Task.CHURN) is None
        assert client.delete("/v1/models/churn/shadow").status_code == 404
        after = client.post("/v1/churn/scores", json=body)
        client.app.state.shadow.drain()  # type: ignore[attr-defined]
        assert after.json()["request_id"] not in {r.request_id for r in _shadow_rows(db)}


def _job(model: ScoringModel, sample_rows: dict[str, pd.DataFrame]) -> ShadowJob:
    record = customer_record(sample_rows["existing"].iloc[0], model.schema, customer_id="C-1")
    record.pop("customer_id")
    block = Block(
        ids=["C-1"],
        matrix=model.schema.encode_rows([record]),
        stages=stage_codes(["existing"]),
    )
    champion = assess_task(Task.CHURN, model, block, rules=Rules(), options=Options())
    return ShadowJob(
        task=Task.CHURN,
        challenger=model,
        champion=champion,
        body=b"{}",
        request_id="r-1",
        tenant=None,
        stored_ids=["C-1"],
    )


def test_a_full_queue_drops_and_counts_without_waiting(
    models_dir: Path, sample_rows: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    model = ScoringModel.load(models_dir / "churn" / "1")
    metrics = Metrics()
    engine = create_db_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    scorer = ShadowScorer(
        engine=engine,
        capacity=2,
        on_drop=lambda task: metrics.shadow_dropped.labels(task).inc(),
    )  # not started: nothing takes jobs off the queue
    job = _job(model, sample_rows)
    started = time.perf_counter()
    accepted = [scorer.submit(job) for _ in range(5)]
    elapsed = time.perf_counter() - started
    assert accepted == [True, True, False, False, False]
    assert scorer.dropped == 3 and elapsed < 0.05
    assert b'cvm_shadow_dropped_total{task="churn"} 3.0' in generate_latest(metrics.registry)
    engine.dispose()


@pytest.fixture
def cli_env(
    versions_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    from app.config import get_settings

    url = migrated_sqlite_file(tmp_path / "cvm.db")
    monkeypatch.setenv("CVM_DATABASE_URL", url)
    monkeypatch.setenv("CVM_MODELS_DIR", str(versions_dir))
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_cli_shadows_and_unshadows(cli_env: str, versions_dir: Path) -> None:
    engine = create_db_engine(cli_env)
    _approve(engine, versions_dir, "2")
    runner = CliRunner()
    champion = runner.invoke(cli, ["models", "shadow", "churn", "4", "--share", "0.1"])
    assert champion.exit_code != 0 and "champion" in champion.output
    done = runner.invoke(cli, ["models", "shadow", "churn", "2", "--share", "0.1"])
    assert done.exit_code == 0, done.output
    with Session(engine) as session:
        shadowing = service.shadows(session)
    assert shadowing[Task.CHURN].version == "2" and shadowing[Task.CHURN].share == 0.1
    assert runner.invoke(cli, ["models", "unshadow", "churn"]).exit_code == 0
    with Session(engine) as session:
        assert service.shadows(session) == {}
    engine.dispose()


THROUGH = datetime(2026, 7, 1, tzinfo=UTC)
SCORED = datetime(2026, 2, 10, tzinfo=UTC)


def _pair(customer: str, p0: float, p1: float, *, tenant: str, **changes: Any) -> ShadowScore:
    values: dict[str, Any] = {
        "request_id": f"r-{customer}",
        "tenant": tenant,
        "task": Task.CHURN.value,
        "customer_id": customer,
        "champion_version": "4",
        "challenger_version": "2",
        "champion_probability": p0,
        "challenger_probability": p1,
        "champion_band": "high" if p0 > 0.5 else "low",
        "challenger_band": "high" if p1 > 0.5 else "low",
        "created_at": SCORED,
        **changes,
    }
    return ShadowScore(**values)


def test_the_report_compares_both_models_on_the_same_rows(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
) -> None:
    rng = np.random.default_rng(7)
    n = 600
    labels = (rng.random(n) < 0.3).astype(int)
    champion = np.clip(0.3 + 0.25 * (labels - 0.3) + rng.normal(0, 0.25, n), 0.001, 0.999)
    challenger = np.clip(0.3 + 0.45 * (labels - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    customers = [f"c{i}" for i in range(n)]
    with Session(db) as session:
        for i, customer in enumerate(customers):
            session.add(_pair(customer, champion[i], challenger[i], tenant="bank-a"))
        # Another bank's pair, and a pair too recent for its horizon to have passed.
        session.add(_pair("x", 0.9, 0.1, tenant="bank-b"))
        session.add(_pair("fresh", 0.9, 0.1, tenant="bank-a", created_at=THROUGH))
        session.commit()
        left = [c for c, y in zip(customers, labels, strict=True) if y]
        import_outcomes(
            session,
            task=Task.CHURN,
            rows=[OutcomeRow(c, SCORED + timedelta(days=30)) for c in left],
            observed_through=THROUGH,
            tenant="bank-a",
            source="left.csv",
            now=THROUGH,
        )
    _, key = create_client(db, name="bank-a", scopes=["models:read"], tenant="bank-a")
    with TestClient(create_app(app_settings(fresh_url, versions_dir))) as client:
        response = client.get("/v1/models/churn/challenger/report", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        report = response.json()
        none = client.get("/v1/models/tier/challenger/report", headers={"X-API-Key": key})
        assert none.status_code == 404
    # The fresh pair counts in the comparison (n + 1), not against outcomes (n).
    p0 = np.append(champion, 0.9)
    p1 = np.append(challenger, 0.1)
    assert report["pairs"] == n + 1 and report["challenger_version"] == "2"
    assert report["champion_versions"] == ["4"]
    assert report["mean_difference"] == pytest.approx(float((p1 - p0).mean()), abs=1e-6)
    agree = float(np.mean((p0 > 0.5) == (p1 > 0.5)))
    assert report["band_agreement"] == pytest.approx(agree, abs=1e-6)
    expected_rho = float(spearmanr(p0, p1).statistic)
    assert report["rank_correlation"] == pytest.approx(expected_rho, abs=1e-6)
    outcomes = report["outcomes"]
    assert (outcomes["rows"], outcomes["positives"]) == (n, int(labels.sum()))
    for name, p in (("champion", champion), ("challenger", challenger)):
        auc = outcomes[name]["roc_auc"]
        assert auc["value"] == pytest.approx(roc_auc_score(labels, p), abs=1e-4)
        assert auc["ci_low"] < auc["value"] < auc["ci_high"]
        brier = outcomes[name]["brier"]
        assert brier["value"] == pytest.approx(float(np.mean((p - labels) ** 2)), abs=1e-4)
    gain = outcomes["difference"]["roc_auc"]
    assert gain["value"] > 0 and gain["ci_low"] > 0  # the better challenger, paired


def test_assessments_are_shadowed_too_and_answer_the_same_bytes(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    _, admin = keys(db)
    _approve(db, versions_dir, "2")
    with TestClient(create_app(app_settings(fresh_url, versions_dir)), headers=admin) as client:
        scoring = client.app.state.scoring  # type: ignore[attr-defined]
        row = sample_rows["existing"].iloc[0]
        customer: dict[str, Any] = {}
        for task in (Task.TIER, Task.CHURN, Task.RECOMMENDATION):
            customer.update(customer_record(row, scoring.model(task).schema, customer_id="A-1"))
        off = client.post("/v1/assessments", json=customer)
        assert off.status_code == 200, off.text
        started = client.post("/v1/models/churn/versions/2/shadow", json={"share": 1.0})
        assert started.status_code == 200, started.text
        on = client.post("/v1/assessments", json=customer)
        off_id, on_id = off.json()["request_id"], on.json()["request_id"]
        assert on.content.replace(on_id.encode(), off_id.encode()) == off.content
        client.app.state.shadow.drain()  # type: ignore[attr-defined]
    rows = _shadow_rows(db)
    assert [(r.request_id, r.customer_id, r.task) for r in rows] == [(on_id, "A-1", "churn")]
    assert rows[0].champion_probability == pytest.approx(
        on.json()["churn"]["probability"], abs=1e-6
    )


def test_score_by_id_is_shadowed_too(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
) -> None:
    _, admin = keys(db)
    _approve(db, versions_dir, "2")
    book: pd.DataFrame = generate_book(customers=30, months=6, seed=9).to_pandas()
    settings = app_settings(fresh_url, versions_dir, rescore_in_process=False)
    with TestClient(create_app(settings), headers=admin) as client:
        posted = client.post("/v1/events", json={"events": list(book_events(book))})
        assert posted.status_code == 200, posted.text
        last = book[(book["month"] == book["month"].max()) & (book["lifecycle"] == "existing")]
        customer = str(last["customer_id"].iloc[0])
        off = client.post(f"/v1/customers/{customer}/assessment", json={"tasks": ["churn"]})
        assert off.status_code == 200, off.text
        started = client.post("/v1/models/churn/versions/2/shadow", json={"share": 1.0})
        assert started.status_code == 200, started.text
        on = client.post(f"/v1/customers/{customer}/assessment", json={"tasks": ["churn"]})
        assert on.status_code == 200, on.text
        off_id, on_id = off.json()["request_id"], on.json()["request_id"]
        assert on.content.replace(on_id.encode(), off_id.encode()) == off.content
        client.app.state.shadow.drain()  # type: ignore[attr-defined]
    rows = _shadow_rows(db)
    assert [(r.request_id, r.task) for r in rows] == [(on_id, "churn")]
    assert rows[0].champion_probability == pytest.approx(
        on.json()["churn"]["probability"], abs=1e-6
    )


def test_event_rescoring_is_shadowed_too(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
) -> None:
    """A material event's background re-assessment goes through the same shadow as a call."""
    _, admin = keys(db)
    _approve(db, versions_dir, "2")
    book: pd.DataFrame = generate_book(customers=30, months=6, seed=9).to_pandas()
    settings = app_settings(fresh_url, versions_dir, rescore_in_process=False)
    with TestClient(create_app(settings), headers=admin) as client:
        posted = client.post("/v1/events", json={"events": list(book_events(book))})
        assert posted.status_code == 200, posted.text
        last = book[(book["month"] == book["month"].max()) & (book["lifecycle"] == "existing")]
        customer = str(last["customer_id"].iloc[0])
        started = client.post("/v1/models/churn/versions/2/shadow", json={"share": 1.0})
        assert started.status_code == 200, started.text
        complaint = {
            "event_id": f"{customer}-complaint-shadowed",
            "type": "complaint",
            "customer_id": customer,
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "complaint_id": "K-shadowed",
            "severity": "high",
        }
        assert client.post("/v1/events", json={"events": [complaint]}).status_code == 200
        rescorer = client.app.state.rescorer  # type: ignore[attr-defined]
        assert client.portal.call(rescorer.run_once) >= 1  # type: ignore[union-attr]
        client.app.state.shadow.drain()  # type: ignore[attr-defined]
    with Session(db) as session:
        champions = list(
            session.scalars(select(Score).where(Score.source == "event", Score.task == "churn"))
        )
    assert customer in {c.customer_id for c in champions}
    rows = _shadow_rows(db)
    assert sorted((r.request_id, r.customer_id) for r in rows) == sorted(
        (c.request_id, c.customer_id) for c in champions
    )
    assert all(c.request_id.startswith("rescore-") for c in champions)
    probability = {c.request_id: c.probability for c in champions}
    for row in rows:
        assert row.task == "churn"
        assert row.champion_probability == pytest.approx(probability[row.request_id], abs=1e-6)
