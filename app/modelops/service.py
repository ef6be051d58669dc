"""Model registry use cases: register, approve, activate, roll back, and who served when.

Every status change appends a ``model_transition`` row (actor, time, from, to, reason) in the
transaction that makes it; a use case commits once. Loading a model to check it (activation,
rollback) happens before that transaction writes anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.modelops.cards import card_errors
from app.modelops.errors import (
    ChampionChanged,
    EvidenceMissing,
    SeparationOfDuties,
    VersionNotApproved,
    VersionUnloadable,
)
from app.modelops.status import ModelStatus
from app.modelops.tables import ModelShadow, ModelTransition, ModelVersion
from app.scoring.manifest import MANIFEST_FILE, Manifest, Task, why_not_served
from app.scoring.model import ModelLoadError, ScoringModel
from app.scoring.registry import available_versions

BOOTSTRAP_ACTOR = "system:bootstrap"


def manifest_sha256(directory: Path) -> str:
    """SHA-256 of a version's ``manifest.json`` (which names the model file's own hash: the
    training data fingerprint and the trees' count are in it)."""
    return hashlib.sha256((directory / MANIFEST_FILE).read_bytes()).hexdigest()


def evidence_missing(manifest: dict[str, Any]) -> list[str]:
    """What approval still lacks in a manifest; empty when it may be approved.

    Counted as the **backtest**: the evaluation ``cvm train`` records under ``metrics.test`` on
    held-out rows the model never saw, with its row count and headline metric (ROC AUC,
    accuracy or MAP@7). Counted as the **model card**: the ``card`` ``cvm train`` writes, valid
    against the model-card schema (intended use, provenance, intervals, baselines, reason-code
    fidelity, reproducibility), besides the data's source and fingerprint, the split and the
    task's card table (calibration, confusion matrix, or MAP@7 against popularity).
    """
    test = manifest.get("metrics", {}).get("test") or {}
    missing = []
    headline = any(key in test for key in ("roc_auc", "accuracy")) or "all_customers" in test
    if not (test.get("rows") or test.get("all_customers", {}).get("customers")) or not headline:
        missing.append("backtest: metrics.test (rows and a headline metric on held-out data)")
    card_table = any(k in test for k in ("calibration", "confusion_matrix", "all_customers"))
    card_fields = all(manifest.get(k) for k in ("data_source", "data_fingerprint", "split"))
    if not (card_table and card_fields):
        missing.append("model card: data_source, data_fingerprint, split and the card's table")
    card = manifest.get("card")
    if card is None:
        missing.append("model card: no card in the manifest (retrain with cvm train)")
    elif errors := card_errors(card):
        missing.append(f"model card: does not follow its schema ({errors[0]})")
    return missing


def load_version(models_dir: Path, *, task: str, version: str, sha256: str) -> ScoringModel:
    """Load and warm up a registered version from disk, checking it is what was registered."""
    directory = models_dir / task / version
    try:
        if manifest_sha256(directory) != sha256:
            raise VersionUnloadable(
                f"{task} version {version}: manifest.json changed since registration"
            )
        model = ScoringModel.load(directory)
        model.warm_up()
    except (OSError, ModelLoadError) as error:
        raise VersionUnloadable(f"{task} version {version} does not load: {error}") from error
    return model


def _row(session: Session, task: Task, version: str) -> ModelVersion:
    row = session.scalars(
        select(ModelVersion).where(ModelVersion.task == task.value, ModelVersion.version == version)
    ).one_or_none()
    if row is None:
        raise NotFound(f"{task.value} version {version!r} is not registered")
    return row


def _champion(session: Session, task: Task) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.task == task.value, ModelVersion.status == ModelStatus.CHAMPION.value
        )
    ).one_or_none()


def _record(
    session: Session,
    row: ModelVersion,
    *,
    to: ModelStatus,
    actor: str,
    reason: str,
    now: datetime,
    was: str | None = None,
) -> None:
    session.add(
        ModelTransition(
            task=row.task,
            version=row.version,
            from_status=was,
            to_status=to.value,
            actor=actor,
            reason=reason,
            at=now,
        )
    )


def _commit(session: Session, what: str) -> None:
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise Conflict(f"{what}: another change to the registry won the race; retry") from error


