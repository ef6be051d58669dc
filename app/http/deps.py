"""Dependencies injected into routes, one ``Annotated`` alias each.

Cheap dependencies are ``async``: FastAPI runs a sync dependency in the thread pool, two thread
hops per request that cost more than the scoring itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import writing
from app.scoring.registry import ModelRegistry
from app.scoring.repository import TenantScope
from app.scoring.service import ScoringService
from app.security.errors import Forbidden, Unauthenticated
from app.security.idempotency import IdempotentRun
from app.security.principal import Principal, Scope
from app.security.pseudonyms import Pseudonymizer


async def get_registry(request: Request) -> ModelRegistry:
    """The loaded models."""
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request, closed afterwards; a request that may write
    (not GET or HEAD) takes SQLite's write lock when its transaction begins."""
    with request.app.state.session_factory() as session:
        yield session if request.method in READ_ONLY_METHODS else writing(session)


READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


def get_recording_session(request: Request) -> Iterator[Session]:
    """A session for a GET that stores what it computed (a monitoring run, a campaign report,
    prospects' segments): declared a writer like any POST, since on SQLite a read that turns
    into a write fails at once when another writer committed in between."""
    with request.app.state.session_factory() as session:
        yield writing(session)


def get_principal(request: Request) -> Principal:
    """The client the security middleware authenticated."""
    principal: Principal | None = request.scope["state"].get("principal")
    if principal is None:
        raise Unauthenticated()
    return principal


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that passes clients holding ``scope`` and answers 403 to the others."""

    # async: a sync dependency would cost a thread-pool hop on every request.
    async def holds_scope(request: Request) -> Principal:
        principal = get_principal(request)
        if scope.value not in principal.scopes:
            raise Forbidden(f"this operation needs the {scope.value} scope")
        return principal

    holds_scope.__name__ = f"requires_{scope.name.lower()}"
    return holds_scope


async def get_tenant_scope(request: Request) -> TenantScope | None:
    """The rows the caller may read: its tenant's when isolation is on, else every row."""
    settings: Settings = request.app.state.settings
    if not settings.tenant_isolation:
        return None
    return TenantScope(get_principal(request).tenant)


async def get_pseudonymizer(request: Request) -> Pseudonymizer | None:
    """The customer-id pseudonymizer, when a secret is configured."""
    pseudonymizer: Pseudonymizer | None = request.app.state.pseudonymizer
    return pseudonymizer


@dataclass(frozen=True, slots=True)
class ScoringCall:
    """What a scoring route needs. The routes call ``get_scoring_call`` themselves rather than
    inject it: FastAPI's cost is per dependency, and on a single-customer call it is a tenth
    of the scoring itself."""

    service: ScoringService
    request_id: str
    tenant: str | None
    # Set when the request runs under an Idempotency-Key (the security middleware's claim).
    idempotency: IdempotentRun | None = None


_holds_scores_write = require(Scope.SCORES_WRITE)


async def get_scoring_call(request: Request) -> ScoringCall:
    """The scoring service, this request's id, and the caller's tenant (403 without
    the scores:write scope)."""
    caller = await _holds_scores_write(request)
    return ScoringCall(
        service=request.app.state.scoring,
        request_id=await get_request_id(request),
        tenant=caller.tenant,
        idempotency=request.scope["state"].get("idempotency"),
    )


async def get_request_id(request: Request) -> str:
    """This request's id (X-Request-ID): what ties a stored row to its audit-log line."""
    return str(request.scope["state"]["request_id"])


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
RecordingSessionDep = Annotated[Session, Depends(get_recording_session)]
ScoresWriter = Annotated[Principal, Depends(require(Scope.SCORES_WRITE))]
ScoresReader = Annotated[Principal, Depends(require(Scope.SCORES_READ))]
AlertsReader = Annotated[Principal, Depends(require(Scope.ALERTS_READ))]
AlertsWriter = Annotated[Principal, Depends(require(Scope.ALERTS_WRITE))]
ModelsReader = Annotated[Principal, Depends(require(Scope.MODELS_READ))]
CaseworkReader = Annotated[Principal, Depends(require(Scope.CASEWORK_READ))]
CaseworkWriter = Annotated[Principal, Depends(require(Scope.CASEWORK_WRITE))]
StaffAdmin = Annotated[Principal, Depends(require(Scope.STAFF_ADMIN))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
TenantDep = Annotated[TenantScope | None, Depends(get_tenant_scope)]
PseudonymizerDep = Annotated[Pseudonymizer | None, Depends(get_pseudonymizer)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
