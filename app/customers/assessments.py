"""Score by customer id: the trail's features through the one assessment function.

A call reads the customer's features from the running aggregates (app/customers/features.py)
and hands them to ``ScoringService.assess_record``, the function behind POST /v1/assessments,
so a score by id equals the one posted with the same features. Material events queue the
customer in ``rescore_pending`` with the events themselves; ``Rescorer`` drains that queue in
the background with source ``event``: a row is removed only after its scores are committed,
so nothing acknowledged is lost (a crash in between scores the customer once more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.customers.features import Feature
from app.customers.lifecycle import (
    DEFAULT_LIFECYCLE,
    LifecycleRules,
    StageSource,
    model_stage,
)
from app.customers.repository import drop_rescoring, pending_rescoring
from app.customers.service import (
    CustomerNotFound,
    feature_history,
    stored_forms,
    trail_features,
)
from app.customers.stages import KnownStage, Risk, current_stage, refresh_stages
from app.customers.tables import UNTAGGED_KEY
from app.db.session import reading, writing
from app.errors import BatchTooLarge, InvalidInput, ModelUnavailable
from app.scoring.assess import Options, TaskAssessment
from app.scoring.manifest import Task
from app.scoring.records import Source
from app.scoring.repository import AlertCandidateRow, ScoreRow
from app.scoring.service import Scored, ScoringService
from app.security.idempotency import IdempotentRun
from app.security.pseudonyms import Pseudonymizer

log = structlog.get_logger("cvm.rescore")
# The operation of a request record written by an assessment by id (one customer or bulk).
ASSESSMENT_BY_ID = "assessment_by_id"
OPTIONS = Options(reasons=5, exact=False, top_k=3, next_tier_gap=True)


def trail_record(
    customer_id: str, features: dict[str, Feature], known: KnownStage | None
) -> dict[str, Any]:
    """The features as an assessment's input, with the scoring core's stage of the
    customer's lifecycle stage (None: none on record, tenure decides)."""
    given: dict[str, Any] = {"customer_id": customer_id}
    given.update((name, value) for name, value in features.items() if value is not None)
    if known is not None:
        given["lifecycle"] = model_stage(known.stage).value
    return given


def risk_news(rows: Sequence[ScoreRow], known: KnownStage | None, rules: LifecycleRules) -> bool:
    """Whether a customer's new churn verdict differs from the one its stage was last told
    (so the stage must be re-evaluated; otherwise the stored stage and verdict stand, and the
    call skips that transaction)."""
    told = None if known is None else known.at_risk
    return any(told is None or risk.at_risk != told for risk in churn_risks(rows, rules).values())


def churn_risks(rows: Sequence[ScoreRow], rules: LifecycleRules) -> dict[str, Risk]:
    """Each customer's churn verdict among stored score rows (stored ids)."""
    return {
        row["customer_id"]: Risk(rules.at_risk(row["probability"], row["band"]), row["created_at"])
        for row in rows
        if row["task"] == Task.CHURN.value
    }


def note_risks(
    session_factory: sessionmaker[Session],
    *,
    tenant: str | None,
    rows: Sequence[ScoreRow],
    rules: LifecycleRules,
) -> None:
    """Move the stages the stored churn assessments call for (at risk, or no longer)."""
    risks = churn_risks(rows, rules)
    if not risks:
        return
    with session_factory() as session:
        refresh_stages(
            writing(session).connection(),  # it reads the stages before it moves them
            tenant=tenant,
            customer_ids=sorted(risks),
            now=datetime.now(UTC),
            rules=rules,
            source=StageSource.ASSESSMENT,
            risks=risks,
        )
        session.commit()


