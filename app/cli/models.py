"""``cvm models``: the models on disk, which one of each task is served, their test metrics."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from app.cli.app import console, example
from app.config import get_settings
from app.scoring.manifest import Manifest, Task

commands = typer.Typer()


@commands.command(epilog=example("cvm models", 'CVM_MODEL_VERSIONS=\'{"churn": "1"}\' cvm models'))
def models() -> None:
    """List the models on disk, mark the one of each task the service serves, show test metrics.

    The active version is the one pinned in CVM_MODEL_VERSIONS, else the newest on disk.
    """
    from app.scoring.registry import active_version, available_versions

    settings = get_settings()
    table = Table("task", "version", "active", "trees", "test metric", "created")
    for task in Task:
        versions = available_versions(settings.models_dir, task)
        pinned = settings.model_versions.get(task.value)
        active = active_version(versions, pinned)
        if active is not None and active not in versions:
            console.print(
                f"[yellow]warning:[/yellow] CVM_MODEL_VERSIONS pins {task.value} to {active!r}, "
                f"which is not under {settings.models_dir / task.value}: the service won't start",
                soft_wrap=True,
            )
        for version in versions:
            marker = "" if version != active else "yes (pinned)" if pinned else "yes"
            manifest = Manifest.load(settings.models_dir / task.value / version)
            table.add_row(
                task.value,
                version,
                marker,
                str(manifest.num_trees),
                headline_metric(manifest),
                f"{manifest.created_at:%Y-%m-%d}",
            )
    Console().print(table)


def headline_metric(manifest: Manifest) -> str:
    """The one test metric that sums a model up: ROC AUC, accuracy or MAP@7."""
    test = manifest.metrics.get("test", {})
    return next(
        (f"{k}={test[k]}" for k in ("roc_auc", "accuracy") if k in test),
        f"map_at_7={test.get('all_customers', {}).get('map_at_7')}",
    )
