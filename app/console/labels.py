"""Words the templates translate from data (statuses, outcomes, event types, tasks).

Listed as literals so that `make messages` extracts them; tests/test_console.py checks the
list against the enums, so a new status cannot go untranslated.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a message for extraction without translating it here."""
    return message


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
    N_("prospect"),
    N_("new"),
    N_("active"),
    N_("at_risk"),
    N_("dormant"),
    N_("lost"),
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
