"""Words the templates translate from data (statuses, outcomes, event types, tasks).

Listed as literals so that `make messages` extracts them; tests/test_console.py checks the
list against the enums, so a new status cannot go untranslated.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a message for extraction without translating it here."""
    return message


def NC_(context: str, message: str) -> str:
    """Mark a message with its context (templates translate it with ``pgettext``): the same
    English word that means two things gets a translation for each."""
    return message


# Lifecycle stages share words with other lists ("prospect" is also a score's task, "lost"
# an alert's outcome): templates show them with pgettext(STAGE_CONTEXT, stage).
STAGE_CONTEXT = "lifecycle stage"


ALERT_STATUSES = (N_("open"), N_("acknowledged"), N_("resolved"))
OUTCOMES = (N_("retained"), N_("lost"), N_("not_reachable"), N_("other"))
COMPLAINT_STATUSES = (
    N_("received"),
    N_("acknowledged"),
    N_("in_progress"),
    N_("responded"),
    N_("closed"),
    N_("rejected"),
)
EVENT_TYPES = (
    N_("customer_profile"),
    N_("account_opened"),
    N_("account_closed"),
    N_("balance_snapshot"),
    N_("transaction"),
    N_("digital_session"),
    N_("contact"),
    N_("complaint"),
    N_("campaign_response"),
)
TASKS = (N_("tier"), N_("recommendation"), N_("churn"), N_("prospect"))
ASSIGNMENT_STATUSES = (N_("assigned"), N_("accepted"), N_("closed"))
# The tier movements chart: (series label, field of MovementMonth, colour).
MOVEMENT_CHART = (
    (N_("initial"), "initial", "#7f8c8d"),
    (N_("upgrade"), "upgrades", "#1e8449"),
    (N_("downgrade"), "downgrades", "#b03a2e"),
    (N_("retired_tier"), "retired_tier", "#d4ac0d"),
)
CHART_AXES = (N_("customers moved"),)
PLAN_CHANNELS = (
    N_("relationship_manager"),
    N_("branch"),
    N_("phone"),
    N_("email"),
    N_("sms"),
    N_("mobile_app"),
    N_("direct_mail"),
)
PSI_BANDS = (N_("stable"), N_("moderate"), N_("significant"))
FAIRNESS_STATUSES = (N_("green"), N_("amber"), N_("too_small"))
CHART_WORDS = (N_("score"), N_("AUC"))
CAMPAIGN_STATUSES = (N_("draft"), N_("launched"))
CONTACT_CHANNELS = (N_("email"), N_("sms"), N_("phone"), N_("letter"))
CONTACT_PURPOSES = (N_("service"), N_("retention"), N_("marketing"))
LIFECYCLE_STAGES = (
    NC_("lifecycle stage", "prospect"),
    NC_("lifecycle stage", "new"),
    NC_("lifecycle stage", "active"),
    NC_("lifecycle stage", "at_risk"),
    NC_("lifecycle stage", "dormant"),
    NC_("lifecycle stage", "lost"),
)
ARMS = (N_("treatment"), N_("control"))
# The words app/campaigns/charts.py draws into the report's chart.
CAMPAIGN_CHART = (
    N_("%(code)s: conversion rate per arm"),
    N_("lift %(lift)s (%(mark)s)"),
    N_("significant"),
    N_("not significant"),
    N_("uplift by %(task)s score decile"),
    N_("decile (highest scores first)"),
)
# Why an alert was opened: the churn warning or a needs rule (app/customers/needs.py).
ALERT_CAUSES = (N_("churn"), N_("idle_inflow"), N_("deposit_maturing"), N_("first_salary"))
# The tier policy's measures (money but products_held, a count).
MEASURES = (N_("relationship_balance"), N_("loans"), N_("products_held"), N_("profit"))
COUNTED_MEASURES = ("products_held",)
ACTION_KINDS = (
    N_("retention_offer"),
    N_("product_offer"),
    N_("tier_upgrade_nudge"),
    N_("service_call"),
)
REMOVAL_STAGES = (
    N_("eligibility"),
    N_("applicability"),
    N_("suitability"),
    N_("priority"),
    N_("contact_policy"),
    N_("volume_cap"),
)
CONTACT_OUTCOMES = (N_("positive"), N_("neutral"), N_("negative"))
SEVERITIES = (N_("low"), N_("medium"), N_("high"))