def register_version(
    session: Session,
    *,
    models_dir: Path,
    task: Task,
    version: str,
    actor: str,
    now: datetime,
    owner: str | None = None,
    restrictions: str | None = None,
) -> ModelVersion:
    """Register the version found under ``models_dir/task/version`` as a candidate."""
    directory = models_dir / task.value / version
    if version not in available_versions(models_dir, task):
        raise NotFound(f"no {task.value} version {version!r} under {models_dir / task.value}")
    try:
        manifest = Manifest.load(directory)
    except (OSError, ValidationError) as error:
        raise VersionUnloadable(f"{directory / MANIFEST_FILE} is not a valid manifest") from error
    if manifest.task is not task or manifest.version != version:
        raise VersionUnloadable(
            f"{directory} holds {manifest.task.value} version {manifest.version!r}"
        )
    refusal = why_not_served(manifest)
    if refusal is not None:
        raise VersionUnloadable(f"{directory}: {refusal}")
    row = ModelVersion(
        task=task.value,
        version=version,
        status=ModelStatus.CANDIDATE.value,
        manifest=manifest.model_dump(mode="json", by_alias=True),
        manifest_sha256=manifest_sha256(directory),
        owner=owner or actor,
        registered_by=actor,
        registered_at=now,
        restrictions=restrictions,
    )
    session.add(row)
    _record(session, row, to=ModelStatus.CANDIDATE, actor=actor, reason="registered", now=now)
    try:
        session.flush()
    except IntegrityError as error:
        session.rollback()
        raise Conflict(f"{task.value} version {version!r} is already registered") from error
    _commit(session, "registration")
    return row


def approve_version(
    session: Session, *, task: Task, version: str, actor: str, reason: str, now: datetime
) -> ModelVersion:
    """A validator's approval: the candidate becomes a challenger that may be activated."""
    row = _row(session, task, version)
    if row.registered_by == actor:
        raise SeparationOfDuties(f"{actor} registered {task.value} version {version}")
    if row.status != ModelStatus.CANDIDATE.value:
        raise Conflict(f"{task.value} version {version} is {row.status}, not a candidate")
    missing = evidence_missing(row.manifest)
    if missing:
        raise EvidenceMissing(
            f"{task.value} version {version} lacks: " + "; ".join(missing),
            extra={"missing": missing},
        )
    row.status, row.validator, row.validated_at = ModelStatus.CHALLENGER.value, actor, now
    _record(
        session,
        row,
        was=ModelStatus.CANDIDATE.value,
        to=ModelStatus.CHALLENGER,
        actor=actor,
        reason=reason,
        now=now,
    )
    _commit(session, "approval")
    return row


@dataclass(frozen=True)
class Activation:
    """The new champion's row and its model, loaded and warmed up."""

    row: ModelVersion
    model: ScoringModel
    replaced: str | None


def activate_version(
    session: Session,
    *,
    models_dir: Path,
    task: Task,
    version: str,
    actor: str,
    reason: str,
    now: datetime,
) -> Activation:
    """Make an approved version the champion, after loading it fully; the champion it
    replaces is retired. A concurrent activation loses with 409 (``champion_changed``)."""
    row = _row(session, task, version)
    if row.registered_by == actor:
        raise SeparationOfDuties(f"{actor} registered {task.value} version {version}")
    if row.status == ModelStatus.CHAMPION.value:
        raise Conflict(f"{task.value} version {version} is already the champion")
    if row.validated_at is None:
        raise VersionNotApproved(f"{task.value} version {version} has not been approved")
    current = _champion(session, task)
    expected = (current.id, current.version) if current is not None else None
    was, row_id, sha256 = row.status, row.id, row.manifest_sha256
    session.rollback()  # no transaction held open while the model loads
    model = load_version(models_dir, task=task.value, version=version, sha256=sha256)
    if expected is not None:
        demoted = cast(
            CursorResult[Any],
            session.execute(
                update(ModelVersion)
                .where(
                    ModelVersion.id == expected[0],
                    ModelVersion.status == ModelStatus.CHAMPION.value,
                )
                .values(status=ModelStatus.RETIRED.value),
            ),
        )
        if demoted.rowcount != 1:
            session.rollback()
            raise ChampionChanged(f"the {task.value} champion changed meanwhile; retry")
        session.add(
            ModelTransition(
                task=task.value,
                version=expected[1],
                from_status=ModelStatus.CHAMPION.value,
                to_status=ModelStatus.RETIRED.value,
                actor=actor,
                reason=f"replaced by {version}: {reason}",
                at=now,
            )
        )
    promoted = cast(
        CursorResult[Any],
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == row_id, ModelVersion.status == was)
            .values(status=ModelStatus.CHAMPION.value),
        ),
    )
    if promoted.rowcount != 1:
        session.rollback()
        raise ChampionChanged(f"{task.value} version {version} changed meanwhile; retry")
    session.add(
        ModelTransition(
            task=task.value,
            version=version,
            from_status=was,
            to_status=ModelStatus.CHAMPION.value,
            actor=actor,
            reason=reason,
            at=now,
        )
    )
    try:
        session.commit()
    except IntegrityError as error:  # the partial unique index: someone else's champion won
        session.rollback()
        raise ChampionChanged(f"another {task.value} activation won the race; retry") from error
    return Activation(
        row=_row(session, task, version), model=model, replaced=expected[1] if expected else None
    )


