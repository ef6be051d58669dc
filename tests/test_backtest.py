"""Backtests (issue 17, item 4): stored scores joined to the outcomes the bank reports, per
month, with seeded bootstrap intervals; `cvm outcomes import`, `cvm backtest` and the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli.main import cli
from app.db import migrate
from app.db.session import create_db_engine
from app.errors import InvalidInput, NotFound
from app.http.app import create_app
from app.modelops import backtest as backtests
from app.modelops.backtest import HORIZON, OutcomeRow, import_outcomes, read_outcomes_csv
from app.modelops.monitoring import latest_run
from app.modelops.schemas import BacktestReport
from app.modelops.service import champions
from app.modelops.tables import ModelBacktest, ModelOutcome
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope
from app.scoring.tables import Score
from app.security.api_keys import create_client
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
)
from tests.test_modelops import app_settings

MONTHS = (datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC))
PER_MONTH = 400
THROUGH = datetime(2026, 6, 30, tzinfo=UTC)
NOW = datetime(2026, 7, 1, tzinfo=UTC)


def score(customer: str, at: datetime, p: float, tenant: str | None = "bank-a") -> Score:
    return Score(
        request_id=f"r-{customer}-{at:%m%d}",
        task="churn",
        customer_id=customer,
        model_name="churn",
        model_version="1",
        outputs={},
        reasons=[],
        features={},
        created_at=at,
        tenant=tenant,
        source="api",
        probability=p,
    )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def book(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, dict[str, tuple[list[int], list[float]]]]]:
    """A migrated database holding two months of churn scores of bank-a and the outcomes
    drawn from them; the labels each month should get."""
    factory = migrated_sqlite_database if request.param == "sqlite" else migrated_postgres_database
    rng = np.random.default_rng(4)
    expected: dict[str, tuple[list[int], list[float]]] = {}
    outcomes: list[OutcomeRow] = []
    with factory() as url:
        engine = create_db_engine(url)
        with Session(engine) as session:
            for m, start in enumerate(MONTHS):
                labels, probabilities = expected.setdefault(f"{start:%Y-%m}", ([], []))
                for i in range(PER_MONTH):
                    customer = f"c{m}-{i}"
                    p = float(np.round(rng.beta(1, 6), 3))
                    at = start + timedelta(days=int(rng.integers(0, 15)))
                    if i % 50 == 0:  # scored twice this month: only the later score counts
                        session.add(score(customer, at - timedelta(days=1), 0.99))
                    session.add(score(customer, at, p))
                    left = rng.random() < p
                    # Some leave after the horizon: they stayed as far as this score goes.
                    days = int(rng.integers(1, 89)) if left else int(rng.integers(95, 120))
                    if left or i % 3 == 0:
                        outcomes.append(OutcomeRow(customer, at + timedelta(days=days)))
                    labels.append(int(left))
                    probabilities.append(p)
            # Too recent: its horizon has not passed by THROUGH (censored).
            session.add(score("fresh", THROUGH - timedelta(days=30), 0.5))
            session.add(score("other", MONTHS[0], 0.9, tenant="bank-b"))  # another bank's
            session.commit()
            result = import_outcomes(
                session,
                task=Task.CHURN,
                rows=outcomes,
                observed_through=THROUGH,
                tenant="bank-a",
                source="left.csv",
                now=NOW,
            )
            assert (result.inserted, result.already_stored) == (len(outcomes), 0)
        engine.dispose()
        yield url, expected


def test_each_month_is_scored_against_what_became_of_its_customers(
    book: tuple[str, dict[str, tuple[list[int], list[float]]]],
) -> None:
    url, expected = book
    engine = create_db_engine(url)
    with Session(engine) as session:
        report = backtests.backtest(
            session, task=Task.CHURN, version="1", tenant=TenantScope("bank-a")
        )
        again = backtests.backtest(
            session, task=Task.CHURN, version="1", tenant=TenantScope("bank-a")
        )
    engine.dispose()
    assert report == again  # seeded
    assert [m.month for m in report.months] == list(expected)
    for month in report.months:
        labels, probabilities = expected[month.month]
        y, p = np.array(labels), np.array(probabilities)
        assert (month.rows, month.positives) == (PER_MONTH, int(y.sum()))
        auc = month.metrics["roc_auc"]
        assert auc.value == pytest.approx(roc_auc_score(y, p), abs=1e-4)
        assert auc.value is not None and auc.ci_low is not None and auc.ci_high is not None
        assert auc.ci_low < auc.value < auc.ci_high
        assert month.metrics["brier"].value == pytest.approx(np.mean((p - y) ** 2), abs=1e-4)
        ratio = month.metrics["observed_over_expected"]
        assert ratio.value == pytest.approx(y.sum() / p.sum(), abs=1e-4)
        assert ratio.ci_low is not None and ratio.ci_high is not None
        assert ratio.ci_low < 1 < ratio.ci_high  # outcomes drawn from the scores: calibrated
    assert report.overall is not None and report.overall.rows == 2 * PER_MONTH


def test_outcomes_are_the_tenants_own_and_imports_are_idempotent(
    book: tuple[str, dict[str, tuple[list[int], list[float]]]],
) -> None:
    url, _ = book
    engine = create_db_engine(url)
    with Session(engine) as session:
        with pytest.raises(NotFound):  # bank-b reported no outcomes
            backtests.backtest(session, task=Task.CHURN, version=None, tenant=TenantScope("bank-b"))
        with pytest.raises(InvalidInput, match="tier"):
            backtests.backtest(session, task=Task.TIER, version=None, tenant=None)
        late = [OutcomeRow("c0-1", THROUGH + timedelta(days=1))]
        with pytest.raises(InvalidInput, match="row 1: occurred_at"):
            import_outcomes(
                session,
                task=Task.CHURN,
                rows=late,
                observed_through=THROUGH,
                tenant="bank-a",
                source="x",
                now=NOW,
            )
        first = session.query(ModelOutcome).first()
        assert first is not None
        again = import_outcomes(
            session,
            task=Task.CHURN,
            rows=[OutcomeRow(first.customer_id, first.occurred_at)],
            observed_through=THROUGH,
            tenant="bank-a",
            source="again.csv",
            now=NOW,
        )
        assert (again.inserted, again.already_stored) == (0, 1)
    engine.dispose()


def test_the_api_and_the_cli(
    book: tuple[str, dict[str, tuple[list[int], list[float]]]],
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import get_settings

    url, _ = book
    engine: Engine = create_db_engine(url)
    _, key = create_client(engine, name="bank-a-analyst", scopes=["models:read"], tenant="bank-a")
    _, other = create_client(engine, name="bank-b-analyst", scopes=["models:read"], tenant="bank-b")
    engine.dispose()
    with TestClient(
        create_app(app_settings(url, models_dir)), headers={"X-API-Key": key}
    ) as client:
        response = client.get("/v1/models/churn/backtest", params={"resamples": 50})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["horizon_days"] == HORIZON.days and len(body["months"]) == 2
        assert body["overall"]["rows"] == 2 * PER_MONTH  # bank-b's score is not bank-a's
        hidden = client.get("/v1/models/churn/backtest", headers={"X-API-Key": other})
        assert hidden.status_code == 404  # bank-b imported no outcomes and sees none of bank-a's
        refused = client.get("/v1/models/recommendation/backtest")
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_input")
        assert client.get("/v1/models/churn/backtest", params={"resamples": 5}).status_code == 422
    monkeypatch.setenv("CVM_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        bad = tmp_path / "bad.csv"
        bad.write_text("customer_id,occurred_at\nc1,2026-02-30\n")
        failed = runner.invoke(
            cli,
            ["outcomes", "import", str(bad), "--task", "churn", "--observed-through", "2026-06-30"],
        )
        assert failed.exit_code != 0 and "line 2: occurred_at" in failed.output
        good = tmp_path / "left.csv"
        good.write_text("customer_id,occurred_at\nc9,2026-03-01\n")
        stored = runner.invoke(
            cli,
            [
                "outcomes",
                "import",
                str(good),
                "--task",
                "churn",
                "--observed-through",
                "2026-06-30",
            ],
        )
        assert stored.exit_code == 0 and "1 stored" in stored.output, stored.output
        # The champion's backtest for these (untagged) outcomes, computed by the import.
        assert "1 stored backtest(s) recomputed" in stored.output, stored.output
        printed = runner.invoke(cli, ["backtest", "churn", "--resamples", "20"])
        assert printed.exit_code == 0, printed.output
        assert "2026-01" in printed.output and "2026-02" in printed.output
        # cvm monitor stores the drift run it prints (bank-a's stored scores, features empty).
        monitored = runner.invoke(cli, ["monitor", "churn", "--tenant", "bank-a"])
        assert monitored.exit_code == 0, monitored.output
        assert "stored rows against" in monitored.output
        engine = create_db_engine(url)
        try:
            with Session(engine) as session:
                champion = champions(session)[Task.CHURN]
                run = latest_run(
                    session, task=Task.CHURN, version=champion, tenant=TenantScope("bank-a")
                )
                # Every stored row of bank-a: both months, the second scores of every 50th
                # customer and the censored one.
                stored_rows = 2 * PER_MONTH + 2 * (PER_MONTH // 50) + 1
                assert run is not None and run.report.current_rows == stored_rows
        finally:
            engine.dispose()
    finally:
        get_settings.cache_clear()


def test_backtests_are_stored_and_recomputed_when_outcomes_are_imported(
    book: tuple[str, dict[str, tuple[list[int], list[float]]]],
) -> None:
    url, expected = book
    bank_a = TenantScope("bank-a")
    engine = create_db_engine(url)

    def live(session: Session) -> BacktestReport:
        return backtests.backtest(
            session, task=Task.CHURN, version="1", tenant=bank_a, resamples=30
        )

    with Session(engine) as session:
        assert (
            backtests.latest_backtest(session, task=Task.CHURN, version="1", tenant=bank_a) is None
        )
        stored = backtests.store_backtest(
            session, task=Task.CHURN, version="1", tenant=bank_a, now=NOW, resamples=30
        )
        before = live(session)
        assert stored == before
        latest = backtests.latest_backtest(session, task=Task.CHURN, version="1", tenant=bank_a)
        assert latest is not None and latest.report == before
        assert (latest.computed_at, latest.stale) == (NOW, False)
        # Another tenant's or another version's backtest is another row.
        assert (
            backtests.latest_backtest(session, task=Task.CHURN, version="2", tenant=bank_a) is None
        )
        # An outcome stored other than by an import: the stored backtest says it is stale.
        session.add(
            ModelOutcome(
                tenant="bank-a",
                task="churn",
                customer_id="never-scored",
                occurred_at=MONTHS[0],
                observed_through=THROUGH,
                source="direct",
                imported_at=NOW,
            )
        )
        session.commit()
        latest = backtests.latest_backtest(session, task=Task.CHURN, version="1", tenant=bank_a)
        assert latest is not None and latest.stale and latest.report == before
        # An import recomputes every stored backtest it touches: a customer who had stayed
        # leaves within the horizon of their February score.
        stayed = next(i for i, label in enumerate(expected["2026-02"][0]) if label == 0 and i % 50)
        later = NOW + timedelta(days=1)
        import_outcomes(
            session,
            task=Task.CHURN,
            rows=[OutcomeRow(f"c1-{stayed}", MONTHS[1] + timedelta(days=16))],
            observed_through=THROUGH,
            tenant="bank-a",
            source="more.csv",
            now=later,
        )
        latest = backtests.latest_backtest(session, task=Task.CHURN, version="1", tenant=bank_a)
        assert latest is not None and (latest.computed_at, latest.stale) == (later, False)
        # (The import also stored the champion's backtest for bank-a, as the console shows
        # it: the latest is either; each equals the live computation with its bootstrap.)
        assert latest.report == backtests.backtest(
            session,
            task=Task.CHURN,
            version=latest.report.version,
            tenant=bank_a,
            resamples=latest.report.resamples,
        )
        rows = session.scalars(
            select(ModelBacktest).where(ModelBacktest.scope == "tenant:bank-a")
        ).all()
        assert {row.computed_at for row in rows} == {later}
        (mine,) = [row for row in rows if row.resamples == 30]
        refreshed = BacktestReport.model_validate(mine.report)
        assert refreshed == live(session) != before
        assert refreshed.months[1].positives == before.months[1].positives + 1
        session.execute(delete(ModelOutcome).where(ModelOutcome.source.in_(["direct", "more.csv"])))
        session.execute(delete(ModelBacktest))
        session.commit()
    engine.dispose()


def test_outcome_files_name_the_bad_line() -> None:
    assert read_outcomes_csv("customer_id,occurred_at\nc1,2026-03-01\n") == [
        OutcomeRow("c1", datetime(2026, 3, 1, tzinfo=UTC))
    ]
    for text, message in [
        ("customer,occurred_at\n", "missing column(s) customer_id"),
        ("customer_id,occurred_at\n,2026-03-01\n", "line 2: customer_id"),
        ("customer_id,occurred_at\nc1,2026-03-01T10:00\n", "no zone offset"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_outcomes_csv(text)


def test_the_outcome_table_migrates_down_and_up_with_rows(
    book: tuple[str, dict[str, tuple[list[int], list[float]]]],
) -> None:
    url, _ = book
    engine = create_db_engine(url)
    with Session(engine) as session:
        before = session.query(ModelOutcome).count()
    migrate.downgrade(url, "0014")
    with engine.connect() as connection:
        assert not engine.dialect.has_table(connection, "model_outcome")
    migrate.upgrade(url)
    with Session(engine) as session:
        assert session.query(ModelOutcome).count() == 0 < before
        import_outcomes(
            session,
            task=Task.CHURN,
            rows=[OutcomeRow("c1", MONTHS[0])],
            observed_through=THROUGH,
            tenant=None,
            source="x",
            now=NOW,
        )
        assert session.query(ModelOutcome).count() == 1
    engine.dispose()
