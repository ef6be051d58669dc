"""Backtests: past assessments joined to what became of the customers.

Outcomes come from the bank (``cvm outcomes import``): the trail cannot say honestly that a
customer left (an ``account_closed`` event closes one product, not the relationship, and the
book's "lost" stage is a training-data notion the service never sees). A stored score is
labelled once its horizon (three months, as the training labels) has passed by the day the
outcome report is complete through: positive when an outcome falls inside the horizon,
negative otherwise; younger scores are left out (censored). A customer's scores in one month
count once (the latest), so a customer scored daily weighs as much as one scored monthly.

Backtests are computed when outcomes are imported (and by ``cvm backtest``) and stored in
``model_backtest`` with the outcome rows they saw; readers (the console) take the stored
report and compare the largest outcome id it saw with the largest stored now (outcomes are
only ever added) to say whether it is stale. Scores
count only once their horizon has passed, so scores stored later do not change a backtest
unless they are backdated (``cvm backtest`` recomputes on demand).
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.modelops import service, stats
from app.modelops.schemas import BacktestMonth, BacktestReport
from app.modelops.tables import ModelBacktest, ModelOutcome
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope, stored_probabilities

HORIZON = timedelta(days=91)  # three months, as the churn and prospect training labels
BACKTEST_TASKS = (Task.CHURN, Task.PROSPECT)
OUTCOME_MEANING = {Task.CHURN: "left the bank", Task.PROSPECT: "became a customer"}
# Bootstrap resamples of the backtest stored for the champion at each import (what the
# console shows): the interval matrix is resamples x rows, 800 MB for 1,000,000 scores.
IMPORT_RESAMPLES = 100


@dataclass(frozen=True)
class OutcomeRow:
    """One reported outcome: a customer and the day it happened."""

    customer_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class ImportResult:
    """What an import stored."""

    inserted: int
    already_stored: int
    # Stored backtests recomputed with the new outcomes (and the champion's stored).
    backtests: int = 0


def parse_instant(text: str, *, field: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or zoned date-time; ValueError naming ``field``."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not an ISO 8601 date or date-time") from None
    if value.tzinfo is None:
        if len(text.strip()) > 10:
            raise ValueError(f"{field}: {text!r} has a time but no zone offset")
        value = value.replace(tzinfo=UTC)
    return value


def read_outcomes_csv(text: str) -> list[OutcomeRow]:
    """Rows of a CSV with the columns customer_id and occurred_at (header row first); a
    ValueError names the line and column of the first bad value."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("customer_id", "occurred_at") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"line 1: missing column(s) {', '.join(missing)}")
    rows = []
    for line, record in enumerate(reader, start=2):
        customer_id = (record["customer_id"] or "").strip()
        if not customer_id or len(customer_id) > 128:
            raise ValueError(f"line {line}: customer_id must hold 1 to 128 characters")
        at = parse_instant(record["occurred_at"] or "", field=f"line {line}: occurred_at")
        rows.append(OutcomeRow(customer_id=customer_id, occurred_at=at))
    return rows


def _check_task(task: Task) -> None:
    if task not in BACKTEST_TASKS:
        raise InvalidInput(
            f"task: backtests cover {', '.join(t.value for t in BACKTEST_TASKS)} (binary "
            f"outcomes); {task.value} outcomes are not stored yet"
        )


def import_outcomes(
    session: Session,
    *,
    task: Task,
    rows: Sequence[OutcomeRow],
    observed_through: datetime,
    tenant: str | None,
    source: str,
    now: datetime,
) -> ImportResult:
    """Store reported outcomes (a row already stored is skipped); all or nothing."""
    _check_task(task)
    for number, row in enumerate(rows, start=1):
        if row.occurred_at > observed_through:
            raise InvalidInput(
                f"row {number}: occurred_at {row.occurred_at:%Y-%m-%d} is after "
                f"observed_through {observed_through:%Y-%m-%d}"
            )
    tenant_condition = TenantScope(tenant).condition(ModelOutcome.tenant)
    stored = {
        (c, t)
        for c, t in session.execute(
            select(ModelOutcome.customer_id, ModelOutcome.occurred_at).where(
                ModelOutcome.task == task.value, tenant_condition
            )
        )
    }
    fresh = {(r.customer_id, r.occurred_at) for r in rows} - stored
    session.add_all(
        ModelOutcome(
            tenant=tenant,
            task=task.value,
            customer_id=customer_id,
            occurred_at=occurred_at,
            observed_through=observed_through,
            source=source[:200],
            imported_at=now,
        )
        for customer_id, occurred_at in sorted(fresh)
    )
    session.flush()
    refreshed = refresh_backtests(session, task=task, tenant=tenant, now=now) if fresh else []
    session.commit()
    return ImportResult(
        inserted=len(fresh), already_stored=len(rows) - len(fresh), backtests=len(refreshed)
    )


