"""Keeping every serving process on the registry's champions, without a restart.

Each app process runs one ``ChampionWatcher``: a thread that asks the database for the
registry's generation (the newest transition id, one indexed ``max()``) every
``interval_s`` seconds. When it moves, the watcher reads the champions, loads any version it
does not serve yet fully (model, warm-up, hash check) and only then swaps it in: a request
sees the old model or the new one, never a half-loaded one. A version that fails to load is
logged and the current one keeps serving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.errors import ServiceError
from app.modelops import service
from app.scoring.manifest import Task
from app.scoring.model import ScoringModel

log = structlog.get_logger("cvm.models")

Swap = Callable[[Task, ScoringModel], None]
Served = Callable[[Task], str | None]
# Serve a challenger in shadow for a share of a task's requests (None: stop).
Shadow = Callable[[Task, ScoringModel | None, float], None]


class ChampionWatcher:
    """Polls the registry and swaps in each task's champion (tasks pinned by
    ``CVM_MODEL_VERSIONS`` keep their pinned version)."""

    def __init__(
        self,
        *,
        session_factory: Callable[[], Session],
        models_dir: Path,
        swap: Swap,
        served: Served,
        pinned: Mapping[str, str],
        interval_s: float,
        shadow: Shadow | None = None,
    ) -> None:
        self._sessions = session_factory
        self._models_dir = models_dir
        self._swap = swap
        self._served = served
        self._pinned = dict(pinned)
        self._interval_s = interval_s
        self._generation = -1
        self._failed: set[tuple[Task, str]] = set()
        self._shadow = shadow
        self._shadowing: dict[Task, tuple[str, float]] = {}
        self._shadow_models: dict[Task, ScoringModel] = {}  # kept when only the share changes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register the bundled versions on a fresh registry, serve the champions, then poll."""
        try:
            with self._sessions() as session:
                made = service.bootstrap(
                    session, models_dir=self._models_dir, now=datetime.now(UTC)
                )
            if made:
                log.info("model_registry_bootstrapped", champions=made)
            self.sync()
        except SQLAlchemyError as error:  # the database may come later; keep polling
            log.warning("model_registry_unavailable", error=type(error).__name__)
        if self._interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the polling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sync()
            except SQLAlchemyError as error:
                log.warning("model_registry_unavailable", error=type(error).__name__)

    def sync(self) -> bool:
        """Swap in any champion not served yet, if the registry changed; whether it had.
        Challengers in shadow are followed on every call (one small read)."""
        changed = self._sync_champions()
        if self._shadow is not None:
            self.sync_shadows()
        return changed

    def sync_shadows(self) -> None:
        """Serve the challengers in shadow as the registry says: load new ones, stop others."""
        assert self._shadow is not None
        with self._lock:
            with self._sessions() as session:
                wanted = service.shadows(session)
            for task in [t for t in self._shadowing if t not in wanted]:
                self._shadow(task, None, 0.0)
                del self._shadowing[task]
                self._shadow_models.pop(task, None)
                log.info("shadow_stopped", task=task.value)
            for task, shadowing in wanted.items():
                current = self._shadowing.get(task)
                if current == (shadowing.version, shadowing.share):
                    continue
                self._start_shadow(task, shadowing)

    def _start_shadow(self, task: Task, shadowing: service.Shadowing) -> None:
        assert self._shadow is not None
        if (task, shadowing.version) in self._failed:
            return
        loaded = self._shadow_models.get(task)
        if loaded is not None and loaded.manifest.version == shadowing.version:
            self._shadow(task, loaded, shadowing.share)
            self._shadowing[task] = (shadowing.version, shadowing.share)
            return
        try:
            model = service.load_version(
                self._models_dir,
                task=task.value,
                version=shadowing.version,
                sha256=shadowing.manifest_sha256,
            )
        except ServiceError as error:
            self._failed.add((task, shadowing.version))
            log.error(
                "shadow_not_loaded", task=task.value, version=shadowing.version, detail=str(error)
            )
            return
        self._shadow(task, model, shadowing.share)
        self._shadowing[task] = (shadowing.version, shadowing.share)
        self._shadow_models[task] = model
        log.info(
            "shadow_started", task=task.value, version=shadowing.version, share=shadowing.share
        )

    def _sync_champions(self) -> bool:
        with self._lock, self._sessions() as session:
            now = service.generation(session)
            if now == self._generation:
                return False
            wanted = {
                task: (version, service.champion_row(session, task=task, version=version))
                for task, version in service.champions(session).items()
                if task.value not in self._pinned and self._served(task) != version
            }
            targets = {t: (v, row.manifest_sha256) for t, (v, row) in wanted.items()}
            self._generation = now
        for task, (version, sha256) in targets.items():
            self._load_and_swap(task, version, sha256)
        return True

    def _load_and_swap(self, task: Task, version: str, sha256: str) -> None:
        if (task, version) in self._failed:
            return
        try:
            model = service.load_version(
                self._models_dir, task=task.value, version=version, sha256=sha256
            )
        except ServiceError as error:
            self._failed.add((task, version))
            log.error("champion_not_loaded", task=task.value, version=version, detail=str(error))
            return
        self.adopt(task, model)

    def adopt(self, task: Task, model: ScoringModel) -> None:
        """Serve a model already loaded (an activation made by this process), unless pinned."""
        if task.value in self._pinned:
            return
        previous = self._served(task)
        self._swap(task, model)
        log.info("champion_swapped", task=task.value, version=model.manifest.version, was=previous)
