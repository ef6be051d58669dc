"""Batch scoring: equal chunks, streaming output, bulk persistence and resuming after a crash.

Persistence runs on a fresh SQLite file and a fresh PostgreSQL database per test, both built by
the real migrations; the crash is a real one (SIGKILL in the middle of a chunk's transaction).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner, Result

import app.batch.persist as batch_persist
from app.alerts.service import ChurnAlerts
from app.alerts.tables import Alert, AlertEvent
from app.batch.persist import DatabaseChunkSink, chunk_request_id, run_id_for
from app.batch.service import (
    map_in_order,
    read_batches,
    rechunk,
    rejects_path_for,
    score_batches,
    score_chunk,
    score_file,
)
from app.cli.main import cli
from app.config import PROJECT_ROOT, Settings, get_settings
from app.db.session import create_db_engine, create_session_factory
from app.scoring.assess import Options
from app.scoring.model import ScoringModel
from app.scoring.repository import ScoreRow, bulk_insert_scores, list_scores
from app.scoring.rules import rules_from_settings
from app.security.pseudonyms import Pseudonymizer
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
)
from tests.rules_support import RULES

CHUNK = 64
ROWS = 300
BAD_ROWS = 7


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty, migrated database per test: counts of rows are this test's alone."""
    factory = migrated_sqlite_database if request.param == "sqlite" else migrated_postgres_database
    with factory() as url:
        yield url


@pytest.fixture
def engine(fresh_database: str) -> Iterator[Engine]:
    """An engine on the fresh database."""
    engine = create_db_engine(fresh_database)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def churn_model(models_dir: Path) -> ScoringModel:
    """The tiny churn model."""
    return ScoringModel.load(models_dir / "churn" / "1", threads=2)


@pytest.fixture
def churn_file(prepared_book: pd.DataFrame, tmp_path: Path) -> Path:
    """300 customers with full histories, 7 of them with an out-of-range age."""
    known = prepared_book[
        (prepared_book["lifecycle"] == "existing") & (prepared_book["history_months"] >= 3)
    ]
    rows = known.drop_duplicates("customer_id").head(ROWS).copy()
    rows.loc[rows.index[10 : 10 + BAD_ROWS], "age"] = 7
    path = tmp_path / "customers.parquet"
    rows.to_parquet(path, index=False, row_group_size=100)
    return path


def stored(engine: Engine) -> list[tuple[str, str]]:
    """(request_id, customer_id) of every stored score."""
    with engine.connect() as connection:
        result = connection.execute(text("SELECT request_id, customer_id FROM score"))
        return [(str(r[0]), str(r[1])) for r in result]


def valid_ids(path: Path) -> set[str]:
    """Ids of the rows that pass validation."""
    frame = pd.read_parquet(path)
    return set(frame.loc[frame["age"] >= 18, "customer_id"])


def test_rechunk_cuts_equal_chunks_across_batch_boundaries() -> None:
    batches = [
        pa.record_batch({"x": list(range(start, start + n))}) for start, n in [(0, 5), (5, 9)]
    ]
    chunks = list(rechunk(batches, 4))
    assert [c.num_rows for c in chunks] == [4, 4, 4, 2]
    assert [x for c in chunks for x in c.column(0).to_pylist()] == list(range(14))


def test_csv_and_parquet_dataset_give_the_same_scores(
    churn_model: ScoringModel, churn_file: Path, tmp_path: Path
) -> None:
    frame = pd.read_parquet(churn_file)
    csv_path = tmp_path / "customers.csv"
    frame.to_csv(csv_path, index=False)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    frame.iloc[:150].to_parquet(dataset / "a.parquet", index=False)
    frame.iloc[150:].to_parquet(dataset / "b.parquet", index=False)
    results = []
    for source in (churn_file, csv_path, dataset):
        output = tmp_path / f"{source.stem}.scores.parquet"
        summary = score_file(
            churn_model,
            input_path=source,
            output_path=output,
            rules=RULES,
            options=Options(reasons=0),
            chunk_rows=CHUNK,
        )
        assert (summary.rows_read, summary.rows_rejected, summary.chunks) == (ROWS, BAD_ROWS, 5)
        results.append(pq.read_table(output))
    assert results[0].equals(results[1]) and results[0].equals(results[2])
    assert [len(b) for b in read_batches(csv_path, CHUNK)] == [64, 64, 64, 64, 44]


