"""Bring your own data: infer a feature schema from a bank's own file and train a servable model."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.model_selection import train_test_split

from app.modelops.fairness import age_band
from app.scoring.feature_schema import (
    Derivation,
    DerivedFrom,
    FeatureKind,
    FeatureSchema,
    FeatureSpec,
    month_number,
)
from app.scoring.manifest import Calibrator, Manifest, Objective, Task
from app.training import evaluate
from app.training.card import HeldOut, Provenance, build_card
from app.training.report import split_label
from app.training.train import (
    BASE_PARAMS,
    ProgressCallback,
    Split,
    TrainingDataError,
    build_manifest,
    fingerprint,
    predict,
    risk_thresholds,
    save_model,
)
from app.training.tuning import TuningOptions, tune

MAX_CATEGORIES = 200
TRUE_WORDS = frozenset({"1", "yes", "y", "true", "t"})
FALSE_WORDS = frozenset({"0", "no", "n", "false", "f"})
SPLIT_SHARES = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class DataSpec:
    """What the caller told us about the file's columns."""

    target: str
    id_column: str
    drop: Sequence[str] = ()
    categorical: Sequence[str] = ()
    positive: str | None = None
    time_column: str | None = None
    # (month column, day-of-month column): the date's place in the year as two derived
    # features, its sine and cosine (``Derivation``), computed by the schema when serving too.
    year_cycle: tuple[str, str] | None = None


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV (delimiter sniffed, BOM tolerated) or Parquet."""
    if not path.exists():
        raise TrainingDataError(f"data file not found: {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    return pd.read_csv(path, sep=delimiter, encoding="utf-8-sig")


def binary_target(column: pd.Series, positive: str | None) -> pd.Series:
    """0/1 labels from 0/1, yes/no, true/false, or equality with ``positive``."""
    if column.isna().any():
        raise TrainingDataError(f"target column {column.name!r} has missing values")
    text = column.astype(str).str.strip().str.lower()
    if positive is not None:
        labels = (text == positive.strip().lower()).astype(int)
        if not labels.any():
            raise TrainingDataError(
                f"no row of target {column.name!r} equals --positive {positive!r}"
            )
    else:
        values = set(text.unique())
        if not values <= TRUE_WORDS | FALSE_WORDS:
            shown = sorted(values)[:10]
            raise TrainingDataError(
                f"target {column.name!r} is not binary (values {shown}); name the positive "
                "class with --positive"
            )
        labels = text.isin(TRUE_WORDS).astype(int)
    if labels.nunique() < 2:
        raise TrainingDataError(f"target {column.name!r} holds a single class")
    return labels


def infer_schema(
    frame: pd.DataFrame,
    categorical: Sequence[str],
    source: str,
    year_cycle: tuple[str, str] | None = None,
) -> FeatureSchema:
    """One feature per column: strings and named columns categorical, the rest numeric; then
    the derived features ``year_cycle`` asks for."""
    features = []
    for name in frame.columns:
        column = frame[name]
        safe = _safe_name(str(name))
        description = f"Column {name!r} of {source}."
        if column.nunique(dropna=True) < 2:
            raise TrainingDataError(f"column {name!r} is constant; drop it with --drop")
        if name in categorical or not pd.api.types.is_numeric_dtype(column):
            categories = tuple(sorted(category_text(column).dropna().unique()))
            if len(categories) > MAX_CATEGORIES:
                raise TrainingDataError(
                    f"column {name!r} has {len(categories)} distinct values; drop it with "
                    f"--drop (at most {MAX_CATEGORIES} categories)"
                )
            features.append(
                FeatureSpec(
                    name=safe,
                    source=None if safe == name else str(name),
                    kind=FeatureKind.CATEGORY,
                    categories=categories,
                    description=description,
                    required=not column.isna().any(),
                    reason=f"{name} is {{value}}",
                )
            )
            continue
        is_bool = pd.api.types.is_bool_dtype(column)
        is_int = pd.api.types.is_integer_dtype(column)
        kind = (
            FeatureKind.BOOLEAN
            if is_bool
            else FeatureKind.INTEGER
            if is_int
            else FeatureKind.NUMBER
        )
        non_negative = bool((column.dropna() >= 0).all())
        features.append(
            FeatureSpec(
                name=safe,
                source=None if safe == name else str(name),
                kind=kind,
                description=description,
                minimum=0.0 if non_negative and not is_bool else None,
                required=not column.isna().any(),
                reason=f"{name} is {{value}}",
            )
        )
    if year_cycle is not None:
        features += year_cycle_features(frame, year_cycle, features)
    return FeatureSchema(features=tuple(features))


def year_cycle_features(
    frame: pd.DataFrame, year_cycle: tuple[str, str], inferred: Sequence[FeatureSpec]
) -> list[FeatureSpec]:
    """The sine and cosine of the day of the year of a month and a day-of-month column."""
    month_column, day_column = year_cycle
    by_column = {f.column: f for f in inferred}
    for name in year_cycle:
        if name not in by_column:
            raise TrainingDataError(f"--year-cycle column {name!r} is not a feature column")
    months = frame[month_column].dropna()
    if by_column[month_column].categories:
        unknown = sorted({str(v) for v in category_text(months) if month_number(str(v)) is None})
    else:
        unknown = sorted({str(v) for v in months if v not in range(1, 13)})
    if unknown:
        raise TrainingDataError(
            f"--year-cycle month column {month_column!r} holds values that are not months: "
            f"{unknown[:10]} (month names, abbreviations or 1-12)"
        )
    days = pd.to_numeric(frame[day_column], errors="coerce")
    if by_column[day_column].categories or not days.dropna().between(1, 31).all():
        raise TrainingDataError(
            f"--year-cycle day column {day_column!r} must hold days of the month, 1-31"
        )
    month, day = by_column[month_column].name, by_column[day_column].name
    return [
        FeatureSpec(
            name=f"{month}_{day}_year_{part}",
            kind=FeatureKind.NUMBER,
            description=f"Time of year of {month_column!r} and {day_column!r} ({part} of the "
            "day of the year).",
            required=False,
            derived=DerivedFrom(function=function, month=month, day=day),
            reason=f"the time of year ({month_column} and {day_column})",
        )
        for part, function in (
            ("sin", Derivation.YEAR_ANGLE_SIN),
            ("cos", Derivation.YEAR_ANGLE_COS),
        )
    ]


def category_text(column: pd.Series) -> pd.Series:
    """Category values as text, spelt as the batch scorer's Arrow cast spells them; NaN kept.

    pandas writes a float 2.0 as "2.0" and True as "True", Arrow as "2" and "true": a numeric
    column named with --categorical must be spelt one way in training and in scoring.
    """
    if pd.api.types.is_numeric_dtype(column):
        text = pc.cast(pa.array(column, from_pandas=True), pa.string())
        return pd.Series(text.to_pylist(), index=column.index, dtype=object)
    return column.astype(str).where(column.notna())


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.strip())
    return cleaned if cleaned and not cleaned[0].isdigit() else f"f_{cleaned}"


def encode_frame(
    frame: pd.DataFrame, schema: FeatureSchema
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The feature matrix in schema order, categories as codes, derived features filled in by
    the schema (as serving fills them)."""
    columns = []
    inputs = iter(frame.columns)
    for feature in schema.features:
        if feature.derived is not None:
            columns.append(np.full(len(frame), np.nan))
            continue
        column = frame[next(inputs)]
        if feature.kind is FeatureKind.CATEGORY:
            assert feature.categories is not None
            codes = pd.Categorical(category_text(column), categories=list(feature.categories)).codes
            columns.append(np.where(codes < 0, np.nan, codes).astype(np.float64))
        else:
            columns.append(column.to_numpy(dtype=np.float64))
    if next(inputs, None) is not None:
        raise ValueError("the frame has more columns than the schema has inputs")
    return schema.derive(np.column_stack(columns))


