"""One whole-file scoring run, as ``cvm score`` starts it: on this machine or on a Dask cluster.

The command parses options and prints; this module picks the model and the engine, builds the
database sink when the scores are saved, scores, and says what happened. Every failure a user
can fix comes back as ``BatchRunError`` with a one-line message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from app.scoring.lean_import import optional_packages_hidden
from app.scoring.manifest import Task

if TYPE_CHECKING:  # imported when a run starts: `cvm --help` needs none of them
    from app.alerts.service import ChurnAlerts
    from app.batch.persist import DatabaseChunkSink
    from app.batch.service import BatchModel, BatchSummary
    from app.config import Settings
    from app.scoring.assess import Options, Rules
    from app.scoring.feature_schema import FeatureSchema
    from app.security.pseudonyms import Pseudonymizer


class BatchRunError(Exception):
    """A run that cannot start or finish; the message says why, in one line."""


class RunProgress(Protocol):
    """What a run reports while it goes: the CLI draws it, tests count it."""

    def start(self, *, label: str, total_rows: int | None) -> None:
        """Scoring begins; ``total_rows`` when cheap to know (Parquet metadata)."""
        ...

    def advance(self, rows: int) -> None:
        """``rows`` more input rows were read and scored or rejected."""
        ...

    def note(self, message: str) -> None:
        """Something worth telling before the figures (the model was compiled)."""
        ...

    def warn(self, message: str) -> None:
        """Something the user asked for and did not get (compiled trees)."""
        ...


@dataclass(frozen=True)
class BatchRun:
    """What a run did: its counts, the model and engine it used, how long it took."""

    summary: BatchSummary
    model_dir: Path
    engine: str
    seconds: float


@dataclass(frozen=True)
class _Persistence:
    """Where and how scores are saved: as the API saves them (pseudonyms, churn alerts)."""

    database_url: str
    pseudonymizer: Pseudonymizer | None
    alerts: ChurnAlerts | None


def run_batch(
    *,
    task: Task,
    input_path: Path,
    output: Path,
    settings: Settings,
    progress: RunProgress,
    model_dir: Path | None = None,
    reasons: int = 3,
    id_column: str | None = None,
    threads: int | None = None,
    chunk_rows: int | None = None,
    backend: str | None = None,
    dask: str | None = None,
    persist: bool = False,
) -> BatchRun:
    """Score ``input_path`` into ``output`` with ``task``'s model, on Dask when ``dask`` names a
    scheduler (or 'local'); with ``persist`` every row is saved too, one transaction a chunk."""
    # Scoring on this machine uses neither scikit-learn nor pandas: hidden, LightGBM and pyarrow
    # do not import them, and start-up is ~1.7 s shorter (app/scoring/lean_import.py).
    with nullcontext() if dask is not None else optional_packages_hidden():
        model_dir = model_dir or _default_model_dir(settings, task)
        chunk_rows = chunk_rows or settings.batch_chunk_rows
        default_threads = 1 if dask is not None else (os.cpu_count() or 1)
        threads = threads or settings.batch_threads or default_threads
        choice = backend or settings.batch_backend
        model = _load_model(
            model_dir,
            task=task,
            settings=settings,
            threads=threads,
            compiled_only=(dask is None and reasons == 0 and choice in ("auto", "compiled")),
        )
        if not input_path.exists():
            raise BatchRunError(f"input not found: {input_path}")
        check_input(input_path, model.schema, id_column or model.manifest.id_column)
        persistence = _persistence(settings) if persist else None
        from app.scoring.assess import Options
        from app.scoring.rules import rules_from_settings

        rules = rules_from_settings(settings)  # the API's rules: one rule set
        options = Options(reasons=reasons)
        started = time.perf_counter()
        if dask is not None:
            summary = _score_on_dask(
                dask,
                model_dir=model_dir,
                input_path=input_path,
                output=output,
                id_column=id_column,
                rules=rules,
                options=options,
                chunk_rows=chunk_rows,
                threads=threads,
                persistence=persistence,
                progress=progress,
            )
            engine_name = "lightgbm"
        else:
            engine_name = _choose_backend(
                model, model_dir=model_dir, choice=choice, settings=settings, progress=progress
            )
            summary = _score_here(
                model,
                model_dir=model_dir,
                input_path=input_path,
                output=output,
                id_column=id_column,
                rules=rules,
                options=options,
                chunk_rows=chunk_rows,
                persistence=persistence,
                progress=progress,
            )
    return BatchRun(summary, model_dir, engine_name, time.perf_counter() - started)


def check_input(input_path: Path, schema: FeatureSchema, id_column: str) -> None:
    """Refuse, before a row is read, an input that cannot be read, lacks a column the model
    needs or holds one in a type it cannot read: one line naming the file and the column."""
    from app.batch.service import input_schema, is_parquet
    from app.scoring.arrow import MissingColumnsError, check_columns

    try:
        columns = input_schema(input_path)
    except (pa.ArrowException, OSError, ValueError) as error:
        kind = "Parquet" if is_parquet(input_path) else "CSV"
        raise BatchRunError(
            f"{input_path}: cannot be read as {kind}: {_one_line(error)}"
        ) from error
    try:
        check_columns(schema, columns.names)
    except MissingColumnsError as error:
        raise BatchRunError(f"{input_path}: {error}") from error
    if id_column not in columns.names:
        raise BatchRunError(f"{input_path}: no id column {id_column!r} (name another with --id)")
    if pa.types.is_nested(columns.field(id_column).type):
        raise BatchRunError(
            f"{input_path}: id column {id_column!r} holds {columns.field(id_column).type}, "
            "not text or numbers"
        )
    for feature in schema.inputs:
        if feature.column in columns.names:
            kind = columns.field(feature.column).type
            if not _readable_feature_type(kind):
                raise BatchRunError(
                    f"{input_path}: column {feature.column!r} holds {kind}; the model reads "
                    f"{feature.name} from numbers, booleans or text"
                )


def _readable_feature_type(kind: pa.DataType) -> bool:
    """Whether the encoder reads a feature from a column of this type (text is parsed value by
    value, and a value that does not parse rejects its row alone)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )


