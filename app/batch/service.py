"""Scoring a whole file: stream chunks, validate against the schema, predict, write results.

Memory stays flat as the input grows: a few chunks are in memory at a time (one per worker
thread, one queued, one being written), scores stream into a Parquet writer and rejects into a
CSV writer, and nothing is kept per row. Outputs are written under a temporary name and
renamed into place at the end, so a crashed run never leaves a truncated file where a finished
one is expected.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.scoring.arrow import check_columns, encode
from app.scoring.assess import (
    STAGES,
    Block,
    Options,
    Rules,
    TaskAssessment,
    assess_task,
    block_stages,
)
from app.scoring.feature_schema import FloatMatrix as FloatArray
from app.scoring.manifest import Objective, Task

if TYPE_CHECKING:  # not imported to run: a compiled model alone scores without LightGBM
    from app.scoring.compiled import CompiledModel
    from app.scoring.model import ScoringModel

    # LightGBM's model (reasons, value models) or its compiled library alone (scores only).
    BatchModel: TypeAlias = ScoringModel | CompiledModel

T = TypeVar("T")
R = TypeVar("R")
# Measured (cvm score, 1M rows, 2 cores): 32k rows ~4% faster than 64k on compiled trees (less
# time with one core idle on the last chunk) and 60 MB less peak memory; 128k and up slower.
CHUNK_ROWS = 32_768
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
# A snapshot's own lifecycle column, when it has one, says who is a prospect or has left.
LIFECYCLE_COLUMN = "lifecycle"
# Read by the product rules when the file has them (app/scoring/policies.py).
RULE_COLUMNS = ("risk_profile", "tier")
_STAGE_NAMES = pa.array([stage.value for stage in STAGES], pa.string())
_PARTIAL_SUFFIX = ".partial"


@dataclass
class BatchSummary:
    """What a batch run did, for the CLI to print."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejects_path: Path | None = None
    chunks: int = 0
    chunks_persisted: int = 0
    chunks_skipped: int = 0
    rows_persisted: int = 0
    run_id: str | None = None

    def add(self, other: BatchSummary) -> None:
        """Fold in the counts of another part of the same run (Dask partitions)."""
        self.rows_read += other.rows_read
        self.rows_scored += other.rows_scored
        self.rows_rejected += other.rows_rejected
        self.chunks += other.chunks
        self.chunks_persisted += other.chunks_persisted
        self.chunks_skipped += other.chunks_skipped
        self.rows_persisted += other.rows_persisted


@dataclass(frozen=True)
class ScoredChunk:
    """The valid rows of one chunk: ids, their assessment and its columns for the output."""

    index: int
    ids: pa.Array
    assessment: TaskAssessment | None  # None when no row of the chunk was valid
    columns: dict[str, pa.Array]
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def table(self, id_column: str) -> pa.Table:
        """The chunk as written to the output file."""
        return pa.table({id_column: self.ids, **self.columns})


class ChunkSink(Protocol):
    """Where scored chunks are persisted, each once (see ``app.batch.persist``)."""

    def write(self, chunk: ScoredChunk) -> int | None:
        """Persist one chunk in one transaction; rows written, or None if already committed."""
        ...


def is_parquet(path: Path) -> bool:
    """Parquet file or a folder of Parquet files (a dataset); anything else is read as CSV."""
    return path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir()


def parquet_files(path: Path) -> list[Path]:
    """The files of a Parquet input, in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in PARQUET_SUFFIXES)
    return [path]


def count_rows(path: Path) -> int | None:
    """Rows in the input when cheap to know (Parquet metadata), for the progress bar."""
    if is_parquet(path):
        return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in parquet_files(path))
    return None


def input_schema(path: Path) -> pa.Schema:
    """Columns and types of the input, from Parquet metadata or the CSV's first block."""
    if is_parquet(path):
        files = parquet_files(path)
        if not files:
            raise ValueError(f"no Parquet files under {path}")
        return pq.ParquetFile(files[0]).schema_arrow
    return _csv_reader(path).schema


