"""Runtime settings, read from the environment (prefix ``CVM_``) and an optional ``.env`` file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


LifecycleStage = Literal["prospect", "new", "existing", "lost"]
# A prospect has nothing to lose yet, a lost customer has already left: no churn alerts.
NOT_ACTIONABLE_STAGES: tuple[LifecycleStage, ...] = ("prospect", "lost")
# Signature algorithms a bearer JWT may use: public-key ones only. 'none' would accept unsigned
# tokens, and HS* would let anyone holding the (public) verification key mint tokens.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512"}
    | {"EdDSA"}
)


def check_webhook_url(url: str, name: str) -> None:
    """https://, or http:// on loopback (tests); ValueError naming the setting otherwise."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"{name} must be https:// (http:// only on loopback)")


class BranchRoute(BaseModel):
    """Who else hears of the churn alerts routed to one branch's staff."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email_recipients: list[str] = Field(
        default_factory=list, description="The branch's addresses (needs email_enabled)."
    )
    webhook_url: str | None = Field(
        default=None,
        description="The branch's office-system receiver of the alerts routed to its staff "
        "(else the tenant's webhook has them).",
    )
    webhook_secret_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the HMAC key of the branch's "
        "webhook.",
    )

    def webhook_secret(self) -> str:
        """The branch's webhook key, read from its environment variable."""
        return os.environ.get(self.webhook_secret_env or "", "")


class TenantRoute(BaseModel):
    """Where one tenant's alert notifications go (``notification_routes``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branches: dict[str, BranchRoute] = Field(
        default_factory=dict,
        description="Per branch: addresses told of each alert routed to that branch's staff "
        "(`cvm casework tick`), besides the assignee, on top of the tenant's own route.",
    )

    email_recipients: list[str] = Field(
        default_factory=list, description="The tenant's staff addresses (needs email_enabled)."
    )
    webhook_url: str | None = Field(default=None, description="The tenant's receiver.")
    webhook_secret_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the HMAC key of the tenant's "
        "webhook (the secret itself stays out of the routing table).",
    )

    def webhook_secret(self) -> str:
        """The tenant's webhook key, read from its environment variable."""
        return os.environ.get(self.webhook_secret_env or "", "")


Weight = Annotated[float, Field(ge=0, le=1000)]


class SatisfactionWeights(BaseModel):
    """Weights of the satisfaction index's components (app/customers/features.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    complaints: Weight = 0.3
    severity: Weight = 0.2
    unresolved: Weight = 0.3
    contacts: Weight = 0.2

    @model_validator(mode="after")
    def _some_weight(self) -> SatisfactionWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("index_weights.satisfaction: at least one weight must be positive")
        return self


class LoyaltyWeights(BaseModel):
    """Weights of the loyalty index's components (app/customers/features.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenure: Weight = 0.3
    depth: Weight = 0.3
    wallet_trend: Weight = 0.2
    activity: Weight = 0.2

    @model_validator(mode="after")
    def _some_weight(self) -> LoyaltyWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("index_weights.loyalty: at least one weight must be positive")
        return self


class IndexWeightsSetting(BaseModel):
    """The satisfaction and loyalty indices' weights (``index_weights``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    satisfaction: SatisfactionWeights = Field(default_factory=SatisfactionWeights)
    loyalty: LoyaltyWeights = Field(default_factory=LoyaltyWeights)


ProductCode = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class IdleInflowRule(BaseModel):
    """A large inflow sitting idle: a credit of at least ``amount_eur`` of which at least
    ``amount_eur`` is still unspent ``idle_days`` later -> a wealth product."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    amount_eur: float = Field(default=20_000.0, gt=0, le=1e15, allow_inf_nan=False)
    idle_days: int = Field(default=30, ge=1, le=3650)
    product: ProductCode = "investment_fund"


class DepositMaturingRule(BaseModel):
    """A term deposit (an account opened with a maturity date, still open) maturing within
    ``window_days`` -> its renewal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_days: int = Field(default=30, ge=0, le=3650)
    product: ProductCode = "term_deposit"


class FirstSalaryRule(BaseModel):
    """The customer's first salary credit (a credit transaction of ``category``) -> a card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    category: ProductCode = "salary"
    product: ProductCode = "credit_card"


