"""``cvm models``: the model registry: versions, which one serves, and changing it."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from app.cli.app import console, database_session, example, fail
from app.config import Settings, get_settings
from app.modelops.cards import trained_on_synthetic_data
from app.scoring.manifest import Manifest, Task

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

commands = typer.Typer(
    name="models",
    help="The model registry: list versions, register, approve, activate, roll back, shadow.",
    epilog=example(
        "cvm models list",
        "cvm models register churn 2 --owner retention-analytics",
        "cvm models approve churn 2 --reason 'validated on March' --actor cli:validator",
        "cvm models activate churn 2 --reason 'beats 1 out of time' --actor cli:validator",
        "cvm models rollback churn --reason 'complaints about scores'",
        "cvm models shadow churn 2 --share 0.1",
        "cvm models unshadow churn",
    ),
)
T = TypeVar("T")

Actor = Annotated[
    str,
    typer.Option(
        metavar="ID",
        help="Who acts, kept in the trail (default: cli:<OS user>). Whoever registered a "
        "version may not approve or activate it.",
    ),
]
Reason = Annotated[str, typer.Option(metavar="TEXT", help="Why: kept in the append-only trail.")]


def _default_actor() -> str:
    return f"cli:{getpass.getuser()}"[:64]


def _run(use_case: Callable[[Session, Settings], T]) -> T:
    """Run a registry use case on the configured database; domain errors end the command."""
    from app.errors import ServiceError

    settings = get_settings()
    try:
        with database_session() as session:
            return use_case(session, settings)
    except ServiceError as error:
        raise fail(error.detail) from error


def _registry_status(settings: Settings) -> dict[tuple[str, str], str] | None:
    """Each registered version's status, or None when the database has no registry."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from app.modelops.service import list_versions

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None
    try:
        with database_session(writes=False) as session:
            return {(r.task, r.version): r.status for r in list_versions(session)}
    except SQLAlchemyError:
        return None


@commands.callback(invoke_without_command=True)
def models(context: typer.Context) -> None:
    """The model registry (without a command: list the versions)."""
    if context.invoked_subcommand is None:
        list_models()


@commands.command(
    "list", epilog=example("cvm models list", 'CVM_MODEL_VERSIONS=\'{"churn": "1"}\' cvm models')
)
def list_models() -> None:
    """List the models on disk, their registry status, the one of each task that serves, and
    their test metrics.

    The served version is the one pinned in CVM_MODEL_VERSIONS, else the registry's champion,
    else (no registry yet) the newest on disk.
    """
    from app.scoring.registry import active_version, available_versions

    settings = get_settings()
    statuses = _registry_status(settings)
    table = Table("task", "version", "active", "status", "trees", "test metric", "data", "created")
    synthetic_served = []
    for task in Task:
        versions = available_versions(settings.models_dir, task)
        pinned = settings.model_versions.get(task.value)
        champion = next(
            (v for (t, v), s in (statuses or {}).items() if t == task.value and s == "champion"),
            None,
        )
        active = active_version(versions, pinned or champion)
        if active is not None and active not in versions:
            source = "CVM_MODEL_VERSIONS pins" if pinned else "the registry's champion is"
            console.print(
                f"[yellow]warning:[/yellow] {source} {task.value} {active!r}, "
                f"which is not under {settings.models_dir / task.value}",
                soft_wrap=True,
            )
        for version in versions:
            marker = "" if version != active else "yes (pinned)" if pinned else "yes"
            manifest = Manifest.load(settings.models_dir / task.value / version)
            table.add_row(
                task.value,
                version,
                marker,
                "-" if statuses is None else statuses.get((task.value, version), "unregistered"),
                str(manifest.num_trees),
                headline_metric(manifest),
                _data_label(manifest),
                f"{manifest.created_at:%Y-%m-%d}",
            )
            if marker and trained_on_synthetic_data(manifest):
                synthetic_served.append(task.value)
    Console().print(table)
    if synthetic_served:
        console.print(
            f"[bold yellow]{', '.join(synthetic_served)}: served models were trained on "
            "SYNTHETIC data generated by CVM[/bold yellow] (no real customers): demonstration "
            "models; retrain on the bank's own data before use.",
            soft_wrap=True,
        )


