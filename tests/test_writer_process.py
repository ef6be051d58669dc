"""The score writer in a child process: same contract as the thread (acknowledged means
committed, a failed group writes nothing), plus what a second process adds: its death fails
the writes in flight and a new child takes over; closing drains what was sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from app.db.errors import OutcomeUnknown, PersistenceUnavailable
from app.db.session import create_db_engine
from app.scoring.repository import AlertCandidateRow
from app.scoring.tables import Score
from app.scoring.writer import CommitWatch, GroupCommitWriter
from app.scoring.writer_process import ProcessWriter, build_score_writer
from tests.db_support import migrated_sqlite_file, sqlite_file_url
from tests.test_db import make_row


@contextlib.asynccontextmanager
async def opened(writer: ProcessWriter) -> AsyncIterator[ProcessWriter]:
    """The writer between open and close (which drains it)."""
    await writer.open()
    try:
        yield writer
    finally:
        await writer.close(timeout=30)


def score_count(engine: Engine, customer_ids: list[str]) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(Score).where(Score.customer_id.in_(customer_ids))
        return int(connection.scalar(query) or 0)


def test_acknowledged_writes_are_committed_with_their_alert_candidates(
    database_url: str, settings_for: Any, engine: Engine
) -> None:
    settings = settings_for(database_url)
    writer = ProcessWriter(settings)
    prefix = secrets.token_hex(4)
    ids = [f"{prefix}-{i}" for i in range(40)]
    risky = f"{prefix}-risky"

    async def main() -> None:
        async with opened(writer):
            await asyncio.gather(*(writer.write([make_row(customer_id=c)]) for c in ids))
            for customer_id in ids[::10]:  # acknowledged: visible to another connection now
                assert await asyncio.to_thread(score_count, engine, [customer_id]) == 1
            # Plain rows: the child inserts the candidate beside the score, in its transaction.
            candidate = AlertCandidateRow(
                request_id="r-1",
                customer_id=risky,
                tenant="bank-a",
                stage="existing",
                probability=0.97,
                band="high",
                reasons=[{"feature": "tenure_months", "value": -0.4}],
                model_version="1",
                source="api",
                created_at=datetime.now(UTC),
            )
            await writer.write([make_row(customer_id=risky)], candidates=[candidate])

    asyncio.run(main())
    assert score_count(engine, [*ids, risky]) == 41
    with engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT tenant, stage, probability, band, reasons FROM score_alert_candidate "
                "WHERE customer_id = :c"
            ),
            {"c": risky},
        ).all()
        connection.execute(
            text("DELETE FROM score_alert_candidate WHERE customer_id = :c"), {"c": risky}
        )
        connection.commit()
    ((tenant, stage, probability, band, reasons),) = stored
    assert (tenant, stage, round(probability, 2), band) == ("bank-a", "existing", 0.97, "high")
    assert "tenure_months" in str(reasons)
    stats = writer.stats
    assert (stats.writes_committed, stats.rows_committed, stats.writes_queued) == (41, 41, 0)
    assert 1 <= stats.groups_committed <= 41
    assert not writer.running


@pytest.fixture
def sqlite_writer(tmp_path: Any, settings_for: Any) -> Iterator[tuple[Engine, ProcessWriter]]:
    """A migrated SQLite file of this test's own and a (not yet opened) writer process on it."""
    url = migrated_sqlite_file(tmp_path / "writer.db")
    engine = create_db_engine(url)
    yield engine, ProcessWriter(settings_for(url))
    engine.dispose()


def test_failed_group_writes_nothing_and_the_writer_recovers(
    sqlite_writer: tuple[Engine, ProcessWriter],
) -> None:
    engine, writer = sqlite_writer

    async def main() -> None:
        async with opened(writer):
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE score RENAME TO score_away"))
            with pytest.raises(PersistenceUnavailable, match="could not commit the scores"):
                await writer.write([make_row(customer_id="lost-1"), make_row(customer_id="lost-2")])
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE score_away RENAME TO score"))
            await writer.write([make_row(customer_id="kept")])

    asyncio.run(main())
    assert score_count(engine, ["lost-1", "lost-2"]) == 0
    assert score_count(engine, ["kept"]) == 1
    assert (writer.stats.groups_failed, writer.stats.rows_failed) == (1, 2)