def test_a_failed_run_leaves_no_output_and_a_clean_run_replaces_stale_rejects(
    churn_model: ScoringModel, churn_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.parquet"

    class Failing:
        def write(self, chunk: Any) -> int | None:
            if chunk.index == 2:
                raise RuntimeError("disk full")
            return len(chunk.ids)

    with pytest.raises(RuntimeError, match="disk full"):
        score_file(
            churn_model,
            input_path=churn_file,
            output_path=output,
            chunk_rows=CHUNK,
            sink=Failing(),
            rules=RULES,
            options=Options(reasons=3),
        )
    assert list(tmp_path.glob("scores*")) == []  # no truncated output, no partial files
    (tmp_path / "scores.rejects.csv").write_text("stale\n")
    clean = tmp_path / "clean.parquet"
    pd.read_parquet(churn_file).query("age >= 18").to_parquet(clean, index=False)
    summary = score_file(
        churn_model, input_path=clean, output_path=output, rules=RULES, options=Options(reasons=0)
    )
    assert summary.rows_rejected == 0 and summary.rejects_path is None
    assert not (tmp_path / "scores.rejects.csv").exists()


def test_bulk_insert_round_trips_json_and_timestamps(engine: Engine) -> None:
    now = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)
    rows = [
        ScoreRow(
            request_id="batch:test:0",
            task="churn",
            customer_id=f"C{i}",
            model_name="churn",
            model_version="1",
            source="api",
            stage="existing",
            probability=None,
            band=None,
            alert=False,
            outputs={"probability": 0.1 * i, "band": "low"},
            reasons=[f'a tab\there, a backslash \\ and a quote " {i}'],
            features={"age": 40 + i, "region": "north", "card_spend": None, "flag": True},
            created_at=now,
        )
        for i in range(3)
    ]
    with engine.begin() as connection:
        assert bulk_insert_scores(connection, rows=rows) == 3
    with create_session_factory(engine)() as session:
        found, total = list_scores(session, customer_id="C2")
    assert total == 1
    assert found[0].outputs == {"probability": 0.2, "band": "low"}
    assert found[0].reasons == ['a tab\there, a backslash \\ and a quote " 2']
    assert found[0].features == {"age": 42, "region": "north", "card_spend": None, "flag": True}
    assert found[0].created_at == now


def test_persist_writes_each_valid_row_once_per_chunk(
    churn_model: ScoringModel, churn_file: Path, engine: Engine, tmp_path: Path
) -> None:
    run_id = run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK)
    sink = DatabaseChunkSink(engine, model=churn_model, run_id=run_id)
    output = tmp_path / "scores.parquet"
    summary = score_file(
        churn_model,
        input_path=churn_file,
        output_path=output,
        rules=RULES,
        options=Options(reasons=2),
        chunk_rows=CHUNK,
        sink=sink,
    )
    assert (summary.chunks_persisted, summary.rows_persisted) == (5, ROWS - BAD_ROWS)
    rows = stored(engine)
    assert Counter(c for _, c in rows) == Counter(valid_ids(churn_file))
    assert {r for r, _ in rows} == {chunk_request_id(run_id, i) for i in range(5)}
    scored = pq.read_table(output).to_pandas().set_index("customer_id")
    with create_session_factory(engine)() as session:
        customer = str(scored.index[0])
        (row,), _ = list_scores(session, customer_id=customer)
    # Stored in the API's shape: probability rounded as it answers, structured reasons.
    assert row.outputs["probability"] == round(scored.loc[customer, "probability"], 6)
    assert row.outputs["risk_band"] == row.band == scored.loc[customer, "band"]
    assert (row.source, row.stage) == ("batch", scored.loc[customer, "stage"])
    (explanation,) = row.reasons
    worded = [
        f"{r['text']} ({r['direction']} {abs(r['contribution']):.3f})"
        for r in explanation["reasons"]
    ]
    assert worded == list(scored.loc[customer, "reasons"])
    assert row.features["region"] in {"capital", "north", "south", "east", "west"}
    assert isinstance(row.features["has_mortgage"], bool)


def alerts_by_customer(engine: Engine) -> dict[str, list[Any]]:
    """Each alert's customer id and reasons."""
    with engine.connect() as connection:
        result = connection.execute(select(Alert.customer_id, Alert.reasons))
        return {str(customer): list(reasons) for customer, reasons in result}


def alert_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AlertEvent)) or 0)