def _data_label(manifest: Manifest) -> str:
    synthetic = trained_on_synthetic_data(manifest)
    return "no card" if synthetic is None else "SYNTHETIC" if synthetic else "bank's own"


@commands.command("register", epilog=example("cvm models register churn 2 --owner analytics"))
def register(
    task: Task,
    version: str,
    owner: Annotated[str | None, typer.Option(metavar="ID", help="Who answers for it.")] = None,
    restrictions: Annotated[str | None, typer.Option(metavar="TEXT", help="Limits on use.")] = None,
    actor: Actor = "",
) -> None:
    """Register models/TASK/VERSION as a candidate."""
    from app.modelops.service import register_version

    row = _run(
        lambda session, settings: register_version(
            session,
            models_dir=settings.models_dir,
            task=task,
            version=version,
            actor=actor or _default_actor(),
            owner=owner,
            restrictions=restrictions,
            now=datetime.now(UTC),
        )
    )
    console.print(f"{task.value} {version} registered: {row.status}")


@commands.command("approve", epilog=example("cvm models approve churn 2 --reason 'validated'"))
def approve(task: Task, version: str, reason: Reason, actor: Actor = "") -> None:
    """Approve a candidate (needs its backtest and model card in the manifest)."""
    from app.modelops.service import approve_version

    row = _run(
        lambda session, _: approve_version(
            session,
            task=task,
            version=version,
            actor=actor or _default_actor(),
            reason=reason,
            now=datetime.now(UTC),
        )
    )
    console.print(f"{task.value} {version} approved: {row.status}")


@commands.command("activate", epilog=example("cvm models activate churn 2 --reason 'better'"))
def activate(task: Task, version: str, reason: Reason, actor: Actor = "") -> None:
    """Make an approved version the champion; running services follow within a second."""
    from app.modelops.service import activate_version

    done = _run(
        lambda session, settings: activate_version(
            session,
            models_dir=settings.models_dir,
            task=task,
            version=version,
            actor=actor or _default_actor(),
            reason=reason,
            now=datetime.now(UTC),
        )
    )
    console.print(f"{task.value} champion: {version} (was {done.replaced})")


@commands.command("rollback", epilog=example("cvm models rollback churn --reason 'drift'"))
def rollback(task: Task, reason: Reason, actor: Actor = "") -> None:
    """Bring back the previous champion, once it is checked to load."""
    from app.modelops import service

    done = _run(
        lambda session, settings: service.rollback(
            session,
            models_dir=settings.models_dir,
            task=task,
            actor=actor or _default_actor(),
            reason=reason,
            now=datetime.now(UTC),
        )
    )
    console.print(f"{task.value} champion: {done.row.version} (was {done.replaced})")


def headline_metric(manifest: Manifest) -> str:
    """The one test metric that sums a model up: ROC AUC, accuracy or MAP@7."""
    test = manifest.metrics.get("test", {})
    return next(
        (f"{k}={test[k]}" for k in ("roc_auc", "accuracy") if k in test),
        f"map_at_7={test.get('all_customers', {}).get('map_at_7')}",
    )


@commands.command("shadow", epilog=example("cvm models shadow churn 2 --share 0.1"))
def shadow(
    task: Task,
    version: str,
    share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="SHARE",
            help="Share of requests (0..1) the challenger scores again in shadow.",
        ),
    ],
    actor: Actor = "",
) -> None:
    """Let an approved challenger score a share of requests in shadow (answers unchanged)."""
    from app.modelops.service import set_shadow

    done = _run(
        lambda session, settings: set_shadow(
            session,
            models_dir=settings.models_dir,
            task=task,
            version=version,
            share=share,
            actor=actor or _default_actor(),
            now=datetime.now(UTC),
        )
    )
    console.print(f"{task.value} {done.version} in shadow for {done.share:.0%} of requests")


@commands.command("unshadow", epilog=example("cvm models unshadow churn"))
def unshadow(task: Task) -> None:
    """Stop a task's challenger scoring in shadow (its stored scores stay)."""
    from app.modelops.service import stop_shadow

    version = _run(lambda session, _: stop_shadow(session, task=task))
    console.print(f"{task.value} {version} no longer in shadow")