def previous_champion(session: Session, *, task: Task) -> str | None:
    """The version that served before the current champion, if any."""
    current = _champion(session, task)
    replaced = session.scalars(
        select(ModelTransition.version)
        .where(
            ModelTransition.task == task.value,
            ModelTransition.from_status == ModelStatus.CHAMPION.value,
        )
        .order_by(ModelTransition.id.desc())
    )
    return next(
        (v for v in replaced if current is None or v != current.version),
        None,
    )


def rollback(
    session: Session, *, models_dir: Path, task: Task, actor: str, reason: str, now: datetime
) -> Activation:
    """Bring back the previous champion, once it is checked to load (409 and nothing changed
    when its files are gone)."""
    version = previous_champion(session, task=task)
    if version is None:
        raise Conflict(f"no earlier {task.value} champion to roll back to")
    return activate_version(
        session,
        models_dir=models_dir,
        task=task,
        version=version,
        actor=actor,
        reason=f"rollback: {reason}",
        now=now,
    )


def list_versions(session: Session, *, task: Task | None = None) -> Sequence[ModelVersion]:
    """Registered versions, by task then registration order."""
    query = select(ModelVersion).order_by(ModelVersion.task, ModelVersion.id)
    if task is not None:
        query = query.where(ModelVersion.task == task.value)
    return session.scalars(query).all()


def list_transitions(session: Session, *, task: Task) -> Sequence[ModelTransition]:
    """A task's status changes, oldest first."""
    return session.scalars(
        select(ModelTransition)
        .where(ModelTransition.task == task.value)
        .order_by(ModelTransition.id)
    ).all()


def as_of(session: Session, *, task: Task, at: datetime) -> str | None:
    """The version of ``task`` that served at ``at`` (None: none did)."""
    last = session.execute(
        select(ModelTransition.version, ModelTransition.to_status)
        .where(
            ModelTransition.task == task.value,
            ModelTransition.at <= at,
            (ModelTransition.to_status == ModelStatus.CHAMPION.value)
            | (ModelTransition.from_status == ModelStatus.CHAMPION.value),
        )
        .order_by(ModelTransition.at.desc(), ModelTransition.id.desc())
        .limit(1)
    ).one_or_none()
    if last is None or last.to_status != ModelStatus.CHAMPION.value:
        return None
    return str(last.version)


def champions(session: Session) -> dict[Task, str]:
    """The champion version of every task that has one."""
    rows = session.execute(
        select(ModelVersion.task, ModelVersion.version).where(
            ModelVersion.status == ModelStatus.CHAMPION.value
        )
    )
    return {Task(task): version for task, version in rows}


def generation(session: Session) -> int:
    """A number that grows with every registry change (the newest transition's id)."""
    return int(session.scalar(select(func.coalesce(func.max(ModelTransition.id), 0))) or 0)


def champion_row(session: Session, *, task: Task, version: str) -> ModelVersion:
    """A registered version's row (404 when it is not registered)."""
    return _row(session, task, version)


