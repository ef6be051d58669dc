"""SQLite's write-ahead log moved into the database file by a thread, not by a commit.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
commit copies the pages into the database file and fsyncs it, 9 ms where a commit otherwise
takes 0.2 ms (measured here on 20-row groups). Every score waiting on that group waits too,
and with group commit that is every request in flight: the stall lands on the p99 latency and
leaves the event loop idle. The score writer's connections therefore turn automatic
checkpoints off, and this thread checkpoints every ``interval_s`` in PASSIVE mode, which never
waits for, nor blocks, the writer or readers. Durability is unchanged: a commit is durable
once it is in the log. The same connections get a larger page cache (``WRITER_CACHE_KIB``).

A PASSIVE checkpoint never shrinks the log file, and under sustained load (readers keeping old
pages alive) the log grew without bound (1.65 GB in 40 s). Once the file passes
``wal_limit_bytes`` the thread checkpoints in TRUNCATE mode instead: it waits for the readers of
the moment (the busy timeout), copies everything and truncates the file, a brief stall traded
for a bounded file; ``journal_size_limit`` keeps the file to the limit after ordinary resets.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from app.db.errors import describe_db_error

logger = logging.getLogger(__name__)


# The writer's page cache. SQLite's default (2 MiB) is outgrown by the score table's indexes
# within a million rows; past that every insert reads index pages back through the kernel, and
# a single-customer call's writer CPU grew ~5% per 700,000 rows in one benchmark run.
WRITER_CACHE_KIB = 64 * 1024
# Past this the log file is truncated by the next checkpoint (see the module docstring).
WAL_LIMIT_BYTES = 64 * 1024 * 1024


def _writer_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the thread's
    dbapi_connection.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    dbapi_connection.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")


class WalCheckpointer:
    """Checkpoints a SQLite file database in the background (see the module docstring)."""

    def __init__(
        self, engine: Engine, *, interval_s: float = 0.5, wal_limit_bytes: int = WAL_LIMIT_BYTES
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self.wal_limit_bytes = wal_limit_bytes
        self._wal_path = f"{engine.url.database}-wal"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        # Before the engine's first connection: every connection it opens leaves checkpoints
        # to this thread (and gets the writer's page cache).
        event.listen(engine, "connect", _writer_connection)

    @staticmethod
    def applies_to(engine: Engine) -> bool:
        """A SQLite database in a file (an in-memory one has no write-ahead log)."""
        return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")

    def start(self) -> None:
        """Begin checkpointing every interval."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cvm-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Checkpoint once more and end the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.checkpoint()
        self.checkpoint()

    def wal_bytes(self) -> int:
        """The log file's size now (0 when there is none)."""
        try:
            return os.path.getsize(self._wal_path)
        except OSError:
            return 0

    def checkpoint(self) -> None:
        """Copy what the log holds into the database file, as far as readers allow; past the
        limit, all of it, and truncate the file."""
        mode = "TRUNCATE" if self.wal_bytes() > self.wal_limit_bytes else "PASSIVE"
        try:
            with self._engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except SQLAlchemyError as error:  # the next round tries again; commits are unaffected
            logger.warning("WAL checkpoint failed: %s", describe_db_error(error))
        else:
            self.checkpoints += 1
