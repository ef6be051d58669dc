"""Shared fixtures: a small synthetic book, tiny models trained from it, and real databases.

A test of what is stored runs twice: on a SQLite file and on a throw-away PostgreSQL database,
both at the real Alembic migrations' head; a test whose subject is decided before anything is
stored runs on SQLite alone (``ON_SQLITE_ONLY``).
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import app.tables  # noqa: F401  (every table on Base.metadata)
from app.config import Settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.feature_schema import FeatureKind, FeatureSchema
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from app.training.features import prepare_book
from app.training.synth import BOOK_FILE, read_book, write_book
from app.training.train import train_bundled
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
    temporary_postgres_database,
    temporary_sqlite_database,
)

# Start-up costs every app pays, paid hundreds of times a session here: the heap freeze's full
# collection and the console's dummy Argon2 hash at production cost. Through the environment,
# so that every Settings of the session (and of the CLI subprocesses) has them.
os.environ.setdefault("CVM_FREEZE_HEAP_AT_START", "false")
os.environ.setdefault("CVM_CONSOLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("CVM_CONSOLE_ARGON2_MEMORY_KIB", "8")

# A worker holds many long-lived objects (apps, models, books, every test module): at CPython's
# default thresholds (700, 10, 10) the cyclic collector took ~20% of its CPU, mostly in full
# collections; these cut that to ~7% (tests/test_api.py and test_security.py, one process:
# 73 -> 63 s of CPU). Cycles are still collected, less often.
gc.set_threshold(50_000, 20, 20)

# The modules that take longest, run first: `--dist loadfile` hands out modules in collection
# order, and one of these started last would leave the other workers idle at the end.
SLOWEST_FIRST = (
    "test_fuzz.py",
    "test_console_browser.py",
    "test_trail_features.py",
    "test_events.py",
    "test_cli.py",
    "test_tier_movement.py",
    "test_modelops.py",
    "test_dask.py",
    "test_consumer.py",
    "test_batch.py",
    "test_real_data.py",
    "test_security.py",
    "test_one_rule_set.py",
    "test_casework_reports.py",
    "test_notifications.py",
    "test_db.py",
    "test_shadow.py",
    "test_alerts.py",
)

TEST_CUSTOMERS = 3000
TEST_MONTHS = 15
TEST_ROUNDS = 60
TEST_CARD_ROWS = 1000  # the model cards' baseline and TreeSHAP samples


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slowest modules first (a stable sort: the order within a module is kept)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Any) -> Path:
    """A folder built by ``build`` once per test run, by whichever xdist worker asks first:
    the others wait on a lock and read it (the book and the models are seeded, so every
    worker would build the same files; each costs seconds of CPU the cores are short of)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers
    folder = root / f"shared-{name}"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def book_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seeded book, shared by every test."""

    def build(out: Path) -> None:
        write_book(out_dir=out, customers=TEST_CUSTOMERS, months=TEST_MONTHS, seed=11)

    return built_once(tmp_path_factory, "book", build) / BOOK_FILE


@pytest.fixture(scope="session")
def prepared_book(book_path: Path) -> pd.DataFrame:
    """The book with derived feature columns, as training sees it."""
    return prepare_book(read_book(book_path).to_pandas())


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, book_path: Path) -> Path:
    """Tiny versions of the four models, trained from the small book (read-only for tests).
    Each is trained once per run; the workers start on different ones, so the four train side
    by side instead of one after the other while the other workers wait."""
    tasks = list(Task)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = int(worker) % len(tasks) if worker.isdigit() else 0
    root = tmp_path_factory.mktemp("models")
    for task in tasks[start:] + tasks[:start]:

        def build(folder: Path, task: Task = task) -> None:
            train_bundled(
                task,
                book_path=book_path,
                out_dir=folder / task.value / "1",
                max_rounds=TEST_ROUNDS,
                card_rows=TEST_CARD_ROWS,
            )

        trained = built_once(tmp_path_factory, f"model-{task.value}", build)
        (root / task.value).symlink_to(trained / task.value)
    return root


def models_without(task: Task, models_dir: Path, root: Path) -> Path:
    """A models folder under ``root`` holding every task of ``models_dir`` but ``task`` (an
    app would otherwise load the registry's champion of ``task`` from disk)."""
    for other in Task:
        if other is not task:
            (root / other.value).symlink_to(models_dir / other.value)
    return root


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> ModelRegistry:
    """The tiny models, loaded once."""
    return ModelRegistry.load(models_dir)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of each kind, for the whole session."""
    factory = migrated_sqlite_database if request.param == "sqlite" else migrated_postgres_database
    with factory() as url:
        yield url


# For a test whose subject is decided before anything is stored (a refusal by validation,
# authentication, a limit or a header; the spec and the docs): the database under it is
# incidental, so it runs on SQLite alone. A test of what is stored, read, locked or migrated
# keeps both databases (PostgreSQL differs there: NUL bytes, column lengths, locks, upserts).
# About a third of the suite's time went to running such refusals a second time on PostgreSQL.
ON_SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An empty database of each kind, for the migrations' tests to build up themselves."""
    temporary = (
        temporary_postgres_database if request.param == "postgres" else temporary_sqlite_database
    )
    with temporary() as url:
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A direct connection pool to the test database, for assertions."""
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def settings_for(models_dir: Path) -> Any:
    """Build settings pointing at the tiny models and a given database."""

    def build(database_url: str, **overrides: Any) -> Settings:
        # Apps that test modules build for themselves send no credentials: authentication is
        # off unless asked for. The `client` fixture and tests/test_security.py turn it on.
        overrides.setdefault("auth_enabled", False)
        # Scores are committed by a thread of the app: a writer child process costs a second
        # or more to start per app. Tests of that process ask for it (score_writer="process").
        overrides.setdefault("score_writer", "thread")
        overrides.setdefault("alert_processor_mode", "thread")
        overrides.setdefault("log_level", "WARNING")
        # The broker's queue depth is asked for only by the tests about it.
        overrides.setdefault("event_queue_monitor_s", 0)
        # Re-assessing after material events writes beside the test's own writes (on SQLite a
        # read-then-write transaction then fails at once): on only where a test asks for it.
        overrides.setdefault("rescore_in_process", False)
        overrides.setdefault("log_json", True)
        # Each app's registry poll is two reads every half second, for the app's whole life:
        # the tests of model activation ask for it.
        overrides.setdefault("model_poll_s", 0)
        return Settings(database_url=database_url, models_dir=models_dir, **overrides)

    return build


@pytest.fixture
def client(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[TestClient]:
    """A running app on the tiny models and the parametrised database; every scope's key."""
    app = create_app(
        settings_for(database_url, auth_enabled=True, rescore_in_process=True), registry
    )
    _, key = create_client(app.state.engine, name="tests", scopes=sorted(ALL_SCOPES))
    with TestClient(app, headers={"X-API-Key": key}) as test_client:
        yield test_client


def customer_record(
    row: pd.Series, schema: FeatureSchema, customer_id: str | None = None
) -> dict[str, Any]:
    """A book row as the JSON a core banking system would send for one customer."""
    record: dict[str, Any] = {"customer_id": customer_id or f"T-{uuid.uuid4().hex[:12]}"}
    for feature in schema.features:
        value = row[feature.name]
        if feature.kind is FeatureKind.BOOLEAN:
            record[feature.name] = bool(value)
        elif feature.kind is FeatureKind.INTEGER:
            record[feature.name] = int(value)
        elif feature.kind is FeatureKind.NUMBER:
            record[feature.name] = float(value)
        else:
            record[feature.name] = str(value)
    return record


@pytest.fixture(scope="session")
def sample_rows(prepared_book: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Recent rows of existing customers, new customers and prospects."""
    last = prepared_book[prepared_book["month"] == prepared_book["month"].max() - 1]
    return {
        "existing": last[(last["lifecycle"] == "existing") & (last["history_months"] >= 3)].head(
            50
        ),
        "new": last[last["lifecycle"] == "new"].head(20),
        "prospect": last[last["lifecycle"] == "prospect"].head(20),
    }
