"""Dependencies injected into routes, one ``Annotated`` alias each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.ml.registry import ModelRegistry
from app.services.scoring import ScoringService


def get_scoring(request: Request) -> ScoringService:
    """The scoring service built at start-up."""
    service: ScoringService = request.app.state.scoring
    return service


def get_registry(request: Request) -> ModelRegistry:
    """The loaded models."""
    registry: ModelRegistry = request.app.state.registry
    return registry


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request, closed afterwards."""
    with request.app.state.session_factory() as session:
        yield session


def get_request_id(request: Request) -> str:
    """The id of this request (from X-Request-ID or generated)."""
    return str(request.scope["state"]["request_id"])


ScoringDep = Annotated[ScoringService, Depends(get_scoring)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
