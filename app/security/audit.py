"""The audit trail: one structured line per guarded request, on the `cvm.audit` logger, and
(with ``audit_store`` on) the same line kept in the database for the console's audit log.

Who (client id, tenant, how it authenticated), what (method, route template, and what the
handler adds: task, customer count, pseudonymised customer), when (the line's timestamp) and
the result status. Never the path itself (it may hold a raw customer id), bodies or secrets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request

from app.security.tables import AuditRecord, audit_record_table

# The line's own fields; anything else a handler noted goes to ``details``.
COLUMNS = ("tenant", "client", "auth", "method", "route", "status", "outcome", "request_id")
NOT_KEPT = ("event", "client_request_id", "source")
BATCH = 500


def note(request: Request, **fields: Any) -> None:
    """Add what a handler did to this request's audit line (ids must already be pseudonymised)."""
    request.scope["state"].setdefault("audit", {}).update(fields)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def audit_row(line: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """An audit line as a row of ``audit_record``."""
    row: dict[str, Any] = {name: _plain(line.get(name)) for name in COLUMNS}
    row["method"] = str(row["method"] or "")[:8]
    row["route"] = str(row["route"] or "unmatched")[:200]
    row["outcome"] = None if row["outcome"] is None else str(row["outcome"])[:64]
    row["at"] = at
    row["details"] = {
        key: _plain(value)
        for key, value in line.items()
        if key not in COLUMNS and key not in NOT_KEPT
    }
    return row


@dataclass
class AuditStore:
    """Audit rows written by a thread of their own, in batches: a request only queues its
    line. A full queue (the database slower than the traffic) drops the line and counts it;
    the log line is written whatever happens."""

    engine: Engine
    capacity: int = 10_000
    dropped: int = 0
    written: int = 0
    _queue: queue.Queue[dict[str, Any] | None] = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.capacity)

    def put(self, line: Mapping[str, Any], at: datetime) -> None:
        """Queue one line (never blocks)."""
        try:
            self._queue.put_nowait(audit_row(line, at))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        """Start the writing thread."""
        self._thread = threading.Thread(target=self._run, name="cvm-audit-store", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Return once every line queued so far is written (or dropped)."""
        self._queue.join()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        log = structlog.get_logger("cvm.security")
        while True:
            first = self._queue.get()
            rows = [] if first is None else [first]
            stopping = first is None
            while not stopping and len(rows) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                stopping = more is None
                if more is not None:
                    rows.append(more)
            if rows:
                try:
                    with self.engine.begin() as connection:
                        connection.execute(insert(audit_record_table), rows)
                    self.written += len(rows)
                except SQLAlchemyError as error:
                    self.dropped += len(rows)
                    log.warning("audit_rows_not_stored", rows=len(rows), error=str(error)[:200])
            for _ in range(len(rows) + stopping):
                self._queue.task_done()
            if stopping:
                return


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which stored audit lines to read: one tenant's, optionally one client's, one route's,
    within [since, until)."""

    tenant: str | None
    client: str | None = None
    route: str | None = None
    since: datetime | None = None
    until: datetime | None = None


# Lines counted for the page's total: a million-line log is not counted per view (counting
# it cost most of the page); beyond this the page says "more than".
COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of audit lines and how many match: exactly, or at least ``total`` when
    ``exact`` is false (more than ``COUNT_CAP`` after the page's rows)."""

    rows: list[AuditRecord]
    total: int
    exact: bool


def audit_page(session: Session, *, where: AuditFilter, limit: int, offset: int) -> AuditPage:
    """One page of a tenant's stored audit lines, newest first, and their total counted up to
    ``COUNT_CAP`` lines past the page."""
    a = AuditRecord
    conditions = [a.tenant.is_(None) if where.tenant is None else a.tenant == where.tenant]
    if where.client is not None:
        conditions.append(a.client == where.client)
    if where.route is not None:
        conditions.append(a.route == where.route)
    if where.since is not None:
        conditions.append(a.at >= where.since)
    if where.until is not None:
        conditions.append(a.at < where.until)
    cap = max(COUNT_CAP, offset + limit)
    matching = select(a.id).where(*conditions).limit(cap + 1).subquery()
    counted = session.scalar(select(func.count()).select_from(matching)) or 0
    rows = session.scalars(
        select(a).where(*conditions).order_by(a.id.desc()).limit(limit).offset(offset)
    ).all()
    return AuditPage(rows=list(rows), total=min(counted, cap), exact=counted <= cap)
