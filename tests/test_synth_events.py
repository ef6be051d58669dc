"""`cvm synth --events`: the synthetic book's trail as a file `cvm ingest` reads, Parquet or
CSV, every row a valid event, the same events as the converter's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from app.cli.main import cli
from app.customers.ingest import NUMBERS, open_event_file
from app.customers.service import IntakeRules, check_rows
from app.training.trail import EVENT_NUMBER_TYPES, book_events, write_events

RULES = IntakeRules(future_tolerance_s=300, max_events=10_000)


def _read_all(path: Path) -> list[dict[str, object]]:
    """Every row as ``cvm ingest`` hands it to the event models."""
    rows = []
    for table in open_event_file(path).chunks(50_000):
        rows += [
            {name: value for name, value in row.items() if value is not None and value == value}
            for row in table.to_pylist()
        ]
    return rows


def test_synth_writes_its_trail_as_events_that_ingest_reads(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    book_dir = str(tmp_path / "book")
    command = ["synth", "--customers", "100", "--months", "12", "--out", book_dir]
    result = CliRunner().invoke(cli, [*command, "--events", str(events)])
    assert result.exit_code == 0, result.output
    book = pd.read_parquet(tmp_path / "book" / "book.parquet")
    expected = list(book_events(book))
    assert f"wrote {len(expected):,} events" in result.output
    as_csv = tmp_path / "events.csv"
    assert write_events(book, as_csv, chunk_rows=7_000) == len(expected)
    assert set(EVENT_NUMBER_TYPES) == NUMBERS
    now = datetime.now(UTC)
    for path in (events, as_csv):
        rows = _read_all(path)
        valid, rejected = check_rows(rows, rules=RULES, now=now)
        assert rejected == [] and len(valid) == len(expected)
        assert [e.event_id for e in valid] == [e["event_id"] for e in expected]
        assert [e.customer_id for e in valid[:50]] == [e["customer_id"] for e in expected[:50]]
    assert not list(tmp_path.glob("*.partial"))


def test_synth_refuses_an_events_file_it_cannot_write(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["synth", "--customers", "100", "--out", str(tmp_path), "--events", "e.json"]
    )
    assert result.exit_code != 0 and "--events" in result.output
    assert not (tmp_path / "book.parquet").exists()
