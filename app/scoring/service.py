"""Scoring use cases: validated request -> matrix -> ``assess_task`` -> stored rows -> respond.

Every score is computed by the assessment core (``app.scoring.assess``), as batch scoring's
are; this module parses requests, persists and answers. Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import numpy as np
import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.db.errors import OutcomeUnknown, PersistenceUnavailable
from app.errors import (
    BatchTooLarge,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    ModelUnavailable,
)
from app.scoring.assess import (
    STAGE_TASKS,
    STAGES,
    Block,
    Options,
    Rules,
    Stage,
    StageCodes,
    TaskAssessment,
    assess_task,
    block_stages,
    lifecycle_stages,
    stage_codes,
)
from app.scoring.manifest import Task
from app.scoring.model import FloatArray, ScoringModel
from app.scoring.records import Source, alert_candidates, score_rows
from app.scoring.registry import ModelRegistry
from app.scoring.repository import (
    AlertCandidateRow,
    RequestRow,
    ScoreRow,
    forget_key,
    request_by_key,
)
from app.scoring.request_schemas import (
    ScoreRequestBase,
    assessment_request_model,
    customer_model,
    score_request_model,
)
from app.scoring.shadow import Challenger, ShadowJob, ShadowScorer, selected
from app.scoring.writer import AlreadyCommitted, Announcement, ScoreWriter
from app.security.errors import IdempotencyMismatch
from app.security.idempotency import IdempotentRun
from app.security.pseudonyms import Pseudonymizer

# A task's assessment within an assessment call and its stored rows.
Scored = tuple[Task, TaskAssessment, list[ScoreRow]]
# The operation of a request record written by ``assess`` (the others name their task).
ASSESSMENT = "assessment"
# Keys recorded before an instant just past the expired record's are freed.
_TICK = timedelta(microseconds=1)

# Above this many customers the numeric work runs in a worker thread (LightGBM releases the
# GIL), so a 1,000-customer call does not hold up the single-customer calls around it.
INLINE_MAX_ROWS = 32


def options_of(request: BaseModel) -> Options:
    """Options from a validated request (fields a task does not have keep defaults)."""
    given = request.__dict__
    return Options(
        reasons=given.get("reasons", 5),
        exact=given.get("explain") == "exact",
        top_k=given.get("top_k", 3),
        next_tier_gap=given.get("next_tier_gap", True),
    )


@dataclass(frozen=True)
class CustomerBatch:
    """Validated customers of one call: ids and the model's matrix."""

    ids: list[str]
    matrix: FloatArray
    lifecycle: StageCodes  # as sent; -1 where not
    # What the product rules read besides the features, as sent (None: not sent).
    risk_profiles: list[str | None] | None = None
    tiers: list[str | None] | None = None


def field_path(location: Sequence[int | str]) -> str:
    """A pydantic error location as a readable field path: ``customers[0].age``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def invalid_input(error: ValidationError) -> InvalidInput:
    """A 422 naming every offending field."""
    errors = [
        {"field": field_path(e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_input=False)
    ]
    if [e["field"] for e in errors] == ["body"]:  # the body as a whole: its message says why
        return InvalidInput(str(errors[0]["message"]), extra={"errors": errors})
    fields = ", ".join(e["field"] for e in errors[:5])
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return InvalidInput(f"invalid field(s): {fields}{more}", extra={"errors": errors})


@dataclass(frozen=True, slots=True)
class _Serving:
    """The models served and the request models built from their schemas, replaced whole."""

    models: dict[Task, ScoringModel]
    request_models: dict[Task, type[ScoreRequestBase]]
    customer_models: dict[Task, type[BaseModel]]
    assessment_model: type[BaseModel]

    @classmethod
    def of(cls, models: dict[Task, ScoringModel]) -> _Serving:
        """The request models of ``models``."""
        return cls(
            models=models,
            request_models={t: score_request_model(t, m.schema) for t, m in models.items()},
            customer_models={t: customer_model(t, m.schema) for t, m in models.items()},
            assessment_model=assessment_request_model({t: m.schema for t, m in models.items()}),
        )

    def with_model(self, task: Task, model: ScoringModel) -> _Serving:
        """These models with ``task``'s replaced; request models rebuilt if its schema changed."""
        models = {**self.models, task: model}
        current = self.models.get(task)
        if current is not None and current.schema == model.schema:
            return _Serving(
                models, self.request_models, self.customer_models, self.assessment_model
            )
        return _Serving.of(models)