@dataclass(frozen=True, slots=True)
class CustomerScoring:
    """Score-by-id use cases on one app's database, scoring service and pseudonymizer."""

    session_factory: sessionmaker[Session]
    scoring: ScoringService
    pseudonymizer: Pseudonymizer | None
    lifecycle: LifecycleRules = DEFAULT_LIFECYCLE

    def _features(
        self, customer_ids: Sequence[str], *, month: str | None, tenant: str | None, bulk: bool
    ) -> list[tuple[str, dict[str, Feature], KnownStage | None]]:
        """Each customer's month, features and lifecycle stage; unknown: 404 by id, 422 naming
        the index in bulk."""
        found = []
        with reading(self.scoring.engine) as connection:
            for index, customer_id in enumerate(customer_ids):
                try:
                    label, features = trail_features(
                        connection,
                        customer_id=customer_id,
                        month=month,
                        caller_tenant=tenant,
                        pseudonymizer=self.pseudonymizer,
                    )
                    forms = stored_forms(
                        customer_id, caller_tenant=tenant, pseudonymizer=self.pseudonymizer
                    )
                    stage = current_stage(
                        connection,
                        tenant=tenant,
                        customer_ids=forms,
                        now=datetime.now(UTC),
                        rules=self.lifecycle,
                    )
                    found.append((label, features, stage))
                except CustomerNotFound as error:
                    if not bulk:
                        raise
                    field = f"customer_ids[{index}]"
                    raise InvalidInput(
                        f"invalid field(s): {field}",
                        extra={
                            "errors": [{"field": field, "message": error.detail, "type": "unknown"}]
                        },
                    ) from error
        return found

    def read_history(
        self, session: Session, customer_id: str, *, tenant: str | None
    ) -> tuple[list[tuple[str, dict[str, Feature]]], KnownStage | None]:
        """A customer's monthly feature history (oldest first) and stage on record, read in
        the caller's session; 404 if the caller's tenant has no trail of it."""
        history = feature_history(
            session,
            customer_id=customer_id,
            caller_tenant=tenant,
            pseudonymizer=self.pseudonymizer,
            depth="latest",  # the tier replay reads the measures of the earlier months
        )
        forms = stored_forms(customer_id, caller_tenant=tenant, pseudonymizer=self.pseudonymizer)
        stage = current_stage(
            session.connection(),
            tenant=tenant,
            customer_ids=forms,
            now=datetime.now(UTC),
            rules=self.lifecycle,
        )
        return history, stage

    def assess_quietly(
        self,
        customer_id: str,
        *,
        history: list[tuple[str, dict[str, Feature]]],
        known: KnownStage | None,
        tenant: str | None,
        tasks: Collection[Task],
        extra: dict[str, Any] | None = None,
    ) -> TrailAssessment:
        """The latest month of a trail through the one assessment function (as score by id),
        nothing saved; ``extra``: what the product rules read besides the features (tier)."""
        given = {**trail_record(customer_id, history[-1][1], known), **(extra or {})}
        collected: list[Scored] = []
        try:
            answer, _, _ = self.scoring.assess_record(
                given, QUIET_OPTIONS, "unsaved", tenant=tenant, tasks=tasks, shadowed=collected
            )
        except InvalidInput as error:
            raise _trail_cannot_be_scored(error, customer_id) from error
        return TrailAssessment(
            month=history[-1][0],
            history=history,
            known=known,
            stage=answer["lifecycle"],
            assessments={task: assessment for task, assessment, _ in collected},
        )

    async def assess(
        self,
        customer_ids: Sequence[str],
        *,
        month: str | None,
        tasks: Collection[Task] | None,
        request_id: str,
        tenant: str | None,
        bulk: bool,
        idempotency: IdempotentRun | None = None,
    ) -> dict[str, Any]:
        """Assess customers by id from their trails; saved together, with the request's record,
        before answering (one customer's answer, or every one's in bulk). A retry under the
        same Idempotency-Key answers the first response and writes nothing new."""
        if len(customer_ids) > self.scoring.max_batch_size:
            raise BatchTooLarge(
                f"{len(customer_ids)} customers in one call; the limit is "
                f"{self.scoring.max_batch_size}",
                extra={"limit": self.scoring.max_batch_size},
            )
        found = await anyio.to_thread.run_sync(
            lambda: self._features(customer_ids, month=month, tenant=tenant, bulk=bulk)
        )
        answers: list[dict[str, Any]] = []
        rows: list[ScoreRow] = []
        news: list[ScoreRow] = []  # the rows whose churn verdict the stage was not told yet
        candidates: list[AlertCandidateRow] = []
        shadowed: list[Scored] = []
        for customer_id, (label, features, known) in zip(customer_ids, found, strict=True):
            try:
                answer, task_rows, task_candidates = self.scoring.assess_record(
                    trail_record(customer_id, features, known),
                    OPTIONS,
                    request_id,
                    tenant=tenant,
                    tasks=tasks,
                    shadowed=shadowed,
                )
            except InvalidInput as error:
                raise _trail_cannot_be_scored(error, customer_id) from error
            answers.append({**answer, "month": label})
            rows.extend(task_rows)
            if risk_news(task_rows, known, self.lifecycle):
                news.extend(task_rows)
            candidates.extend(task_candidates)
        response = {"request_id": request_id, "results": answers} if bulk else answers[0]
        record = self.scoring.request_row(
            response,
            operation=ASSESSMENT_BY_ID,
            tenant=tenant,
            tasks=sorted({model["task"] for answer in answers for model in answer["models"]}),
            customers=len(answers),
            rows=len(rows),
            idempotency=idempotency,
        )
        answered = await self.scoring.save(
            response, rows, record=record, idempotency=idempotency, candidates=candidates
        )
        if news:
            await anyio.to_thread.run_sync(
                lambda: note_risks(
                    self.session_factory, tenant=tenant, rows=news, rules=self.lifecycle
                )
            )
        # The challenger in shadow once this request is done writing: on SQLite its insert
        # would otherwise race note_risks' read-then-write transaction (busy).
        if answered is response:
            self.scoring.shadow_scored(shadowed, tenant=tenant)
        return answered


