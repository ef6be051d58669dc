"""Refusals of the model registry, each with its status and a stable code."""

from __future__ import annotations

from app.errors import Conflict, InvalidInput, ServiceError


class SeparationOfDuties(ServiceError):
    """Whoever registered a version may not approve or activate it."""

    status = 403
    code = "separation_of_duties"
    title = "Separation of duties"


class EvidenceMissing(InvalidInput):
    """Approval needs a backtest and a model card in the version's manifest."""

    code = "evidence_missing"
    title = "Validation evidence missing"


class VersionNotApproved(Conflict):
    """Only an approved version may serve."""

    code = "version_not_approved"
    title = "Version not approved"


class VersionUnloadable(Conflict):
    """The version's files are gone, changed since registration, or do not load."""

    code = "version_unloadable"
    title = "Version does not load"


class ChampionChanged(Conflict):
    """Another activation changed the champion while this one was loading the model."""

    code = "champion_changed"
    title = "Champion changed concurrently"