class ScoringService:
    """Everything a scoring call needs, built once at start-up."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        writer: ScoreWriter,
        engine: Engine,
        rules: Rules,
        max_batch_size: int,
        idempotency_ttl_s: float,
        pseudonymizer: Pseudonymizer | None = None,
        shadow: ShadowScorer | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        # An Idempotency-Key older than this may name a new request (as the key store's TTL).
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)
        self.pseudonymizer = pseudonymizer
        self.writer = writer
        self.rules = rules
        self.max_batch_size = max_batch_size
        self._serving = _Serving.of(registry.loaded)
        # Challengers in shadow by task, replaced whole (see app/scoring/shadow.py).
        self._challengers: dict[Task, Challenger] = {}
        self.shadow = shadow
        if shadow is not None:
            shadow.bind(self.rescore)

    @property
    def request_models(self) -> dict[Task, type[ScoreRequestBase]]:
        """Each served task's request model (built from its model's schema)."""
        return self._serving.request_models

    @property
    def assessment_model(self) -> type[BaseModel]:
        """The request model of an assessment, from every served schema."""
        return self._serving.assessment_model

    def swap(self, task: Task, model: ScoringModel) -> None:
        """Serve ``model`` (loaded and warmed up) for ``task`` from the next request on.

        The request models are rebuilt first when its schema differs; then one reference is
        replaced, so a call sees either the old model and its schema or the new ones.
        """
        self._serving = self._serving.with_model(task, model)
        self.registry.replace(task, model)

    def set_challenger(self, task: Task, model: ScoringModel | None, share: float = 0.0) -> None:
        """Score ``share`` of ``task``'s requests with ``model`` in shadow (None: stop)."""
        challengers = {t: c for t, c in self._challengers.items() if t is not task}
        if model is not None and share > 0:
            challengers[task] = Challenger(model=model, share=share)
        self._challengers = challengers

    def challenger(self, task: Task) -> Challenger | None:
        """The challenger scoring ``task`` in shadow here, if any."""
        return self._challengers.get(task)

    def rescore(self, job: ShadowJob) -> TaskAssessment:
        """A champion's request scored by the challenger through the same assessment core: on
        the champion's block when their schemas agree, else on the body parsed anew."""
        champion = job.champion
        # The headline only: reasons are not compared and would cost most of the time.
        options = replace(champion.options, reasons=0, exact=False)
        if job.challenger.schema == champion.model.schema:
            return self.compute(job.task, options, champion.block, job.challenger)
        if job.body is None:
            raise ValueError("the challenger's inputs differ and there is no body to parse")
        _, batch = self.parse(job.task, job.body, model=job.challenger)
        block = self.block(job.task, batch, model=job.challenger)
        return self.compute(job.task, options, block, job.challenger)

    def _shadow(
        self,
        task: Task,
        body: bytes | None,
        assessment: TaskAssessment,
        rows: list[ScoreRow],
        tenant: str | None,
    ) -> None:
        """Queue the challenger's shadow score of a request already answered, if selected."""
        challenger = self._challengers.get(task)
        if challenger is None or self.shadow is None:
            return
        request_id = rows[0]["request_id"] if rows else ""
        if not rows or not selected(request_id, challenger.share):
            return
        if body is None and challenger.model.schema != assessment.model.schema:
            # Only a per-task request can be parsed anew for a challenger with other inputs.
            self.shadow.skipped += 1
            return
        self.shadow.submit(
            ShadowJob(
                task=task,
                challenger=challenger.model,
                champion=assessment,
                body=body,
                request_id=request_id,
                tenant=tenant,
                stored_ids=[row["customer_id"] for row in rows],
            )
        )

    def model(self, task: Task) -> ScoringModel:
        """The active model of a task, or 503."""
        model = self._serving.models.get(task)
        if model is None:
            raise ModelUnavailable(f"no {task.value} model is loaded")
        return model

    def parse(
        self, task: Task, body: bytes, *, model: ScoringModel | None = None
    ) -> tuple[Options, CustomerBatch]:
        """Validate a raw JSON body against the task's schema and build the feature matrix."""
        serving = self._serving
        model = model or self.model(task)
        request_model = serving.request_models.get(task)
        if request_model is None or serving.models.get(task) is not model:
            request_model = score_request_model(task, model.schema)
        try:
            request = request_model.model_validate_json(body)
        except ValidationError as error:
            raise invalid_input(error) from error
        customers: list[BaseModel] | None = request.__dict__["customers"]
        columns: BaseModel | None = request.__dict__["columns"]
        column_ids = columns.__dict__["customer_id"] if columns is not None else []
        count = len(customers) if customers is not None else len(column_ids)
        if count > self.max_batch_size:
            raise BatchTooLarge(
                f"{count} customers in one call; the limit is {self.max_batch_size}",
                extra={"limit": self.max_batch_size},
            )
        if customers is not None:
            # The models' own field dicts: encoding reads the features by name, so the other
            # fields need not be copied away first.
            rows = [c.__dict__ for c in customers]
            ids = [row["customer_id"] for row in rows]
            lifecycle = [row["lifecycle"] for row in rows]
            profiles = [row["risk_profile"] for row in rows]
            tiers = [row["tier"] for row in rows]
            matrix = model.schema.encode_rows(rows)
        else:
            assert columns is not None
            data = dict(columns.__dict__)
            ids = data.pop("customer_id")
            lifecycle = data.pop("lifecycle") or [None] * len(ids)
            profiles, tiers = data.pop("risk_profile"), data.pop("tier")
            matrix = model.schema.encode_columns(data)
        batch = CustomerBatch(
            ids=ids,
            matrix=matrix,
            lifecycle=stage_codes(lifecycle),
            risk_profiles=profiles,
            tiers=tiers,
        )
        return options_of(request), batch

    async def persist(
        self,
        rows: list[ScoreRow],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
        request: RequestRow | None = None,
    ) -> None:
        """Wait until the rows (their alert candidates and request record) are committed; 503
        if not, ``AlreadyCommitted`` if the request was committed before."""
        try:
            await self.writer.write(
                rows, candidates=candidates, announcement=announcement, request=request
            )
        except OutcomeUnknown as error:
            raise DatabaseUnavailable(
                "the score writer stopped before confirming the commit: the scores may or may "
                "not have been saved: GET /v1/requests/{this request's X-Request-ID} tells, and "
                "a retry under the same Idempotency-Key saves them at most once"
            ) from error
        except PersistenceUnavailable as error:
            raise DatabaseUnavailable(
                "the database is unavailable; nothing was saved, retry later"
            ) from error

    def block(
        self, task: Task, batch: CustomerBatch, *, model: ScoringModel | None = None
    ) -> Block:
        """The batch with each customer's stage."""
        model = model or self.model(task)
        stages = block_stages(
            task, model.schema, batch.matrix, given=batch.lifecycle, rules=self.rules
        )
        return Block(
            ids=batch.ids,
            matrix=batch.matrix,
            stages=stages,
            risk_profiles=batch.risk_profiles,
            tiers=batch.tiers,
        )

    def compute(
        self, task: Task, options: Options, block: Block, model: ScoringModel | None = None
    ) -> TaskAssessment:
        """The one assessment function, on this service's models (or ``model``) and rules."""
        model = model or self.model(task)
        return assess_task(task, model, block, rules=self.rules, options=options)

    async def save(
        self,
        response: dict[str, Any],
        rows: list[ScoreRow],
        *,
        record: RequestRow,
        idempotency: IdempotentRun | None,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
    ) -> dict[str, Any]:
        """Commit a request's rows with its record and answer ``response``; a retry of a
        request committed before (same Idempotency-Key) writes nothing and answers the first
        response instead."""
        for _ in range(3):
            try:
                await self.persist(
                    rows, candidates=candidates, announcement=announcement, request=record
                )
            except AlreadyCommitted:
                if idempotency is None:  # request ids are unique: never twice the same
                    raise Conflict("this request id is already recorded") from None
                first = await self._first_response(idempotency)
                if first is not None:
                    return first
                continue  # the key was freed (expired): write under it now
            return response
        raise Conflict("this Idempotency-Key is in use by another request; retry")

    async def _first_response(self, idempotency: IdempotentRun) -> dict[str, Any] | None:
        """The response of the committed request that used this Idempotency-Key; None when
        none holds it any more (expired keys are freed here)."""
        digest = idempotency.material.digest

        def look_up() -> tuple[str | None, bytes | None] | None:
            with self.engine.begin() as connection:
                stored = request_by_key(connection, key_digest=digest)
                if stored is None:
                    return None
                expired = stored.created_at < datetime.now(UTC) - self.idempotency_ttl
                if expired:
                    forget_key(connection, key_digest=digest, before=stored.created_at + _TICK)
                    return None
                return stored.request_digest, stored.response

        try:
            found = await anyio.to_thread.run_sync(look_up)
        except SQLAlchemyError as error:
            raise DatabaseUnavailable(
                "this request was committed by an earlier try, whose result cannot be read "
                "right now: nothing new was saved; retry later"
            ) from error
        if found is None:
            return None
        request_digest, sealed = found
        if request_digest != idempotency.request_digest:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with another request; use a new key"
            )
        opened = idempotency.material.open(sealed or b"")
        if opened is None:
            raise IdempotencyMismatch("this Idempotency-Key cannot be replayed; use a new key")
        first: dict[str, Any] = orjson.loads(opened[1])
        return first

    @staticmethod
    def request_row(
        response: dict[str, Any],
        *,
        operation: str,
        tenant: str | None,
        tasks: list[str],
        customers: int,
        rows: int,
        idempotency: IdempotentRun | None,
    ) -> RequestRow:
        """The request's record, stored with its rows (the response sealed under its
        Idempotency-Key, when it has one)."""
        return RequestRow(
            request_id=response["request_id"],
            tenant=tenant,
            operation=operation,
            tasks=tasks,
            customers=customers,
            rows=rows,
            key_digest=None if idempotency is None else idempotency.material.digest,
            request_digest=None if idempotency is None else idempotency.request_digest,
            response=None
            if idempotency is None
            else idempotency.material.seal("application/json", orjson.dumps(response)),
            created_at=datetime.now(UTC),
        )

    async def score(
        self,
        task: Task,
        body: bytes,
        request_id: str,
        *,
        tenant: str | None = None,
        idempotency: IdempotentRun | None = None,
    ) -> dict[str, Any]:
        """One scoring call: parse, assess, persist, respond (all or nothing)."""
        # Announced from the start, so that the writer keeps its group open for this call's
        # rows while other calls' rows are committed (see app/scoring/writer.py).
        # One model for the whole call, even if an activation swaps the task's model meanwhile.
        model = self.model(task)
        with self.writer.announce() as announcement:
            options, batch = self.parse(task, body, model=model)
            block = self.block(task, batch, model=model)
            if len(batch.ids) > INLINE_MAX_ROWS:
                assessment = await anyio.to_thread.run_sync(
                    self.compute, task, options, block, model
                )
            else:
                assessment = self.compute(task, options, block, model)
            results = assessment.results()
            rows = self.rows(assessment, request_id, tenant)
            response = {
                "request_id": request_id,
                "model": {"task": task.value, "version": assessment.model_version},
                "saved": True,
                "results": results,
            }
            record = self.request_row(
                response,
                operation=task.value,
                tenant=tenant,
                tasks=[task.value],
                customers=len(batch.ids),
                rows=len(rows),
                idempotency=idempotency,
            )
            answer = await self.save(
                response,
                rows,
                record=record,
                idempotency=idempotency,
                candidates=alert_candidates(assessment, rows),
                announcement=announcement,
            )
        if answer is response:  # decided and saved; a replayed answer is not scored again
            self._shadow(task, body, assessment, rows, tenant)
        return answer

    async def assess(
        self,
        body: bytes,
        request_id: str,
        *,
        tenant: str | None = None,
        idempotency: IdempotentRun | None = None,
    ) -> dict[str, Any]:
        """Everything that applies to one customer, by lifecycle stage, saved together."""
        serving = self._serving  # one set of models for the whole call
        try:
            request = serving.assessment_model.model_validate_json(body)
        except ValidationError as error:
            raise invalid_input(error) from error
        given = {k: v for k, v in request.__dict__.items() if v is not None}
        shadowed: list[Scored] = []
        response, rows, candidates = self.assess_record(
            given,
            options_of(request),
            request_id,
            tenant=tenant,
            serving=serving,
            shadowed=shadowed,
        )
        record = self.request_row(
            response,
            operation=ASSESSMENT,
            tenant=tenant,
            tasks=[model["task"] for model in response["models"]],
            customers=1,
            rows=len(rows),
            idempotency=idempotency,
        )
        answer = await self.save(
            response, rows, record=record, idempotency=idempotency, candidates=candidates
        )
        if answer is response:  # decided and saved; a replayed answer is not scored again
            self.shadow_scored(shadowed, tenant=tenant)
        return answer

    def shadow_scored(self, scored: Sequence[Scored], *, tenant: str | None) -> None:
        """Queue the shadow scores of assessments already answered and saved (those of tasks
        with a challenger in shadow, for the selected share of request ids)."""
        for task, assessment, task_rows in scored:
            self._shadow(task, None, assessment, task_rows, tenant)

    def assess_record(
        self,
        given: dict[str, Any],
        options: Options,
        request_id: str,
        *,
        tenant: str | None,
        source: Source = Source.API,
        stored_id: str | None = None,
        tasks: Collection[Task] | None = None,
        serving: _Serving | None = None,
        shadowed: list[Scored] | None = None,
    ) -> tuple[dict[str, Any], list[ScoreRow], list[AlertCandidateRow]]:
        """One customer's features (``customer_id`` and the features it has) through every
        model of its stage (of ``tasks`` when given): the answer, its rows and alert
        candidates, not yet saved. ``stored_id``: the id is already in its stored form;
        ``serving``: the models the call started with (one set for the whole call);
        ``shadowed``: receives each task's assessment and rows, for shadow scoring once the
        answer is saved."""
        serving = serving or self._serving
        customer_id = given["customer_id"]
        tenure = given.get("tenure_months")
        stage = STAGES[
            lifecycle_stages(
                1,
                tenure_months=np.array([np.nan if tenure is None else tenure], dtype=np.float64),
                given=stage_codes([given.get("lifecycle")]),
                new_customer_months=self.rules.new_customer_months,
            )[0]
        ]
        response: dict[str, Any] = {
            "request_id": request_id,
            "customer_id": customer_id,
            "lifecycle": stage.value,
            "saved": True,
            "models": [],
            "skipped": [],
            **dict.fromkeys(_ASSESSMENT_KEYS.values()),
        }
        rows: list[ScoreRow] = []
        candidates: list[AlertCandidateRow] = []
        for task in STAGE_TASKS[stage]:
            if tasks is not None and task not in tasks:
                continue
            model = serving.models[task]
            missing = self._inputs_missing(model, given)
            if missing is not None:
                response["skipped"].append(
                    {
                        "task": task.value,
                        "reason": "none of its inputs were sent",
                        "missing": missing,
                    }
                )
                continue
            batch = self._one_customer(serving, task, given, stage)
            block = self.block(task, batch, model=model)
            assessment = self.compute(task, options, block, model)
            response[_ASSESSMENT_KEYS[task]] = assessment.results()[0]
            response["models"].append({"task": task.value, "version": assessment.model_version})
            task_rows = self.rows(
                assessment,
                request_id,
                tenant,
                source=source,
                stored_ids=None if stored_id is None else [stored_id],
            )
            rows.extend(task_rows)
            candidates.extend(alert_candidates(assessment, task_rows))
            if shadowed is not None:
                shadowed.append((task, assessment, task_rows))
        return response, rows, candidates

    def _inputs_missing(self, model: ScoringModel, given: dict[str, Any]) -> list[str] | None:
        """The model's required inputs when the call sent none of them (a model for other data,
        e.g. one a bank trained on its own columns): the model is skipped, not the call. None
        when some were sent: the model then names whatever else it needs."""
        required = [f.name for f in model.schema.inputs if f.required]
        if not required or any(name in given for name in required):
            return None
        return required

    def _one_customer(
        self, serving: _Serving, task: Task, given: dict[str, Any], stage: Stage
    ) -> CustomerBatch:
        """One customer's features for one task's model, checked against its schema."""
        model = serving.models[task]
        names = {"customer_id", "risk_profile", "tier", *model.schema.names}
        record = {k: v for k, v in given.items() if k in names}
        try:
            customer = serving.customer_models[task].model_validate(record)
        except ValidationError as error:
            raise invalid_input(error) from error
        inputs = dict(customer.__dict__)
        customer_id = inputs.pop("customer_id")
        inputs.pop("lifecycle", None)
        profile, tier = inputs.pop("risk_profile"), inputs.pop("tier")
        return CustomerBatch(
            ids=[customer_id],
            matrix=model.schema.encode_rows([inputs]),
            lifecycle=stage_codes([stage.value]),
            risk_profiles=[profile],
            tiers=[tier],
        )

    def rows(
        self,
        assessment: TaskAssessment,
        request_id: str,
        tenant: str | None,
        *,
        source: Source = Source.API,
        stored_ids: list[str] | None = None,
    ) -> list[ScoreRow]:
        """The assessment's stored rows (customer ids pseudonymised when configured, unless
        given in their stored form)."""
        ids = list(assessment.block.ids)
        if stored_ids is None:
            stored_ids = (
                ids
                if self.pseudonymizer is None
                else self.pseudonymizer.pseudonyms(ids, tenant=tenant)
            )
        return score_rows(
            assessment,
            stored_ids=stored_ids,
            request_id=request_id,
            source=source,
            created_at=datetime.now(UTC),
            tenant=tenant,
        )


_ASSESSMENT_KEYS = {
    Task.TIER: "tier",
    Task.RECOMMENDATION: "recommendations",
    Task.CHURN: "churn",
    Task.PROSPECT: "prospect",
}
