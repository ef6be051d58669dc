"""The life of a model version in the registry: one enum, one place."""

from __future__ import annotations

from enum import StrEnum


class ModelStatus(StrEnum):
    """Where a registered version stands.

    ``candidate``: registered, not yet approved. ``challenger``: approved by a validator, may be
    activated. ``champion``: the one version of its task that serves. ``retired``: served once
    and was replaced (it stays approved, so a rollback can bring it back).
    """

    CANDIDATE = "candidate"
    CHALLENGER = "challenger"
    CHAMPION = "champion"
    RETIRED = "retired"