def outcome_times(
    session: Session, task: Task, tenant: TenantScope | None
) -> tuple[dict[str, list[datetime]], datetime | None]:
    """Each customer's outcome times (sorted) and the day the reports are complete through."""
    conditions = [ModelOutcome.task == task.value]
    if tenant is not None:
        conditions.append(tenant.condition(ModelOutcome.tenant))
    times: dict[str, list[datetime]] = {}
    through: datetime | None = None
    for customer_id, occurred_at, observed in session.execute(
        select(
            ModelOutcome.customer_id, ModelOutcome.occurred_at, ModelOutcome.observed_through
        ).where(*conditions)
    ):
        times.setdefault(customer_id, []).append(occurred_at)
        through = observed if through is None else max(through, observed)
    for values in times.values():
        values.sort()
    return times, through


def _labelled(
    scores: list[tuple[str, datetime, float, str | None]], outcomes: dict[str, list[datetime]]
) -> dict[str, tuple[list[int], list[float]]]:
    """Month -> (labels, probabilities), the latest score of each customer in each month."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for customer_id, at, probability, _ in scores:  # oldest first: later ones overwrite
        latest[(f"{at:%Y-%m}", customer_id)] = (at, probability)
    months: dict[str, tuple[list[int], list[float]]] = {}
    for (month, customer_id), (at, probability) in sorted(latest.items()):
        times = outcomes.get(customer_id, [])
        first_after = bisect.bisect_right(times, at)
        positive = first_after < len(times) and times[first_after] <= at + HORIZON
        labels, probabilities = months.setdefault(month, ([], []))
        labels.append(int(positive))
        probabilities.append(probability)
    return months


def _month(
    month: str, labels: list[int], probabilities: list[float], resamples: int, seed: int
) -> BacktestMonth:
    y = np.asarray(labels, dtype=np.float64)
    counts = stats.resample_counts(len(y), resamples=resamples, seed=seed)
    return BacktestMonth(
        month=month,
        rows=len(y),
        positives=int(y.sum()),
        metrics=stats.binary_summary(y, np.asarray(probabilities), counts),
    )


def backtest(
    session: Session,
    *,
    task: Task,
    version: str | None,
    tenant: TenantScope | None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
) -> BacktestReport:
    """Per month of assessment: AUC, Brier, observed/expected and top-decile lift of the stored
    scores against the reported outcomes, with seeded bootstrap 95% intervals."""
    _check_task(task)
    outcomes, observed_through = outcome_times(session, task, tenant)
    if observed_through is None:
        raise NotFound(f"no {task.value} outcomes imported yet: cvm outcomes import FILE")
    scores = stored_probabilities(
        session,
        task=task.value,
        model_version=version,
        until=observed_through - HORIZON,
        tenant=tenant,
    )
    months = _labelled(scores, outcomes)
    all_labels = [label for labels, _ in months.values() for label in labels]
    all_probabilities = [p for _, probabilities in months.values() for p in probabilities]
    return BacktestReport(
        task=task.value,
        version=version,
        outcome=OUTCOME_MEANING[task],
        horizon_days=HORIZON.days,
        observed_through=observed_through,
        resamples=resamples,
        seed=seed,
        months=[_month(m, *months[m], resamples, seed) for m in sorted(months)],
        overall=(
            _month("all", all_labels, all_probabilities, resamples, seed) if all_labels else None
        ),
    )


def scope_key(tenant: TenantScope | None) -> str:
    """How a stored backtest names whose rows it covers."""
    if tenant is None:
        return "all"
    return "untagged" if tenant.tenant is None else f"tenant:{tenant.tenant}"


def _scope_of(key: str) -> TenantScope | None:
    if key == "all":
        return None
    return TenantScope(None if key == "untagged" else key.removeprefix("tenant:"))


def outcome_mark(session: Session, *, task: Task, tenant: TenantScope | None) -> tuple[int, int]:
    """(rows, largest id) of the task's stored outcomes in a scope, as a backtest stores them."""
    conditions = _outcome_conditions(task, tenant)
    rows, last = session.execute(
        select(func.count(ModelOutcome.id), func.coalesce(func.max(ModelOutcome.id), 0)).where(
            *conditions
        )
    ).one()
    return int(rows), int(last)


