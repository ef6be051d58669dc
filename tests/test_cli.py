"""The ``cvm`` command: help everywhere, and the main commands run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from matplotlib.text import Text
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import PROJECT_ROOT
from app.db.migrate import current, head
from app.scoring.manifest import Task
from app.training.train import MAX_ROUNDS
from tests.db_support import migrated_sqlite_file

runner = CliRunner()


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``command``, as the words that invoke it."""
    paths = [path]
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            paths += command_paths(sub, (*path, name))
    return paths


ROOT = typer.main.get_command(cli)
COMMANDS = command_paths(ROOT)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "cvm")
def test_every_command_has_help_with_metavars_and_an_example(path: tuple[str, ...]) -> None:
    """Each option that takes a value names it (FILE, N, COLUMN...), a flag shows none, and
    the help ends with an invocation of the command to copy."""
    result = runner.invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    example = result.output[result.output.index("Example:") :]
    assert " ".join(["cvm", *path]) in example
    command = ROOT
    for name in path:
        assert isinstance(command, TyperGroup)
        command = command.commands[name]
    for param in command.params:
        if isinstance(param, TyperOption) and param.name not in HIDDEN_OPTIONS:
            if param.is_flag:
                assert param.metavar == "", param.name
            else:
                assert param.metavar and param.metavar in result.output, param.name


HIDDEN_OPTIONS = {"install_completion", "show_completion"}


def final_progress(output: str) -> tuple[int, int]:
    """The last ``done/total`` a progress bar printed."""
    counts = re.findall(r"\s(\d+)/(\d+)\s", output)
    assert counts, output
    done, total = counts[-1]
    return int(done), int(total)


