"""Persistence layer on a SQLite file and on a throw-away PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import migrate
from app.db.base import Base
from app.db.checkpoint import WRITER_CACHE_KIB, WalCheckpointer
from app.db.errors import PersistenceUnavailable
from app.db.session import (
    create_db_engine,
    create_session_factory,
    database_is_reachable,
    writing,
)
from app.scoring.repository import ScoreRow, insert_scores, list_scores
from app.scoring.tables import Score, score_table
from app.scoring.writer import GroupCommitWriter
from tests.db_support import TcpProxy, sqlite_file_url, temporary_postgres_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def make_row(
    *,
    customer_id: str = "c-1",
    task: str = "churn",
    created_at: datetime = T0,
    request_id: str | None = None,
) -> ScoreRow:
    return ScoreRow(
        request_id=request_id or secrets.token_hex(8),
        task=task,
        customer_id=customer_id,
        model_name="churn-lgbm",
        model_version="1",
        source="api",
        stage="existing",
        probability=None,
        band=None,
        alert=False,
        outputs={"churn_proba": 0.125, "risk_band": "low", "top": [1, 2.5, None]},
        reasons=[{"feature": "tenure_months", "contribution": -0.31, "label": "Ancienneté"}],
        features={"tenure_months": 48, "balance": 1234.5, "segment": None},
        created_at=created_at,
    )


def count_rows(engine: Engine, *, request_ids: set[str] | None = None) -> int:
    query = select(func.count()).select_from(Score)
    if request_ids is not None:
        query = query.where(Score.request_id.in_(request_ids))
    with engine.connect() as connection:
        return connection.scalar(query) or 0


def schema_drift(url: str) -> list[Any]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database of each backend."""
    if request.param == "sqlite":
        yield sqlite_file_url(tmp_path / "db" / "cvm.db")
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture(scope="module", params=BACKENDS)
def migrated_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per backend, shared by the tests of this module."""
    if request.param == "sqlite":
        url = sqlite_file_url(tmp_path_factory.mktemp("sqlite") / "cvm.db")
        migrate.upgrade(url)
        yield url
    else:
        with temporary_postgres_database() as url:
            migrate.upgrade(url)
            yield url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    """An engine on the shared database, emptied before each test."""
    engine = create_db_engine(migrated_url)
    with engine.begin() as connection:
        connection.execute(score_table.delete())
    yield engine
    engine.dispose()


# --- migrations ---------------------------------------------------------------------------


def test_migrations_go_up_down_and_up_again_without_drift(fresh_url: str) -> None:
    assert migrate.current(fresh_url) is None

    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.head()
    assert schema_drift(fresh_url) == []

    migrate.downgrade(fresh_url, "base")
    assert migrate.current(fresh_url) is None
    engine = create_db_engine(fresh_url)
    try:
        assert "score" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()

    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.head()
    assert schema_drift(fresh_url) == []


def test_tables_follow_the_naming_convention(migrated_url: str) -> None:
    engine = create_db_engine(migrated_url)
    try:
        inspector = inspect(engine)
        indexes = {index["name"] for index in inspector.get_indexes("score")}
        primary_key = inspector.get_pk_constraint("score")["name"]
    finally:
        engine.dispose()
    assert indexes == {"ix_score_request_id", "ix_score_customer_id_task_created_at"}
    if make_url(migrated_url).get_backend_name() == "postgresql":  # SQLite drops PK names
        assert primary_key == "pk_score"


# --- engine ----------------------------------------------------------------------------------


def test_sqlite_engine_is_durable_and_creates_its_folder(tmp_path: Path) -> None:
    engine = create_db_engine(sqlite_file_url(tmp_path / "nested" / "folder" / "cvm.db"))
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys")
            }
        assert database_is_reachable(engine)
    finally:
        engine.dispose()
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}  # 2 = FULL
    assert (tmp_path / "nested" / "folder").is_dir()


def test_reachability_is_reported_without_raising(engine: Engine, tmp_path: Path) -> None:
    assert database_is_reachable(engine)
    down_postgres = create_db_engine("postgresql+psycopg://postgres@127.0.0.1:1/cvm")
    (tmp_path / "a-directory.db").mkdir()
    unopenable_sqlite = create_db_engine(sqlite_file_url(tmp_path / "a-directory.db"))
    try:
        assert not database_is_reachable(down_postgres)
        assert not database_is_reachable(unopenable_sqlite)
    finally:
        down_postgres.dispose()
        unopenable_sqlite.dispose()


# --- repository ------------------------------------------------------------------------------


def test_insert_and_list_scores_round_trip_newest_first(engine: Engine) -> None:
    churn = [make_row(created_at=T0 + timedelta(minutes=i)) for i in range(5)]
    tier = [make_row(task="tier", created_at=T0 + timedelta(hours=1))]
    other_customer = [make_row(customer_id="c-2")]
    session_factory = create_session_factory(engine)
    with session_factory() as session:
        assert insert_scores(session, rows=churn + tier) == 6
        assert insert_scores(session, rows=[]) == 0
        session.commit()
    with engine.begin() as connection:
        insert_scores(connection, rows=other_customer)

    with session_factory() as session:
        first_page, total = list_scores(session, customer_id="c-1", task="churn", limit=2, offset=0)
        last_page, _ = list_scores(session, customer_id="c-1", task="churn", limit=2, offset=4)
        every_task, total_every_task = list_scores(session, customer_id="c-1", limit=10)
        nobody, total_nobody = list_scores(session, customer_id="c-404", task=None)

    assert total == 5
    assert [score.request_id for score in first_page] == [
        churn[4]["request_id"],
        churn[3]["request_id"],
    ]
    assert [score.request_id for score in last_page] == [churn[0]["request_id"]]
    assert total_every_task == 6
    assert every_task[0].task == "tier"
    assert (nobody, total_nobody) == ([], 0)

    stored = first_page[0]
    assert stored.id > 0
    assert stored.outputs == churn[4]["outputs"]
    assert stored.reasons == churn[4]["reasons"]
    assert stored.features == churn[4]["features"]
    assert (stored.model_name, stored.model_version) == ("churn-lgbm", "1")
    assert stored.created_at == T0 + timedelta(minutes=4)
    assert stored.created_at.tzinfo is not None


def test_numpy_values_and_other_timezones_are_stored_faithfully(engine: Engine) -> None:
    paris = datetime(2026, 11, 1, 10, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    row = make_row(created_at=paris)
    row["outputs"] = {"proba": np.float32(0.5), "classes": np.array([1, 2, 3]), "n": np.int64(7)}
    with engine.begin() as connection:
        insert_scores(connection, rows=[row])
    with create_session_factory(engine)() as session:
        (stored,), _ = list_scores(session, customer_id="c-1", limit=1)
    assert stored.outputs == {"proba": 0.5, "classes": [1, 2, 3], "n": 7}
    assert stored.created_at == paris
    assert stored.created_at.utcoffset() == timedelta(0)


def test_the_fast_insert_path_stores_timestamps_as_the_core_insert_does(engine: Engine) -> None:
    # Stored forms that differ (SQLite keeps text) would sort and compare differently.
    stamp = datetime(2026, 11, 1, 10, 30, 15, 123456, tzinfo=UTC)
    with engine.begin() as connection:
        insert_scores(connection, rows=[make_row(request_id="fast", created_at=stamp)])
        connection.execute(score_table.insert(), [make_row(request_id="core", created_at=stamp)])
        stored: dict[str, str] = dict(
            connection.execute(text("SELECT request_id, CAST(created_at AS TEXT) FROM score")).all()
        )
        at_stamp = connection.scalars(
            select(score_table.c.request_id).where(score_table.c.created_at == stamp)
        ).all()
    assert stored["fast"] == stored["core"]
    assert sorted(at_stamp) == ["core", "fast"]


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="naive datetime"), engine.begin() as connection:
        insert_scores(connection, rows=[make_row(created_at=datetime(2026, 11, 1))])


def test_negative_pagination_is_refused(engine: Engine) -> None:
    with create_session_factory(engine)() as session, pytest.raises(ValueError):
        list_scores(session, customer_id="c-1", limit=-1)


# --- group commit ----------------------------------------------------------------------------


def test_concurrent_writes_share_few_transactions_and_are_durable_when_acknowledged(
    engine: Engine,
) -> None:
    calls = 200
    rows_per_call = [1 + i % 3 for i in range(calls)]
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=2.0)
    reader = create_db_engine(str(engine.url.render_as_string(hide_password=False)))

    async def one_call(i: int) -> None:
        rows = [make_row(customer_id=f"c-{i}") for _ in range(rows_per_call[i])]
        await writer.write(rows)
        if i % 20 == 0:
            # Acknowledged means committed: another connection must see the rows now.
            ids = {row["request_id"] for row in rows}
            assert await asyncio.to_thread(count_rows, reader, request_ids=ids) == len(rows)

    async def main() -> None:
        await asyncio.gather(*(one_call(i) for i in range(calls)))

    writer.start()
    try:
        asyncio.run(main())
    finally:
        writer.stop()
        reader.dispose()

    stats = writer.stats
    assert stats.groups_committed < calls
    assert stats.writes_committed == calls
    assert stats.rows_committed == sum(rows_per_call) == count_rows(engine)
    assert (stats.groups_failed, stats.writes_queued) == (0, 0)
    assert vars(stats)["groups_committed"] == stats.groups_committed  # metrics read it so


def test_max_rows_bounds_a_group_but_never_splits_a_write(engine: Engine) -> None:
    writer = GroupCommitWriter(engine, max_rows=5, max_wait_ms=50)

    async def main() -> None:
        await asyncio.gather(*(writer.write([make_row() for _ in range(3)]) for _ in range(4)))
        await writer.write([make_row() for _ in range(12)])  # larger than max_rows: one group

    writer.start()
    try:
        asyncio.run(main())
    finally:
        writer.stop()
    assert writer.stats.groups_committed == 5  # 3 + 3 would exceed 5 rows
    assert count_rows(engine) == 24


def test_announced_writes_share_a_group_and_a_lone_write_does_not_wait(engine: Engine) -> None:
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=2_000, close_early=True)

    async def announced_call(i: int) -> None:
        with writer.announce() as announcement:
            if i == 0:
                await asyncio.sleep(0.2)  # still "computing" while the others have written
            await writer.write([make_row(customer_id=f"c-{i}")], announcement=announcement)

    async def withdrawn_call() -> None:
        with pytest.raises(RuntimeError), writer.announce():
            await asyncio.sleep(0.05)
            raise RuntimeError("invalid input: nothing to write")

    async def timed(*calls: Awaitable[Any]) -> float:
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*calls)
        return asyncio.get_running_loop().time() - started

    async def main() -> tuple[float, float]:
        # The group stays open for the late call, not for the withdrawn one, and closes as
        # soon as the late call's rows arrive: well before max_wait.
        announced_s = await timed(*(announced_call(i) for i in range(4)), withdrawn_call())
        # Right after a busy group the writer may hold the next one open (up to max_wait);
        # once a group held a single write, a lone write commits at once.
        await writer.write([make_row(customer_id="after-the-burst")])
        lone_s = await timed(writer.write([make_row(customer_id="lone")]))
        return announced_s, lone_s

    writer.start()
    try:
        announced_s, lone_s = asyncio.run(asyncio.wait_for(main(), timeout=30))
    finally:
        writer.stop()
    assert count_rows(engine) == 6
    assert announced_s < 1.5
    assert lone_s < 1.0
    assert (writer.stats.writes_committed, writer.stats.groups_committed) == (6, 3)


def test_stop_commits_what_is_queued_then_refuses_writes(engine: Engine) -> None:
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=20)
    rows = [make_row() for _ in range(30)]

    async def main() -> None:
        tasks = [asyncio.create_task(writer.write([row])) for row in rows]
        await asyncio.sleep(0)  # let every task enqueue
        writer.stop()
        await asyncio.gather(*tasks)
        with pytest.raises(PersistenceUnavailable, match="not running"):
            await writer.write([make_row()])

    writer.start()
    asyncio.run(main())
    assert count_rows(engine) == 30
    assert not writer.running


def test_a_failed_group_fails_every_waiter_writes_nothing_and_does_not_poison_the_next(
    engine: Engine,
) -> None:
    # A long wait gathers every write below into one group.
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=300)
    good = [make_row() for _ in range(10)]
    bad = cast(ScoreRow, {**make_row(), "task": None})  # violates NOT NULL

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(
            *(writer.write([row]) for row in [*good[:5], bad, *good[5:]]), return_exceptions=True
        )
        await writer.write([make_row(request_id="after-the-failure")])
        return results

    writer.start()
    try:
        results = asyncio.run(main())
    finally:
        writer.stop()

    assert len(results) == 11
    assert all(isinstance(result, PersistenceUnavailable) for result in results)
    assert count_rows(engine, request_ids={row["request_id"] for row in good}) == 0
    assert count_rows(engine) == 1
    stats = writer.stats
    assert (stats.groups_failed, stats.rows_failed) == (1, 11)
    assert (stats.groups_committed, stats.rows_committed) == (1, 1)


def test_writer_recovers_once_a_dropped_table_is_back(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    engine = create_db_engine(fresh_url)
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=50)
    lost = [make_row() for _ in range(5)]

    async def main() -> list[BaseException | None]:
        await writer.write([make_row(request_id="before")])
        await asyncio.to_thread(migrate.downgrade, fresh_url, "base")
        results = await asyncio.gather(
            *(writer.write([row]) for row in lost), return_exceptions=True
        )
        await asyncio.to_thread(migrate.upgrade, fresh_url)
        await writer.write([make_row(request_id="after")])
        return results

    writer.start()
    try:
        results = asyncio.run(main())
        assert all(isinstance(result, PersistenceUnavailable) for result in results)
        with engine.connect() as connection:
            assert connection.scalars(select(Score.request_id)).all() == ["after"]
    finally:
        writer.stop()
        engine.dispose()


def test_unopenable_sqlite_file_fails_waiters_until_it_can_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "cvm.db"
    path.mkdir()  # a directory where the database file should be: cannot be opened
    url = sqlite_file_url(path)
    engine = create_db_engine(url)
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=50)

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(
            *(writer.write([make_row()]) for _ in range(5)), return_exceptions=True
        )
        path.rmdir()
        await asyncio.to_thread(migrate.upgrade, url)
        await writer.write([make_row(request_id="after")])
        return results

    writer.start()
    try:
        results = asyncio.run(main())
        assert all(isinstance(result, PersistenceUnavailable) for result in results)
        assert "unable to open database file" in str(results[0])
        with engine.connect() as connection:
            assert connection.scalars(select(Score.request_id)).all() == ["after"]
    finally:
        writer.stop()
        engine.dispose()


@pytest.mark.postgres
def test_unreachable_postgres_fails_every_waiter() -> None:
    engine = create_db_engine("postgresql+psycopg://postgres@127.0.0.1:1/cvm")
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=50)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(
            *(writer.write([make_row()]) for _ in range(20)), return_exceptions=True
        )

    writer.start()
    try:
        results = asyncio.run(main())
        assert writer.running
    finally:
        writer.stop()
        engine.dispose()
    assert all(isinstance(result, PersistenceUnavailable) for result in results)
    assert "OperationalError" in str(results[0])
    assert writer.stats.rows_committed == 0


@pytest.mark.postgres
def test_postgres_outage_fails_waiters_and_the_writer_recovers_when_it_returns() -> None:
    with temporary_postgres_database() as direct_url:
        migrate.upgrade(direct_url)
        proxy = TcpProxy("127.0.0.1", make_url(direct_url).port or 5432)
        proxy.start()
        proxied_url = make_url(direct_url).set(host="127.0.0.1", port=proxy.port)
        engine = create_db_engine(proxied_url.render_as_string(hide_password=False))
        writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=20)
        lost = [make_row() for _ in range(10)]

        async def main() -> list[BaseException | None]:
            await writer.write([make_row(request_id="before")])  # leaves a pooled connection
            proxy.stop()  # the server goes away, severing that connection
            results = await asyncio.gather(
                *(writer.write([row]) for row in lost), return_exceptions=True
            )
            assert not await asyncio.to_thread(database_is_reachable, engine)
            proxy.start()
            await writer.write([make_row(request_id="after")])
            return results

        writer.start()
        try:
            results = asyncio.run(main())
        finally:
            writer.stop()
            engine.dispose()
            proxy.stop()

        assert all(isinstance(result, PersistenceUnavailable) for result in results)
        direct = create_db_engine(direct_url)
        try:
            with direct.connect() as connection:
                stored = connection.scalars(select(Score.request_id).order_by(Score.id)).all()
        finally:
            direct.dispose()
        assert stored == ["before", "after"]


def test_sqlite_log_is_checkpointed_beside_the_commits_not_inside_them(tmp_path: Path) -> None:
    """The writer's connections never checkpoint in a commit (a 9 ms stall for the whole
    group); its checkpointer thread copies the log into the database file instead."""
    url = sqlite_file_url(tmp_path / "wal.db")
    migrate.upgrade(url)
    engine = create_db_engine(url)
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=0)
    assert writer.checkpointer is not None
    autocheckpoint: list[int] = []
    cache_sizes: list[int] = []

    async def main() -> None:
        # ~2,000 pages of log: past SQLite's automatic checkpoint at 1,000.
        for _ in range(40):
            await writer.write([make_row() for _ in range(100)])

    writer.start()
    try:
        asyncio.run(main())
        done = writer.checkpointer.checkpoints
        deadline = time.monotonic() + 10
        while writer.checkpointer.checkpoints < done + 2:  # one full round after the writes
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        with engine.connect() as connection:
            busy, log_pages, copied = connection.exec_driver_sql(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).one()
        assert count_rows(engine) == 4000
        # The writer's connections are the engine's: each one is set up on connect.
        with engine.connect() as connection:
            autocheckpoint.append(
                connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
            )
            cache_sizes.append(connection.exec_driver_sql("PRAGMA cache_size").scalar_one())
    finally:
        writer.stop()
        engine.dispose()
    assert set(autocheckpoint) == {0}
    assert set(cache_sizes) == {-WRITER_CACHE_KIB}  # negative: KiB rather than pages
    assert busy == 0 and log_pages > 1000 and copied == log_pages  # nothing left to copy


def test_sqlite_log_stays_bounded_under_sustained_writes_and_a_reader(tmp_path: Path) -> None:
    """A reader holding a snapshot keeps PASSIVE checkpoints from resetting the log, which then
    grows with every commit; past the limit the checkpointer truncates it once it can."""
    url = sqlite_file_url(tmp_path / "bounded.db")
    migrate.upgrade(url)
    engine = create_db_engine(url)
    checkpointer = WalCheckpointer(engine, interval_s=3600, wal_limit_bytes=256 * 1024)
    writer = GroupCommitWriter(engine, max_rows=5000, max_wait_ms=0)
    writer.checkpointer = checkpointer

    async def write(batches: int) -> None:
        for _ in range(batches):
            await writer.write([make_row() for _ in range(100)])

    writer.start()
    try:
        reader = engine.connect()  # its first statement begins a transaction: a snapshot
        reader.exec_driver_sql("SELECT count(*) FROM score").one()
        asyncio.run(write(30))
        checkpointer.checkpoint()  # PASSIVE or TRUNCATE: the reader keeps the log alive
        assert checkpointer.wal_bytes() > checkpointer.wal_limit_bytes
        reader.rollback()
        reader.close()
        checkpointer.checkpoint()  # past the limit: truncated
        assert checkpointer.wal_bytes() <= checkpointer.wal_limit_bytes
        asyncio.run(write(2))
        checkpointer.checkpoint()
        assert checkpointer.wal_bytes() <= checkpointer.wal_limit_bytes
        assert count_rows(engine) == 3200
    finally:
        writer.stop()
        engine.dispose()


def test_no_checkpointer_where_there_is_no_log() -> None:
    memory = create_db_engine("sqlite://")
    try:
        assert GroupCommitWriter(memory).checkpointer is None
    finally:
        memory.dispose()


def _read_then_write_beside_a_commit(
    tmp_path: Path,
    *,
    declared: bool,
    after_commit: bool = False,
    session_scope: Callable[[], AbstractContextManager[Session]] | None = None,
) -> list[int]:
    """A unit of work reads, another connection inserts and commits, the unit then writes:
    the rows stored at the end (``after_commit``: in the unit's second transaction). The unit
    is a session of ``session_scope`` when given (on the same file), else of this engine."""
    engine = create_db_engine(sqlite_file_url(tmp_path / "lock.db"))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        other_done = threading.Event()

        def other_writer() -> None:
            with engine.begin() as connection:  # waits for a declared writer's lock
                connection.exec_driver_sql("INSERT INTO t VALUES (2)")
            other_done.set()

        with (session_scope or create_session_factory(engine))() as session:
            if declared:
                writing(session)
            if after_commit:
                session.execute(text("SELECT 1")).scalar_one()
                session.commit()
            session.execute(text("SELECT count(*) FROM t")).scalar_one()
            thread = threading.Thread(target=other_writer)
            thread.start()
            other_done.wait(0.3)  # an undeclared reader lets the other commit now
            session.execute(text("INSERT INTO t VALUES (1)"))
            session.commit()
        thread.join(10)
        with engine.connect() as connection:
            return sorted(connection.exec_driver_sql("SELECT x FROM t").scalars())
    finally:
        engine.dispose()


def test_a_declared_writer_on_sqlite_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    """SQLite fails a deferred read-then-write transaction at once (no busy wait) when another
    connection committed after its first read; ``writing`` takes the lock up front."""
    with pytest.raises(OperationalError, match="locked"):
        _read_then_write_beside_a_commit(tmp_path / "deferred", declared=False)
    assert _read_then_write_beside_a_commit(tmp_path / "declared", declared=True) == [1, 2]
    # A console post commits the session's idle clock, then does its work: still declared.
    later = _read_then_write_beside_a_commit(tmp_path / "later", declared=True, after_commit=True)
    assert later == [1, 2]


def test_a_cli_command_s_session_is_a_declared_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the CLI that writes opens its session through ``database_session``:
    beside a running service's commit it waits for the lock rather than failing."""
    from app.cli.app import database_session
    from app.config import get_settings

    def beside_a_commit(folder: Path, *, writes: bool) -> list[int]:
        monkeypatch.setenv("CVM_DATABASE_URL", sqlite_file_url(folder / "lock.db"))
        get_settings.cache_clear()
        return _read_then_write_beside_a_commit(
            folder, declared=False, session_scope=lambda: database_session(writes=writes)
        )

    try:
        assert beside_a_commit(tmp_path / "writes", writes=True) == [1, 2]
        with pytest.raises(OperationalError, match="locked"):
            beside_a_commit(tmp_path / "reads", writes=False)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_service_s_pool_is_sized_by_its_settings(
    database_url: str, settings_for: Any, registry: Any
) -> None:
    """Each process's PostgreSQL pool is the deployment's to size (``CVM_DB_POOL_SIZE``,
    ``CVM_DB_MAX_OVERFLOW``), so that replicas x processes fit the server's max_connections."""
    from pydantic import ValidationError

    from app.config import Settings
    from app.db import session as session_module
    from app.http.app import create_app

    app = create_app(settings_for(database_url, db_pool_size=3, db_max_overflow=1), registry)
    engine: Engine = app.state.engine
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        held = [engine.connect() for _ in range(4)]
        assert engine.pool.overflow() == 1  # type: ignore[attr-defined]
        for connection in held:
            connection.close()
    finally:
        engine.dispose()
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(db_pool_size=0)
    # The service's defaults are those of the engines built without settings (CLI, batch).
    defaults = Settings.model_fields
    assert defaults["db_pool_size"].default == session_module.POSTGRES_POOL_SIZE
    assert defaults["db_max_overflow"].default == session_module.POSTGRES_MAX_OVERFLOW
