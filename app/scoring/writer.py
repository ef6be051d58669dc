"""Group commit: concurrent writes share one transaction, and each returns once it is durable.

A request awaiting ``write`` costs no commit of its own: one background thread takes everything
queued, inserts it in a single transaction, commits, and only then wakes the waiters. An
acknowledged write is therefore committed; a failed transaction fails every waiter in its group
and writes none of their rows.

How long a group stays open is the trade-off between latency and cost per row (each group pays
a BEGIN and a COMMIT with its fsync: about 0.5 ms together here).
Callers may *announce* a write before computing it (``announce``). A writer built with
``close_early=True`` holds a group open for ``max_wait_ms`` only while it is busy (its last
group held more than one write) or announced writes are still on their way; so a lone request
commits at once and a busy server commits in large groups.

A write may carry its request's record (``RequestRow``), inserted in the same transaction. A
record whose request id or Idempotency-Key digest is already stored marks a retry of a
committed request: that write's rows are left out of the group and its waiter gets
``AlreadyCommitted``; the rest of the group commits as usual.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine

from app.db.checkpoint import WalCheckpointer
from app.db.errors import PersistenceUnavailable, describe_db_error
from app.scoring.repository import (
    AlertCandidateRow,
    EncodedScore,
    RequestRow,
    ScoreRow,
    insert_alert_candidates,
    insert_requests,
    insert_scores,
)

logger = logging.getLogger(__name__)


class AlreadyCommitted(Exception):
    """The write's request record is already stored (a retry with the same Idempotency-Key
    or request id): none of its rows were written."""


@dataclass(frozen=True)  # no slots: callers may read it with vars() or dataclasses.asdict()
class GroupCommitStats:
    """Counters since the writer was built, for metrics."""

    groups_committed: int
    rows_committed: int
    writes_committed: int
    groups_failed: int
    rows_failed: int
    writes_queued: int


@dataclass(slots=True, eq=False)
class _PendingWrite:
    rows: Sequence[ScoreRow | EncodedScore]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    candidates: Sequence[AlertCandidateRow] = ()
    request: RequestRow | None = None


_Outcome = tuple[asyncio.Future[None], BaseException | None]


def _settle_futures(outcomes: list[_Outcome]) -> None:
    # Runs on the waiters' event loop; a waiter may have been cancelled meanwhile.
    for future, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class Announcement:
    """A write on its way to the writer (see ``GroupCommitWriter.announce``)."""

    __slots__ = ("outstanding",)

    def __init__(self) -> None:
        self.outstanding = True


class CommitWatch:
    """Whether rows are being committed: the last answer was a commit, and no write has
    waited longer than ``stall_s`` without any answer (a frozen writer, a full disk)."""

    def __init__(self, stall_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._lock = threading.Lock()
        self._outstanding = 0
        self._since = 0.0
        self._failed = False

    def taken(self) -> None:
        """A write was taken and awaits its answer."""
        with self._lock:
            if self._outstanding == 0:
                self._since = self._clock()
            self._outstanding += 1

    def answered(self, writes: int, *, committed: bool) -> None:
        """``writes`` were answered: committed, or refused by the database."""
        with self._lock:
            self._outstanding = max(0, self._outstanding - writes)
            self._since = self._clock()
            self._failed = not committed

    def forget(self) -> None:
        """The writes in flight are lost with their writer; its replacement starts afresh."""
        with self._lock:
            self._outstanding = 0
            self._failed = False

    @property
    def committing(self) -> bool:
        """False after a failed commit, or while a write waits unanswered past ``stall_s``."""
        with self._lock:
            if self._failed:
                return False
            return self._outstanding == 0 or self._clock() - self._since <= self.stall_s


class ScoreWriter(Protocol):
    """What the scoring service needs of a writer: this module's thread, or the child
    process of app/scoring/writer_process.py."""

    restarts: int

    @property
    def running(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    @property
    def committing(self) -> bool: ...

    @property
    def stats(self) -> GroupCommitStats: ...

    async def open(self) -> None: ...

    async def close(self, timeout: float) -> None: ...

    def announce(self) -> AbstractContextManager[Announcement]: ...

    async def write(
        self,
        rows: Sequence[ScoreRow | EncodedScore],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
        request: RequestRow | None = None,
    ) -> None: ...


class GroupCommitWriter:
    """Batches concurrent score writes into few transactions without weakening durability."""

    restarts = 0  # a thread that dies is not replaced: see ``alive``

    def __init__(
        self,
        engine: Engine,
        *,
        max_rows: int = 5000,
        max_wait_ms: float = 2.0,
        close_early: bool = False,
        stall_s: float = 5.0,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._engine = engine
        # SQLite: the log is checkpointed beside the commits, never inside one.
        self.checkpointer = WalCheckpointer(engine) if WalCheckpointer.applies_to(engine) else None
        self._max_rows = max_rows
        self._max_wait_s = max_wait_ms / 1000
        self._close_early = close_early
        self._condition = threading.Condition()
        self._queue: deque[_PendingWrite] = deque()
        self._queued_rows = 0
        self._announced = 0  # announced writes not yet queued
        self._gathering = False  # the writer holds a group open, waiting for more writes
        self._busy = False  # the last group held more than one write
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._groups_committed = 0
        self._rows_committed = 0
        self._writes_committed = 0
        self._groups_failed = 0
        self._rows_failed = 0
        self.watch = CommitWatch(stall_s)

    @property
    def committing(self) -> bool:
        """Whether rows are being committed (readiness)."""
        return self.watch.committing

    @property
    def running(self) -> bool:
        """Whether ``write`` is accepted (between ``start`` and ``stop``)."""
        with self._condition:
            return self._accepting

    @property
    def alive(self) -> bool:
        """Whether writes are accepted (this writer is never replaced: as ``running``)."""
        return self.running

    @property
    def stats(self) -> GroupCommitStats:
        """A consistent snapshot of the counters."""
        with self._condition:
            queued = len(self._queue)
        with self._stats_lock:
            return GroupCommitStats(
                groups_committed=self._groups_committed,
                rows_committed=self._rows_committed,
                writes_committed=self._writes_committed,
                groups_failed=self._groups_failed,
                rows_failed=self._rows_failed,
                writes_queued=queued,
            )

    async def open(self) -> None:
        """Start the writer thread (the ``ScoreWriter`` interface)."""
        self.start()

    async def close(self, timeout: float) -> None:
        """Stop off the event loop, so the last groups' waiters can still be woken."""
        await asyncio.to_thread(self.stop, timeout)

    def start(self) -> None:
        """Start the background writer thread."""
        with self._condition:
            if self._thread is not None:
                raise RuntimeError("group commit writer already started")
            self._accepting = True
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="cvm-group-commit", daemon=True)
            self._thread.start()
        if self.checkpointer is not None:
            self.checkpointer.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new writes, commit everything already queued, then end the writer thread."""
        with self._condition:
            thread = self._thread
            if thread is None:
                return
            self._accepting = False
            self._stopping = True
            self._condition.notify_all()
        thread.join(timeout)
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if thread.is_alive():
            logger.warning("group commit writer still draining after %s s", timeout)
            return
        with self._condition:
            self._thread = None

    @contextmanager
    def announce(self) -> Iterator[Announcement]:
        """Tell the writer a write is coming; pass the announcement to ``write``. Leaving the
        block without writing (an error, say) withdraws it."""
        announcement = Announcement()
        with self._condition:
            self._announced += 1
        try:
            yield announcement
        finally:
            if announcement.outstanding:
                with self._condition:
                    self._arrived(announcement)

    def _arrived(self, announcement: Announcement) -> None:
        # Holding the condition. The last outstanding write lets an open group close.
        announcement.outstanding = False
        self._announced -= 1
        if self._closes_early():
            self._condition.notify()

    def _closes_early(self) -> bool:
        # Holding the condition: an open group need not wait out max_wait.
        return self._close_early and not self._busy and self._announced == 0

    async def write(
        self,
        rows: Sequence[ScoreRow | EncodedScore],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
        request: RequestRow | None = None,
    ) -> None:
        """Return once ``rows`` are committed; raise ``PersistenceUnavailable`` if they are not.

        ``candidates`` (churn scores that call for an alert) go to the alert inbox, and
        ``request`` to the request records, in the same transaction as the rows; if that
        request is already recorded, nothing is written and ``AlreadyCommitted`` is raised.
        Cancelling the caller stops the wait, not the write: queued rows are still committed.
        """
        if not rows and request is None:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            if not self._accepting:
                raise PersistenceUnavailable("the score writer is not running")
            self._queue.append(
                _PendingWrite(
                    rows=rows, loop=loop, future=future, candidates=candidates, request=request
                )
            )
            self._queued_rows += len(rows)
            self.watch.taken()
            if announcement is not None and announcement.outstanding:
                self._arrived(announcement)
            # A writer holding a group open wakes only when it can close it: each wake-up is a
            # thread switch that competes with the requests for the GIL.
            if not self._gathering or self._queued_rows >= self._max_rows or self._closes_early():
                self._condition.notify()
        await future

    def _run(self) -> None:
        try:
            while (group := self._next_group()) is not None:
                self._commit_group(group)
        finally:
            # Normally the queue is empty here; if the thread died of something unexpected,
            # refuse new writes and fail the queued ones rather than leave waiters hanging.
            with self._condition:
                self._accepting = False
                leftovers = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
            self._settle(
                leftovers, [PersistenceUnavailable("the score writer stopped") for _ in leftovers]
            )

    def _next_group(self) -> list[_PendingWrite] | None:
        with self._condition:
            while not self._queue:
                if self._stopping:
                    return None
                self._condition.wait()
            first = self._take()
            group = [first]
            row_count = len(first.rows)
            deadline = time.monotonic() + self._max_wait_s
            self._gathering = True
            try:
                while row_count < self._max_rows:
                    if self._queue:
                        # A write is never split: its rows commit or fail together.
                        if row_count + len(self._queue[0].rows) > self._max_rows:
                            break
                        pending = self._take()
                        group.append(pending)
                        row_count += len(pending.rows)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping or self._closes_early():
                        break
                    self._condition.wait(remaining)
            finally:
                self._gathering = False
            self._busy = len(group) > 1
            return group

    def _take(self) -> _PendingWrite:
        # Holding the condition.
        pending = self._queue.popleft()
        self._queued_rows -= len(pending.rows)
        return pending

    def _commit_group(self, group: list[_PendingWrite]) -> None:
        rows_in_group = sum(len(pending.rows) for pending in group)
        try:
            written = self._insert_and_commit(group)
        except Exception as exc:
            reason = describe_db_error(exc)
            logger.error(
                "score group of %d writes (%d rows) rolled back: %s",
                len(group),
                rows_in_group,
                reason,
            )
            self._count_failure(rows_in_group)
            self.watch.answered(len(group), committed=False)
            errors: list[BaseException] = []
            for _ in group:
                # One exception object per waiter: tracebacks are mutated when raised.
                error = PersistenceUnavailable(f"could not commit the scores: {reason}")
                error.__cause__ = exc
                errors.append(error)
            self._settle(group, errors)
            return
        self._count_success(rows=sum(len(p.rows) for p in written), writes=len(written))
        self.watch.answered(len(group), committed=True)
        kept = set(written)
        self._settle(
            group,
            [
                None if p in kept else AlreadyCommitted("the request is already committed")
                for p in group
            ],
        )

    def _insert_and_commit(self, group: Sequence[_PendingWrite]) -> list[_PendingWrite]:
        """Commit the group's request records, rows and candidates; returns the writes whose
        rows were written (the others retry a request already committed)."""
        # engine.begin() commits on success and rolls back on any error, so a failed group
        # leaves nothing behind and its connection returns clean to the pool.
        with self._engine.begin() as connection:
            requests = [p.request for p in group if p.request is not None]
            written = list(group)
            if requests:
                inserted = insert_requests(
                    connection, rows=requests, committed_at=datetime.now(UTC)
                )
                written = [
                    p for p in group if p.request is None or p.request["request_id"] in inserted
                ]
            insert_scores(connection, rows=[row for p in written for row in p.rows])
            insert_alert_candidates(
                connection, rows=[candidate for p in written for candidate in p.candidates]
            )
        return written

    @staticmethod
    def _settle(group: Sequence[_PendingWrite], errors: Sequence[BaseException | None]) -> None:
        """Wake the waiters: one call per event loop, not per waiter (each call is a wake-up
        write to the loop's self-pipe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for pending, error in zip(group, errors, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, error))
        for loop, outcomes in by_loop.items():
            # RuntimeError: the waiters' event loop is closed, so nobody is left to tell.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_futures, outcomes)

    def _count_success(self, *, rows: int, writes: int) -> None:
        with self._stats_lock:
            self._groups_committed += 1
            self._rows_committed += rows
            self._writes_committed += writes

    def _count_failure(self, rows: int) -> None:
        with self._stats_lock:
            self._groups_failed += 1
            self._rows_failed += rows
