"""The interactive API docs, offline: Swagger UI's files come from a Python package, no CDN.

``fastapi-swagger`` ships the swagger-ui-dist release (5.x, which reads OpenAPI 3.1, the
version FastAPI writes) as package data; the app serves three of its files and FastAPI's own
page template points at them. ReDoc is not served: it has no packaged build.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
SPEC_PATH = "/openapi.json"
ASSETS_PATH = "/docs/assets"
_JS, _CSS, _FAVICON = "swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"
# The page and the only files it loads: public, so that a browser shows the docs before
# anyone types a key into the Authorize dialog.
PAGE_PATHS = frozenset({DOCS_PATH, *(f"{ASSETS_PATH}/{name}" for name in (_JS, _CSS, _FAVICON))})


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's distribution files inside the installed package."""
    return Path(str(files("fastapi_swagger") / "resources"))


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets from this process (the app must not add its own docs)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")
    title = f"{app.title} API"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI; its Authorize button takes an API key or a bearer token."""
        return get_swagger_ui_html(
            openapi_url=SPEC_PATH,
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/{_JS}",
            swagger_css_url=f"{ASSETS_PATH}/{_CSS}",
            swagger_favicon_url=f"{ASSETS_PATH}/{_FAVICON}",
            # Credentials typed into Authorize stay in this tab's memory, never in storage.
            swagger_ui_parameters={"persistAuthorization": False},
        )