def input_columns(path: Path) -> list[str]:
    """Column names of the input, read from Parquet metadata or the CSV header."""
    return list(input_schema(path).names)


def rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``chunk_rows`` rows (the last may be shorter): stable chunk numbers."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            take = min(chunk_rows - held, batch.num_rows - start)
            pending.append(batch.slice(start, take))
            held += take
            start += take
            if held == chunk_rows:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _csv_reader(path: Path) -> pacsv.CSVStreamingReader:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        # Blank cells are missing values, as they are to training's reader.
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )


def iter_row_groups(
    file: Path | str,
    chunk_rows: int,
    *,
    row_groups: Iterable[int] | None = None,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of a Parquet file, one reader per row group.

    A single ``iter_batches`` over a whole file keeps allocations as it goes (about 1 MB per
    64k-row batch, measured with pyarrow 26): memory would grow with the file. A reader per
    row group holds at most one row group's buffers. Columns are decoded on the calling thread:
    Arrow's own thread pool costs half as much CPU again (measured), and the scorer keeps the
    other cores busy with chunks of their own.
    """
    reader = pq.ParquetFile(file)
    groups = range(reader.metadata.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        yield from reader.iter_batches(
            batch_size=chunk_rows, row_groups=[group], columns=columns, use_threads=False
        )


def read_batches(
    path: Path, chunk_rows: int = CHUNK_ROWS, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file or dataset, or a CSV file (delimiter sniffed), in equal chunks."""
    if is_parquet(path):
        raw: Iterable[pa.RecordBatch] = (
            batch
            for file in parquet_files(path)
            for batch in iter_row_groups(file, chunk_rows, columns=columns)
        )
    else:
        raw = _csv_reader(path)
    return rechunk(raw, chunk_rows)


def map_in_order(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int
) -> Generator[R, None, None]:
    """``map(function, items)`` on ``workers`` threads, results in input order.

    At most ``ahead`` items are handed to the threads and not yet taken back, so memory is
    bounded whatever the input's length. Items are drawn on the caller's thread.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvm-batch") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early (an error, an interrupt): drop what has not run
            for future in pending:
                future.cancel()


def result_columns(assessment: TaskAssessment) -> dict[str, pa.Array]:
    """The output file's columns of one assessed chunk."""
    columns: dict[str, pa.Array] = {"stage": _STAGE_NAMES.take(pa.array(assessment.block.stages))}
    model = assessment.model
    if model.manifest.objective is Objective.BINARY:
        columns["probability"] = pa.array(assessment.probability)
        columns["band"] = pa.array(assessment.band, pa.string())
        if assessment.value is not None:
            columns["expected_value"] = pa.array(
                assessment.probability * np.maximum(assessment.value, 0.0)
            )
        if assessment.task is Task.CHURN:
            columns["alert"] = pa.array(assessment.alert)
    else:
        columns["prediction"] = pa.array(assessment.band, pa.string())
        columns["probability"] = pa.array(assessment.probability)
    if assessment.offers is not None:
        classes = model.classes
        columns["products"] = pa.array(
            [[classes[j] for j in offer] for offer in assessment.offers], pa.list_(pa.string())
        )
    if assessment.options.reasons:
        columns["reasons"] = pa.array(
            [assessment.reason_texts(i) for i in range(len(assessment))], pa.list_(pa.string())
        )
    return columns


def _text_column(
    batch: pa.RecordBatch, name: str, rejected: npt.NDArray[np.intp]
) -> list[str | None] | None:
    """A column the product rules read (risk profile, tier), rejected rows left out; None
    when the file has no such column."""
    if name not in batch.schema.names:
        return None
    values: list[str | None] = batch.column(name).cast(pa.string()).to_pylist()
    if len(rejected):
        dropped = set(rejected.tolist())
        values = [v for i, v in enumerate(values) if i not in dropped]
    return values


def chunk_stages(
    model: BatchModel, batch: pa.RecordBatch, matrix: FloatArray, rules: Rules
) -> npt.NDArray[np.int8]:
    """Each row's stage: the file's lifecycle column where it names one, else from tenure."""
    given = None
    if LIFECYCLE_COLUMN in batch.schema.names:
        names = batch.column(LIFECYCLE_COLUMN).cast(pa.string())
        found = pc.index_in(names, value_set=_STAGE_NAMES).fill_null(-1)
        given = found.to_numpy(zero_copy_only=False).astype(np.int8)
    return block_stages(model.manifest.task, model.schema, matrix, given=given, rules=rules)


def score_chunk(
    model: BatchModel,
    batch: pa.RecordBatch,
    *,
    index: int,
    id_column: str,
    rules: Rules,
    options: Options,
    threads: int | None = None,
) -> ScoredChunk:
    """Validate, encode and assess one chunk; rows that fail validation come back as rejects."""
    encoded = encode(model.schema, batch)
    ids = batch.column(id_column).cast(pa.string())
    rejected = np.flatnonzero(encoded.problem_codes)
    rejects = [(str(ids[int(i)].as_py()), str(encoded.problem(int(i)))) for i in rejected]
    matrix = encoded.matrix
    stages = chunk_stages(model, batch, matrix, rules)
    if len(rejected):
        valid = encoded.valid
        ids = ids.filter(pa.array(valid))
        matrix = matrix[valid]
        stages = stages[valid]
    if not len(matrix):
        return ScoredChunk(index=index, ids=ids, assessment=None, columns={}, rejects=rejects)
    profiles, tiers = (_text_column(batch, name, rejected) for name in RULE_COLUMNS)
    block = Block(
        ids=ids.to_pylist(), matrix=matrix, stages=stages, risk_profiles=profiles, tiers=tiers
    )
    assessment = assess_task(
        model.manifest.task, model, block, rules=rules, options=options, threads=threads
    )
    return ScoredChunk(
        index=index,
        ids=ids,
        assessment=assessment,
        columns=result_columns(assessment),
        rejects=rejects,
    )


def rejects_path_for(output_path: Path) -> Path:
    """The rejects CSV written beside an output file."""
    return output_path.with_name(output_path.stem + ".rejects.csv")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + _PARTIAL_SUFFIX)


