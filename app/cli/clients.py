"""``cvm clients``: API clients, their keys, scopes and tenants."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.cli.app import console, database_engine, example, fail
from app.config import get_settings
from app.security.principal import Scope

commands = typer.Typer(
    name="clients",
    help="API clients: keys, scopes, tenants.",
    epilog=example("cvm clients create core-banking --scopes scores:write", "cvm clients list"),
    no_args_is_help=True,
)


@commands.command(
    "create",
    epilog=example(
        "cvm clients create mobile-backend --scopes scores:write --scopes scores:read "
        "--rate-limit 50"
    ),
)
def clients_create(
    name: Annotated[
        str, typer.Argument(help="Who the key is for, e.g. core-banking.", metavar="NAME")
    ],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scopes",
            help=", ".join(scope.value for scope in Scope) + " (repeat, or comma-separated).",
            metavar="SCOPE",
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Limit the client to this tenant's data.", metavar="TENANT")
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Requests per second (default from settings).", metavar="PER_SECOND"
        ),
    ] = None,
) -> None:
    """Create a client and print its API key once: only its hash is stored."""
    from app.security.api_keys import create_client

    wanted = [s for item in scopes for s in item.replace(",", " ").split()]
    try:
        with database_engine() as engine:
            info, key = create_client(
                engine, name=name, scopes=wanted, tenant=tenant, rate_limit_per_s=rate_limit
            )
    except ValueError as error:
        raise fail(str(error)) from error
    console.print(
        f"created client {info.id} ({info.name}; scopes {' '.join(info.scopes)}"
        + (f"; tenant {info.tenant}" if info.tenant else "")
        + "). Its API key, shown this once:"
    )
    typer.echo(key)


@commands.command("revoke", epilog=example("cvm clients revoke cl_5f3a9c2e8b7d4a10"))
def clients_revoke(
    client_id: Annotated[
        str, typer.Argument(help="The client's id (cl_...).", metavar="CLIENT_ID")
    ],
) -> None:
    """Revoke a client's key; every replica refuses it within the auth cache TTL."""
    from app.security.api_keys import revoke_client

    with database_engine() as engine:
        revoked = revoke_client(engine, client_id=client_id)
    if not revoked:
        raise fail(f"no active client {client_id}")
    ttl = get_settings().auth_cache_ttl_s
    console.print(f"revoked {client_id}; refused everywhere within {ttl:g} s")


@commands.command("list", epilog=example("cvm clients list --revoked"))
def clients_list(
    revoked: Annotated[
        bool, typer.Option("--revoked", help="Include revoked clients.", metavar="")
    ] = False,
) -> None:
    """List clients: id, name, key prefix, scopes, tenant (never a key)."""
    from app.security.api_keys import list_clients

    with database_engine() as engine:
        clients = list_clients(engine, include_revoked=revoked)
    table = Table("id", "name", "key", "scopes", "tenant", "rate/s", "created", "revoked")
    for c in clients:
        table.add_row(
            c.id,
            c.name,
            c.key_prefix + "...",
            " ".join(c.scopes),
            c.tenant or "",
            "" if c.rate_limit_per_s is None else f"{c.rate_limit_per_s:g}",
            f"{c.created_at:%Y-%m-%d %H:%M}",
            "" if c.revoked_at is None else f"{c.revoked_at:%Y-%m-%d %H:%M}",
        )
    Console(width=200).print(table)
