"""Every domain's tables in one import, so ``Base.metadata`` is complete for Alembic."""

from app.alerts import tables as alert_tables
from app.campaigns import tables as campaign_tables
from app.casework import tables as casework_tables
from app.console import tables as console_tables
from app.contact import tables as contact_tables
from app.customers import tables as customer_tables
from app.modelops import tables as model_tables
from app.rewards import tables as rewards_tables
from app.scoring import tables as score_tables
from app.security import tables as security_tables
from app.value import tables as value_tables

__all__ = [
    "alert_tables",
    "campaign_tables",
    "casework_tables",
    "console_tables",
    "contact_tables",
    "customer_tables",
    "model_tables",
    "rewards_tables",
    "score_tables",
    "security_tables",
    "value_tables",
]
