"""Migration 0007: rows stored by the API and by the batch scorer before one shape existed
are converted, nothing lost, and come back on a downgrade."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.db import migrate
from app.db.session import create_db_engine
from tests.db_support import temporary_postgres_database, temporary_sqlite_database

EXPLANATION = {
    "method": "path_attribution",
    "raw_score": 1.5,
    "bias": -2.0,
    "reasons": [
        {
            "feature": "wealth_change_3m_pct",
            "value": "-40%",
            "contribution": 2.5,
            "direction": "raises",
            "text": "wealth holdings changed -40% in 3 months",
        }
    ],
    "other_contribution": 1.0,
}
# (request id, task, outputs, reasons) as each path stored them before revision 0007.
OLD_ROWS: list[tuple[str, str, dict[str, Any], list[Any]]] = [
    ("api-1", "churn", {"probability": 0.82, "risk_band": "high"}, [EXPLANATION]),
    (
        "api-2",
        "tier",
        {"tier": "affluent", "probabilities": {"mass": 0.1, "affluent": 0.9}},
        [EXPLANATION],
    ),
    (
        "api-3",
        "recommendation",
        {"cold_start": False, "products": [{"product": "mortgage", "propensity": 0.4}]},
        [{"product": "mortgage", "explanation": EXPLANATION}],
    ),
    (
        "api-4",
        "prospect",
        {
            "conversion_probability": 0.3,
            "value_if_converted": 900.0,
            "expected_value": 270.0,
            "priority": "medium",
        },
        [EXPLANATION],
    ),
    (
        "batch:run:0",
        "churn",
        {"probability": 0.71, "band": "high"},
        ["wealth holdings changed -40% in 3 months (raises 2.500)", "few logins (lowers 0.125)"],
    ),
    ("batch:run:1", "tier", {"prediction": "mass", "probability": 0.6}, []),
    ("batch:run:2", "recommendation", {"prediction": "pension", "probability": 0.25}, []),
    ("batch:run:3", "prospect", {"probability": 0.2, "band": "low", "expected_value": 12.0}, []),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database at revision 0005 holding rows of both old shapes."""
    temporary = (
        temporary_postgres_database if request.param == "postgres" else temporary_sqlite_database
    )
    with temporary() as url:
        migrate.upgrade(url, "0005")
        engine = create_db_engine(url)
        with engine.begin() as connection:
            for request_id, task, outputs, reasons in OLD_ROWS:
                connection.execute(
                    text(
                        "INSERT INTO score (request_id, task, customer_id, model_name,"
                        " model_version, outputs, reasons, features, created_at)"
                        " VALUES (:r, :t, :c, :t, '1', :o, :re, '{}', CURRENT_TIMESTAMP)"
                    ),
                    {
                        "r": request_id,
                        "t": task,
                        "c": f"C-{request_id}",
                        "o": json.dumps(outputs),
                        "re": json.dumps(reasons),
                    },
                )
        yield engine
        engine.dispose()


def rows(engine: Engine, *columns: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        found = connection.execute(
            text(f"SELECT request_id, {', '.join(columns)} FROM score")
        ).mappings()
        return {
            row["request_id"]: {
                k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
                for k, v in row.items()
                if k != "request_id"
            }
            for row in found
        }


def test_old_rows_take_the_one_shape_and_come_back_on_downgrade(old_database: Engine) -> None:
    url = old_database.url.render_as_string(hide_password=False)
    migrate.upgrade(url)
    new = rows(old_database, "outputs", "reasons", "source", "probability", "band", "stage")
    assert len(new) == len(OLD_ROWS)
    assert {k: (v["source"], v["probability"], v["band"]) for k, v in new.items()} == {
        "api-1": ("api", 0.82, "high"),
        "api-2": ("api", 0.9, "affluent"),
        "api-3": ("api", 0.4, "mortgage"),
        "api-4": ("api", 0.3, "medium"),
        "batch:run:0": ("batch", 0.71, "high"),
        "batch:run:1": ("batch", 0.6, "mass"),
        "batch:run:2": ("batch", 0.25, "pension"),
        "batch:run:3": ("batch", 0.2, "low"),
    }
    assert all(v["stage"] is None for v in new.values())  # not recorded before 0007
    # API rows are untouched; batch rows read as the API's.
    for request_id, _, outputs, reasons in OLD_ROWS[:4]:
        assert (new[request_id]["outputs"], new[request_id]["reasons"]) == (outputs, reasons)
    assert new["batch:run:0"]["outputs"] == {"probability": 0.71, "risk_band": "high"}
    assert new["batch:run:2"]["outputs"]["products"] == [{"product": "pension", "propensity": 0.25}]
    worded = new["batch:run:0"]["reasons"][0]["reasons"]
    assert [(r["text"], r["direction"], r["contribution"]) for r in worded] == [
        ("wealth holdings changed -40% in 3 months", "raises", 2.5),
        ("few logins", "lowers", -0.125),
    ]

    migrate.downgrade(url, "0005")
    back = rows(old_database, "outputs", "reasons")
    for request_id, _, outputs, reasons in OLD_ROWS:
        assert back[request_id] == {"outputs": outputs, "reasons": reasons}, request_id

    migrate.upgrade(url)
    assert rows(old_database, "outputs", "source") == {
        k: {"outputs": v["outputs"], "source": v["source"]} for k, v in new.items()
    }
