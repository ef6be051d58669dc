"""Scoring use cases: validated request -> matrix -> ``assess_task`` -> stored rows -> respond.

Every score is computed by the assessment core (``app.scoring.assess``), as batch scoring's
are; this module parses requests, persists and answers. Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import numpy as np
from pydantic import BaseModel, ValidationError

from app.db.errors import OutcomeUnknown, PersistenceUnavailable
from app.errors import BatchTooLarge, DatabaseUnavailable, InvalidInput, ModelUnavailable
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
from app.scoring.repository import AlertCandidateRow, ScoreRow
from app.scoring.request_schemas import (
    ScoreRequestBase,
    assessment_request_model,
    customer_model,
    score_request_model,
)
from app.scoring.writer import Announcement, ScoreWriter
from app.security.pseudonyms import Pseudonymizer

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
        rules: Rules,
        max_batch_size: int,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.registry = registry
        self.pseudonymizer = pseudonymizer
        self.writer = writer
        self.rules = rules
        self.max_batch_size = max_batch_size
        self._serving = _Serving.of(registry.loaded)

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
            rows = [dict(c.__dict__) for c in customers]
            ids = [row.pop("customer_id") for row in rows]
            lifecycle = [row.pop("lifecycle") for row in rows]
            matrix = model.schema.encode_rows(rows)
        else:
            assert columns is not None
            data = dict(columns.__dict__)
            ids = data.pop("customer_id")
            lifecycle = data.pop("lifecycle") or [None] * len(ids)
            matrix = model.schema.encode_columns(data)
        batch = CustomerBatch(ids=ids, matrix=matrix, lifecycle=stage_codes(lifecycle))
        return options_of(request), batch

    async def persist(
        self,
        rows: list[ScoreRow],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
    ) -> None:
        """Wait until the rows (and their alert candidates) are committed; 503 if not."""
        try:
            await self.writer.write(rows, candidates=candidates, announcement=announcement)
        except OutcomeUnknown as error:
            raise DatabaseUnavailable(
                "the score writer stopped before confirming the commit: the scores may or may "
                "not have been saved; read the customer's scores before retrying"
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
        return Block(ids=batch.ids, matrix=batch.matrix, stages=stages)

    def compute(
        self, task: Task, options: Options, block: Block, model: ScoringModel | None = None
    ) -> TaskAssessment:
        """The one assessment function, on this service's models (or ``model``) and rules."""
        model = model or self.model(task)
        return assess_task(task, model, block, rules=self.rules, options=options)

    async def score(
        self, task: Task, body: bytes, request_id: str, *, tenant: str | None = None
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
            candidates = alert_candidates(assessment, rows)
            await self.persist(rows, candidates=candidates, announcement=announcement)
        return {
            "request_id": request_id,
            "model": {"task": task.value, "version": assessment.model_version},
            "saved": True,
            "results": results,
        }

    async def assess(
        self, body: bytes, request_id: str, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Everything that applies to one customer, by lifecycle stage, saved together."""
        serving = self._serving  # one set of models for the whole call
        try:
            request = serving.assessment_model.model_validate_json(body)
        except ValidationError as error:
            raise invalid_input(error) from error
        given = {k: v for k, v in request.__dict__.items() if v is not None}
        options = options_of(request)
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
            task_rows = self.rows(assessment, request_id, tenant)
            rows.extend(task_rows)
            candidates.extend(alert_candidates(assessment, task_rows))
        await self.persist(rows, candidates=candidates)
        return response

    def _inputs_missing(self, model: ScoringModel, given: dict[str, Any]) -> list[str] | None:
        """The model's required inputs when the call sent none of them (a model for other data,
        e.g. one a bank trained on its own columns): the model is skipped, not the call. None
        when some were sent: the model then names whatever else it needs."""
        required = [f.name for f in model.schema.features if f.required]
        if not required or any(name in given for name in required):
            return None
        return required

    def _one_customer(
        self, serving: _Serving, task: Task, given: dict[str, Any], stage: Stage
    ) -> CustomerBatch:
        """One customer's features for one task's model, checked against its schema."""
        model = serving.models[task]
        names = {"customer_id", *model.schema.names}
        record = {k: v for k, v in given.items() if k in names}
        try:
            customer = serving.customer_models[task].model_validate(record)
        except ValidationError as error:
            raise invalid_input(error) from error
        inputs = dict(customer.__dict__)
        customer_id = inputs.pop("customer_id")
        return CustomerBatch(
            ids=[customer_id],
            matrix=model.schema.encode_rows([inputs]),
            lifecycle=stage_codes([stage.value]),
        )

    def rows(
        self, assessment: TaskAssessment, request_id: str, tenant: str | None
    ) -> list[ScoreRow]:
        """The assessment's stored rows (customer ids pseudonymised when configured)."""
        ids = list(assessment.block.ids)
        return score_rows(
            assessment,
            stored_ids=ids
            if self.pseudonymizer is None
            else self.pseudonymizer.pseudonyms(ids, tenant=tenant),
            request_id=request_id,
            source=Source.API,
            created_at=datetime.now(UTC),
            tenant=tenant,
        )


_ASSESSMENT_KEYS = {
    Task.TIER: "tier",
    Task.RECOMMENDATION: "recommendations",
    Task.CHURN: "churn",
    Task.PROSPECT: "prospect",
}
