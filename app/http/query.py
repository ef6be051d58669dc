"""Unknown query parameters are refused (422 naming them) on every route.

FastAPI ignores parameters a route does not declare, so a misspelt or unsupported filter
(``?stauts=open``) silently returns everything. This middleware finds the route a request
will reach, as the router does, and compares the query's names with the ones the route
declares (its own and its dependencies'). Requests without a query string pass untouched.
"""

from __future__ import annotations

from fastapi.dependencies.utils import get_flat_dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import InvalidInput

PROBLEM_JSON = "application/problem+json"


def declared_query_names(route: APIRoute) -> frozenset[str]:
    """The query parameter names a route reads, through every dependency."""
    names: set[str] = set()
    for param in get_flat_dependant(route.dependant, skip_repeats=True).query_params:
        annotation = param.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # A pydantic model of query parameters (``Annotated[Filters, Query()]``).
            names.update(info.alias or name for name, info in annotation.model_fields.items())
        else:
            names.add(param.alias)
    return frozenset(names)


class RejectUnknownQueryParameters:
    """Answer 422 to a request whose query names a parameter its route does not declare."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the app's list: routes added after this middleware count too
        self._declared: dict[int, frozenset[str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        if route is not None:
            given = QueryParams(scope["query_string"])
            unknown = sorted({name for name in given if name not in self._names(route)})
            if unknown:
                response = _refusal(unknown, instance=scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _route(self, scope: Scope) -> APIRoute | None:
        """The API route the router would call (None: another kind of route, 404 or 405)."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route if isinstance(route, APIRoute) else None
        return None

    def _names(self, route: APIRoute) -> frozenset[str]:
        names = self._declared.get(id(route))
        if names is None:
            names = self._declared[id(route)] = declared_query_names(route)
        return names


def _refusal(unknown: list[str], *, instance: str) -> JSONResponse:
    listed = ", ".join(repr(name[:64]) for name in unknown[:10])
    error = InvalidInput(
        f"unknown query parameter(s): {listed}",
        extra={
            "errors": [
                {
                    "field": f"query.{name[:64]}",
                    "message": "this endpoint has no such query parameter",
                    "type": "extra_forbidden",
                }
                for name in unknown[:10]
            ]
        },
    )
    return JSONResponse(
        error.problem(instance=instance), status_code=error.status, media_type=PROBLEM_JSON
    )