@dataclass(frozen=True, slots=True)
class TrailAssessment:
    """A customer's trail read once and assessed without saving (for decisions built on the
    scores, e.g. next best actions): the monthly history, the lifecycle stage on record, the
    scoring core's stage and each task's assessment."""

    month: str
    history: list[tuple[str, dict[str, Feature]]]
    known: KnownStage | None
    stage: str
    assessments: dict[Task, TaskAssessment]

    @property
    def features(self) -> dict[str, Feature]:
        """The latest month's features."""
        return self.history[-1][1]


# Unsaved assessments for decisions: no reasons (the decision explains itself), every product.
QUIET_OPTIONS = Options(reasons=0, exact=False, top_k=64, next_tier_gap=False)


def _trail_cannot_be_scored(error: InvalidInput, customer_id: str) -> InvalidInput:
    """A model refused the trail's features (e.g. no profile yet: no age): say so."""
    return InvalidInput(
        f"the trail of customer {customer_id!r} lacks what a model needs: {error.detail}",
        extra=error.extra,
    )


class Rescorer:
    """Drains ``rescore_pending``: each customer re-assessed from its trail, source event."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        scoring: ScoringService,
        poll_s: float,
        batch_size: int,
        enabled: bool = True,
        lifecycle: LifecycleRules = DEFAULT_LIFECYCLE,
    ) -> None:
        self.enabled = enabled
        self.lifecycle = lifecycle
        self.session_factory = session_factory
        self.scoring = scoring
        self.poll_s = poll_s
        self.batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the current event loop until stopped (if enabled)."""
        if not self.enabled:
            return
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop after the current round (what is not done stays queued)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except Exception:  # a database outage: the rows stay queued, retried next round
                log.exception("rescore_failed")
                done = 0
            if done < self.batch_size:
                await asyncio.sleep(self.poll_s)

    def _pending(self) -> list[tuple[int, str, str]]:
        with self.session_factory() as session:
            return [
                (row.id, row.tenant, row.customer_id)
                for row in pending_rescoring(session, limit=self.batch_size)
            ]

    def _read(
        self, tenant: str | None, customer_id: str
    ) -> tuple[dict[str, Feature], KnownStage | None]:
        with self.session_factory() as session:
            # The queue holds the stored id: read it as it is (no pseudonymizer).
            _, features = trail_features(
                session,
                customer_id=customer_id,
                month=None,
                caller_tenant=tenant,
                pseudonymizer=None,
            )
            stage = current_stage(
                session.connection(),
                tenant=tenant,
                customer_ids=[customer_id],
                now=datetime.now(UTC),
                rules=self.lifecycle,
            )
            return features, stage

    def _drop(self, ids: list[int]) -> None:
        with self.session_factory() as session:
            drop_rescoring(session, ids=ids)
            session.commit()

    def _note_risks(self, rows: list[ScoreRow], tenants: dict[str, str | None]) -> None:
        by_tenant: dict[str | None, list[ScoreRow]] = {}
        for row in rows:
            by_tenant.setdefault(tenants[row["customer_id"]], []).append(row)
        for tenant, tenant_rows in by_tenant.items():
            note_risks(self.session_factory, tenant=tenant, rows=tenant_rows, rules=self.lifecycle)

    async def run_once(self) -> int:
        """One round: the oldest queued customers re-assessed and stored, then unqueued."""
        pending = await anyio.to_thread.run_sync(self._pending)
        groups: dict[tuple[str, str], list[int]] = {}
        for row_id, tenant_key, customer_id in pending:
            groups.setdefault((tenant_key, customer_id), []).append(row_id)
        rows: list[ScoreRow] = []
        candidates: list[AlertCandidateRow] = []
        done: list[int] = []
        tenants: dict[str, str | None] = {}
        shadowed: dict[str | None, list[Scored]] = {}
        for (tenant_key, customer_id), ids in groups.items():
            tenant = None if tenant_key == UNTAGGED_KEY else tenant_key
            try:
                features, stage = await anyio.to_thread.run_sync(self._read, tenant, customer_id)
                _, found_rows, found_candidates = self.scoring.assess_record(
                    trail_record(customer_id, features, stage),
                    OPTIONS,
                    f"rescore-{ids[0]}",
                    tenant=tenant,
                    source=Source.EVENT,
                    stored_id=customer_id,
                    shadowed=shadowed.setdefault(tenant, []),
                )
            except (CustomerNotFound, InvalidInput, ModelUnavailable) as error:
                # Nothing to score from this trail (yet): a later material event queues it again.
                log.warning("rescore_skipped", customer=customer_id, reason=error.detail)
            else:
                tenants[customer_id] = tenant
                rows.extend(found_rows)
                candidates.extend(found_candidates)
            done.extend(ids)
        if rows:
            await self.scoring.persist(rows, candidates=candidates)
            await anyio.to_thread.run_sync(self._note_risks, rows, tenants)
            # As for score by id: the challenger once the champion's rows are written.
            for tenant, scored in shadowed.items():
                self.scoring.shadow_scored(scored, tenant=tenant)
        await anyio.to_thread.run_sync(self._drop, done)
        return len(pending)
