"""Champion/challenger in shadow: a challenger scores a share of the champion's requests.

Which requests is decided by a hash of the request id (reproducible, no state shared between
workers). The challenger's assessment is computed by the same core (``assess_task``) on the
same features, after the champion's response is decided and saved, in a background thread fed
by a bounded queue: when the queue is full the job is dropped and counted, never waited for,
so the champion's answer and its latency do not depend on the challenger. Its scores are
stored apart, in ``shadow_score``, joined to the champion's request id.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.scoring.assess import TaskAssessment
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel
from app.scoring.repository import TenantScope
from app.scoring.tables import ShadowScore, shadow_score_table

log = structlog.get_logger("cvm.shadow")

_SPACE = 2**64
# Jobs scored and stored together at most (one transaction).
BATCH_JOBS = 256


def selected(request_id: str, share: float) -> bool:
    """Whether a request falls in the shadowed share (the same answer for the same id)."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) < share * _SPACE


@dataclass(frozen=True, slots=True)
class Challenger:
    """A task's challenger as served in shadow here: its loaded model and share."""

    model: ScoringModel
    share: float


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One champion request to score again with the challenger (plain data, no I/O)."""

    task: Task
    challenger: ScoringModel
    champion: TaskAssessment
    body: bytes | None  # the per-task request (None: an assessment's, same inputs only)
    request_id: str
    tenant: str | None
    stored_ids: list[str]


# Scores a job with the challenger: the service's parse, stages and assessment core.
Rescore = Callable[[ShadowJob], TaskAssessment]


def shadow_rows(job: ShadowJob, challenger: TaskAssessment) -> list[dict[str, Any]]:
    """The ``shadow_score`` rows of a job: champion and challenger side by side per customer."""
    now = datetime.now(UTC)
    champion = job.champion
    return [
        {
            "request_id": job.request_id,
            "tenant": job.tenant,
            "task": job.task.value,
            "customer_id": customer_id,
            "champion_version": champion.model_version,
            "challenger_version": challenger.model_version,
            "champion_probability": float(champion.probability[i]),
            "challenger_probability": float(challenger.probability[i]),
            "champion_band": None if champion.band[i] is None else str(champion.band[i]),
            "challenger_band": None if challenger.band[i] is None else str(challenger.band[i]),
            "created_at": now,
        }
        for i, customer_id in enumerate(job.stored_ids)
    ]


class ShadowScorer:
    """A bounded queue and one background thread that scores and stores shadow jobs."""

    def __init__(
        self,
        *,
        engine: Engine,
        rescore: Rescore | None = None,
        capacity: int = 1000,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._rescore = rescore
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=capacity)
        self._on_drop = on_drop
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failed = 0
        self.stored = 0
        self.skipped = 0

    def bind(self, rescore: Rescore) -> None:
        """Set how jobs are scored (the scoring service, built after this scorer)."""
        self._rescore = rescore

    def start(self) -> None:
        """Start the background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the queued jobs (within ``timeout``) and end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("shadow_queue_not_drained", queued=self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(job.task.value)
            return False
        return True

    def drain(self) -> None:
        """Wait until every queued job is done (tests and shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            # What queued meanwhile goes in the same transaction: one commit for many
            # requests, so the shadow barely competes with the score writer for the database.
            while len(jobs) < BATCH_JOBS:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle([job for job in jobs if job is not None])
            finally:
                for _ in jobs:
                    self._queue.task_done()
            if None in jobs:
                return

    def _handle(self, jobs: list[ShadowJob]) -> None:
        assert self._rescore is not None, "bind() the scoring service first"
        rows: list[dict[str, Any]] = []
        for job in jobs:
            try:
                rows.extend(shadow_rows(job, self._rescore(job)))
            except Exception as error:  # a challenger failing must never touch the champion
                self.failed += 1
                log.error("shadow_failed", task=job.task.value, error=repr(error))
        if not rows:
            return
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(shadow_score_table), rows)
        except SQLAlchemyError as error:
            self.failed += len(jobs)
            log.warning("shadow_not_stored", rows=len(rows), error=type(error).__name__)
        else:
            self.stored += len(rows)


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """A stored pair: the champion's and the challenger's score of one customer."""

    request_id: str
    customer_id: str
    champion_version: str
    challenger_version: str
    champion_probability: float
    challenger_probability: float
    champion_band: str | None
    challenger_band: str | None
    created_at: datetime


def shadow_pairs(
    session: Session,
    *,
    task: Task,
    tenant: TenantScope | None,
    version: str | None = None,
    limit: int = 100_000,
) -> Sequence[ShadowPair]:
    """The newest stored shadow pairs of a task (of one challenger version when given)."""
    query = select(ShadowScore).where(ShadowScore.task == task.value)
    if version is not None:
        query = query.where(ShadowScore.challenger_version == version)
    if tenant is not None:
        query = query.where(tenant.condition(ShadowScore.tenant))
    rows = session.scalars(query.order_by(ShadowScore.id.desc()).limit(limit))
    return [
        ShadowPair(
            request_id=r.request_id,
            customer_id=r.customer_id,
            champion_version=r.champion_version,
            challenger_version=r.challenger_version,
            champion_probability=r.champion_probability,
            challenger_probability=r.challenger_probability,
            champion_band=r.champion_band,
            challenger_band=r.challenger_band,
            created_at=r.created_at,
        )
        for r in rows
    ]