def _one_line(error: BaseException) -> str:
    """An error's message on one line (Arrow's may span several)."""
    return " ".join(str(error).split())


def _default_model_dir(settings: Settings, task: Task) -> Path:
    """The folder of the model the service serves: pinned in settings, else the newest."""
    from app.scoring.registry import active_version, available_versions

    versions = available_versions(settings.models_dir, task)
    version = active_version(versions, settings.model_versions.get(task.value))
    if version is None:
        raise BatchRunError(f"no {task.value} model under {settings.models_dir}")
    if version not in versions:
        raise BatchRunError(
            f"CVM_MODEL_VERSIONS pins {task.value} to {version!r}, "
            f"which is not under {settings.models_dir / task.value}"
        )
    return settings.models_dir / task.value / version


def _load_model(
    model_dir: Path, *, task: Task, settings: Settings, threads: int, compiled_only: bool
) -> BatchModel:
    """The model, on its compiled library alone when that suffices, else with LightGBM."""
    from app.scoring.compiled import load_compiled_model

    loaded: BatchModel | None = None
    if compiled_only:
        # Scores alone from a cached library that its reference vouches for: LightGBM is never
        # loaded (app/scoring/compiled.py); otherwise it is, and checks the library live.
        loaded = load_compiled_model(model_dir, cache_dir=settings.compiled_dir, threads=threads)
    if loaded is None:
        from app.scoring.model import ModelLoadError, ScoringModel

        try:
            loaded = ScoringModel.load(model_dir, threads=threads)
        except ModelLoadError as error:
            raise BatchRunError(str(error)) from error
    if loaded.manifest.task is not task:
        raise BatchRunError(
            f"{model_dir} holds a {loaded.manifest.task.value} model, not {task.value}"
        )
    return loaded


def _persistence(settings: Settings) -> _Persistence:
    # Imported only to save: the alert logic brings SQLAlchemy.
    from app.alerts.service import ChurnAlerts
    from app.security.pseudonyms import Pseudonymizer

    return _Persistence(
        database_url=settings.database_url,
        pseudonymizer=Pseudonymizer.from_settings(settings),
        alerts=ChurnAlerts.from_settings(settings),
    )


