"""``cvm models``: the models on disk and their held-out metrics."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from app.config import get_settings
from app.scoring.manifest import Task

commands = typer.Typer()


@commands.command()
def models() -> None:
    """List the models on disk and their test metrics."""
    from app.scoring.manifest import Manifest
    from app.scoring.registry import available_versions

    settings = get_settings()
    table = Table("task", "version", "trees", "test metric", "created")
    for task in Task:
        for version in available_versions(settings.models_dir, task):
            manifest = Manifest.load(settings.models_dir / task.value / version)
            test = manifest.metrics.get("test", {})
            headline = next(
                (f"{k}={test[k]}" for k in ("roc_auc", "accuracy") if k in test),
                f"map_at_7={test.get('all_customers', {}).get('map_at_7')}",
            )
            table.add_row(
                task.value,
                version,
                str(manifest.num_trees),
                headline,
                f"{manifest.created_at:%Y-%m-%d}",
            )
    Console().print(table)
