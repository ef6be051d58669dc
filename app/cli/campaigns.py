"""``cvm campaigns``: draft a campaign from a file, check its power, launch it once, report
and collect its outcomes for retraining."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from app.cli.app import console, database_session, example, fail, progress_bar

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.campaigns.schemas import PowerCheck
    from app.contact.service import ContactPolicy

T = TypeVar("T")

commands = typer.Typer(
    name="campaigns",
    help="Campaigns with control groups: draft, check the power, launch once, report.",
    no_args_is_help=True,
    epilog=example(
        "cvm campaigns create campaign.json --tenant bank-a",
        "cvm campaigns check 7 --tenant bank-a",
        "cvm campaigns launch 7 --tenant bank-a",
        "cvm campaigns report 7 --tenant bank-a --svg report.svg",
        "cvm campaigns outcomes 7 --tenant bank-a --out outcomes.csv",
    ),
)

Tenant = Annotated[
    str | None, typer.Option(help="The tenant the campaign belongs to.", metavar="TENANT")
]
CampaignId = Annotated[int, typer.Argument(help="The campaign's id.", metavar="ID", min=1)]


def _run(step: str, work: Callable[[Session], T]) -> T:
    """Run one use case on a session of the configured database, a spinner meanwhile; a
    domain error is printed on one line (exit 2)."""
    from app.errors import ServiceError

    try:
        with progress_bar() as progress, database_session() as session:
            task = progress.add_task(step, total=1)
            result = work(session)
            progress.update(task, completed=1)
    except ServiceError as error:
        raise fail(f"{error.code}: {error.detail}") from error
    return result


def _policy() -> ContactPolicy:
    from app.config import get_settings
    from app.contact.service import ContactPolicy

    return ContactPolicy.from_settings(get_settings())


@commands.command(
    "create",
    epilog=example(
        "cvm campaigns create campaign.json --tenant bank-a   # prints the new campaign's id",
    ),
)
def create(
    spec: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
            help="The campaign as JSON, the body of POST /v1/campaigns.",
        ),
    ],
    tenant: Tenant = None,
) -> None:
    """Draft a campaign from a JSON file; prints its id."""
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from app.campaigns.schemas import CampaignRequest
    from app.campaigns.service import create_campaign
    from app.config import get_settings
    from app.scoring.service import field_path
    from app.value.policy import load_policy

    try:
        request = CampaignRequest.model_validate_json(spec.read_bytes())
    except ValidationError as error:
        fields = ", ".join(field_path(e["loc"]) for e in error.errors())
        raise fail(f"{spec}: invalid campaign at {fields}; nothing written") from error
    names = load_policy(get_settings().tier_policy_file).names
    created = _run(
        "drafting",
        lambda session: create_campaign(
            session,
            tenant=tenant,
            request=request,
            tier_names=names,
            created_by="cli",
            now=datetime.now(UTC),
        ),
    )
    console.print(f"drafted campaign {created.code} (control group period {created.period})")
    typer.echo(f"campaign {created.id}")


def _print_check(check: PowerCheck) -> None:
    typer.echo(f"{'segment':<12} {check.segment_customers:>10}")
    for blocked in check.blocked:
        typer.echo(f"{'blocked':<12} {check_rule(blocked.rule.value):>10} {blocked.customers}")
    typer.echo(f"{'treatment':<12} {check.treatment:>10}  (needed {check.required_treatment})")
    typer.echo(f"{'control':<12} {check.control:>10}  (needed {check.required_control})")
    if check.warning:
        console.print(f"[yellow]warning:[/yellow] {check.warning}")


def check_rule(rule: str) -> str:
    """A contact rule as the table shows it."""
    return rule.replace("_", " ")


@commands.command("check", epilog=example("cvm campaigns check 7 --tenant bank-a"))
def check(campaign_id: CampaignId, tenant: Tenant = None) -> None:
    """The pre-launch check: who launching now would contact and hold out, and whether the
    arms can detect the minimum lift."""
    from datetime import UTC, datetime

    from app.campaigns.service import check_campaign

    policy = _policy()
    result = _run(
        "targeting",
        lambda session: check_campaign(
            session, tenant=tenant, campaign_id=campaign_id, policy=policy, now=datetime.now(UTC)
        ),
    )
    _print_check(result)


@commands.command("launch", epilog=example("cvm campaigns launch 7 --tenant bank-a"))
def launch(campaign_id: CampaignId, tenant: Tenant = None) -> None:
    """Write the contact list once under the contact policy (a second launch fails, exit 2)."""
    from datetime import UTC, datetime

    from app.campaigns.service import launch_campaign

    policy = _policy()
    result = _run(
        "launching",
        lambda session: launch_campaign(
            session, tenant=tenant, campaign_id=campaign_id, policy=policy, now=datetime.now(UTC)
        ),
    )
    _print_check(result.check)
    console.print(
        f"launched {result.campaign.code}: {result.check.treatment} contacted, "
        f"{result.check.control} held out"
    )


@commands.command(
    "report",
    epilog=example(
        "cvm campaigns report 7 --tenant bank-a                   # the report as JSON",
        "cvm campaigns report 7 --tenant bank-a --svg report.svg  # and its chart",
    ),
)
def report(
    campaign_id: CampaignId,
    tenant: Tenant = None,
    svg: Annotated[
        Path | None,
        typer.Option(help="Also write the chart here.", dir_okay=False, metavar="FILE"),
    ] = None,
) -> None:
    """The campaign's report (arms, lift, uplift, cost) as JSON on stdout."""
    from datetime import UTC, datetime

    from app.campaigns.charts import report_svg
    from app.campaigns.service import report as build_report

    result = _run(
        "reporting",
        lambda session: build_report(
            session, tenant=tenant, campaign_id=campaign_id, now=datetime.now(UTC)
        ),
    )
    typer.echo(result.model_dump_json(indent=2))
    if svg is not None:
        svg.write_text(report_svg(result))
        console.print(f"chart written to {svg}")


@commands.command(
    "outcomes",
    epilog=example("cvm campaigns outcomes 7 --tenant bank-a --out outcomes.csv"),
)
def outcomes(
    campaign_id: CampaignId,
    out: Annotated[Path, typer.Option(help="The CSV to write.", dir_okay=False, metavar="FILE")],
    tenant: Tenant = None,
) -> None:
    """Store each member's response on its member row and write them as CSV: arm (the
    treatment flag), score at launch and converted (the label) for uplift retraining."""
    from app.campaigns.service import collect_outcomes

    rows = _run(
        "collecting responses",
        lambda session: collect_outcomes(session, tenant=tenant, campaign_id=campaign_id),
    )
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "arm", "score", "response", "responded_at", "converted"])
        for row in rows:
            writer.writerow(
                [
                    row.customer_id,
                    row.arm.value,
                    "" if row.score is None else row.score,
                    row.response or "",
                    row.responded_at.isoformat() if row.responded_at else "",
                    int(row.converted),
                ]
            )
    converted = sum(row.converted for row in rows)
    console.print(f"{len(rows)} members, {converted} converted, written to {out}")
