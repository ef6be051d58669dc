"""``cvm serve``: the HTTP service under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.app import example
from app.config import get_settings

commands = typer.Typer()


@commands.command(epilog=example("cvm serve --host 0.0.0.0 --port 8000 --workers 2"))
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default from settings).", metavar="ADDRESS")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from settings).", metavar="PORT")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.", metavar="N")] = 1,
) -> None:
    """Run the HTTP service with uvicorn."""
    import os

    import uvicorn

    # One request is one row: OpenMP threads would only contend with the event loop. Must be
    # set before LightGBM loads (the app factory imports it).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = get_settings()
    uvicorn.run(
        "app.http.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )
