"""Compiled inference: LightGBM trees compiled to machine code by lleaves, cached per model file.

LightGBM stays the reference. A compiled library is built once per model file (its SHA-256 is
the cache key, so a retrained model can never pick up a stale library), together with a
reference: rows built from the model's own split thresholds and LightGBM's predictions for them.
Every time a library is loaded its predictions on those rows are checked against LightGBM's,
and any difference above ``TOLERANCE`` leaves the model on LightGBM with a warning:

* ``use_compiled`` (LightGBM loaded: the API, scores with reasons) predicts the rows with
  LightGBM there and then;
* ``load_compiled_model`` (batch scores without reasons) does not load LightGBM at all and
  compares with the predictions LightGBM made when the library was built, which it trusts only
  when they were made from this very model file by the LightGBM version installed now.

lleaves (and llvmlite < 0.45) is an optional dependency: ``pip install 'cvm[compiled]'``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from app.scoring.feature_schema import FeatureSchema
from app.scoring.feature_schema import FloatMatrix as FloatArray
from app.scoring.lean_import import optional_packages_hidden
from app.scoring.manifest import Calibrator, Manifest

if TYPE_CHECKING:  # LightGBM is imported where it is used: load_compiled_model never needs it
    import lightgbm as lgb

    from app.scoring.model import ScoringModel

logger = logging.getLogger(__name__)

BACKEND_NAME: Final = "compiled"
TOLERANCE: Final = 1e-9
CHECK_ROWS: Final = 4096
ZERO_THRESHOLD: Final = 1e-30  # above LightGBM's kZeroThreshold (1e-35f), below any real split
LIBRARY_SUFFIX: Final = ".o"  # the object code lleaves caches (ELF relocatable)
REFERENCE_SUFFIX: Final = ".reference.npz"


class CompiledUnavailable(RuntimeError):
    """lleaves is not installed, or no compiled library is cached for this model file."""


class _Described(Protocol):
    manifest: Manifest


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


def library_path(cache_dir: Path, model: _Described, model_file: Path) -> Path:
    """Where the compiled library of this model file lives: <task>/<version>/<sha256>.o."""
    return _library_path(cache_dir, model.manifest, file_digest(model_file))


def _library_path(cache_dir: Path, manifest: Manifest, digest: str) -> Path:
    return cache_dir / manifest.task.value / manifest.version / (digest + LIBRARY_SUFFIX)


def reference_path(library: Path) -> Path:
    """The reference stored beside a library: <sha256>.reference.npz."""
    return library.with_name(library.stem + REFERENCE_SUFFIX)


def lightgbm_version() -> str:
    """The installed LightGBM's version, read without importing it."""
    return importlib.metadata.version("lightgbm")


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
    with optional_packages_hidden():  # it is handed numpy only: its pandas import is dead weight
        import lleaves

    return lleaves.Model(model_file=str(model_file))


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(temporary)``, then rename: a reader sees no file or a whole one."""
    handle, temporary = tempfile.mkstemp(prefix=".writing-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    os.unlink(temporary)  # lleaves writes its cache only where no file exists yet
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def compile_library(model_file: Path, library: Path) -> float:
    """Compile a model file into ``library`` with its reference (atomically); the seconds taken."""
    import lightgbm as lgb

    library.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = _lleaves_model(model_file)
    _write_atomically(library, lambda temporary: model.compile(cache=temporary))
    Reference.build(lgb.Booster(model_file=str(model_file)), file_digest(model_file)).save(
        reference_path(library)
    )
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


@dataclass(frozen=True)
class Reference:
    """Check rows of one model file and LightGBM's predictions for them."""

    rows: FloatArray
    expected: FloatArray
    model_digest: str
    lightgbm_version: str

    @classmethod
    def build(cls, booster: lgb.Booster, model_digest: str) -> Reference:
        """Predict the model's check rows with LightGBM."""
        rows = check_rows(booster)
        expected = np.asarray(booster.predict(rows), dtype=np.float64)
        return cls(rows, expected, model_digest, lightgbm_version())

    def save(self, path: Path) -> None:
        """Write the reference (atomically)."""

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez(
                    handle,
                    rows=self.rows,
                    expected=self.expected,
                    model_digest=np.str_(self.model_digest),
                    lightgbm_version=np.str_(self.lightgbm_version),
                )

        _write_atomically(path, write)

    @classmethod
    def load(cls, path: Path) -> Reference | None:
        """The reference saved at ``path``; None when there is none or it is unreadable."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                return cls(
                    np.asarray(saved["rows"], dtype=np.float64),
                    np.asarray(saved["expected"], dtype=np.float64),
                    str(saved["model_digest"]),
                    str(saved["lightgbm_version"]),
                )
        except (OSError, ValueError, KeyError):
            return None

    def vouches_for(self, model_digest: str, n_features: int) -> bool:
        """Whether these are this model file's rows, predicted by the LightGBM installed now."""
        return (
            self.model_digest == model_digest
            and self.lightgbm_version == lightgbm_version()
            and self.rows.shape == (CHECK_ROWS, n_features)
            and len(self.expected) == CHECK_ROWS
        )


