"""The model registry as stored: one row per registered version, one per status change."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.modelops.status import ModelStatus
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime

STATUS_VALUES = ", ".join(f"'{s.value}'" for s in ModelStatus)
# The predicate of the index that admits one champion per task (PostgreSQL and SQLite).
CHAMPION_ONLY = "status = 'champion'"


class ModelVersion(Base):
    """A version of a task's model: its manifest, who answers for it and where it stands."""

    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("task", "version", name="uq_model_version_task_version"),
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
        # Exactly one champion per task: a second activation racing the first fails here.
        Index(
            "uq_model_version_champion",
            "task",
            unique=True,
            sqlite_where=text(CHAMPION_ONLY),
            postgresql_where=text(CHAMPION_ONLY),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # SHA-256 of manifest.json as registered: a folder changed on disk afterwards won't load.
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    validator: Mapped[str | None] = mapped_column(String(64))
    validated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    restrictions: Mapped[str | None] = mapped_column(Text)


class ModelTransition(Base):
    """One status change of one version, appended and never changed (triggers refuse it).

    Its ``id`` grows with every change: the serving processes poll the largest one as the
    registry's generation.
    """

    __tablename__ = "model_transition"
    __table_args__ = (Index("ix_model_transition_task_at", "task", "at"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


model_version_table = cast(Table, ModelVersion.__table__)
model_transition_table = cast(Table, ModelTransition.__table__)


class ModelOutcome(Base):
    """What became of a customer, as the bank reports it (``cvm outcomes import``): for churn,
    the day they left; for prospect, the day they became a customer. ``observed_through`` is
    the day the report is complete through: an assessment whose horizon ends by then and
    meets no outcome within it counts as a negative (stayed, did not convert)."""

    __tablename__ = "model_outcome"
    __table_args__ = (
        UniqueConstraint(
            "tenant", "task", "customer_id", "occurred_at", name="uq_model_outcome_event"
        ),
        Index("ix_model_outcome_task_customer", "task", "customer_id"),
        # The mark a stored backtest is checked against (count and last id of a scope's
        # outcomes), read on every view of the model page: an index-only read.
        Index("ix_model_outcome_task_tenant_id", "task", "tenant", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    observed_through: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(200))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelShadow(Base):
    """A challenger scoring a share of a task's requests in shadow: at most one per task.

    Every serving process reads this table on each registry poll, so a shadow set or stopped
    here reaches them all without a restart; the champion's answers never change.
    """

    __tablename__ = "model_shadow"
    __table_args__ = (CheckConstraint("share >= 0 AND share <= 1", name="share"),)

    task: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    share: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelBacktest(Base):
    """A backtest as computed when outcomes were imported (or by ``cvm backtest``): the report
    and the outcome rows it saw, so a reader can tell whether outcomes arrived since.

    ``scope`` names whose rows it covers (``all``, ``untagged`` or ``tenant:NAME``) and
    ``version`` whose scores ('' for every version's); one row per scope, task, version and
    bootstrap setting, replaced when recomputed."""

    __tablename__ = "model_backtest"
    __table_args__ = (
        UniqueConstraint(
            "scope", "task", "version", "resamples", "seed", name="uq_model_backtest_key"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))
    task: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    resamples: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    # The outcome rows of the task and scope when it was computed: their count and largest id
    # (outcomes are only added: a larger id stored since makes it stale).
    outcome_rows: Mapped[int] = mapped_column(Integer)
    last_outcome_id: Mapped[int] = mapped_column(BigInteger)
    report: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelDriftRun(Base):
    """One drift monitoring run (PSI per feature and of the score) of a version on a scope's
    newest stored rows, appended by ``cvm monitor`` and the monitoring endpoint; the console
    shows the latest."""

    __tablename__ = "model_drift_run"
    __table_args__ = (Index("ix_model_drift_run_key", "scope", "task", "version", "id"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))
    task: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    report: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