def test_synth_train_score_round_trip(tmp_path: Path) -> None:
    """Every progress bar ends full: training's too, although early stopping ends it before
    the most rounds it may run (it used to stop at 159/400)."""
    book = tmp_path / "book"
    result = runner.invoke(
        cli, ["synth", "--customers", "1500", "--months", "15", "--seed", "3", "--out", str(book)]
    )
    assert result.exit_code == 0, result.output
    assert (book / "book.parquet").exists()
    assert final_progress(result.output) == (15, 15)
    model_dir = tmp_path / "models" / "churn" / "1"
    result = runner.invoke(cli, ["train", "churn", "--book", str(book), "--out", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.output
    done, total = final_progress(result.output)
    assert done == total < MAX_ROUNDS  # stopped early, and said it was done
    snapshot = tmp_path / "snapshot.parquet"
    result = runner.invoke(cli, ["snapshot", "--book", str(book), "--out", str(snapshot)])
    assert result.exit_code == 0, result.output
    output = tmp_path / "scores.parquet"
    result = runner.invoke(
        cli,
        [
            "score",
            "churn",
            "--model",
            str(model_dir),
            "--input",
            str(snapshot),
            "--output",
            str(output),
            "--reasons",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = pq.read_table(output)
    assert scored.num_rows > 0 and "probability" in scored.column_names
    assert final_progress(result.output) == (pq.read_metadata(snapshot).num_rows,) * 2
    assert "rejected" in result.output  # prospects and short histories lack churn features


def test_train_needs_exactly_one_source(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["train", "churn", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "exactly one of --book" in result.output


def test_score_reports_a_missing_input(tmp_path: Path, models_dir: Path) -> None:
    result = runner.invoke(
        cli,
        [
            "score",
            "churn",
            "--model",
            str(models_dir / "churn" / "1"),
            "--input",
            str(tmp_path / "nope.csv"),
            "--output",
            str(tmp_path / "o.parquet"),
        ],
    )
    assert result.exit_code == 2
    assert "input not found" in result.output


IMPORTS_OF_A_RUN = """
import json, sys
from app.cli.main import cli
from app.config import PROJECT_ROOT
try:
    cli(sys.argv[1:])
except SystemExit as exit:
    if exit.code:
        raise
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""
HEAVY = {"sklearn", "pandas", "dask", "distributed", "matplotlib", "sqlalchemy"}


def packages_imported_by(arguments: list[str], **env: str) -> set[str]:
    """Run ``cvm`` in a fresh interpreter; the top-level packages it had imported at the end."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_A_RUN, *arguments],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_cvm_score_imports_only_what_scoring_needs(
    models_dir: Path, prepared_book: pd.DataFrame, tmp_path: Path
) -> None:
    """No scikit-learn, pandas or Dask behind LightGBM; no SQLAlchemy without --persist; and
    no LightGBM at all for scores alone from a library whose reference vouches for it."""
    source = tmp_path / "customers.parquet"
    prepared_book.head(500).to_parquet(source, index=False)
    score = ["score", "churn", "--model", str(models_dir / "churn" / "1"), "--input", str(source)]
    cache = {"CVM_COMPILED_DIR": str(tmp_path / "compiled")}
    plain = [*score, "--output", str(tmp_path / "a.parquet"), "--backend", "lightgbm"]
    assert packages_imported_by(plain, **cache) & HEAVY == set()
    database = migrated_sqlite_file(tmp_path / "scores.db")
    persisting = packages_imported_by([*plain, "--persist"], CVM_DATABASE_URL=database, **cache)
    assert persisting & HEAVY == {"sqlalchemy"}
    # The first compiled run compiles the library and its reference (LightGBM loaded) ...
    compiling = [*score, "--output", str(tmp_path / "b.parquet"), "--backend", "compiled"]
    assert {"lightgbm", "lleaves"} <= packages_imported_by([*compiling, "--reasons", "0"], **cache)
    # ... the next ones need neither LightGBM nor what it imports.
    alone = packages_imported_by([*compiling, "--reasons", "0"], **cache)
    assert "lleaves" in alone
    assert alone & {*HEAVY, "lightgbm", "scipy"} == set()
    with_reasons = packages_imported_by([*compiling, "--reasons", "2"], **cache)
    assert "lightgbm" in with_reasons and with_reasons & HEAVY == set()
    first, second = (pq.read_table(tmp_path / name) for name in ("a.parquet", "b.parquet"))
    assert first["customer_id"].equals(second["customer_id"])


def test_db_upgrade_and_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import get_settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CVM_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
        assert current(url) == head()
        result = runner.invoke(cli, ["db", "current"])
        assert result.output.strip() == head()
        assert runner.invoke(cli, ["db", "downgrade", "base"]).exit_code == 0
        assert current(url) is None
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("task", ["churn", "tier", "recommendation", "prospect"])
def test_plot_draws_each_model_card(task: str, models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{task}.png"
    result = runner.invoke(cli, ["plot", str(models_dir / task / "1"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_needs_a_model_folder(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "no manifest.json" in result.output


def bad_snapshots(good: pa.Table, folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Inputs `cvm score` must refuse, each with the column its message must name."""
    age = good.schema.get_field_index("age")
    region = good.schema.get_field_index("region")
    nested = pa.array([[value] for value in good.column("region").to_pylist()])
    cases = {
        "missing column": (good.drop_columns(["age"]), "age"),
        "no id column": (good.drop_columns(["customer_id"]), "customer_id"),
        "dates for a number": (good.set_column(age, "age", good.column("snapshot_date")), "age"),
        "lists for a category": (good.set_column(region, "region", nested), "region"),
    }
    files: dict[str, tuple[Path, str | None]] = {}
    for name, (table, column) in cases.items():
        path = folder / f"{name.replace(' ', '-')}.parquet"
        pq.write_table(table, path)
        files[name] = (path, column)
    unreadable = folder / "unreadable.parquet"
    unreadable.write_bytes(b"not a Parquet file " * 20)
    files["unreadable file"] = (unreadable, None)
    return files


def test_score_refuses_a_bad_snapshot_in_one_line(
    models_dir: Path, prepared_book: pd.DataFrame, tmp_path: Path
) -> None:
    good = pa.Table.from_pandas(prepared_book.head(200), preserve_index=False)
    for name, (path, column) in bad_snapshots(good, tmp_path).items():
        result = runner.invoke(
            cli,
            [
                "score",
                "churn",
                "--model",
                str(models_dir / "churn" / "1"),
                "--input",
                str(path),
                "--output",
                str(tmp_path / "scores.parquet"),
            ],
        )
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.output)
        assert str(path) in lines[0], name
        assert column is None or repr(column) in lines[0], (name, lines[0])
        assert not (tmp_path / "scores.parquet").exists()


def test_the_reject_file_gives_the_true_reason(
    models_dir: Path, prepared_book: pd.DataFrame, tmp_path: Path
) -> None:
    """An unseen category (or a word where a number belongs) is named as such, not reported as
    the missing value it becomes once encoded."""
    known = prepared_book[
        (prepared_book["lifecycle"] == "existing") & (prepared_book["history_months"] >= 3)
    ]
    rows = known.drop_duplicates("customer_id").head(20).copy()
    rows["income"] = rows["income"].astype(object)
    rows.loc[rows.index[3], "region"] = "atlantis"
    rows.loc[rows.index[5], "income"] = "plenty"
    source = tmp_path / "customers.csv"
    rows.to_csv(source, index=False)
    output = tmp_path / "scores.parquet"
    result = runner.invoke(
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
            "--reasons",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    rejects = pd.read_csv(output.with_name("scores.rejects.csv")).set_index("customer_id")
    ids = rows["customer_id"]
    assert rejects["reason"].to_dict() == {
        ids.iloc[3]: "region: unknown category",
        ids.iloc[5]: "income: not a number",
    }


def active_marks(output: str) -> dict[tuple[str, str], str]:
    """(task, version) -> the 'active' cell of each row `cvm models` printed."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()]
    return {(row[0], row[1]): row[2] for row in rows if len(row) == 8}


def test_models_marks_the_version_the_service_serves(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings
    from app.scoring.manifest import Manifest
    from app.scoring.registry import ModelRegistry

    root = tmp_path / "models"
    for version in ("1", "2", "10"):  # 10 is the newest: versions sort as numbers
        shutil.copytree(models_dir / "churn" / "1", root / "churn" / version)
        manifest = Manifest.load(root / "churn" / version)
        manifest.model_copy(update={"version": version}).save(root / "churn" / version)
    shutil.copytree(models_dir / "tier" / "1", root / "tier" / "1")
    monkeypatch.setenv("CVM_MODELS_DIR", str(root))
    monkeypatch.setenv("COLUMNS", "160")  # a table too wide for 80 columns would wrap its cells
    # No database yet: the newest on disk serves (tests/test_modelops.py covers the registry).
    monkeypatch.setenv("CVM_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    for pins, churn_active in [({}, ("10", "yes")), ({"churn": "2"}, ("2", "yes (pinned)"))]:
        monkeypatch.setenv("CVM_MODEL_VERSIONS", json.dumps(pins))
        get_settings.cache_clear()
        try:
            result = runner.invoke(cli, ["models"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        # Trained on `cvm synth`'s book: the table and a closing line say so.
        assert result.output.count("SYNTHETIC") == 5
        assert "served models were trained on SYNTHETIC data" in result.output
        version, mark = churn_active
        assert active_marks(result.output) == {
            ("churn", "1"): "",
            ("churn", "2"): mark if version == "2" else "",
            ("churn", "10"): mark if version == "10" else "",
            ("tier", "1"): "yes",
        }
        served = ModelRegistry.load(root, pinned=pins).get(Task.CHURN)
        assert served is not None and served.manifest.version == version


def test_score_refuses_a_pin_to_a_missing_version(
    prepared_book: pd.DataFrame, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --model, `cvm score` uses the version the service serves, pins included."""
    from app.config import get_settings

    source = tmp_path / "customers.parquet"
    prepared_book.head(50).to_parquet(source, index=False)
    monkeypatch.setenv("CVM_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("CVM_MODEL_VERSIONS", '{"churn": "9"}')
    get_settings.cache_clear()
    try:
        result = runner.invoke(
            cli, ["score", "churn", "--input", str(source), "--output", str(tmp_path / "o.pq")]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "pins churn to '9'" in result.output


def figure_texts(figure: Any) -> str:
    """Every piece of text drawn on a figure: titles, axis labels, legends, annotations."""
    return " | ".join(t.get_text() for t in figure.findobj(Text) if t.get_text())


def test_plots_label_the_split_they_show(tmp_path: Path, models_dir: Path) -> None:
    """A model trained on a random split is not labelled "test month" (it was)."""
    from app.scoring.manifest import Manifest
    from app.training.report import model_card_figure

    rng = np.random.default_rng(5)
    n = 600
    signal = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "cust_no": [f"K{i}" for i in range(n)],
            "balance": signal * 1000 + rng.normal(size=n) * 300,
            "products": rng.integers(1, 4, size=n),
            "country": rng.choice(["fr", "de", "es"], size=n),
            "left": (signal + rng.normal(size=n) > 1).astype(int),
        }
    )
    data = tmp_path / "bank.csv"
    frame.to_csv(data, index=False)
    model_dir = tmp_path / "models" / "churn" / "5"
    source = ["--data", str(data), "--target", "left", "--id", "cust_no"]
    trained = runner.invoke(
        cli, ["train", "churn", *source, "--trials", "1", "--out", str(model_dir)]
    )
    assert trained.exit_code == 0, trained.output
    random_split = figure_texts(model_card_figure(Manifest.load(model_dir)))
    assert "random 15% test split" in random_split and "month" not in random_split
    by_month = figure_texts(model_card_figure(Manifest.load(models_dir / "churn" / "1")))
    assert "test month" in by_month and "random" not in by_month
    out = tmp_path / "card.png"
    assert runner.invoke(cli, ["plot", str(model_dir), "--out", str(out)]).exit_code == 0
    assert out.read_bytes().startswith(b"\x89PNG")


# --- cvm ingest ------------------------------------------------------------------------------


def event_table(count: int, *, start: int = 0) -> pa.Table:
    """``count`` events of three types as the columns form names them, times zoned (UTC)."""
    kinds = ["transaction", "digital_session", "balance_snapshot"]
    types = [kinds[i % 3] for i in range(start, start + count)]
    base = pd.Timestamp("2026-10-01", tz="UTC")

    def only(kind: str, value: Any) -> list[Any]:
        return [value if t == kind else None for t in types]

    return pa.table(
        {
            "event_id": [f"ev-{i:06d}" for i in range(start, start + count)],
            "type": types,
            "customer_id": [f"C{i % 97:04d}" for i in range(start, start + count)],
            "occurred_at": pa.array(
                [base + pd.Timedelta(minutes=i) for i in range(start, start + count)],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": only("transaction", 12.5),
            "direction": only("transaction", "debit"),
            "channel": only("transaction", "card"),
            "platform": only("digital_session", "web"),
            "product": only("balance_snapshot", "savings"),
            "balance": only("balance_snapshot", 1000.0),
        }
    )


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's database of each kind, emptied of events, as `cvm` sees it."""
    from sqlalchemy import delete

    from app.config import get_settings
    from app.customers.tables import customer_event_table
    from app.db.session import create_db_engine

    engine = create_db_engine(database_url)
    with engine.begin() as connection:
        connection.execute(delete(customer_event_table))
    engine.dispose()
    monkeypatch.setenv("CVM_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def stored_event_ids(database_url: str) -> list[str]:
    """Every stored event id (repeats included)."""
    from sqlalchemy import select

    from app.customers.tables import CustomerEvent
    from app.db.session import create_db_engine

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(select(CustomerEvent.event_id)))
    finally:
        engine.dispose()


def summary_counts(output: str) -> tuple[int, int, int]:
    """(new, duplicates, rejected) from `cvm ingest`'s last line."""
    found = re.search(r"([\d,]+) new, ([\d,]+) duplicates, ([\d,]+) rejected", output)
    assert found, output
    new, duplicates, rejected = (int(value.replace(",", "")) for value in found.groups())
    return new, duplicates, rejected


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_ingest_resumes_after_a_crash_without_storing_twice(
    kind: str, cli_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.customers import service

    table = event_table(2_500)
    source = tmp_path / f"events.{kind}"
    if kind == "csv":
        frame = table.to_pandas()
        frame["occurred_at"] = frame["occurred_at"].map(lambda t: t.isoformat())
        frame["amount"] = frame["amount"].astype(object)
        frame.loc[6, "amount"] = "plenty"  # a word for a number: that row alone is refused
        frame.to_csv(source, index=False)
    else:
        pq.write_table(table, source)
    real_record = service.record_events
    calls = 0

    def crash_on_the_third_chunk(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # the operator's ^C, or a killed process
        return real_record(*args, **kwargs)

    monkeypatch.setattr(service, "record_events", crash_on_the_third_chunk)
    crashed = runner.invoke(cli, ["ingest", str(source), "--chunk-rows", "1000"])
    assert crashed.exit_code != 0
    stored_before = stored_event_ids(cli_database)
    assert len(stored_before) == 2_000 - (kind == "csv")
    monkeypatch.setattr(service, "record_events", real_record)

    result = runner.invoke(cli, ["ingest", str(source), "--chunk-rows", "1000"])
    assert result.exit_code == 0, result.output
    assert final_progress(result.output) == (2_500, 2_500)
    rejected = int(kind == "csv")
    assert summary_counts(result.output) == (500, len(stored_before), rejected)
    stored_after = stored_event_ids(cli_database)
    assert len(stored_after) == len(set(stored_after)) == 2_500 - rejected
    if kind == "csv":
        rejects = pd.read_csv(source.with_name("events.csv.rejects.csv"))
        assert rejects.to_dict("records") == [
            {
                "row": 7,
                "event_id": "ev-000006",
                "field": "amount",
                "reason": "Input should be a valid number, unable to parse string as a number",
            }
        ]


def test_ingest_refuses_a_bad_file_in_one_line(cli_database: str, tmp_path: Path) -> None:
    good = event_table(20)
    nested = pa.array([[value] for value in good.column("channel").to_pylist()])
    naive = good.column("occurred_at").cast(pa.timestamp("us"))
    at = good.schema.get_field_index
    cases = {
        "unknown column": (good.append_column("colour", good.column("channel")), "colour"),
        "no customer id": (good.drop_columns(["customer_id"]), "customer_id"),
        "lists for a code": (good.set_column(at("channel"), "channel", nested), "channel"),
        "times without a zone": (
            good.set_column(at("occurred_at"), "occurred_at", naive),
            "occurred_at",
        ),
        "words for amounts": (
            good.set_column(at("amount"), "amount", good.column("channel")),
            "amount",
        ),
    }
    files: dict[str, tuple[Path, str | None]] = {}
    for name, (table, named) in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.parquet"
        pq.write_table(table, path)
        files[name] = (path, named)
    (tmp_path / "unreadable.parquet").write_bytes(b"not a Parquet file " * 20)
    files["unreadable"] = (tmp_path / "unreadable.parquet", None)
    (tmp_path / "header.csv").write_text("event_id,type,customer_id,amount\n")
    files["csv without occurred_at"] = (tmp_path / "header.csv", "occurred_at")
    files["no such file"] = (tmp_path / "missing.csv", None)
    for name, (path, column) in files.items():
        result = runner.invoke(cli, ["ingest", str(path)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.output)
        assert str(path) in lines[0], name
        assert column is None or repr(column) in lines[0], (name, lines[0])
    assert stored_event_ids(cli_database) == []
