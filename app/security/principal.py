"""The authenticated caller and the scopes it may hold."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a credential allows; `admin` does not imply the others."""

    SCORES_WRITE = "scores:write"
    SCORES_READ = "scores:read"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"
    MODELS_READ = "models:read"
    EVENTS_WRITE = "events:write"
    CUSTOMERS_READ = "customers:read"
    CASEWORK_READ = "casework:read"
    CASEWORK_WRITE = "casework:write"
    STAFF_ADMIN = "staff:admin"
    REWARDS_WRITE = "rewards:write"
    CAMPAIGNS_READ = "campaigns:read"
    CAMPAIGNS_WRITE = "campaigns:write"
    ADMIN = "admin"


ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)
# Tenants are stored with every score and alert (a 64-character column); client ids with
# idempotency records and as alert owners (64 too), and a JWT's is 'jwt:' + its subject.
MAX_TENANT_LENGTH = 64
MAX_CLIENT_ID_LENGTH = 64
MAX_SUBJECT_LENGTH = MAX_CLIENT_ID_LENGTH - len("jwt:")


def parse_scopes(values: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Known scopes from a space- or comma-separated string or a list; unknown ones dropped."""
    items = values.replace(",", " ").split() if isinstance(values, str) else values
    return frozenset(item for item in items if item in ALL_SCOPES)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: the id used in logs, limits and idempotency, and its rights."""

    client_id: str
    name: str
    scopes: frozenset[str]
    tenant: str | None = None
    method: str = "api_key"
    rate_limit_per_s: float | None = None

    def allows(self, scope: Scope) -> bool:
        """Whether this client holds ``scope``."""
        return scope.value in self.scopes


# With authentication off (development only) every request runs as this client.
ANONYMOUS = Principal(client_id="anonymous", name="anonymous", scopes=ALL_SCOPES, method="none")