class NeedsRulesSetting(BaseModel):
    """The needs warning's rules (``needs_rules``; app/customers/needs.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_inflow: IdleInflowRule = Field(default_factory=IdleInflowRule)
    deposit_maturing: DepositMaturingRule = Field(default_factory=DepositMaturingRule)
    first_salary: FirstSalaryRule = Field(default_factory=FirstSalaryRule)
    # A customer's need alert resolved less than this long ago is not reopened for the same
    # rule (the churn alerts' cooldown, per reason).
    cooldown_days: int = Field(default=30, ge=0, le=3650)


ContactChannelName = Literal["email", "sms", "phone", "letter"]


def _default_contact_caps() -> dict[ContactChannelName, int]:
    return {"email": 1, "sms": 1}


class Settings(BaseSettings):
    """Everything a deployment may change; the defaults run the service from a checkout."""

    model_config = SettingsConfigDict(env_prefix="CVM_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'cvm.db'}",
        description="SQLAlchemy URL: SQLite file by default, postgresql+psycopg://... live.",
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="PostgreSQL connections the service's pool keeps open per process (SQLite "
        "ignores it); replicas x processes x (pool + overflow) must stay under the server's "
        "max_connections.",
    )
    db_max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Connections a process may open beyond its pool under load, each closed "
        "again once returned to a full pool.",
    )
    models_dir: Path = Field(default=PROJECT_ROOT / "models")
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Pinned version per task, e.g. {'churn': '2'}; unpinned tasks serve the registry's "
            "champion (on a fresh registry: the newest version on disk)."
        ),
    )
    index_weights: IndexWeightsSetting = Field(
        default_factory=IndexWeightsSetting,
        description="Weights of the satisfaction and loyalty indices' components, e.g. "
        '{"satisfaction": {"complaints": 0.5}, "loyalty": {"tenure": 0.1}}; an unknown '
        "component is refused by name. The churn model's index features were trained with "
        "the defaults.",
    )
    model_poll_s: float = Field(
        default=0.5,
        ge=0,
        description="How often each process asks the model registry for a new champion "
        "(0: never; activations then need a restart).",
    )
    eligibility_file: Path = Field(default=PROJECT_ROOT / "app" / "resources" / "eligibility.json")
    # The bank's tier policy (app/value/policy.py); an invalid file stops the service at start.
    tier_policy_file: Path = Field(default=PROJECT_ROOT / "app" / "resources" / "tier_policy.json")
    # Keep every audit line in the database as well (`audit_record`, written by a thread in
    # batches), for the console's audit log page; the `cvm.audit` log line is written anyway.
    # PostgreSQL only: on SQLite the writer's commits would make a request's read-then-write
    # transaction fail (SQLITE_BUSY_SNAPSHOT under WAL).
    audit_store: bool = False
    # Prospect segments (value band x buying power) and a marketing plan per segment
    # (app/value/prospects.py); an invalid file stops the service at start, naming the key.
    prospect_plan_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "prospect_plans.json"
    )
    # Service plans, points rules and gift catalogue (app/rewards/policy.py); checked at start.
    rewards_policy_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "rewards_policy.json"
    )
    # Next best action: actions, levers, context weights, cold start, volume caps
    # (app/actions/policy.py); an invalid file stops the service at start, naming the key.
    next_best_action_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "next_best_action.json"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = Field(default=1000, ge=1)
    group_commit_max_rows: int = Field(default=5000, ge=1)
    group_commit_max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="Thread writer: longest a commit group stays open for calls still "
        "computing their scores (a call arriving at an idle service commits at once). The "
        "writer process holds no group open: what arrives during a commit forms the next.",
    )
    score_writer: Literal["process", "thread"] = Field(
        default="process",
        description="Where scores are committed: a child process (the group-commit writer "
        "works on another core instead of sharing the requests' GIL) or a thread of the "
        "service (needed for an in-memory SQLite database).",
    )
    score_writer_stall_s: float = Field(
        default=5.0,
        gt=0,
        description="Readiness fails while a write has waited this long without any commit "
        "answering (a frozen writer, a full disk), and after a failed commit until the next.",
    )
    log_level: str = "INFO"
    log_json: bool = True
    freeze_heap_at_start: bool = Field(
        default=True,
        description="At start-up, take everything loaded so far (models, schemas, routes) out "
        "of the garbage collector's scans: a full collection would otherwise rescan it and "
        "stall every request in flight for milliseconds. Tests, which build hundreds of apps "
        "in one process, turn it off (each freeze costs a full collection).",
    )

    # Batch scoring and compiled inference
    batch_chunk_rows: int = Field(
        default=32_768, ge=1, description="Rows per chunk: one validation, predict and commit."
    )
    batch_threads: int | None = Field(
        default=None, ge=1, description="Prediction threads for `cvm score`; None: every core."
    )
    batch_backend: str = Field(
        default="auto",
        pattern=r"^(auto|lightgbm|compiled)$",
        description="auto: a compiled model when one is cached for the model file, else LightGBM.",
    )
    compiled_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "compiled",
        description="Cache of compiled models: <task>/<version>/<sha256 of model file>.o.",
    )

    # Event intake (app/customers)
    max_events_per_call: int = Field(
        default=10_000, ge=1, description="Events in one POST /v1/events (413 above)."
    )
    event_future_tolerance_s: float = Field(
        default=300.0,
        ge=0,
        description="How far an event's occurred_at may be ahead of the server's clock (clock "
        "skew between systems); later times are refused (422).",
    )
    events_max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Body limit of POST /v1/events alone, so that 10,000 events fit (about 1.6 "
        "KB each); every other route keeps max_body_bytes.",
    )
    material_outflow_eur: float = Field(
        default=10_000.0,
        gt=0,
        allow_inf_nan=False,
        description="A debit of at least this amount is a material event: the customer is "
        "re-assessed in the background, as after a complaint, a closed product or a stopped "
        "salary.",
    )
    needs_rules: NeedsRulesSetting = Field(
        default_factory=NeedsRulesSetting,
        description="The needs warning: opportunity alerts opened from the trail, e.g. "
        '{"idle_inflow": {"amount_eur": 50000, "idle_days": 14}, "deposit_maturing": '
        '{"window_days": 30}, "first_salary": {"enabled": false}, "cooldown_days": 30}; an '
        "unknown rule or field is refused by name.",
    )
    lifecycle_new_months: int = Field(
        default=3,
        ge=1,
        le=120,
        description="A customer is new for this many calendar months from the relationship's "
        "start (the lifecycle stage; the scoring core's new customers too).",
    )
    lifecycle_dormant_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="A customer with no activity (transaction, session, branch visit, product "
        "opened) for this many days is dormant.",
    )
    rescore_in_process: bool = Field(
        default=True,
        description="Re-assess customers after material events in the API process.",
    )
    rescore_poll_s: float = Field(
        default=0.5, gt=0, le=5, description="How often pending re-assessments are looked for."
    )
    rescore_batch_size: int = Field(
        default=200, ge=1, description="Pending re-assessments taken per round."
    )

    # Events from a message bus (`cvm consume`, app/customers/consumer.py)
    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="The RabbitMQ broker core banking publishes events to (AMQP URL; it may "
        "hold a password, so it is never logged).",
    )
    event_queues: list[str] = Field(
        default=["cvm.events"],
        min_length=1,
        description="Queues of events: `cvm consume` reads the first unless told another; the "
        "API reports each one's depth (the consumers' lag) on /metrics.",
    )
    event_queue_monitor_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the API asks the broker for the queues' depth (0: never).",
    )

    # Churn alerts and notifications
    churn_alerts_enabled: bool = Field(
        default=True, description="Open an alert when a churn score crosses the threshold."
    )
    churn_alert_band: Literal["medium", "high"] = Field(
        default="high", description="Lowest risk band that opens an alert."
    )
    churn_alert_probability: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Probability that opens an alert; when set, it replaces the band threshold.",
    )
    churn_alert_excluded_stages: list[LifecycleStage] = Field(
        default_factory=lambda: list(NOT_ACTIONABLE_STAGES),
        description="Lifecycle stages whose churn scores never open an alert (JSON list).",
    )
    churn_alert_cooldown_hours: float = Field(
        default=720.0,
        ge=0,
        description="After an alert is resolved, scores within this many hours do not reopen "
        "one for the customer, unless the risk rose by churn_alert_reopen_margin.",
    )
    churn_alert_reopen_margin: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Rise in probability over the resolved alert's that reopens within the "
        "cooldown.",
    )
    alert_processor_in_process: bool = Field(
        default=True,
        description="Turn scores' alert candidates into alerts from the API process "
        "(off: run `cvm alerts process`).",
    )
    alert_processor_mode: Literal["process", "thread"] = Field(
        default="process",
        description="Where the service runs it: a child process of each worker (its Python "
        "work off the requests' GIL) or a thread (an in-memory SQLite database always does).",
    )
    alert_processor_poll_s: float = Field(
        default=0.5, gt=0, description="Idle wait between looks at the alert inbox."
    )
    alert_processor_batch_size: int = Field(
        default=500, ge=1, description="Alert candidates taken per transaction."
    )
    # Casework (app/casework)
    casework_profile: Literal["cn", "uk_disp", "uk_payment_services", "cfpb"] = Field(
        default="uk_disp",
        description="Jurisdiction profile that sets complaint deadlines at creation: cn (15/30 "
        "days, one approved 30-day extension, 60 at most), uk_disp (8 weeks, summary "
        "resolution by the 3rd business day), uk_payment_services (15/35 business days), "
        "cfpb (15 days reply, 60 closure).",
    )
    casework_holidays_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "holidays.json",
        description="Holiday calendars by name (JSON: name -> list of ISO dates); business "
        "days skip weekends and the profile's calendar's holidays.",
    )
    casework_retention_days: int = Field(
        default=3 * 365,
        ge=1,
        description="Closed complaints and their audit trail are kept this long after "
        "closing; `cvm casework purge` deletes older ones (default 3 years).",
    )
    casework_alert_accept_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 365,
        description="An alert routed to someone who has not accepted it within this time is "
        "reassigned to their supervisor (`cvm casework tick`).",
    )
    casework_alert_capacity: int = Field(
        default=50,
        ge=1,
        description="Open alerts a staff member holds at most before routing passes them by "
        "(backups, branch and central queues).",
    )
    casework_central_branch: str = Field(
        default="central",
        min_length=1,
        max_length=64,
        description="The branch whose relationship managers form the central queue: alerts "
        "no one in the customer's branch can take go there.",
    )
    # Contact policy (app/contact)
    contact_caps: dict[ContactChannelName, Annotated[int, Field(ge=0)]] = Field(
        default_factory=_default_contact_caps,
        description="Retention and marketing contacts allowed per channel in the rolling "
        "window; a channel left out is not capped.",
    )
    contact_cap_window_days: int = Field(
        default=7, ge=1, le=366, description="The rolling window of the channel caps."
    )
    contact_negative_limit: int = Field(
        default=3,
        ge=1,
        description="Negative outcomes within contact_negative_days that stop retention and "
        "marketing contacts.",
    )
    contact_negative_days: int = Field(default=30, ge=1, le=3660)
    retention_actions_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "retention_actions.json",
        description="Retention actions recommended for each churn reason.",
    )
    email_enabled: bool = Field(default=False, description="Send alerts by e-mail (SMTP).")
    email_from: str = "cvm@bank.example"
    email_recipients: list[str] = Field(
        default_factory=list, description='Staff addresses, as JSON: ["retention@bank.example"].'
    )
    email_digest_minutes: float = Field(
        default=0,
        ge=0,
        description="0: one e-mail per alert; otherwise one digest per recipient per interval.",
    )
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the SMTP server (default: system CAs)."
    )
    webhook_enabled: bool = Field(
        default=False, description="Post alerts to the office-automation system's webhook."
    )
    webhook_url: str | None = Field(
        default=None, description="HTTPS URL (plain HTTP only on loopback, for tests)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Key of the HMAC-SHA256 signature of every webhook body."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    notification_routes: dict[str, TenantRoute] = Field(
        default_factory=dict,
        description='Per tenant, as JSON: {"bank-a": {"email_recipients": [...], '
        '"webhook_url": "https://...", "webhook_secret_env": "BANK_A_HOOK_KEY"}}. '
        "A tenant's alerts go only to its own route; a tenant without one has them held "
        "(outbox status 'held'). The email_recipients and webhook_* settings route alerts "
        "without a tenant only.",
    )
    dispatch_in_process: bool = Field(
        default=False, description="Deliver notifications from the API process too."
    )
    dispatch_poll_s: float = Field(default=1.0, gt=0, description="Idle wait between polls.")
    dispatch_batch_size: int = Field(default=50, ge=1, description="Messages claimed at once.")
    dispatch_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a claim holds; a killed dispatcher's messages are retried after.",
    )
    dispatch_max_attempts: int = Field(
        default=30, ge=1, description="Attempts before a message is marked failed."
    )
    dispatch_backoff_base_s: float = Field(default=2.0, gt=0)
    dispatch_backoff_max_s: float = Field(default=3600.0, gt=0)

    # Security
    auth_enabled: bool = Field(
        default=True,
        description="Require a credential everywhere but /healthz and /readyz (off: dev only).",
    )
    auth_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long an API-key lookup is cached; a revoke takes effect within it.",
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without a credential (no customer data in it; keep scrapers "
        "on the internal network). Off: needs the admin scope.",
    )
    docs_public: bool = Field(
        default=True,
        description="Serve /openapi.json without a credential (the /docs page and its assets "
        "always are). Off: the spec needs any valid credential, so a browser's /docs cannot "
        "show it (SECURITY.md).",
    )
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key of the token issuer (enables bearer JWTs)."
    )
    jwt_jwks_file: Path | None = Field(
        default=None, description="JWKS file of the token issuer (enables bearer JWTs)."
    )
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of bearer JWTs.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of bearer JWTs.")
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"],
        description="Signature algorithms accepted: asymmetric ones only ('none' and HS* are "
        "refused at start-up).",
    )
    jwt_scope_claim: str = Field(default="scope", description="Space-separated scopes, or a list.")
    jwt_tenant_claim: str = Field(
        default="tenant",
        description="The claim naming the caller's tenant; with tenant_isolation a token "
        "without it is refused (401).",
    )
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    # Operator console (/console)
    console_session_idle_s: int = Field(
        default=1800, ge=60, le=86_400, description="A console session ends after this idle time."
    )
    console_session_max_s: int = Field(
        default=12 * 3600, ge=300, le=7 * 86_400, description="...and this long after login."
    )
    console_max_failures: int = Field(
        default=5, ge=1, le=100, description="Wrong passwords in a row before a lockout."
    )
    console_lockout_s: int = Field(
        default=900, ge=1, le=86_400, description="How long a locked-out staff member waits."
    )
    console_argon2_time_cost: int = Field(
        default=3, ge=1, le=20, description="Argon2id passes per password hash (RFC 9106: 3)."
    )
    console_argon2_memory_kib: int = Field(
        default=65_536,
        ge=8,
        le=4_194_304,
        description="Argon2id memory per hash in KiB (RFC 9106 low-memory profile: 64 MiB). "
        "Stored hashes made with other costs are upgraded at their next login.",
    )
    console_cookie_secure: bool = Field(
        default=True,
        description="Console cookies only over HTTPS (browsers treat http://localhost as secure).",
    )
    console_currency: Literal["EUR", "CNY"] = Field(
        default="EUR", description="The currency amounts are shown in on the console."
    )
    console_default_locale: Literal["en", "zh_CN"] = Field(
        default="en", description="The console's language until a user picks one."
    )
    tenant_isolation: bool = Field(
        default=True,
        description="History and alert reads return only rows of the caller's tenant (rows "
        "without a tenant to clients without one).",
    )
    rate_limit_per_s: float | None = Field(
        default=1000.0, gt=0, description="Requests per second per client (None: no limit)."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Requests allowed at once.")
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://host:6379/0 to share rate limits across replicas; None: per process.",
    )
    redis_timeout_s: float = Field(
        default=0.05, gt=0, description="Beyond this a Redis call fails over to local limits."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Larger request bodies are refused (413)."
    )
    max_json_depth: int = Field(
        default=32,
        ge=4,
        le=200,
        description="JSON bodies nesting arrays and objects deeper are refused (400).",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=4096,
        description="Requests whose header names and values add up to more are refused (431).",
    )
    strict_json: bool = Field(default=True, description="Refuse bodies with duplicate keys (422).")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Requests running longer are answered 504."
    )
    idempotency_ttl_s: float = Field(
        default=86_400.0, gt=0, description="How long an Idempotency-Key's response is kept."
    )
    idempotency_lock_s: float = Field(
        default=45.0,
        gt=0,
        description="After this, a run whose replica died may be retried (> request_timeout_s).",
    )
    pseudonym_secret: SecretStr | None = Field(
        default=None,
        description="32+ byte secret: customer ids are stored as their HMAC-SHA256 under it.",
    )
    pseudonym_previous_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Secrets rotated out: history reads still find rows stored under them.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API (none: off)."
    )
    hsts_max_age_s: int = Field(
        default=0, ge=0, description="Send Strict-Transport-Security with this max-age (0: off)."
    )

    @model_validator(mode="after")
    def _check_audit_store(self) -> Settings:
        if self.audit_store and self.database_url.startswith("sqlite"):
            raise ValueError("audit_store needs PostgreSQL (database_url is SQLite)")
        return self

    @model_validator(mode="after")
    def _check_notifications(self) -> Settings:
        routed = any(route.email_recipients for route in self.notification_routes.values())
        if self.email_enabled and not self.email_recipients and not routed:
            raise ValueError("email_enabled needs at least one address in email_recipients")
        if self.webhook_enabled:
            if not self.webhook_url or self.webhook_secret is None:
                raise ValueError("webhook_enabled needs webhook_url and webhook_secret")
            check_webhook_url(self.webhook_url, "webhook_url")
        for tenant, route in self.notification_routes.items():
            self._check_route(tenant, route)
        # A claim must outlive one send, or a slow send could be retried by another dispatcher.
        if self.dispatch_lease_s <= 2 * max(self.smtp_timeout_s, self.webhook_timeout_s):
            raise ValueError("dispatch_lease_s must exceed twice the SMTP and webhook timeouts")
        return self

    def _check_route(self, tenant: str, route: TenantRoute) -> None:
        where = f"notification_routes[{tenant!r}]"
        if not tenant or len(tenant) > 64 or not tenant.isprintable():
            raise ValueError(f"{where}: a tenant is 1 to 64 printable characters")
        if route.email_recipients and not self.email_enabled:
            raise ValueError(f"{where}.email_recipients needs email_enabled")
        if any("@" not in address for address in route.email_recipients):
            raise ValueError(f"{where}.email_recipients must be e-mail addresses")
        for branch, branch_route in route.branches.items():
            if branch_route.email_recipients and not self.email_enabled:
                raise ValueError(
                    f"{where}.branches[{branch!r}].email_recipients needs email_enabled"
                )
            if any("@" not in address for address in branch_route.email_recipients):
                raise ValueError(
                    f"{where}.branches[{branch!r}].email_recipients must be e-mail addresses"
                )
            if branch_route.webhook_url is not None:
                check_webhook_url(
                    branch_route.webhook_url, f"{where}.branches[{branch!r}].webhook_url"
                )
        if route.webhook_url is None:
            if route.webhook_secret_env is not None:
                raise ValueError(f"{where}.webhook_secret_env without webhook_url")
            return
        check_webhook_url(route.webhook_url, f"{where}.webhook_url")
        if not route.webhook_secret_env or not route.webhook_secret():
            raise ValueError(
                f"{where}.webhook_secret_env must name a set environment variable (the key)"
            )

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        # 'none' would accept unsigned tokens; symmetric algorithms would let anyone holding
        # the public key mint tokens. Checked even while JWTs are off, so that turning them on
        # cannot bring a bad list to life.
        refused = sorted(set(self.jwt_algorithms) - ASYMMETRIC_ALGORITHMS)
        if refused or not self.jwt_algorithms:
            raise ValueError(
                f"jwt_algorithms must be asymmetric (RS*, PS*, ES*, EdDSA); refused: {refused}"
            )
        jwt_enabled = self.jwt_public_key_file is not None or self.jwt_jwks_file is not None
        if jwt_enabled and (not self.jwt_issuer or not self.jwt_audience):
            raise ValueError("bearer JWTs need jwt_issuer and jwt_audience")
        if self.idempotency_lock_s <= self.request_timeout_s:
            raise ValueError("idempotency_lock_s must exceed request_timeout_s")
        secrets = [self.pseudonym_secret, *self.pseudonym_previous_secrets]
        if any(s is not None and len(s.get_secret_value().encode()) < 32 for s in secrets):
            raise ValueError("pseudonymisation secrets must be at least 32 bytes")
        if self.pseudonym_previous_secrets and self.pseudonym_secret is None:
            raise ValueError("pseudonym_previous_secrets needs pseudonym_secret")
        if "*" in self.cors_origins:
            raise ValueError("cors_origins must name origins; '*' is not allowed")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
