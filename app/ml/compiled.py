"""Compiled inference: LightGBM trees compiled to machine code by lleaves, cached per model file.

LightGBM stays the reference. A compiled library is built once per model file (its SHA-256 is
the cache key, so a retrained model can never pick up a stale library), and every time one is
loaded its predictions are checked against LightGBM's on rows built from the model's own split
thresholds; any difference above ``TOLERANCE`` leaves the model on LightGBM with a warning.

lleaves (and llvmlite < 0.45) is an optional dependency: ``pip install 'cvm[compiled]'``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np

from app.ml.model import FloatArray, ScoringModel

logger = logging.getLogger(__name__)

BACKEND_NAME: Final = "compiled"
TOLERANCE: Final = 1e-9
CHECK_ROWS: Final = 4096
ZERO_THRESHOLD: Final = 1e-30  # above LightGBM's kZeroThreshold (1e-35f), below any real split
LIBRARY_SUFFIX: Final = ".o"  # the object code lleaves caches (ELF relocatable)


class CompiledUnavailable(RuntimeError):
    """lleaves is not installed, or no compiled library is cached for this model file."""


def is_available() -> bool:
    """Whether lleaves can be imported here."""
    return importlib.util.find_spec("lleaves") is not None


def file_digest(path: Path) -> str:
    """SHA-256 of a model file: the key of its compiled library."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_path(cache_dir: Path, model: ScoringModel, model_file: Path) -> Path:
    """Where the compiled library of this model file lives: <task>/<version>/<sha256>.o."""
    manifest = model.manifest
    name = file_digest(model_file) + LIBRARY_SUFFIX
    return cache_dir / manifest.task.value / manifest.version / name


class CompiledPredictor:
    """A compiled forest with the outputs of ``Booster.predict`` (probabilities, not raw)."""

    backend = BACKEND_NAME

    def __init__(self, compiled: Any, library: Path) -> None:
        self._compiled = compiled
        self.library = library

    def predict(self, matrix: FloatArray, *, threads: int) -> FloatArray:
        """Predict on a float64 matrix with ``threads`` threads (lleaves releases the GIL)."""
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        return np.asarray(self._compiled.predict(data, n_jobs=threads), dtype=np.float64)


def _lleaves_model(model_file: Path) -> Any:
    if not is_available():
        raise CompiledUnavailable("lleaves is not installed: pip install 'cvm[compiled]'")
    import lleaves

    return lleaves.Model(model_file=str(model_file))


def compile_library(model_file: Path, library: Path) -> float:
    """Compile a model file into ``library`` (atomically); returns the seconds it took."""
    library.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = _lleaves_model(model_file)
    handle, temporary = tempfile.mkstemp(
        prefix=".compiling-", suffix=LIBRARY_SUFFIX, dir=library.parent
    )
    os.close(handle)
    os.unlink(temporary)  # lleaves compiles only when the cache path does not exist yet
    try:
        model.compile(cache=temporary)
        # A reader sees either no library or a whole one, even with two compilers racing.
        os.replace(temporary, library)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return time.perf_counter() - started


def load_library(model_file: Path, library: Path) -> CompiledPredictor:
    """Load an already compiled library (no compilation: a missing one is an error)."""
    if not library.is_file():
        raise CompiledUnavailable(f"no compiled library at {library}")
    model = _lleaves_model(model_file)
    model.compile(cache=str(library))
    return CompiledPredictor(model, library)


def check_rows(booster: lgb.Booster, rows: int = CHECK_ROWS, seed: int = 0) -> FloatArray:
    """Rows that walk every split edge: each value is a split threshold, just past it, or NaN."""
    model = booster.dump_model()
    n_features = booster.num_feature()
    candidates: list[list[float]] = [[0.0] for _ in range(n_features)]
    stack: list[dict[str, Any]] = [tree["tree_structure"] for tree in model["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        feature = int(node["split_feature"])
        threshold = node["threshold"]
        if isinstance(threshold, str):  # categorical: "1||4||7"
            candidates[feature].extend(float(c) for c in threshold.split("||"))
        elif abs(float(threshold)) <= ZERO_THRESHOLD:
            # LightGBM writes a split "at zero" as +-kZeroThreshold. lleaves agrees for every
            # input but that exact sentinel (measured), which no feature value takes: probe
            # zero and values around it instead.
            candidates[feature].extend([0.0, -1e-9, 1e-9])
        else:
            value = float(threshold)
            candidates[feature].extend(
                [value, np.nextafter(value, -np.inf), np.nextafter(value, np.inf)]
            )
        stack.extend((node["left_child"], node["right_child"]))
    rng = np.random.default_rng(seed)
    matrix = np.empty((rows, n_features), dtype=np.float64)
    for j, values in enumerate(candidates):
        pool = np.unique(np.asarray(values, dtype=np.float64))
        matrix[:, j] = rng.choice(pool, size=rows)
    matrix[rng.random(matrix.shape) < 0.05] = np.nan
    return matrix


def largest_difference(model: ScoringModel, predictor: CompiledPredictor) -> float:
    """Largest absolute difference between compiled and LightGBM predictions on check rows."""
    rows = check_rows(model.booster)
    reference = np.asarray(model.booster.predict(rows, num_threads=model.threads))
    compiled = predictor.predict(rows, threads=model.threads)
    if compiled.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(compiled - reference)))


@dataclass(frozen=True)
class CompiledStatus:
    """What ``use_compiled`` did, for the CLI to report."""

    backend: str
    library: Path | None = None
    compile_seconds: float | None = None
    max_difference: float | None = None
    reason: str | None = None


def use_compiled(
    model: ScoringModel, *, model_file: Path, cache_dir: Path, compile_missing: bool
) -> CompiledStatus:
    """Switch ``model`` to its compiled library when it exists (or may be built) and agrees."""
    if not is_available():
        return CompiledStatus(backend=model.backend, reason="lleaves is not installed")
    library = library_path(cache_dir, model, model_file)
    compile_seconds = None
    if not library.is_file():
        if not compile_missing:
            return CompiledStatus(backend=model.backend, reason=f"no compiled library {library}")
        compile_seconds = compile_library(model_file, library)
        logger.info("compiled %s in %.1f s -> %s", model_file, compile_seconds, library)
    predictor = load_library(model_file, library)
    difference = largest_difference(model, predictor)
    if not difference <= TOLERANCE:  # also catches NaN
        logger.warning(
            "compiled %s differs from LightGBM by %g (> %g): keeping LightGBM",
            library,
            difference,
            TOLERANCE,
        )
        return CompiledStatus(
            backend=model.backend,
            library=library,
            compile_seconds=compile_seconds,
            max_difference=difference,
            reason="predictions differ from LightGBM's",
        )
    model.use_predictor(predictor)
    return CompiledStatus(
        backend=model.backend,
        library=library,
        compile_seconds=compile_seconds,
        max_difference=difference,
    )


def select_backend(
    model: ScoringModel, *, model_file: Path, choice: str, cache_dir: Path
) -> CompiledStatus:
    """Apply a backend choice: lightgbm; compiled (built if missing); auto (compiled if cached)."""
    if choice == "lightgbm":
        return CompiledStatus(backend=model.backend)
    if choice == "compiled" and not is_available():
        raise CompiledUnavailable("lleaves is not installed: pip install 'cvm[compiled]'")
    if choice not in ("compiled", "auto"):
        raise ValueError(f"unknown backend {choice!r}: auto, lightgbm or compiled")
    return use_compiled(
        model, model_file=model_file, cache_dir=cache_dir, compile_missing=choice == "compiled"
    )