def _choose_backend(
    model: BatchModel, *, model_dir: Path, choice: str, settings: Settings, progress: RunProgress
) -> str:
    """Apply ``--backend`` to a LightGBM model (compiling when asked); the engine's name."""
    from app.scoring.compiled import CompiledModel, CompiledUnavailable, select_backend

    if isinstance(model, CompiledModel):
        return model.backend
    try:
        status = select_backend(
            model,
            model_file=model_dir / model.manifest.model_file,
            choice=choice,
            cache_dir=settings.compiled_dir,
        )
    except CompiledUnavailable as error:
        raise BatchRunError(str(error)) from error
    if status.compile_seconds is not None:
        progress.note(f"compiled the model in {status.compile_seconds:.1f} s")
    if status.reason and choice == "compiled":
        progress.warn(f"using LightGBM: {status.reason}")
    return model.backend


def _score_on_dask(
    address: str,
    *,
    model_dir: Path,
    input_path: Path,
    output: Path,
    id_column: str | None,
    rules: Rules,
    options: Options,
    chunk_rows: int,
    threads: int,
    persistence: _Persistence | None,
    progress: RunProgress,
) -> BatchSummary:
    from app.batch.dask import dask_client, score_on_dask
    from app.batch.service import count_rows

    with dask_client(address) as client, _reading_errors(input_path):
        progress.start(label="Scoring on Dask", total_rows=count_rows(input_path))
        return score_on_dask(
            client,
            model_dir=model_dir,
            input_path=input_path,
            output_dir=output,
            id_column=id_column,
            rules=rules,
            options=options,
            chunk_rows=chunk_rows,
            threads=threads,
            database_url=None if persistence is None else persistence.database_url,
            pseudonymizer=None if persistence is None else persistence.pseudonymizer,
            alerts=None if persistence is None else persistence.alerts,
            on_partition=progress.advance,
        )


def _score_here(
    model: BatchModel,
    *,
    model_dir: Path,
    input_path: Path,
    output: Path,
    id_column: str | None,
    rules: Rules,
    options: Options,
    chunk_rows: int,
    persistence: _Persistence | None,
    progress: RunProgress,
) -> BatchSummary:
    from app.batch.service import count_rows, score_file

    with (
        _database_sink(
            persistence,
            model=model,
            model_dir=model_dir,
            input_path=input_path,
            chunk_rows=chunk_rows,
        ) as sink,
        _reading_errors(input_path),
    ):
        progress.start(label="Scoring", total_rows=count_rows(input_path))
        summary = score_file(
            model,
            input_path=input_path,
            output_path=output,
            id_column=id_column,
            rules=rules,
            options=options,
            chunk_rows=chunk_rows,
            sink=sink,
            on_chunk=progress.advance,
        )
    if sink is not None:
        summary.run_id = sink.run_id
    return summary


@contextmanager
def _reading_errors(input_path: Path) -> Iterator[None]:
    """What a run's reading, scoring and writing raise, as one line naming the file."""
    try:
        yield
    except OSError as error:  # reading the input or writing the output: names the file
        raise BatchRunError(_one_line(error)) from error
    except pa.ArrowException as error:  # the input, from the first row on
        raise BatchRunError(f"{input_path}: {_one_line(error)}") from error
    except ValueError as error:
        raise BatchRunError(_one_line(error)) from error


@contextmanager
def _database_sink(
    persistence: _Persistence | None,
    *,
    model: BatchModel,
    model_dir: Path,
    input_path: Path,
    chunk_rows: int,
) -> Iterator[DatabaseChunkSink | None]:
    """The sink that saves each chunk in one transaction (None when nothing is saved); database
    errors become a ``BatchRunError`` that says the committed chunks are kept."""
    if persistence is None:
        yield None
        return
    # SQLAlchemy is imported only when it is used.
    from sqlalchemy.exc import SQLAlchemyError

    from app.batch.persist import DatabaseChunkSink, run_id_for
    from app.db.errors import describe_db_error
    from app.db.session import create_db_engine

    engine = create_db_engine(persistence.database_url)
    try:
        yield DatabaseChunkSink(
            engine,
            model=model,
            run_id=run_id_for(input_path=input_path, model=model, chunk_rows=chunk_rows),
            pseudonymizer=persistence.pseudonymizer,
            alerts=persistence.alerts,
            model_dir=model_dir,
        )
    except SQLAlchemyError as error:
        raise BatchRunError(
            f"could not save the scores ({describe_db_error(error)}); committed chunks are "
            "kept and a rerun resumes after them (is the database migrated? cvm db upgrade)"
        ) from error
    finally:
        engine.dispose()