def split_rows(labels: np.ndarray[Any, Any], time: pd.Series | None, seed: int) -> Split:
    """Time-ordered 70/15/15 when a time column is given, else stratified random."""
    n = len(labels)
    index = np.arange(n)
    masks = [np.zeros(n, dtype=bool) for _ in range(3)]
    if time is not None:
        values = pd.to_datetime(time) if not pd.api.types.is_numeric_dtype(time) else time
        order = np.argsort(values.to_numpy(), kind="stable")
        cut_1 = int(n * SPLIT_SHARES[0])
        cut_2 = int(n * (SPLIT_SHARES[0] + SPLIT_SHARES[1]))
        for mask, part in zip(
            masks, (order[:cut_1], order[cut_1:cut_2], order[cut_2:]), strict=True
        ):
            mask[part] = True
        method = {"method": "time", "time_column": time.name, "shares": list(SPLIT_SHARES)}
    else:
        train, rest = train_test_split(
            index, train_size=SPLIT_SHARES[0], stratify=labels, random_state=seed
        )
        validation, test = train_test_split(
            rest, test_size=0.5, stratify=labels[rest], random_state=seed
        )
        for mask, part in zip(masks, (train, validation, test), strict=True):
            mask[part] = True
        method = {"method": "stratified_random", "seed": seed, "shares": list(SPLIT_SHARES)}
    return Split(train=masks[0], validation=masks[1], test=masks[2], description=method)