def last_outcome_id(session: Session, *, task: Task, tenant: TenantScope | None) -> int:
    """The largest id of the task's stored outcomes in a scope (an index probe): outcomes are
    only ever added, so a stored backtest that saw a smaller one is stale."""
    last = session.scalar(
        select(func.coalesce(func.max(ModelOutcome.id), 0)).where(
            *_outcome_conditions(task, tenant)
        )
    )
    return int(last or 0)


def _outcome_conditions(task: Task, tenant: TenantScope | None) -> list[ColumnElement[bool]]:
    conditions = [ModelOutcome.task == task.value]
    if tenant is not None:
        conditions.append(tenant.condition(ModelOutcome.tenant))
    return conditions


def _save(
    session: Session,
    *,
    report: BacktestReport,
    tenant: TenantScope | None,
    mark: tuple[int, int],
    now: datetime,
) -> ModelBacktest:
    key = {
        "scope": scope_key(tenant),
        "task": report.task,
        "version": report.version or "",
        "resamples": report.resamples,
        "seed": report.seed,
    }
    row = session.scalars(
        select(ModelBacktest).where(*(getattr(ModelBacktest, k) == v for k, v in key.items()))
    ).one_or_none()
    if row is None:
        row = ModelBacktest(**key)
        session.add(row)
    row.outcome_rows, row.last_outcome_id = mark
    row.report = report.model_dump(mode="json")
    row.computed_at = now
    return row


def store_backtest(
    session: Session,
    *,
    task: Task,
    version: str | None,
    tenant: TenantScope | None,
    now: datetime,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
) -> BacktestReport:
    """Compute a backtest and store it (replacing the one of the same scope, version and
    bootstrap setting); one commit."""
    report = backtest(
        session, task=task, version=version, tenant=tenant, resamples=resamples, seed=seed
    )
    mark = outcome_mark(session, task=task, tenant=tenant)
    _save(session, report=report, tenant=tenant, mark=mark, now=now)
    session.commit()
    return report


def refresh_backtests(
    session: Session, *, task: Task, tenant: str | None, now: datetime
) -> list[BacktestReport]:
    """Recompute, after outcomes of ``tenant`` arrived, every stored backtest of the task that
    covers them (the tenant's and the all-tenants ones) and the champion's for the tenant (what
    the console shows); not committed."""
    scopes = (scope_key(TenantScope(tenant)), scope_key(None))
    stored = session.execute(
        select(
            ModelBacktest.scope, ModelBacktest.version, ModelBacktest.resamples, ModelBacktest.seed
        )
        .where(ModelBacktest.task == task.value, ModelBacktest.scope.in_(scopes))
        .order_by(ModelBacktest.id)
    ).all()
    wanted = [(row.scope, row.version, row.resamples, row.seed) for row in stored]
    champion = service.champions(session).get(task)
    if champion is not None:
        mine = (scopes[0], champion, IMPORT_RESAMPLES, stats.DEFAULT_SEED)
        wanted += [] if mine in wanted else [mine]
    reports = []
    for scope, version, resamples, seed in wanted:
        covered = _scope_of(scope)
        report = backtest(
            session,
            task=task,
            version=version or None,
            tenant=covered,
            resamples=resamples,
            seed=seed,
        )
        mark = outcome_mark(session, task=task, tenant=covered)
        _save(session, report=report, tenant=covered, mark=mark, now=now)
        reports.append(report)
    return reports


@dataclass(frozen=True)
class StoredBacktest:
    """A stored backtest, when it was computed, and whether outcomes arrived since."""

    report: BacktestReport
    computed_at: datetime
    stale: bool


def latest_backtest(
    session: Session, *, task: Task, version: str | None, tenant: TenantScope | None
) -> StoredBacktest | None:
    """The most recently computed stored backtest of a version in a scope (any bootstrap
    setting); None when none was computed."""
    row = session.scalars(
        select(ModelBacktest)
        .where(
            ModelBacktest.scope == scope_key(tenant),
            ModelBacktest.task == task.value,
            ModelBacktest.version == (version or ""),
        )
        .order_by(ModelBacktest.computed_at.desc(), ModelBacktest.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    last = last_outcome_id(session, task=task, tenant=tenant)
    return StoredBacktest(
        report=BacktestReport.model_validate(row.report),
        computed_at=row.computed_at,
        stale=last != row.last_outcome_id,
    )
