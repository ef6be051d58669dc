"""The model registry (issue 17, item 1): versions in the database, one champion per task,
an append-only trail, separation of duties, evidence before approval, activation reaching
every running app within a second, and rollback that checks the old version loads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import Settings
from app.db import migrate
from app.db.session import create_db_engine, create_session_factory
from app.errors import ServiceError
from app.http.app import create_app
from app.modelops import service
from app.modelops.errors import ChampionChanged
from app.modelops.status import ModelStatus
from app.scoring.manifest import Manifest, Task
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.conftest import customer_record
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
    migrated_sqlite_file,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_version(root: Path, task: Task, source: Path, version: str, **changes: Any) -> None:
    """A copy of the model in ``source`` as ``version`` of ``task`` (manifest fields changed)."""
    shutil.copytree(source, root / task.value / version)
    manifest = Manifest.load(root / task.value / version)
    manifest.model_copy(update={"version": version, **changes}).save(root / task.value / version)


@pytest.fixture
def versions_dir(models_dir: Path, tmp_path: Path) -> Path:
    """Every task's version 1; churn also has 2 and 4 (copies) and 3 (no held-out metrics)."""
    root = tmp_path / "models"
    for task in Task:
        shutil.copytree(models_dir / task.value / "1", root / task.value / "1")
    churn = models_dir / Task.CHURN.value / "1"
    add_version(root, Task.CHURN, churn, "2")
    add_version(root, Task.CHURN, churn, "3", metrics={})
    add_version(root, Task.CHURN, churn, "4")
    return root


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty, migrated database of each kind for one test."""
    factory = migrated_sqlite_database if request.param == "sqlite" else migrated_postgres_database
    with factory() as url:
        yield url


@pytest.fixture
def db(fresh_url: str) -> Iterator[Engine]:
    engine = create_db_engine(fresh_url)
    yield engine
    engine.dispose()


def app_settings(url: str, models: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=url,
        models_dir=models,
        auth_enabled=True,
        score_writer="thread",
        alert_processor_mode="thread",
        log_level="WARNING",
        log_json=True,
        **overrides,
    )


def keys(engine: Engine) -> tuple[dict[str, str], dict[str, str]]:
    """Headers of a registrant and of a validator, both holding every scope."""
    _, registrant = create_client(engine, name="registrant", scopes=sorted(ALL_SCOPES))
    _, validator = create_client(engine, name="validator", scopes=sorted(ALL_SCOPES))
    return {"X-API-Key": registrant}, {"X-API-Key": validator}


def served(client: TestClient, task: str = "churn") -> str:
    response = client.get(f"/v1/models/{task}")
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def test_activation_reaches_a_running_app_within_a_second_and_rolls_back(
    fresh_url: str,
    db: Engine,
    versions_dir: Path,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    registrant, validator = keys(db)
    settings = app_settings(fresh_url, versions_dir)
    # Two apps on one database stand for two workers: one is told, the other must notice.
    with (
        TestClient(create_app(settings), headers=validator) as told,
        TestClient(create_app(settings), headers=validator) as other,
    ):
        assert served(told) == served(other) == "4"  # bootstrapped: the newest on disk
        for version in ("1", "2"):
            register_or_exists = told.post(
                "/v1/admin/models/churn/versions", json={"version": version}, headers=registrant
            )
            assert register_or_exists.status_code == 409  # bootstrap registered every version
        versions = told.get("/v1/models/churn/versions", headers=registrant).json()
        assert {v["version"]: v["status"] for v in versions["versions"]} == {
            "1": "candidate",
            "2": "candidate",
            "3": "candidate",
            "4": "champion",
        }
        approved = told.post(
            "/v1/admin/models/churn/versions/2/approve",
            json={"reason": "validated"},
            headers=validator,
        )
        assert approved.status_code == 200, approved.text
        activated = told.post(
            "/v1/admin/models/churn/versions/2/activate",
            json={"reason": "better out of time"},
            headers=validator,
        )
        assert activated.status_code == 200, activated.text
        # From the activation's commit (its answer), not from the request: the call itself
        # loads the model, which a busy test machine may take a while over.
        started = time.monotonic()
        assert activated.json()["replaced"] == "4"
        assert served(told) == "2"  # at once where it was activated
        while served(other) != "2":
            assert time.monotonic() - started < 1.0, "the other worker did not follow in 1 s"
            time.sleep(0.02)
        registry: ModelRegistry = told.app.state.registry  # type: ignore[attr-defined]
        model = registry.get(Task.CHURN)
        assert model is not None
        record = customer_record(sample_rows["existing"].iloc[0], model.schema)
        scored = other.post("/v1/churn/scores", json={"customers": [record]}, headers=validator)
        assert scored.status_code == 200 and scored.json()["model"]["version"] == "2"

        started = time.monotonic()
        rolled = other.post(
            "/v1/admin/models/churn/rollback", json={"reason": "complaints"}, headers=validator
        )
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["champion"]["version"] == "4"
        while served(told) != "4":
            assert time.monotonic() - started < 1.0
            time.sleep(0.02)
        trail = told.get("/v1/models/churn/versions", headers=validator).json()["transitions"]
        assert [(t["version"], t["from_status"], t["to_status"]) for t in trail[-4:]] == [
            ("4", "champion", "retired"),
            ("2", "challenger", "champion"),
            ("2", "champion", "retired"),
            ("4", "retired", "champion"),
        ]
        assert len({t["actor"] for t in trail[-4:]}) == 1  # the validator's client id
        assert trail[-1]["reason"] == "rollback: complaints"
        now = told.get("/v1/models/churn/served", headers=validator).json()
        assert now["version"] == "4"
        before = told.get(
            "/v1/models/churn/served", params={"at": "2000-01-01T00:00:00Z"}, headers=validator
        ).json()
        assert before["version"] is None


def test_the_registrant_gets_403_and_approval_without_evidence_422(
    fresh_url: str, db: Engine, versions_dir: Path
) -> None:
    registrant, validator = keys(db)
    with TestClient(create_app(app_settings(fresh_url, versions_dir)), headers=validator) as client:
        client.post("/v1/admin/models/churn/versions", json={"version": "5"}, headers=registrant)
        add_version(versions_dir, Task.CHURN, versions_dir / "churn" / "1", "5")
        added = client.post(
            "/v1/admin/models/churn/versions",
            json={"version": "5", "owner": "retention-analytics"},
            headers=registrant,
        )
        assert added.status_code == 201, added.text
        assert (added.json()["owner"], added.json()["status"]) == (
            "retention-analytics",
            "candidate",
        )
        own = client.post(
            "/v1/admin/models/churn/versions/5/approve", json={"reason": "mine"}, headers=registrant
        )
        assert (own.status_code, own.json()["code"]) == (403, "separation_of_duties")
        # Version 3 was bootstrapped (registered by the system): its manifest has no metrics.
        bare = client.post(
            "/v1/admin/models/churn/versions/3/approve", json={"reason": "ok"}, headers=validator
        )
        assert (bare.status_code, bare.json()["code"]) == (422, "evidence_missing")
        assert any("backtest" in m for m in bare.json()["missing"])
        approved = client.post(
            "/v1/admin/models/churn/versions/5/approve", json={"reason": "ok"}, headers=validator
        )
        assert approved.status_code == 200
        own_activation = client.post(
            "/v1/admin/models/churn/versions/5/activate", json={"reason": "go"}, headers=registrant
        )
        assert own_activation.status_code == 403
        assert served(client) == "4"
        statuses = client.get("/v1/models/churn/versions", headers=validator).json()["versions"]
        assert {v["version"]: v["status"] for v in statuses}["3"] == "candidate"


def test_separation_of_duties_and_evidence(db: Engine, versions_dir: Path) -> None:
    sessions = create_session_factory(db)
    with sessions() as session:
        service.register_version(
            session, models_dir=versions_dir, task=Task.CHURN, version="2", actor="amy", now=T0
        )
        service.register_version(
            session, models_dir=versions_dir, task=Task.CHURN, version="3", actor="amy", now=T0
        )
    cases: list[tuple[Callable[[Session], object], int, str]] = [
        (
            lambda s: service.approve_version(
                s, task=Task.CHURN, version="2", actor="amy", reason="r", now=T0
            ),
            403,
            "separation_of_duties",
        ),
        (
            lambda s: service.approve_version(
                s, task=Task.CHURN, version="3", actor="bob", reason="r", now=T0
            ),
            422,
            "evidence_missing",
        ),
        (
            lambda s: service.activate_version(
                s,
                models_dir=versions_dir,
                task=Task.CHURN,
                version="2",
                actor="bob",
                reason="r",
                now=T0,
            ),
            409,
            "version_not_approved",
        ),
    ]
    for call, status, code in cases:
        with sessions() as session, pytest.raises(ServiceError) as refused:
            call(session)
        assert (refused.value.status, refused.value.code) == (status, code)
    with sessions() as session:
        service.approve_version(
            session, task=Task.CHURN, version="2", actor="bob", reason="r", now=T0
        )
        with pytest.raises(ServiceError) as refused:
            service.activate_version(
                session,
                models_dir=versions_dir,
                task=Task.CHURN,
                version="2",
                actor="amy",
                reason="r",
                now=T0,
            )
        assert refused.value.status == 403
        statuses = {r.version: r.status for r in service.list_versions(session, task=Task.CHURN)}
    assert statuses == {"2": "challenger", "3": "candidate"}


def test_rollback_to_a_version_whose_file_is_gone_is_409_and_changes_nothing(
    fresh_url: str, db: Engine, versions_dir: Path
) -> None:
    _, validator = keys(db)
    with TestClient(create_app(app_settings(fresh_url, versions_dir)), headers=validator) as client:
        for version in ("2",):
            client.post(
                f"/v1/admin/models/churn/versions/{version}/approve",
                json={"reason": "ok"},
                headers=validator,
            )
        activated = client.post(
            "/v1/admin/models/churn/versions/2/activate", json={"reason": "go"}, headers=validator
        )
        assert activated.status_code == 200
        (versions_dir / "churn" / "4" / "model.txt").unlink()  # the previous champion's trees
        rolled = client.post(
            "/v1/admin/models/churn/rollback", json={"reason": "back"}, headers=validator
        )
        assert (rolled.status_code, rolled.json()["code"]) == (409, "version_unloadable")
        assert served(client) == "2"
        with create_session_factory(db)() as session:
            assert service.champions(session)[Task.CHURN] == "2"
            assert service.as_of(session, task=Task.CHURN, at=datetime.now(UTC)) == "2"


def _approved(sessions: Any, versions_dir: Path, *versions: str) -> None:
    with sessions() as session:
        service.bootstrap(session, models_dir=versions_dir, now=T0)
        for version in versions:
            service.approve_version(
                session, task=Task.CHURN, version=version, actor="val", reason="ok", now=T0
            )


def test_as_of_answers_which_version_served_at_any_past_time(
    db: Engine, versions_dir: Path
) -> None:
    sessions = create_session_factory(db)
    _approved(sessions, versions_dir, "2")
    hour = timedelta(hours=1)
    with sessions() as session:
        service.activate_version(
            session,
            models_dir=versions_dir,
            task=Task.CHURN,
            version="2",
            actor="val",
            reason="go",
            now=T0 + hour,
        )
        service.rollback(
            session,
            models_dir=versions_dir,
            task=Task.CHURN,
            actor="val",
            reason="back",
            now=T0 + 2 * hour,
        )
        answers = {
            offset: service.as_of(session, task=Task.CHURN, at=T0 + offset)
            for offset in (-hour, timedelta(0), hour / 2, hour, 1.5 * hour, 3 * hour)
        }
        assert service.as_of(session, task=Task.TIER, at=T0 + hour) == "1"
    assert answers == {
        -hour: None,
        timedelta(0): "4",
        hour / 2: "4",
        hour: "2",
        1.5 * hour: "2",
        3 * hour: "4",
    }


def test_the_trail_is_append_only_and_one_champion_is_a_database_rule(
    db: Engine, versions_dir: Path
) -> None:
    with create_session_factory(db)() as session:
        service.bootstrap(session, models_dir=versions_dir, now=T0)
    for statement in ("UPDATE model_transition SET actor = 'x'", "DELETE FROM model_transition"):
        with pytest.raises(DBAPIError), db.begin() as connection:
            connection.execute(text(statement))
    with pytest.raises(IntegrityError), db.begin() as connection:
        connection.execute(
            text("UPDATE model_version SET status = 'champion' WHERE task = 'churn'")
        )


@pytest.mark.postgres
def test_two_concurrent_activations_give_one_success_and_one_409(
    models_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    source = models_dir / "churn" / "1"
    for version in ("1", "2", "3"):
        add_version(root, Task.CHURN, source, version)
    with migrated_postgres_database() as url:
        engine = create_db_engine(url)
        sessions = create_session_factory(engine)
        _approved(sessions, root, "1", "2")
        # Both read the champion before either writes: each waits for the other's model load.
        both_loaded = threading.Barrier(2, timeout=30)
        load = service.load_version

        def load_then_wait(*args: Any, **kwargs: Any) -> Any:
            model = load(*args, **kwargs)
            both_loaded.wait()
            return model

        outcomes: dict[str, Any] = {}

        def activate(version: str) -> None:
            with sessions() as session:
                try:
                    service.activate_version(
                        session,
                        models_dir=root,
                        task=Task.CHURN,
                        version=version,
                        actor="val2",
                        reason="race",
                        now=datetime.now(UTC),
                    )
                    outcomes[version] = "ok"
                except ServiceError as error:
                    outcomes[version] = error

        service.load_version = load_then_wait
        try:
            threads = [threading.Thread(target=activate, args=(v,)) for v in ("1", "2")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        finally:
            service.load_version = load
        won = [v for v, outcome in outcomes.items() if outcome == "ok"]
        lost = [outcome for outcome in outcomes.values() if outcome != "ok"]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert isinstance(lost[0], ChampionChanged) and lost[0].status == 409
        with sessions() as session:
            assert service.champions(session)[Task.CHURN] == won[0]
            trail = service.list_transitions(session, task=Task.CHURN)
            assert [t.to_status for t in trail].count(ModelStatus.CHAMPION.value) == 2
        engine.dispose()


def test_migration_goes_down_and_up_with_rows(fresh_url: str, versions_dir: Path) -> None:
    engine = create_db_engine(fresh_url)
    with Session(engine) as session:
        service.bootstrap(session, models_dir=versions_dir, now=T0)
    migrate.downgrade(fresh_url, "0011")
    with engine.connect() as connection:
        assert not engine.dialect.has_table(connection, "model_version")
    migrate.upgrade(fresh_url)
    with Session(engine) as session:
        assert service.bootstrap(session, models_dir=versions_dir, now=T0)[Task.CHURN] == "4"
    engine.dispose()


def test_cli_registers_approves_activates_and_rolls_back(
    versions_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    url = migrated_sqlite_file(tmp_path / "cvm.db")
    monkeypatch.setenv("CVM_DATABASE_URL", url)
    monkeypatch.setenv("CVM_MODELS_DIR", str(versions_dir))
    monkeypatch.setenv("COLUMNS", "160")  # the table's cells unwrapped
    get_settings.cache_clear()
    runner = CliRunner()
    add_version(versions_dir, Task.CHURN, versions_dir / "churn" / "1", "7")
    try:
        engine = create_db_engine(url)
        with Session(engine) as session:
            service.bootstrap(session, models_dir=versions_dir, now=T0)  # 7 is newest: champion
        engine.dispose()
        add_version(versions_dir, Task.CHURN, versions_dir / "churn" / "1", "8")
        steps = [
            (["models", "register", "churn", "8", "--actor", "cli:amy"], 0),
            (["models", "approve", "churn", "8", "--reason", "ok", "--actor", "cli:amy"], 2),
            (["models", "approve", "churn", "8", "--reason", "ok", "--actor", "cli:bob"], 0),
            (["models", "activate", "churn", "8", "--reason", "go", "--actor", "cli:bob"], 0),
        ]
        for args, code in steps:
            result = runner.invoke(cli, args)
            assert result.exit_code == code, (args, result.output)
        listed = runner.invoke(cli, ["models", "list"])
        rows = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.output.splitlines()]
        churn = {r[1]: (r[2], r[3]) for r in rows if len(r) == 8 and r[0] == "churn"}
        assert churn["8"] == ("yes", "champion") and churn["7"] == ("", "retired")
        rolled = runner.invoke(cli, ["models", "rollback", "churn", "--reason", "back"])
        assert rolled.exit_code == 0, rolled.output
        assert "churn champion: 7 (was 8)" in rolled.output
    finally:
        get_settings.cache_clear()
    assert (
        json.loads((versions_dir / "churn" / "8" / "manifest.json").read_text())["version"] == "8"
    )
