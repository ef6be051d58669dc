"""Group commit in a child process, so that saving scores does not hold the service's GIL.

One uvicorn worker runs its requests on one event loop under one GIL. The group-commit thread
(app/scoring/writer.py) shares that GIL: encoding each row's JSON and SQLAlchemy's own Python
work are time every request waits, while the machine's other core
idles. ``ProcessWriter`` keeps the same contract (``write`` returns once the rows are
committed, and raises ``PersistenceUnavailable`` when they are not) but runs that writer in a
child process: the request path encodes its rows' JSON once, as it would for the database,
and waits for the child's acknowledgement, which is sent after the commit.

The wire is a socket pair carrying length-prefixed frames: the child's configuration (the
database URL and group size, as plain values), then one frame per write from the service: its
score rows and alert candidates, plain data (pickled: the child is our own process on a
private socket, and the rows' JSON documents travel as the bytes they are stored as); and from
the child one orjson frame per committed or failed group listing the writes it settled (and
those left out as retries of a committed request). The
child knows nothing of alerts or settings: it inserts rows. If it dies, the writes in flight
fail (503: their outcome is unknown, so they are never acknowledged) and a new child takes
over.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import orjson
import structlog
from sqlalchemy import Engine

from app.db.errors import OutcomeUnknown, PersistenceUnavailable
from app.db.session import create_db_engine
from app.observability import configure_logging
from app.scoring.repository import (
    AlertCandidateRow,
    EncodedScore,
    RequestRow,
    ScoreRow,
    encode_scores,
)
from app.scoring.writer import (
    AlreadyCommitted,
    Announcement,
    CommitWatch,
    GroupCommitStats,
    GroupCommitWriter,
    ScoreWriter,
)

if TYPE_CHECKING:  # the writer reads a few values of the settings, never builds them
    from app.config import Settings

_HEADER = struct.Struct("!I")
_NO_STATS = GroupCommitStats(0, 0, 0, 0, 0, 0)
_BACKLOG_BYTES = 4 * 1024 * 1024  # unsent to the child; more makes writers wait
# A write's outcome as the child acknowledges it.
_COMMITTED, _DUPLICATE, _FAILED = "committed", "duplicate", "failed"
log = structlog.get_logger("cvm.writer")


@dataclass(frozen=True)
class ChildConfig:
    """What the child needs to know, as plain values (never the settings to rebuild)."""

    database_url: str
    max_rows: int
    log_level: str
    log_json: bool

    @classmethod
    def of(cls, settings: Settings) -> ChildConfig:
        """The child's part of the service's settings."""
        return cls(
            database_url=settings.database_url,
            max_rows=settings.group_commit_max_rows,
            log_level=settings.log_level,
            log_json=settings.log_json,
        )


def build_score_writer(settings: Settings, engine: Engine) -> ScoreWriter:
    """The writer the settings ask for; a thread when the database lives in this process."""
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    if settings.score_writer == "process" and not in_memory:
        return ProcessWriter(settings)
    return GroupCommitWriter(
        engine,
        max_rows=settings.group_commit_max_rows,
        max_wait_ms=settings.group_commit_max_wait_ms,
        close_early=True,  # the scoring service announces its writes
        stall_s=settings.score_writer_stall_s,
    )


def _frame(payload: bytes) -> list[bytes]:
    return [_HEADER.pack(len(payload)), payload]


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return await reader.readexactly(size)


def _sum_stats(a: GroupCommitStats, b: GroupCommitStats) -> GroupCommitStats:
    return GroupCommitStats(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(a)))


class ProcessWriter:
    """The service's side: ships each write to the child and waits for its commit."""

    def __init__(self, settings: Settings, *, start_timeout_s: float = 60.0) -> None:
        self._config = ChildConfig.of(settings)
        self._start_timeout_s = start_timeout_s
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._last_id = 0
        self._accepting = False
        self._restarting = False
        self._closing = False
        self._process: subprocess.Popen[bytes] | None = None
        self._out: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._unsent: list[bytes] = []  # frames of this loop turn, sent together
        self._child_stats = _NO_STATS  # as the current child last reported them
        self._earlier_stats = _NO_STATS  # summed over children that have ended
        self.restarts = 0
        self.watch = CommitWatch(settings.score_writer_stall_s)

    @property
    def committing(self) -> bool:
        """Whether rows are being committed (readiness): a frozen child or a full disk says no."""
        return self.watch.committing

    @property
    def running(self) -> bool:
        """Whether writes are accepted (a child is up and the writer is not closing)."""
        return self._accepting

    @property
    def alive(self) -> bool:
        """Running, or replacing a child that died (false once a replacement failed)."""
        return self._accepting or self._restarting

    @property
    def pid(self) -> int | None:
        """The child's process id (for operators and tests)."""
        return None if self._process is None else self._process.pid

    @property
    def stats(self) -> GroupCommitStats:
        """The children's counters, with the writes waiting here for an acknowledgement."""
        total = _sum_stats(self._earlier_stats, self._child_stats)
        return replace(total, writes_queued=len(self._pending))

    async def open(self) -> None:
        """Start the child and wait until it is ready to write."""
        await self._spawn()
        self._accepting = True

    async def close(self, timeout: float) -> None:
        """Refuse new writes, let the child commit what it has, then end it."""
        self._accepting = False
        self._closing = True
        if self._out is not None and not self._out.is_closing():
            self._send()
            self._out.write_eof()  # the child drains and exits when its input ends
        if self._listener is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._listener), timeout)
            except TimeoutError:
                log.warning("writer_process_still_draining", timeout_s=timeout)
        await self._reap(timeout=5.0)

    @contextlib.contextmanager
    def announce(self) -> Iterator[Announcement]:
        """Accepted for the writer interface; the child groups writes by its own load."""
        yield Announcement()

    async def write(
        self,
        rows: Sequence[ScoreRow | EncodedScore],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
        request: RequestRow | None = None,
    ) -> None:
        """Return once ``rows`` (and their alert ``candidates`` and ``request`` record) are
        committed by the child; ``AlreadyCommitted`` if that request already was."""
        if not rows and request is None:
            return
        if not self._accepting or self._out is None:
            raise PersistenceUnavailable("the score writer is not running")
        self._last_id += 1
        write_id = self._last_id
        # Pickle: the rows' JSON documents travel as the bytes they are stored as, and the
        # child, our own process on a private socket, needs no second encoding.
        payload = pickle.dumps(
            (write_id, encode_scores(rows), list(candidates), request),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending[write_id] = future
        self.watch.taken()
        if not self._unsent:  # one send per loop turn for all the writes of that turn
            loop.call_soon(self._send)
        self._unsent.extend(_frame(payload))
        if self._out.transport.get_write_buffer_size() > _BACKLOG_BYTES:
            await self._out.drain()  # the child lags: wait here rather than buffer without end
        await future

    def _send(self) -> None:
        if self._out is not None and not self._out.is_closing():
            self._out.writelines(self._unsent)
        self._unsent = []

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "app.scoring.writer_process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        reader, self._out = await asyncio.open_unix_connection(sock=ours)
        self._out.writelines(_frame(pickle.dumps(self._config)))
        try:
            await asyncio.wait_for(_read_frame(reader), self._start_timeout_s)  # "ready"
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as error:
            self._out.close()
            await self._reap(timeout=5.0)
            raise RuntimeError("the score writer process did not start") from error
        self._child_stats = _NO_STATS
        log.info("writer_process_started", pid=self._process.pid)
        self._listener = asyncio.create_task(self._listen(reader))

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = orjson.loads(await _read_frame(reader))
                self._child_stats = GroupCommitStats(**message["stats"])
                for write_id, outcome, error in message["acks"]:
                    self.watch.answered(1, committed=outcome != _FAILED)
                    future = self._pending.pop(write_id, None)
                    if future is None or future.done():  # the caller was cancelled
                        continue
                    if outcome == _COMMITTED:
                        future.set_result(None)
                    elif outcome == _DUPLICATE:
                        future.set_exception(AlreadyCommitted(error))
                    else:
                        future.set_exception(PersistenceUnavailable(error))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child has ended
        await self._child_ended()

    async def _child_ended(self) -> None:
        self._accepting = False
        self.watch.forget()
        lost = list(self._pending.values())
        self._pending.clear()
        self._unsent = []
        for future in lost:
            if not future.done():
                future.set_exception(
                    OutcomeUnknown("the score writer stopped before confirming the commit")
                )
        self._earlier_stats = _sum_stats(self._earlier_stats, self._child_stats)
        self._child_stats = _NO_STATS
        if self._out is not None:
            self._out.close()
        await self._reap(timeout=5.0)
        if self._closing:
            return
        log.error("writer_process_died", writes_failed=len(lost))
        self._restarting = True
        try:
            await self._spawn()
        except RuntimeError:
            log.error("writer_process_restart_failed")
            return
        finally:
            self._restarting = False
        self.restarts += 1
        self._accepting = True

    async def _reap(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, process.wait), timeout)
        except TimeoutError:
            process.kill()
            await loop.run_in_executor(None, process.wait)