def largest_difference(
    predictor: CompiledPredictor, rows: FloatArray, expected: FloatArray, *, threads: int
) -> float:
    """Largest absolute difference between compiled predictions and LightGBM's on check rows."""
    compiled = predictor.predict(rows, threads=threads)
    if compiled.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(compiled - expected)))


def _warn_disagreement(library: Path, difference: float) -> None:
    logger.warning(
        "compiled %s differs from LightGBM by %g (> %g): keeping LightGBM",
        library,
        difference,
        TOLERANCE,
    )


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
    digest = file_digest(model_file)
    library = _library_path(cache_dir, model.manifest, digest)
    compile_seconds = None
    if not library.is_file():
        if not compile_missing:
            return CompiledStatus(backend=model.backend, reason=f"no compiled library {library}")
        compile_seconds = compile_library(model_file, library)
        logger.info("compiled %s in %.1f s -> %s", model_file, compile_seconds, library)
    predictor = load_library(model_file, library)
    reference = Reference.load(reference_path(library))
    if reference is None or not reference.vouches_for(digest, model.booster.num_feature()):
        # A library from before references were kept, or from another LightGBM: make it anew.
        reference = Reference.build(model.booster, digest)
        reference.save(reference_path(library))
    # LightGBM is here: its predictions are made now, not read from the reference.
    expected = np.asarray(
        model.booster.predict(reference.rows, num_threads=model.threads), dtype=np.float64
    )
    difference = largest_difference(predictor, reference.rows, expected, threads=model.threads)
    if not difference <= TOLERANCE:  # also catches NaN
        _warn_disagreement(library, difference)
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


class CompiledModel:
    """A model served by its compiled library alone, LightGBM not loaded: scores, no reasons."""

    backend = BACKEND_NAME

    def __init__(
        self,
        manifest: Manifest,
        predictor: CompiledPredictor,
        *,
        threads: int,
        max_difference: float,
    ) -> None:
        self.manifest = manifest
        self.predictor = predictor
        self.threads = threads
        self.max_difference = max_difference
        self.calibrate = Calibrator(manifest.calibration)

    @property
    def schema(self) -> FeatureSchema:
        """The features this model takes, in column order."""
        return self.manifest.feature_schema

    @property
    def classes(self) -> tuple[str, ...]:
        """Output labels (for binary: negative, positive)."""
        return self.manifest.classes

    def predict(self, matrix: FloatArray, *, threads: int | None = None) -> FloatArray:
        """The outputs of ``Booster.predict`` (calibrated as the manifest says), on ``threads``
        threads (default: the model's)."""
        return self.calibrate(self.predictor.predict(matrix, threads=threads or self.threads))


def _feature_names(model_file: Path) -> list[str]:
    """The feature names a LightGBM model file declares in its header."""
    with model_file.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("feature_names="):
                return line.removeprefix("feature_names=").split()
            if line.startswith("Tree="):
                break
    return []


def load_compiled_model(model_dir: Path, *, cache_dir: Path, threads: int) -> CompiledModel | None:
    """The model in ``model_dir`` on its cached library alone, if its reference vouches for it
    and the library agrees with it; None otherwise (load it with LightGBM then)."""
    if not is_available():
        return None
    try:
        manifest = Manifest.load(model_dir)
    except (OSError, ValueError):
        return None  # ScoringModel.load reports it
    model_file = model_dir / manifest.model_file
    if manifest.value_model_file or _feature_names(model_file) != manifest.feature_schema.names:
        return None
    digest = file_digest(model_file)
    library = _library_path(cache_dir, manifest, digest)
    reference = Reference.load(reference_path(library))
    n_features = len(manifest.feature_schema.features)
    if not library.is_file() or reference is None or not reference.vouches_for(digest, n_features):
        return None
    predictor = load_library(model_file, library)
    difference = largest_difference(predictor, reference.rows, reference.expected, threads=threads)
    if not difference <= TOLERANCE:  # also catches NaN
        _warn_disagreement(library, difference)
        return None
    return CompiledModel(manifest, predictor, threads=threads, max_difference=difference)


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
