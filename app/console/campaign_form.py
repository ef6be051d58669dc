"""The campaign form: its flat fields as the API's CampaignRequest body, and the domain's
refusals placed back next to the fields they name."""

from __future__ import annotations

import re
from typing import Any

# Fields a form sends as text and the request takes as they are (empty: the default applies).
PLAIN_FIELDS = (
    "code",
    "name",
    "action",
    "channel",
    "purpose",
    "priority_task",
    "period",
    "control_rate",
    "volume_cap",
    "budget",
    "cost_per_contact",
    "baseline_rate",
    "minimum_lift",
)
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# An error's field (pydantic's location, the domain's "body.target.tiers[0]") -> the form's.
TARGET_FIELDS = {"stages": "stages", "tiers": "tiers", "scores": "score"}


def _when(raw: str) -> str | None:
    """A date field (midnight UTC) or a full timestamp as typed; empty: none."""
    raw = raw.strip()
    if not raw:
        return None
    return f"{raw}T00:00:00Z" if DATE_ONLY.match(raw) else raw


def _checked(form: dict[str, str], prefix: str) -> list[str] | None:
    """The values of the ticked boxes named ``prefix...`` (none ticked: no condition)."""
    values = [value for key, value in sorted(form.items()) if key.startswith(prefix) and value]
    return values or None


def request_body(form: dict[str, str]) -> dict[str, Any]:
    """The form as a CampaignRequest body (validated by the request model, as the API does)."""
    body: dict[str, Any] = {
        name: form[name].strip() for name in PLAIN_FIELDS if form.get(name, "").strip()
    }
    target: dict[str, Any] = {}
    stages, tiers = _checked(form, "stage_"), _checked(form, "tier_")
    if stages:
        target["stages"] = stages
    if tiers:
        target["tiers"] = tiers
    score_task = form.get("score_task", "").strip()
    if score_task:
        band: dict[str, Any] = {"task": score_task}
        for bound in ("min", "max"):
            raw = form.get(f"score_{bound}", "").strip()
            if raw:
                band[bound] = raw
        target["scores"] = [band]
    body["target"] = target
    body["starts_at"] = _when(form.get("starts_at", ""))
    ends_at = _when(form.get("ends_at", ""))
    if ends_at is not None:
        body["ends_at"] = ends_at
    return body


def form_field(error_field: str) -> str:
    """The form field an error names ('' for the form as a whole)."""
    parts = re.split(r"[.\[]", error_field.removeprefix("body."))
    if parts[0] == "target" and len(parts) > 1:
        return TARGET_FIELDS.get(parts[1], "target")
    if parts[0] == "scores":
        return "score"
    return parts[0]


def errors_by_field(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The refusal's messages grouped by the form field they belong to."""
    grouped: dict[str, list[str]] = {}
    for error in errors:
        grouped.setdefault(form_field(str(error.get("field", ""))), []).append(
            str(error.get("message", ""))
        )
    return grouped