def test_persisted_churn_scores_open_alerts_with_reasons_once(
    churn_model: ScoringModel, churn_file: Path, engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(churn_alert_band="medium")
    alerts = ChurnAlerts.from_settings(settings)
    run_id = run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK)
    sink = DatabaseChunkSink(engine, model=churn_model, run_id=run_id, alerts=alerts)
    output = tmp_path / "scores.parquet"
    arguments: dict[str, Any] = {
        "input_path": churn_file,
        "output_path": output,
        "sink": sink,
        "rules": rules_from_settings(settings),
    }
    score_file(churn_model, options=Options(reasons=0), chunk_rows=CHUNK, **arguments)
    scored = pq.read_table(output).to_pandas()
    at_risk = set(scored.loc[scored["band"].isin(["medium", "high"]), "customer_id"])
    assert 0 < len(at_risk) < len(scored)
    opened = alerts_by_customer(engine)
    assert set(opened) == at_risk
    # Explained although the run asked for no reasons: staff act on the alert's reasons.
    for reasons in opened.values():
        assert reasons and all(
            r["text"] and r["direction"] in {"raises", "lowers"} for r in reasons
        )
    events = alert_events(engine)
    again = score_file(churn_model, options=Options(reasons=0), chunk_rows=CHUNK, **arguments)
    assert again.chunks_persisted == 0 and alert_events(engine) == events
    assert alerts_by_customer(engine) == opened


def test_batch_alerts_skip_prospects_and_lost_customers(
    churn_model: ScoringModel, prepared_book: pd.DataFrame, engine: Engine, tmp_path: Path
) -> None:
    """`cvm score --persist` on a whole month of the book: churn alerts only for the new and
    existing customers (the input's lifecycle column), never for prospects or leavers."""
    last = prepared_book[prepared_book["month"] == prepared_book["month"].max()]
    month = pd.concat(
        [
            last[last["lifecycle"] == stage].head(15)
            for stage in ("prospect", "new", "existing", "lost")
        ]
    )
    month = month.assign(customer_id="B-" + month["customer_id"].astype(str))
    path = tmp_path / "month.parquet"
    month.to_parquet(path, index=False)
    settings = Settings(churn_alert_probability=1e-9)  # every score crosses
    alerts = ChurnAlerts.from_settings(settings)
    run_id = run_id_for(input_path=path, model=churn_model, chunk_rows=CHUNK)
    sink = DatabaseChunkSink(engine, model=churn_model, run_id=run_id, alerts=alerts)
    score_file(
        churn_model,
        input_path=path,
        output_path=tmp_path / "s.parquet",
        sink=sink,
        rules=rules_from_settings(settings),
        options=Options(reasons=0),
    )
    scored = {c for _, c in stored(engine) if c.startswith("B-")}
    stage_of = dict(zip(month["customer_id"], month["lifecycle"], strict=True))
    assert {stage_of[c] for c in scored} >= {"new", "existing", "lost"}
    alerted = {c for c in alerts_by_customer(engine) if c.startswith("B-")}
    assert alerted == {c for c in scored if stage_of[c] in ("new", "existing")}


def test_a_crash_inside_a_chunk_rolls_it_back_and_the_rerun_resumes(
    churn_model: ScoringModel,
    churn_file: Path,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_insert = bulk_insert_scores
    calls: list[int] = []

    def insert_then_fail_on_third(connection: Any, *, rows: Any) -> int:
        calls.append(len(rows))
        written = real_insert(connection, rows=rows)
        if len(calls) == 3:  # rows are in, the commit is not: the chunk must vanish
            raise ConnectionError("server went away")
        return written

    monkeypatch.setattr(batch_persist, "bulk_insert_scores", insert_then_fail_on_third)
    run_id = run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK)
    sink = DatabaseChunkSink(engine, model=churn_model, run_id=run_id)
    output = tmp_path / "scores.parquet"
    with pytest.raises(ConnectionError):
        score_file(
            churn_model,
            input_path=churn_file,
            output_path=output,
            chunk_rows=CHUNK,
            sink=sink,
            rules=RULES,
            options=Options(reasons=3),
        )
    assert {r for r, _ in stored(engine)} == {chunk_request_id(run_id, i) for i in (0, 1)}
    monkeypatch.setattr(batch_persist, "bulk_insert_scores", real_insert)
    summary = score_file(
        churn_model,
        input_path=churn_file,
        output_path=output,
        chunk_rows=CHUNK,
        sink=sink,
        rules=RULES,
        options=Options(reasons=3),
    )
    assert (summary.chunks_skipped, summary.chunks_persisted) == (2, 3)
    assert Counter(c for _, c in stored(engine)) == Counter(valid_ids(churn_file))
    again = score_file(
        churn_model,
        input_path=churn_file,
        output_path=output,
        chunk_rows=CHUNK,
        sink=sink,
        rules=RULES,
        options=Options(reasons=3),
    )
    assert (again.chunks_skipped, again.chunks_persisted) == (5, 0)
    assert len(stored(engine)) == ROWS - BAD_ROWS


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import app.batch.persist as batch_persist
from app.db.session import create_db_engine
from app.scoring.model import ScoringModel
from app.batch.service import score_file
from app.batch.persist import DatabaseChunkSink, run_id_for
from app.config import Settings
from app.scoring.assess import Options
from app.scoring.rules import rules_from_settings