def train_from_file(
    task: Task,
    *,
    data_path: Path,
    spec: DataSpec,
    out_dir: Path,
    seed: int = 7,
    progress: ProgressCallback | None = None,
    tuning: TuningOptions | None = None,
) -> Manifest:
    """Train ``task`` on a bank's own table; the result is served like a bundled model.

    Search, early stopping and calibration use the training window only (``app.training.tuning``);
    the model is refitted on every training row and the test split is scored once, at the end.
    """
    if task is Task.RECOMMENDATION:
        raise TrainingDataError(
            "recommendation needs a monthly product-ownership panel: train it with --time "
            "MONTH_COLUMN and --product COLUMN (repeat), or with --book"
        )
    frame = read_table(data_path)
    named = [spec.target, spec.id_column, *spec.drop, *spec.categorical, *(spec.year_cycle or ())]
    if spec.time_column:
        named.append(spec.time_column)
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"column(s) not in {data_path.name}: {missing}")
    if frame[spec.id_column].duplicated().any():
        raise TrainingDataError(f"id column {spec.id_column!r} is not unique")
    if task is Task.TIER:
        objective = Objective.MULTICLASS
        classes = tuple(sorted(frame[spec.target].astype(str).unique()))
        if len(classes) < 3:
            raise TrainingDataError(
                f"tier needs at least 3 classes in {spec.target!r}, found {list(classes)}; "
                "train a binary task (churn, prospect) instead"
            )
        labels = frame[spec.target].astype(str).map({c: i for i, c in enumerate(classes)})
    else:
        objective = Objective.BINARY
        labels = binary_target(frame[spec.target], spec.positive)
        positive = spec.positive or "1"
        classes = (f"not {positive}", positive)
    excluded = {spec.target, spec.id_column, *spec.drop}
    if spec.time_column:
        excluded.add(spec.time_column)
    feature_frame = frame[[c for c in frame.columns if c not in excluded]]
    schema = infer_schema(feature_frame, spec.categorical, data_path.name, spec.year_cycle)
    matrix = encode_frame(feature_frame, schema)
    y = labels.to_numpy()
    split = split_rows(y, frame[spec.time_column] if spec.time_column else None, seed)
    for name in ("train", "validation", "test"):
        if len(np.unique(y[getattr(split, name)])) < 2:
            raise TrainingDataError(
                f"the {name} split holds a single class of {spec.target!r}; "
                "more rows or a split without --time are needed"
            )
    # The training window is every row but the test split; the test split is scored once, last.
    window = split.train | split.validation
    try:
        tuned = tune(
            objective=objective,
            num_classes=len(classes),
            schema=schema,
            matrix=matrix[window],
            labels=y[window].astype(np.int64),
            base_params=BASE_PARAMS,
            time=frame.loc[window, spec.time_column].to_numpy() if spec.time_column else None,
            seed=seed,
            options=tuning,
            progress=progress,
        )
    except ValueError as error:
        raise TrainingDataError(f"{error}; more rows are needed") from error
    booster = tuned.booster
    calibrate = Calibrator(tuned.served_calibration)
    trees_test = predict(booster, matrix[split.test])
    thresholds: dict[str, float] = {}
    if objective is Objective.BINARY:
        test_proba = calibrate(trees_test)
        metrics = evaluate.binary_metrics(y[split.test], test_proba)
        metrics["trees_only"] = {
            k: evaluate.binary_metrics(y[split.test], trees_test)[k] for k in ("roc_auc", "brier")
        }
        thresholds = risk_thresholds(calibrate(tuned.out_of_fold))
    else:
        metrics = evaluate.multiclass_metrics(y[split.test], trees_test, classes)
    description = {
        **split.description,
        "training_window": "train and validation shares together; the test share held out",
        "tuning": tuned.summary(),
    }
    manifest = build_manifest(
        task=task,
        version=out_dir.name,
        objective=objective,
        classes=classes,
        schema=schema,
        booster=booster,
        params=tuned.params,
        full_params=True,
        data_fingerprint=fingerprint(matrix, y, names=schema.names),
        data_source=data_path.name,
        training_rows=int(window.sum()),
        split=replace(split, description=description),
        metrics={"test": metrics},
        thresholds=thresholds,
        target=spec.target,
        id_column=spec.id_column,
        calibration=tuned.served_calibration,
    )
    save_model(out_dir, booster, manifest)
    card = build_card(
        manifest=manifest,
        model_dir=out_dir,
        held=HeldOut(
            train_x=matrix[window],
            train_y=y[window].astype(np.int64),
            test_x=matrix[split.test],
            test_y=y[split.test].astype(np.int64),
            held_out=split_label(split.description),
            training_window=_split_window(split, frame, spec, "train", window),
            evaluation_window=_split_window(split, frame, spec, "test"),
            factors=factor_groups(frame.loc[split.test]),
        ),
        provenance=Provenance(synthetic=False, source=f"{data_path.name}, supplied by the bank"),
        seed=seed,
        factors_in_data=factors_in(list(frame.columns)),
    )
    manifest = manifest.model_copy(update={"card": card})
    manifest.save(out_dir)
    return manifest