# --- the child ----------------------------------------------------------------------------


async def _serve(sock: socket.socket) -> None:
    reader, out = await asyncio.open_unix_connection(sock=sock)
    config: ChildConfig = pickle.loads(await _read_frame(reader))
    configure_logging(config.log_level, config.log_json)
    engine = create_db_engine(config.database_url)
    # No group is held open: the service's loop would idle waiting for it, and commits cost
    # it nothing here. Writes that arrive during a commit form the next group.
    writer = GroupCommitWriter(engine, max_rows=config.max_rows, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    acks: list[tuple[int, str, str | None]] = []
    in_flight: set[asyncio.Task[None]] = set()

    def send_acks() -> None:
        # Once per loop turn: a group's writes all finish in the same turn, one frame for all.
        message = {"acks": acks, "stats": vars(writer.stats)}
        out.writelines(_frame(orjson.dumps(message)))
        acks.clear()

    async def commit(payload: bytes) -> None:
        write_id, rows, candidates, request = pickle.loads(payload)
        outcome, error = _COMMITTED, None
        try:
            await writer.write(rows, candidates=candidates, request=request)
        except AlreadyCommitted as duplicate:
            outcome, error = _DUPLICATE, str(duplicate)
        except PersistenceUnavailable as failure:
            outcome, error = _FAILED, str(failure)
        if not acks:
            loop.call_soon(send_acks)
        acks.append((write_id, outcome, error))

    writer.start()
    out.writelines(_frame(b"ready"))
    try:
        while True:
            try:
                payload = await _read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the service closed its end (or is gone): finish and stop
            task = asyncio.create_task(commit(payload))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)
        await asyncio.sleep(0)  # the last acknowledgements
        with contextlib.suppress(ConnectionError):
            await out.drain()
    finally:
        await asyncio.to_thread(writer.stop, 30)
        engine.dispose()
        out.close()


def main() -> None:
    """Entry point of the child: ``python -m app.scoring.writer_process FD``."""
    # The service decides when this process ends (it closes the socket): Ctrl-C in a terminal
    # or a signal to the process group must not cut the writes in flight short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    asyncio.run(_serve(sock))


if __name__ == "__main__":
    main()
