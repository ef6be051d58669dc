"""The model registry: which version of each task's model is active, loaded once at start-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from app.scoring.manifest import MANIFEST_FILE, Task, why_not_served

if TYPE_CHECKING:  # imported by load(): listing versions (cvm score) needs no LightGBM
    from app.scoring.model import ScoringModel


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Numeric-aware ordering: 10 sorts after 9, 1.10 after 1.9."""
    return tuple(
        (int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[._-]", version)
    )


def available_versions(models_dir: Path, task: Task) -> list[str]:
    """Versions of a task found on disk, oldest first."""
    task_dir = models_dir / task.value
    if not task_dir.is_dir():
        return []
    versions = [p.name for p in task_dir.iterdir() if (p / MANIFEST_FILE).is_file()]
    return sorted(versions, key=_version_key)


def active_version(versions: list[str], pinned: str | None) -> str | None:
    """The version served of a task with ``versions`` on disk (oldest first): the pinned one
    (``CVM_MODEL_VERSIONS``), else the newest; None when there is none."""
    return pinned or (versions[-1] if versions else None)


class ModelRegistry:
    """The active model of each task; tasks with no model on disk are reported missing."""

    def __init__(self, models: Mapping[Task, ScoringModel], missing: Mapping[Task, str]) -> None:
        self._models = dict(models)
        self.missing = dict(missing)

    @classmethod
    def load(
        cls, models_dir: Path, *, pinned: Mapping[str, str] | None = None, threads: int = 1
    ) -> ModelRegistry:
        """Load the pinned (or newest) version of every task and warm each model up.

        A manifest that fails validation stops the start-up: serving a model that disagrees
        with its schema is worse than not serving.
        """
        from app.scoring.model import ModelLoadError, ScoringModel

        pinned = pinned or {}
        unknown = sorted(set(pinned) - {t.value for t in Task})
        if unknown:
            raise ModelLoadError(f"pinned versions for unknown tasks: {unknown}")
        models: dict[Task, ScoringModel] = {}
        missing: dict[Task, str] = {}
        for task in Task:
            versions = available_versions(models_dir, task)
            version = active_version(versions, pinned.get(task.value))
            if version is None:
                missing[task] = f"no model under {models_dir / task.value}"
                continue
            if version not in versions:
                raise ModelLoadError(f"{task.value} version {version!r} not found in {models_dir}")
            model = ScoringModel.load(models_dir / task.value / version, threads=threads)
            if model.manifest.task is not task:
                raise ModelLoadError(
                    f"{models_dir / task.value / version} holds a {model.manifest.task} model"
                )
            refusal = why_not_served(model.manifest)
            if refusal is not None:
                raise ModelLoadError(f"{models_dir / task.value / version}: {refusal}")
            model.warm_up()
            models[task] = model
        return cls(models, missing)

    def replace(self, task: Task, model: ScoringModel) -> None:
        """Serve ``model`` for ``task`` from now on (one reference replaced: atomic)."""
        self._models = {**self._models, task: model}
        self.missing = {t: why for t, why in self.missing.items() if t is not task}

    def copy(self) -> ModelRegistry:
        """A registry of the same models whose replacements leave this one alone."""
        return ModelRegistry(self._models, self.missing)

    def get(self, task: Task) -> ScoringModel | None:
        """The active model of a task, if one is loaded."""
        return self._models.get(task)

    def version(self, task: Task) -> str | None:
        """The version served of a task, if one is loaded."""
        model = self._models.get(task)
        return None if model is None else model.manifest.version

    @property
    def loaded(self) -> dict[Task, ScoringModel]:
        """Every loaded model by task."""
        return dict(self._models)

    @property
    def complete(self) -> bool:
        """Whether every task has a model (what /readyz asks)."""
        return not self.missing