class _Outputs:
    """The Parquet writer and rejects CSV of one run, written under temporary names."""

    def __init__(self, output_path: Path, rejects_path: Path, id_column: str) -> None:
        self.output_path = output_path
        self.rejects_path = rejects_path
        self.id_column = id_column
        self.writer: pq.ParquetWriter | None = None
        self.rejects_file: TextIO | None = None
        self.rejects_out: csv.DictWriter[str] | None = None

    def write(self, chunk: ScoredChunk) -> None:
        """Append a chunk's scores and rejects."""
        if chunk.rejects:
            if self.rejects_out is None:
                self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
                self.rejects_file = _partial(self.rejects_path).open(
                    "w", newline="", encoding="utf-8"
                )
                self.rejects_out = csv.DictWriter(
                    self.rejects_file, fieldnames=[self.id_column, "reason"]
                )
                self.rejects_out.writeheader()
            self.rejects_out.writerows({self.id_column: i, "reason": r} for i, r in chunk.rejects)
        if len(chunk.ids):
            table = chunk.table(self.id_column)
            if self.writer is None:
                self.output_path.parent.mkdir(parents=True, exist_ok=True)
                # Dictionary pages only for the labels (band, class, reasons): ids and scores
                # are unique per row, and trying a dictionary on them halves the writer's
                # speed for nothing (measured).
                labels = [
                    f.name
                    for f in table.schema
                    if f.name != self.id_column and not pa.types.is_floating(f.type)
                ]
                self.writer = pq.ParquetWriter(
                    _partial(self.output_path), table.schema, use_dictionary=labels
                )
            self.writer.write_table(table)

    def close(self, *, finished: bool) -> Path | None:
        """Rename finished files into place (or drop partial ones); the rejects path if any."""
        if self.writer is not None:
            self.writer.close()
        if self.rejects_file is not None:
            self.rejects_file.close()
        if not finished:
            _partial(self.output_path).unlink(missing_ok=True)
            _partial(self.rejects_path).unlink(missing_ok=True)
            return None
        # Stale results of an earlier run would mislead: a run that wrote nothing leaves nothing.
        if self.writer is not None:
            os.replace(_partial(self.output_path), self.output_path)
        else:
            self.output_path.unlink(missing_ok=True)
        if self.rejects_file is None:
            self.rejects_path.unlink(missing_ok=True)
            return None
        os.replace(_partial(self.rejects_path), self.rejects_path)
        return self.rejects_path


