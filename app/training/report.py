"""Model-card plots from a manifest's held-out metrics, for those who would rather look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from app.scoring.manifest import Manifest, Objective, Task


def split_label(split: dict[str, Any]) -> str:
    """What a model's held-out metrics were measured on, from its manifest's ``split``."""
    shares = split.get("shares") or [None]
    share = "" if shares[-1] is None else f" {shares[-1]:.0%}"
    if split.get("method") == "time" and "test_month" in split:
        return f"test month {split['test_month']}"
    if split.get("method") == "time" and "time_column" in split:
        return f"latest{share} by {split['time_column']}"
    if split.get("method") == "stratified_random":
        return f"random{share} test split (stratified)"
    return "test split"


def _calibration(axes: Axes, test: dict[str, Any], held_out: str) -> None:
    table = test["calibration"]
    predicted = [row["mean_predicted"] for row in table]
    observed = [row["observed_rate"] for row in table]
    counts = np.array([row["count"] for row in table], dtype=float)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.scatter(predicted, observed, s=20 + 200 * counts / counts.max(), label=held_out)
    axes.plot(predicted, observed)
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed rate")
    axes.set_title(
        f"Calibration: ROC AUC {test['roc_auc']:.3f}, PR AUC {test['pr_auc']:.3f}, "
        f"Brier {test['brier']:.3f}"
    )
    axes.legend(loc="upper left")


def _confusion(axes: Axes, test: dict[str, Any]) -> None:
    matrix = np.array(test["confusion_matrix"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    labels = [c.replace("_", " ") for c in test["classes"]]
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.5 else "black"
        axes.text(j, i, f"{int(count):,}", ha="center", va="center", color=colour, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(f"Accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}")


def _ranking(axes: Axes, test: dict[str, Any], held_out: str) -> None:
    groups = {
        "all customers": ("all_customers", "popularity_baseline_all_customers"),
        "new customers": ("new_customers", "popularity_baseline_new_customers"),
    }
    x = np.arange(len(groups))
    model = [test[m]["map_at_7"] for m, _ in groups.values()]
    baseline = [test.get(b, {}).get("map_at_7", np.nan) for _, b in groups.values()]
    axes.bar(x - 0.2, model, width=0.4, label="model")
    axes.bar(x + 0.2, baseline, width=0.4, label="popularity baseline")
    axes.set_xticks(x, list(groups))
    axes.set_ylim(0, 1)
    axes.set_ylabel(f"MAP@7, {held_out}")
    axes.set_title("Next-product ranking against the obvious baseline")
    axes.legend()


def model_card_figure(manifest: Manifest) -> Figure:
    """A model's held-out metrics drawn, labelled with the split they were measured on."""
    test = manifest.metrics["test"]
    held_out = split_label(manifest.split)
    # A bare Figure needs no pyplot state and no display backend: safe on servers and in CI.
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    axes = figure.subplots()
    if manifest.task is Task.RECOMMENDATION:
        _ranking(axes, test, held_out)
    elif manifest.objective is Objective.MULTICLASS:
        _confusion(axes, test)
    else:
        _calibration(axes, test, held_out)
    figure.suptitle(
        f"{manifest.task.value} v{manifest.version} ({manifest.data_source}); held out: {held_out}"
    )
    return figure


def plot_model_card(model_dir: Path, out: Path) -> Path:
    """One PNG summarising a model's held-out metrics; returns its path."""
    figure = model_card_figure(Manifest.load(model_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out