def test_signals_leave_the_child_alone_but_a_dead_one_is_replaced(
    sqlite_writer: tuple[Engine, ProcessWriter],
) -> None:
    engine, writer = sqlite_writer

    async def main() -> None:
        async with opened(writer):
            first = writer.pid
            assert first is not None
            os.kill(first, signal.SIGINT)  # Ctrl-C reaches the whole process group
            os.kill(first, signal.SIGTERM)
            await writer.write([make_row(customer_id="after-signals")])
            assert writer.pid == first and writer.restarts == 0
            os.kill(first, signal.SIGSTOP)  # the write below reaches a child that cannot answer
            in_flight = asyncio.create_task(writer.write([make_row(customer_id="unknown")]))
            await asyncio.sleep(0.2)
            assert not in_flight.done()
            os.kill(first, signal.SIGKILL)
            # Taken by the child, never confirmed: whether it committed is unknown to the caller.
            with pytest.raises(OutcomeUnknown, match="stopped before confirming"):
                await in_flight
            deadline = time.monotonic() + 30
            while not (writer.running and writer.pid != first):
                assert time.monotonic() < deadline, "no new writer process"
                await asyncio.sleep(0.05)
            assert writer.restarts == 1
            await writer.write([make_row(customer_id="after")])

    asyncio.run(main())
    assert score_count(engine, ["unknown"]) == 0  # stopped before it could read the write
    assert score_count(engine, ["after-signals", "after"]) == 2


def test_close_commits_every_write_already_sent(
    sqlite_writer: tuple[Engine, ProcessWriter],
) -> None:
    engine, writer = sqlite_writer
    ids = [f"drain-{i}" for i in range(30)]

    async def main() -> None:
        await writer.open()
        writes = [asyncio.create_task(writer.write([make_row(customer_id=c)])) for c in ids]
        await asyncio.sleep(0)  # every write is on the wire
        await writer.close(timeout=30)
        await asyncio.gather(*writes)  # all acknowledged, none failed
        with pytest.raises(PersistenceUnavailable, match="not running"):
            await writer.write([make_row(customer_id="late")])

    asyncio.run(main())
    assert score_count(engine, ids) == 30
    assert score_count(engine, ["late"]) == 0


def test_the_settings_choose_the_writer(tmp_path: Any, settings_for: Any) -> None:
    url = sqlite_file_url(tmp_path / "choice.db")
    file_engine = create_db_engine(url)
    memory_engine = create_db_engine("sqlite://")
    try:
        chosen = settings_for(url, score_writer="process")
        assert isinstance(build_score_writer(chosen, file_engine), ProcessWriter)
        threaded = settings_for(url, score_writer="thread")
        assert isinstance(build_score_writer(threaded, file_engine), GroupCommitWriter)
        # A database that lives in this process cannot be written from another.
        in_memory = settings_for("sqlite://")
        assert isinstance(build_score_writer(in_memory, memory_engine), GroupCommitWriter)
    finally:
        file_engine.dispose()
        memory_engine.dispose()


def test_a_writer_process_that_cannot_start_fails_the_start_up(
    sqlite_writer: tuple[Engine, ProcessWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = sqlite_writer
    monkeypatch.setattr("sys.executable", "/bin/false")  # exits before saying it is ready

    async def main() -> None:
        with pytest.raises(RuntimeError, match="did not start"):
            await writer.open()
        assert not writer.running
        with pytest.raises(PersistenceUnavailable, match="not running"):
            await writer.write([make_row()])

    asyncio.run(main())


def test_commit_watch_says_when_rows_stop_being_committed() -> None:
    now = [0.0]
    watch = CommitWatch(5.0, clock=lambda: now[0])
    assert watch.committing  # nothing waits
    watch.taken()
    now[0] = 4.9
    assert watch.committing
    now[0] = 5.1
    assert not watch.committing  # a write waits past the stall time: frozen
    watch.answered(1, committed=True)
    assert watch.committing
    watch.taken()
    watch.answered(1, committed=False)
    assert not watch.committing  # the last commit failed (a full disk)
    watch.taken()
    watch.answered(1, committed=True)
    assert watch.committing
    watch.taken()
    watch.forget()  # its writer died: the replacement starts afresh
    now[0] = 100.0
    assert watch.committing