RULES = rules_from_settings(Settings())
real_insert = batch_persist.bulk_insert_scores
calls = []

def insert_then_die(connection, *, rows):
    calls.append(1)
    written = real_insert(connection, rows=rows)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: no rollback, no cleanup
    return written

batch_persist.bulk_insert_scores = insert_then_die
model_dir, source, output, url, chunk = sys.argv[1:]
model = ScoringModel.load(Path(model_dir))
run_id = run_id_for(input_path=Path(source), model=model, chunk_rows=int(chunk))
sink = DatabaseChunkSink(create_db_engine(url), model=model, run_id=run_id)
score_file(
    model,
    input_path=Path(source),
    output_path=Path(output),
    rules=RULES, options=Options(reasons=0),
    chunk_rows=int(chunk),
    sink=sink,
)
"""


def persist_with_cli(models_dir: Path, source: Path, output: Path, *options: str) -> Result:
    """``cvm score churn --persist --reasons 0`` under the environment's settings; must succeed."""
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli,
            [
                "score",
                "churn",
                "--model",
                str(models_dir / "churn" / "1"),
                "--input",
                str(source),
                "--output",
                str(output),
                "--persist",
                "--reasons",
                "0",
                *options,
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result


def test_a_killed_run_leaves_whole_chunks_and_cvm_score_resumes_it(
    churn_model: ScoringModel,
    churn_file: Path,
    fresh_database: str,
    engine: Engine,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = tmp_path / "scores.parquet"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(KILLED_RUN),
            str(models_dir / "churn" / "1"),
            str(churn_file),
            str(output),
            fresh_database,
            str(CHUNK),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    run_id = run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK)
    rows = stored(engine)
    assert {r for r, _ in rows} == {chunk_request_id(run_id, i) for i in (0, 1)}
    first_chunks = pd.read_parquet(churn_file).head(2 * CHUNK).query("age >= 18")
    assert Counter(c for _, c in rows) == Counter(first_chunks["customer_id"])
    assert not output.exists()
    monkeypatch.setenv("CVM_DATABASE_URL", fresh_database)
    result = persist_with_cli(
        models_dir, churn_file, output, "--chunk-rows", str(CHUNK), "--backend", "lightgbm"
    )
    assert "2 chunks were already saved" in result.output
    assert Counter(c for _, c in stored(engine)) == Counter(valid_ids(churn_file))
    assert pq.read_table(output).num_rows == ROWS - BAD_ROWS


def test_cvm_score_persists_pseudonyms_when_a_secret_is_set(
    churn_file: Path,
    fresh_database: str,
    engine: Engine,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch rows hold ids in the form the API stores, so the history endpoint finds them."""
    secret = "batch-test-secret-" + "s" * 32
    monkeypatch.setenv("CVM_DATABASE_URL", fresh_database)
    monkeypatch.setenv("CVM_PSEUDONYM_SECRET", secret)
    monkeypatch.setenv("CVM_CHURN_ALERT_BAND", "medium")
    persist_with_cli(models_dir, churn_file, tmp_path / "scores.parquet")
    pseudonymizer = Pseudonymizer(secret.encode())
    ids = valid_ids(churn_file)
    assert Counter(c for _, c in stored(engine)) == Counter(pseudonymizer.pseudonyms(sorted(ids)))
    customer = sorted(ids)[0]
    with create_session_factory(engine)() as session:
        _, total = list_scores(session, customer_id=pseudonymizer.lookup_forms(customer))
    assert total == 1
    scored = pq.read_table(tmp_path / "scores.parquet").to_pandas()
    at_risk = scored.loc[scored["band"].isin(["medium", "high"]), "customer_id"]
    assert set(alerts_by_customer(engine)) == set(pseudonymizer.pseudonyms(list(at_risk)))


def test_the_run_id_follows_the_input_the_model_and_the_chunking(
    churn_model: ScoringModel, churn_file: Path, models_dir: Path
) -> None:
    first = run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK)
    assert run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK) == first
    assert run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK * 2) != first
    other = ScoringModel.load(models_dir / "tier" / "1")
    assert run_id_for(input_path=churn_file, model=other, chunk_rows=CHUNK) != first
    stat = churn_file.stat()
    os.utime(churn_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert run_id_for(input_path=churn_file, model=churn_model, chunk_rows=CHUNK) != first
    assert len(chunk_request_id(first, 123_456)) <= 64  # fits score.request_id


def test_chunks_stream_through_with_at_most_a_couple_in_flight(
    churn_model: ScoringModel, churn_file: Path, tmp_path: Path
) -> None:
    """Memory stays flat: the scorer never pulls more than a chunk or two ahead of its writes."""
    batch = next(read_batches(churn_file, CHUNK))
    pulled = 0
    ahead: list[int] = []

    def endless() -> Iterator[pa.RecordBatch]:
        nonlocal pulled
        for _ in range(40):
            pulled += 1
            yield batch

    class Recorder:
        def write(self, chunk: Any) -> int | None:
            ahead.append(pulled - chunk.index - 1)
            return 0

    summary = score_batches(
        churn_model,
        endless(),
        output_path=tmp_path / "stream.parquet",
        id_column="customer_id",
        rules=RULES,
        options=Options(reasons=0),
        sink=Recorder(),
    )
    assert summary.chunks == 40 and len(ahead) == 40
    assert max(ahead) <= 3, ahead


@pytest.mark.parametrize("reasons", [0, 2])
def test_chunks_scored_side_by_side_equal_the_sequential_path(
    churn_model: ScoringModel, churn_file: Path, tmp_path: Path, reasons: int
) -> None:
    """Whatever the number of workers, the output and the rejects are the same, byte for byte,
    as scoring each chunk in turn."""
    columns = pq.ParquetFile(churn_file).schema_arrow.names
    sequential = [
        score_chunk(
            churn_model,
            batch,
            index=i,
            id_column="customer_id",
            rules=RULES,
            options=Options(reasons=reasons),
        )
        for i, batch in enumerate(read_batches(churn_file, CHUNK, columns))
    ]
    expected = pa.concat_tables(chunk.table("customer_id") for chunk in sequential)
    expected_rejects = [r for chunk in sequential for r in chunk.rejects]
    assert len(expected_rejects) == BAD_ROWS
    for workers in (1, 2, 5):
        output = tmp_path / f"workers-{workers}.parquet"
        summary = score_batches(
            churn_model,
            read_batches(churn_file, CHUNK, columns),
            output_path=output,
            id_column="customer_id",
            rules=RULES,
            options=Options(reasons=reasons),
            workers=workers,
        )
        assert (summary.rows_read, summary.rows_rejected, summary.chunks) == (ROWS, BAD_ROWS, 5)
        assert pq.read_table(output).equals(expected)
        with rejects_path_for(output).open(newline="") as handle:
            rejects = [(row["customer_id"], row["reason"]) for row in csv.DictReader(handle)]
        assert rejects == expected_rejects
        assert all(reason == "age: below minimum 18" for _, reason in rejects)


def test_a_chunk_that_fails_on_a_worker_fails_the_run_and_leaves_no_output(
    churn_model: ScoringModel, churn_file: Path, tmp_path: Path
) -> None:
    batches = list(read_batches(churn_file, CHUNK))
    batches[3] = batches[3].drop_columns(["customer_id"])  # no id: fails inside the worker
    output = tmp_path / "scores.parquet"
    with pytest.raises(KeyError):
        score_batches(
            churn_model,
            iter(batches),
            output_path=output,
            id_column="customer_id",
            rules=RULES,
            options=Options(reasons=0),
            workers=2,
        )
    assert list(tmp_path.glob("scores*")) == []  # no output, no partial files


def test_map_in_order_keeps_the_order_and_a_bounded_window() -> None:
    drawn = 0
    handed_back = 0
    outstanding: list[int] = []

    def items() -> Iterator[int]:
        nonlocal drawn
        for item in range(30):
            drawn += 1
            outstanding.append(drawn - handed_back)
            yield item

    def slow_for_early_items(item: int) -> int:
        time.sleep(0.002 * (item % 3))  # later items often finish first
        return item * item

    results = []
    for result in map_in_order(slow_for_early_items, items(), workers=3, ahead=4):
        handed_back += 1
        results.append(result)
    assert results == [i * i for i in range(30)]
    assert max(outstanding) <= 5  # the item drawn, and at most `ahead` not yet handed back