def bootstrap(session: Session, *, models_dir: Path, now: datetime) -> dict[Task, str]:
    """Register the versions on disk of every task with none registered; the newest of each
    becomes its champion. Returns the champions set (a fresh database keeps serving)."""
    registered = set(session.scalars(select(ModelVersion.task).distinct()))
    made: dict[Task, str] = {}
    for task in Task:
        versions = available_versions(models_dir, task)
        if task.value in registered or not versions:
            continue
        for version in versions:
            directory = models_dir / task.value / version
            try:
                manifest = Manifest.load(directory)
            except (OSError, ValidationError):
                continue  # the start-up load reports it
            newest = version == versions[-1]
            row = ModelVersion(
                task=task.value,
                version=version,
                status=(ModelStatus.CHAMPION if newest else ModelStatus.CANDIDATE).value,
                manifest=manifest.model_dump(mode="json", by_alias=True),
                manifest_sha256=manifest_sha256(directory),
                owner=BOOTSTRAP_ACTOR,
                registered_by=BOOTSTRAP_ACTOR,
                registered_at=now,
                validator=BOOTSTRAP_ACTOR if newest else None,
                validated_at=now if newest else None,
                restrictions=f"trained on {manifest.data_source}",
            )
            session.add(row)
            reason = "bundled on disk; the newest serves on a fresh registry"
            _record(
                session,
                row,
                to=ModelStatus.CANDIDATE,
                actor=BOOTSTRAP_ACTOR,
                reason=reason,
                now=now,
            )
            if newest:
                _record(
                    session,
                    row,
                    was=ModelStatus.CANDIDATE.value,
                    to=ModelStatus.CHAMPION,
                    actor=BOOTSTRAP_ACTOR,
                    reason=reason,
                    now=now,
                )
                made[task] = version
    try:
        session.commit()
    except IntegrityError:  # another worker bootstrapped at the same time
        session.rollback()
        return {}
    return made


@dataclass(frozen=True)
class Shadowing:
    """A task's challenger in shadow, as the serving processes need it."""

    version: str
    share: float
    manifest_sha256: str


def set_shadow(
    session: Session,
    *,
    models_dir: Path,
    task: Task,
    version: str,
    share: float,
    actor: str,
    now: datetime,
) -> ModelShadow:
    """Put an approved challenger in shadow for ``share`` of the task's requests (replacing
    any other): 404 unknown version, 409 the champion itself or not a challenger, or it does
    not load. Serving processes pick it up on their next registry poll."""
    if not 0 <= share <= 1:
        raise InvalidInput(
            f"share must be between 0 and 1, not {share}",
            extra={"errors": [{"field": "share", "message": "between 0 and 1"}]},
        )
    row = _row(session, task, version)
    if row.status == ModelStatus.CHAMPION.value:
        raise Conflict(f"{task.value} version {version} is the champion: it cannot shadow itself")
    if row.status != ModelStatus.CHALLENGER.value:
        raise Conflict(
            f"{task.value} version {version} is {row.status}: only an approved challenger "
            "scores in shadow"
        )
    sha256 = row.manifest_sha256
    session.rollback()  # no transaction held open while the model loads
    load_version(models_dir, task=task.value, version=version, sha256=sha256)
    shadow = session.get(ModelShadow, task.value)
    if shadow is None:
        shadow = ModelShadow(task=task.value)
        session.add(shadow)
    shadow.version, shadow.share, shadow.set_by, shadow.set_at = version, share, actor, now
    _commit(session, "shadow")
    return shadow


def stop_shadow(session: Session, *, task: Task) -> str:
    """End a task's shadow; the version that was in it (404 when there was none)."""
    # One statement, no read first: on SQLite a read turned write fails when busy.
    version = session.scalar(
        delete(ModelShadow).where(ModelShadow.task == task.value).returning(ModelShadow.version)
    )
    if version is None:
        session.rollback()
        raise NotFound(f"no {task.value} challenger is in shadow")
    _commit(session, "stopping the shadow")
    return str(version)


def shadows(session: Session) -> dict[Task, Shadowing]:
    """Every task's challenger in shadow, while it is still a challenger (a shadowed version
    that became the champion or was retired stops shadowing)."""
    rows = session.execute(
        select(
            ModelShadow.task, ModelShadow.version, ModelShadow.share, ModelVersion.manifest_sha256
        )
        .join(
            ModelVersion,
            (ModelVersion.task == ModelShadow.task) & (ModelVersion.version == ModelShadow.version),
        )
        .where(ModelVersion.status == ModelStatus.CHALLENGER.value)
    )
    return {
        Task(task): Shadowing(version=version, share=float(share), manifest_sha256=sha256)
        for task, version, share, sha256 in rows
    }