FACTOR_COLUMNS = {
    "gender": ("gender", "sex"),
    "age band": ("age",),
    "region": ("region", "geography", "state", "province"),
}


def factors_in(columns: Sequence[str]) -> list[str]:
    """The fairness factors (gender, age band, region) a table has a column for, by name."""
    names = {str(c).lower() for c in columns}
    return [factor for factor, aliases in FACTOR_COLUMNS.items() if names & set(aliases)]


def factor_groups(rows: pd.DataFrame) -> dict[str, npt.NDArray[np.str_]]:
    """Each fairness factor's group of every row, from the first column named for it."""
    by_name = {str(c).lower(): c for c in rows.columns}
    groups: dict[str, npt.NDArray[np.str_]] = {}
    for factor, aliases in FACTOR_COLUMNS.items():
        column = next((by_name[a] for a in aliases if a in by_name), None)
        if column is None:
            continue
        values = rows[column]
        if factor == "age band":
            groups[factor] = age_band(pd.to_numeric(values, errors="coerce").to_numpy())
        else:
            groups[factor] = values.astype(str).fillna("unknown").to_numpy(dtype=str)
    return groups


def _split_window(
    split: Split,
    frame: pd.DataFrame,
    spec: DataSpec,
    part: str,
    rows: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    rows = getattr(split, part) if rows is None else rows
    if spec.time_column is None:
        name = "train and validation" if part == "train" else part
        return {"description": f"{name} rows of a {split.description['method']} split"}
    times = frame.loc[rows, spec.time_column]
    return {"description": f"{part} rows: {spec.time_column} {times.min()} to {times.max()}"}
