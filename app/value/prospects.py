"""Prospect segments and their marketing plans: the bank's configuration, validated at load.

A prospect's segment is its value band x its buying power:

- **value band**: from the prospect model's predicted annual value once a customer
  (``value_if_converted``, the value booster of the prospect model), against the plan's
  cut-offs (inclusive, lowest band first; the lowest band has none);
- **buying power**: from the income the prospect record carries (the ``income`` feature the
  prospect was scored on), against cut-offs the same way; a prospect without a known income
  is in the lowest band (nothing shows it can buy more).

Segments are named ``<value band>.<buying power band>``; the plan gives each one its
marketing plan (channel, offer, message, how soon to contact and how often at most), and must
cover every segment: a plan missing a segment, naming one that cannot exist, or with bands
out of order is refused at load with a message naming the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import InvalidInput

NAME = r"^[a-z][a-z0-9_]{0,31}$"
SEGMENT_PATTERN = r"^[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,31}$"


class PlanChannel(StrEnum):
    """How a segment's prospects are approached."""

    RELATIONSHIP_MANAGER = "relationship_manager"
    BRANCH = "branch"
    PHONE = "phone"
    EMAIL = "email"
    SMS = "sms"
    MOBILE_APP = "mobile_app"
    DIRECT_MAIL = "direct_mail"


class InvalidProspectPlan(ValueError):
    """A prospect plan that cannot be used (the message names the key)."""


class Band(BaseModel):
    """One band: its name and the least value it takes (none for the lowest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    at_least: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class MarketingPlan(BaseModel):
    """What the bank does with one segment's prospects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: PlanChannel
    offer: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=500)
    contact_within_days: int = Field(ge=1, le=365)
    max_contacts_per_month: int = Field(ge=0, le=31)


def _check_bands(bands: list[Band], key: str) -> None:
    names = [band.name for band in bands]
    for i, band in enumerate(bands):
        if band.name in names[:i]:
            raise ValueError(f"{key}[{i}].name: band {band.name!r} is defined twice")
        if i == 0 and band.at_least is not None:
            raise ValueError(f"{key}[0].at_least: the lowest band takes everyone; it has none")
        if i > 0 and band.at_least is None:
            raise ValueError(f"{key}[{i}].at_least: required above the lowest band")
        lower = bands[i - 1].at_least if i > 1 else None
        if i > 1 and band.at_least is not None and lower is not None and band.at_least <= lower:
            raise ValueError(
                f"{key}[{i}].at_least: {band.at_least:g} overlaps the band below"
                f" ({bands[i - 1].name}: {lower:g}); it must be higher"
            )


class ProspectPlan(BaseModel):
    """Value bands, buying-power bands and a marketing plan per segment (their product)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=32)
    value_bands: list[Band] = Field(min_length=1, max_length=10)
    buying_power_bands: list[Band] = Field(min_length=1, max_length=10)
    plans: dict[str, MarketingPlan]

    @model_validator(mode="after")
    def _complete(self) -> ProspectPlan:
        _check_bands(self.value_bands, "value_bands")
        _check_bands(self.buying_power_bands, "buying_power_bands")
        segments = self.segments
        for name in self.plans:
            if name not in segments:
                raise ValueError(
                    f"plans.{name}: no such segment (segments are <value band>.<buying power"
                    " band>: " + ", ".join(segments) + ")"
                )
        for name in segments:
            if name not in self.plans:
                raise ValueError(f"plans.{name}: missing; every segment needs a plan")
        return self

    @property
    def segments(self) -> list[str]:
        """Every segment, the highest value and buying power first."""
        return [
            f"{value.name}.{power.name}"
            for value in reversed(self.value_bands)
            for power in reversed(self.buying_power_bands)
        ]

    @property
    def bands_digest(self) -> str:
        """What the segments depend on (the bands), digested: stored beside each prospect's
        segment, so a change of bands re-segments the stored prospects."""
        bands = {"value": self.value_bands, "power": self.buying_power_bands}
        raw = json.dumps({k: [b.model_dump() for b in v] for k, v in bands.items()})
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def segment_of(self, *, value: float | None, income: float | None) -> str:
        """The segment of a prospect with this predicted value and income."""
        return f"{_band(self.value_bands, value)}.{_band(self.buying_power_bands, income)}"


def _band(bands: list[Band], amount: float | None) -> str:
    """The highest band whose least value the amount reaches (the lowest for an unknown)."""
    found = bands[0].name
    if amount is None:
        return found
    for band in bands[1:]:
        if band.at_least is not None and amount >= band.at_least:
            found = band.name
    return found


def _key(location: tuple[int | str, ...]) -> str:
    key = ""
    for part in location:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def parse_prospect_plan(raw: str | bytes) -> ProspectPlan:
    """A plan from JSON, or InvalidProspectPlan naming the first key at fault."""
    try:
        data: Any = json.loads(raw)
    except ValueError as error:
        raise InvalidProspectPlan(f"the prospect plan is not JSON: {error}") from error
    try:
        return ProspectPlan.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = _key(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidProspectPlan(f"{key}: {message}" if key else message) from error


def load_prospect_plan(path: Path) -> ProspectPlan:
    """The plan in a file (refused at start-up, naming the key, when invalid)."""
    try:
        return parse_prospect_plan(path.read_bytes())
    except InvalidProspectPlan as error:
        raise InvalidProspectPlan(f"{path}: {error}") from error


def number(features: Mapping[str, Any], name: str) -> float | None:
    """A numeric value from a stored document (None when absent or not a number)."""
    value = features.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_segment(plan: ProspectPlan, segment: str | None) -> None:
    """Refuse (422, naming the parameter) a segment the plan does not have."""
    if segment is not None and segment not in plan.plans:
        raise InvalidInput(
            "segment: one of " + ", ".join(plan.segments),
            extra={"errors": [{"field": "segment", "message": "unknown", "type": "enum"}]},
        )