def score_batches(
    model: BatchModel,
    batches: Iterable[pa.RecordBatch],
    *,
    output_path: Path,
    id_column: str,
    rules: Rules,
    options: Options,
    rejects_path: Path | None = None,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> BatchSummary:
    """Score chunks into ``output_path`` (Parquet) and its rejects CSV; persist each to ``sink``.

    ``workers`` chunks (default: the model's thread count) are validated, encoded and predicted
    side by side, each on one thread, while this thread reads the next chunks and writes the
    finished ones in input order.
    """
    workers = workers or model.threads
    # One chunk per thread rather than one chunk on every thread: Arrow, numpy and LightGBM all
    # release the GIL, and no thread waits at an OpenMP barrier for a core busy elsewhere.
    threads = max(1, model.threads // workers)
    summary = BatchSummary()
    outputs = _Outputs(output_path, rejects_path or rejects_path_for(output_path), id_column)

    def score(item: tuple[int, pa.RecordBatch]) -> ScoredChunk:
        index, batch = item
        return score_chunk(
            model,
            batch,
            index=index,
            id_column=id_column,
            rules=rules,
            options=options,
            threads=threads,
        )

    scored = map_in_order(score, enumerate(batches), workers=workers, ahead=workers + 1)
    finished = False
    try:
        with closing(scored):
            for chunk in scored:
                outputs.write(chunk)
                rows = len(chunk.ids) + len(chunk.rejects)
                summary.chunks += 1
                summary.rows_read += rows
                summary.rows_scored += len(chunk.ids)
                summary.rows_rejected += len(chunk.rejects)
                if sink is not None:
                    written = sink.write(chunk)
                    if written is None:
                        summary.chunks_skipped += 1
                    else:
                        summary.chunks_persisted += 1
                        summary.rows_persisted += written
                if on_chunk is not None:
                    on_chunk(rows)
        finished = True
    finally:
        summary.rejects_path = outputs.close(finished=finished)
    return summary


def columns_to_read(model: BatchModel, input_path: Path, id_column: str) -> list[str]:
    """The input's columns a run reads: the id, the model's features, the lifecycle if any.
    Fails before any row is read when a required one is missing."""
    available = input_columns(input_path)
    check_columns(model.schema, available)
    if id_column not in available:
        raise ValueError(f"input lacks the id column {id_column!r}")
    wanted = [id_column, *(f.column for f in model.schema.inputs if f.column in available)]
    wanted += [name for name in (LIFECYCLE_COLUMN, *RULE_COLUMNS) if name in available]
    return list(dict.fromkeys(wanted))


def score_file(
    model: BatchModel,
    *,
    input_path: Path,
    output_path: Path,
    rules: Rules,
    options: Options,
    id_column: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Assess every row of a file under the bank's rules; rows that fail validation go to a
    rejects CSV with the reason."""
    id_column = id_column or model.manifest.id_column
    columns = columns_to_read(model, input_path, id_column)
    return score_batches(
        model,
        read_batches(input_path, chunk_rows, columns=columns),
        output_path=output_path,
        id_column=id_column,
        rules=rules,
        options=options,
        sink=sink,
        on_chunk=on_chunk,
    )
