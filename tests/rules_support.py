"""The bank's default rules, loaded as the service and ``cvm score`` load them."""

from app.config import Settings
from app.scoring.rules import rules_from_settings

RULES = rules_from_settings(Settings())
